"""Dockerfiles read as the Docker builder reads them: instructions with line numbers,
and FROM lines resolved with the global ARGs the way the builder resolves them.

Instructions come from `dockerfile-parse` (parser directives such as `escape`, line
continuations, comments inside them, line spans). Its own ARG expansion is not used:
dockerfile-parse 2.0 leaves `ARG BASE=${REGISTRY}/${OWNER}/base` unexpanded when BASE is
used in FROM, and turns `${TAG:-1.35}` into `:-1.35}`; both are everyday forms here, so
`parse` evaluates the global ARGs itself: each default expanded with the ARGs declared
before it, `--build-arg` values overriding declared ARGs only, stage ARGs never reaching
a FROM. The same scope, per stage, expands what ADD, COPY --from and RUN --mount name
(`Source`), which the lint stage judges.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import shlex
from dataclasses import dataclass
from functools import cache as cache_once
from pathlib import Path

import dockerfile_parse
from dockerfile_parse import DockerfileParser

from heps.core import cache
from heps.core.bounded import read_text
from heps.core.errors import ConfigError

MAX_EXPANSION = 64 << 10
"""Characters substitution may add to one value: `ARG A1=${A0}${A0}`, doubled 40 times,
would need a terabyte."""
_OTHER_SPACE = re.compile(r"[^\S \t\n]")
"""Whitespace the builder does not take as such: after the escape character it allows only
spaces and tabs, dockerfile-parse also form feed, NBSP, U+2028, ... A backslash followed by
one continues the line for heps and not for the builder, which then runs the next line
(an `ADD http://...`, a `FROM`) unseen by the lint rules."""
_VAR = re.compile(
    r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    """Upper-case instruction name: FROM, RUN, USER, ..."""
    value: str
    """Everything after the keyword, continuation lines joined."""
    line: int
    end_line: int


@dataclass(frozen=True)
class Stage:
    """One FROM line."""

    image: str
    """The base after ARG substitution, e.g. 127.0.0.1:5000/heps/jupyterlab-base."""
    line: int
    end_line: int
    platform: str | None = None
    alias: str | None = None
    previous_stage: bool = False
    """True when `image` names an earlier stage (FROM builder), not an image."""


@dataclass(frozen=True)
class Source:
    """What an instruction other than FROM asks the builder to read: an ADD source, or
    the image or stage of COPY --from and RUN --mount from=."""

    keyword: str
    """ADD, COPY --from or RUN --mount from; prefixed with ONBUILD inside one."""
    text: str
    """As written."""
    value: str | None
    """Expanded with the stage's ARGs (build args applied) and ENVs as the builder
    expands it; None when it uses a variable this Dockerfile leaves unset there (the
    base image's environment, or a build argument the engine adds, would decide)."""
    flags: tuple[str, ...]
    """The instruction's flags, e.g. ("--chown=1000", "--checksum=sha256:...")."""
    line: int
    stage: int
    """Index of the stage it is in."""


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    instructions: tuple[Instruction, ...]
    stages: tuple[Stage, ...]
    sources: tuple[Source, ...] = ()


def substitute(text: str, values: dict[str, str | None], where: str) -> str:
    """Expand $VAR, ${VAR}, ${VAR:-word}, ${VAR:+word} and ${VAR:?word} as the Docker
    builder does; ConfigError naming `where` past MAX_EXPANSION characters."""
    added = 0

    def expand(match: re.Match[str]) -> str:
        nonlocal added
        name = match.group(1) or match.group(4)
        value = values.get(name)
        if match.group(2) == "-":
            found = value if value else match.group(3)
        elif match.group(2) == "+":
            found = match.group(3) if value else ""
        else:
            found = value or ""
        added += len(found)
        if added > MAX_EXPANSION:
            raise ConfigError(
                f"{where}: expands to more than {MAX_EXPANSION} characters; shorten the "
                "ARG or ENV values it uses"
            )
        return found

    return _VAR.sub(expand, text)


def _unset(text: str, values: dict[str, str | None]) -> bool:
    """Whether `text` uses a variable that `values` leaves unset, or a `${` form this
    module does not expand (an engine may: its value is unknown here)."""
    used = [values.get(m.group(1) or m.group(4)) for m in _VAR.finditer(text)]
    return any(v is None or "${" in _VAR.sub("", v) for v in [*used, text])


@cache_once
def _parser_code() -> str:
    """What parsed a Dockerfile: this module and dockerfile-parse's version."""
    return cache.key(dockerfile_parse.__version__, cache.code_digest("images/dockerfile.py"))


def instructions(text: str, parsed: cache.Store | None = None) -> list[Instruction]:
    """Instructions with 1-based line spans; comments and parser directives dropped.
    From `parsed` when this exact text was parsed before."""
    entry = cache.key("dockerfile", _parser_code(), text) if parsed is not None else ""
    if parsed is not None and isinstance(known := parsed.get(entry), list):
        return [Instruction(*step) for step in known]
    # The builder drops a byte-order mark before reading parser directives (`# escape=`).
    # A blank line ends an instruction left open by a backslash on the last line: the
    # builder runs it, dockerfile-parse would drop it (a hidden `FROM`, `ADD http://`).
    parser = DockerfileParser(fileobj=io.StringIO(text.removeprefix("\ufeff") + "\n\n"))
    last = len(text.splitlines()) or 1  # the blank lines added are not the author's
    found = [
        Instruction(
            i["instruction"], i["value"].strip(), i["startline"] + 1, min(i["endline"] + 1, last)
        )
        for i in parser.structure
        if i["instruction"] != "COMMENT"
    ]
    if parsed is not None:
        parsed.put(entry, [[i.keyword, i.value, i.line, i.end_line] for i in found])
    return found


def words(value: str, where: str) -> list[str]:
    """An ARG or ENV line's words, as the shell would split them; ConfigError naming the
    line when a quotation is left open."""
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} in {value[:60]!r}; close the quotation") from None


