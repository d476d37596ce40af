"""Dockerfiles read as the Docker builder reads them: instructions with line numbers,
and FROM lines resolved with the global ARGs the way the builder resolves them.

Instructions come from `dockerfile-parse` (parser directives such as `escape`, line
continuations, comments inside them, line spans). Its own ARG expansion is not used:
dockerfile-parse 2.0 leaves `ARG BASE=${REGISTRY}/${OWNER}/base` unexpanded when BASE is
used in FROM, and turns `${TAG:-1.35}` into `:-1.35}`; both are everyday forms here, so
`parse` evaluates the global ARGs itself: each default expanded with the ARGs declared
before it, `--build-arg` values overriding declared ARGs only, stage ARGs never reaching
a FROM.
"""

from __future__ import annotations

import io
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

_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


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
class Dockerfile:
    path: Path
    instructions: tuple[Instruction, ...]
    stages: tuple[Stage, ...]


def substitute(text: str, values: dict[str, str | None]) -> str:
    """Expand $VAR, ${VAR}, ${VAR:-word} and ${VAR:+word} as the Docker builder does."""

    def expand(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        value = values.get(name)
        if match.group(2) == "-":
            return value if value else match.group(3)
        if match.group(2) == "+":
            return match.group(3) if value else ""
        return value or ""

    return _VAR.sub(expand, text)


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
    parser = DockerfileParser(fileobj=io.StringIO(text))
    found = [
        Instruction(i["instruction"], i["value"].strip(), i["startline"] + 1, i["endline"] + 1)
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
    overridden by `build_args`."""
    steps = instructions(read_text(path, shown), parsed)
    scope: dict[str, str | None] = {}
    stages: list[Stage] = []
    aliases: set[str] = set()
    for step in steps:
        if step.keyword == "ARG" and not stages:  # global ARGs: the only ones FROM sees
            for name, default in parse_args(step.value, f"{shown}:{step.line}").items():
                if name in build_args:
                    scope[name] = build_args[name]
                else:
                    scope[name] = None if default is None else substitute(default, scope)
        elif step.keyword == "FROM":
            words = step.value.split()
            platform = None
            while words and words[0].startswith("--"):
                flag = words.pop(0)
                if flag.startswith("--platform="):
                    platform = flag.split("=", 1)[1]
            image = substitute(words[0], scope) if words else ""
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
    return Dockerfile(path=path, instructions=tuple(steps), stages=tuple(stages))


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