def parse_args(value: str, where: str) -> dict[str, str | None]:
    """`ARG A=1 B` -> {"A": "1", "B": None}."""
    found: dict[str, str | None] = {}
    for word in words(value, where):
        name, eq, default = word.partition("=")
        found[name] = default if eq else None
    return found


def parse(
    path: Path, build_args: dict[str, str], shown: str, parsed: cache.Store | None = None
) -> Dockerfile:
    """Read `path` (`shown` in messages); resolve FROM images with global ARG defaults
    overridden by `build_args`, and each stage's sources with that stage's ARGs and ENVs."""
    text = read_text(path, shown)
    if odd := _OTHER_SPACE.search(text.replace("\r\n", "\n")):
        line = text[: odd.start()].count("\n") + 1
        raise ConfigError(
            f"{shown}:{line}: whitespace character U+{ord(odd.group()):04X}, which the Docker "
            "builder and heps would split into instructions differently; replace it with a space"
        )
    steps = instructions(text, parsed)
    outer: dict[str, str | None] = {}  # global ARGs: the only ones FROM sees
    scope = outer
    stages: list[Stage] = []
    sources: list[Source] = []
    aliases: set[str] = set()
    for step in steps:
        where = f"{shown}:{step.line}"
        if step.keyword == "ARG":
            for name, default in parse_args(step.value, where).items():
                if name in build_args:
                    scope[name] = build_args[name]
                elif default is not None:
                    scope[name] = substitute(default, scope, where)
                else:  # in a stage, a bare ARG takes the global ARG's value
                    scope[name] = outer.get(name) if stages else None
        elif step.keyword == "ENV" and stages:
            for name, value in _env_pairs(step.value, where):
                scope[name] = substitute(value, scope, where)
        elif step.keyword == "FROM":
            words = step.value.split()
            platform = None
            while words and words[0].startswith("--"):
                flag = words.pop(0)
                if flag.startswith("--platform="):
                    platform = flag.split("=", 1)[1]
            image = substitute(words[0], outer, where) if words else ""
            alias = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(
                Stage(
                    image=image,
                    line=step.line,
                    end_line=step.end_line,
                    platform=platform,
                    alias=alias,
                    previous_stage=image.lower() in aliases,
                )
            )
            if alias:
                aliases.add(alias)
            scope = {}
        elif stages:
            sources += _sources(step, scope, where, len(stages) - 1)
    return Dockerfile(path, tuple(steps), tuple(stages), tuple(sources))


def _env_pairs(value: str, where: str) -> list[tuple[str, str]]:
    """`ENV A=1 B=2` or the legacy `ENV A one value` as (name, value) pairs."""
    found = words(value, where)
    if len(found) >= 2 and "=" not in found[0]:
        return [(found[0], " ".join(found[1:]))]
    return [(name, rest) for name, _, rest in (w.partition("=") for w in found)]


def _sources(
    step: Instruction, scope: dict[str, str | None], where: str, stage: int
) -> list[Source]:
    """What one ADD, COPY or RUN (or an ONBUILD of one) reads besides the context."""
    keyword, value, prefix = step.keyword, step.value, ""
    if keyword == "ONBUILD":
        keyword, value = ([*value.split(None, 1), ""])[:2]
        keyword, prefix = keyword.upper(), "ONBUILD "
    flags = tuple(itertools.takewhile(lambda p: p.startswith("--"), value.split()))
    parts = value.split(None, len(flags))
    rest = parts[-1] if len(parts) > len(flags) else ""
    names: list[tuple[str, str]] = []
    if keyword == "ADD":
        try:
            listed = json.loads(rest) if rest.startswith("[") else None
        except ValueError:
            listed = None
        args = [str(a) for a in listed] if isinstance(listed, list) else rest.split()
        names = [("ADD", a) for a in (args[:-1] or args)]
    for flag in flags if keyword in ("COPY", "RUN") else ():
        name, _, given = flag.partition("=")
        if keyword == "COPY" and name.lower() == "--from":
            names.append(("COPY --from", given))
        elif keyword == "RUN" and name.lower() == "--mount":
            options = (o.strip("\"' ").partition("=") for o in given.split(","))
            names += [("RUN --mount from", v) for k, _, v in options if k.lower() == "from"]
    return [
        Source(
            prefix + kind,
            text,
            None if _unset(text, scope) else substitute(text, scope, where),
            flags,
            step.line,
            stage,
        )
        for kind, text in names
    ]


def pin_stages(text: str, pins: dict[int, str]) -> str:
    """Rewrite the FROM instructions starting at the given lines to the given images.

    Line numbers are kept (a multi-line FROM becomes one line plus blank ones) so build
    errors still point at the right line of the author's Dockerfile.
    """
    lines = text.splitlines()
    by_line = {s.line: s for s in instructions(text) if s.keyword == "FROM"}
    for line, image in pins.items():
        step = by_line[line]
        words = step.value.split()
        flags = [w for w in words if w.startswith("--")]
        rest = [w for w in words if not w.startswith("--")][1:]
        lines[line - 1] = " ".join(["FROM", *flags, image, *rest])
        for extra in range(line, step.end_line):
            lines[extra] = ""
    return "\n".join(lines) + "\n"
