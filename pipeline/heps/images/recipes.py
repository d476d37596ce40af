"""Recipes: `app-recipes/<name>/recipe.yaml` read, validated and turned into plain data.

All problems of all recipes are collected before anything else runs, so a user fixes a
tree in one pass; any problem stops the pipeline with exit 2 and nothing built.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache as cache_once
from pathlib import Path
from typing import Any

import re2
import yaml

from heps.core import cache, quantity
from heps.core.bounded import read_text
from heps.core.errors import ConfigError
from heps.core.paths import confine
from heps.core.settings import NodeSettings, Settings
from heps.core.validation import load_yaml_text, validate

RECIPE_FILE = "recipe.yaml"
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 8 << 20  # a pattern that needs more is refused at load, not at smoke
_RE2_OPTIONS.log_errors = False  # the problem is reported once, as one line naming the field


@cache_once
def expectation(pattern: str) -> re2._Regexp:
    """`expect_output` compiled by RE2, multi-line: linear time in the output whatever the
    pattern, so `^(a+)+$` cannot hang a smoke test (Python's `re` backtracks forever)."""
    return re2.compile(f"(?m){pattern}", _RE2_OPTIONS)


def _check_expectation(pattern: str, field: str, display: str) -> str | None:
    """The problem with an `expect_output` pattern, or None."""
    try:
        re.compile(pattern)  # Python's messages for ordinary mistakes
        expectation(pattern)
    except re.error as exc:
        return (
            f"{display}: {field}: not a valid regular expression ({exc}); "
            "fix it or escape the special characters"
        )
    except re2.error as exc:
        why = b"".join(exc.args).decode("utf-8", "replace") if exc.args else "unsupported"
        return (
            f"{display}: {field}: not supported by RE2 ({why}); "
            "drop backreferences and lookaround, which RE2 cannot match in linear time"
        )
    return None


@dataclass(frozen=True)
class SmokeCommand:
    name: str
    run: tuple[str, ...]
    expect_output: str = ""
    expect_exit: int = 0
    timeout: float | None = None


@dataclass(frozen=True)
class HttpProbe:
    port: int
    path: str = "/"
    timeout: float = 60.0
    cpu_seconds: float | None = None
    """Budget: CPU the container may use until it answers (a start made costly fails)."""


@dataclass(frozen=True)
class Smoke:
    structure: Path | None = None
    commands: tuple[SmokeCommand, ...] = ()
    http: HttpProbe | None = None


@dataclass(frozen=True)
class Profile:
    display_name: str
    description: str = ""
    cpu: Decimal | None = None
    """Cores, exact, in whole millicores."""
    memory: str | None = None
    """Canonical quantity (`16Gi`, or whole bytes), what the hub and Kubernetes parse."""
    gpu: int = 0
    default: bool = False
    node_selector: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DockerBuild:
    context: Path
    dockerfile: Path
    args: dict[str, str] = field(default_factory=dict)
    target: str | None = None


@dataclass(frozen=True)
class Bootstrap:
    suite: str
    variant: str = "minbase"
    include: tuple[str, ...] = ()
    mirror: str | None = None
    cmd: tuple[str, ...] = ("bash",)


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    description: str
    folder: Path
    """Absolute path of the recipe folder."""
    repo: Path
    """Repository root, which every path of the recipe stays inside."""
    display: str
    """Repository-relative path of recipe.yaml, used in every message."""
    smoke: Smoke
    build: DockerBuild | None = None
    bootstrap: Bootstrap | None = None
    profile: Profile | None = None

    def show(self, path: Path) -> str:
        """`path` as messages print it: relative to the repository."""
        return str(path.relative_to(self.repo)) if self.repo in path.parents else str(path)

    @property
    def user_facing(self) -> bool:
        """Offered to users in JupyterHub, so held to the stricter lint rules."""
        return self.profile is not None


def discover(settings: Settings, parsed: cache.Store | None = None) -> list[Recipe]:
    """Every recipe under the recipes folder, sorted by name; ConfigError lists all problems.

    With `parsed`, a recipe.yaml whose exact text was read and validated before is not
    read again; everything it names on disk is checked afresh all the same."""
    problems: list[str] = []
    recipes: list[Recipe] = []
    repo = settings.repo
    for folder in sorted(p for p in settings.recipes_path.iterdir() if p.is_dir()):
        if folder.name.startswith("."):
            continue
        file = folder / RECIPE_FILE
        display = str(file.relative_to(repo))
        if not file.exists():
            problems.append(f"{display}: missing; add a recipe.yaml or remove the folder")
            continue
        try:
            file = confine(repo, file, file=display, field="recipe folder")
            recipes.append(_load(file, display, repo, settings.largest_node, parsed))
        except ConfigError as exc:
            problems.extend(exc.problems)
    seen: dict[str, str] = {}
    for recipe in recipes:
        if recipe.name in seen:
            problems.append(
                f"{recipe.display}: name: '{recipe.name}' is also the name of {seen[recipe.name]}; "
                "rename one of them"
            )
        seen.setdefault(recipe.name, recipe.display)
    if problems:
        raise ConfigError(problems)
    return recipes


def _unreadable(build: DockerBuild, repo: Path) -> list[str]:
    """The Dockerfile and .dockerignore are read as text by every later stage: a size or
    encoding problem is reported here, once, naming the file, before anything runs."""
    problems = []
    ignore = build.context / ".dockerignore"  # the Dockerfile is confined already
    for path in (build.dockerfile, ignore):
        if path.exists() or path.is_symlink():  # a folder of that name is refused too
            try:
                shown = str(path.relative_to(repo))
                if path is ignore:
                    confine(repo, path, file=shown, field="the file itself")
                read_text(path, shown)
            except ConfigError as exc:
                problems.extend(exc.problems)
    return problems


class _Paths:
    """Paths a recipe names, resolved from its folder; every problem collected."""

    def __init__(self, folder: Path, repo: Path, display: str) -> None:
        self.folder, self.repo, self.display = folder, repo, display
        self.problems: list[str] = []

    def local(self, value: str, fld: str, must_exist: bool, is_dir: bool = False) -> Path:
        try:
            path = confine(self.repo, value, file=self.display, field=fld, base=self.folder)
        except ConfigError as exc:
            self.problems.extend(exc.problems)
            return self.folder
        if must_exist and not (path.is_dir() if is_dir else path.is_file()):
            kind = "directory" if is_dir else "file"
            self.problems.append(
                f"{self.display}: {fld}: '{value}' is not a {kind}; create it or fix the path"
            )
        return path


_READERS = ("core/bounded.py", "core/yaml12.py", "core/validation.py", "schemas/recipe.schema.json")


@cache_once
def _readers() -> str:
    """The digest of the code that reads and validates a recipe, PyYAML's version and
    parser among it (yaml12 reads with libyaml where it is built): part of every key."""
    return cache.key(yaml.__version__, str(yaml.__with_libyaml__), cache.code_digest(*_READERS))


def _parsed(file: Path, display: str, parsed: cache.Store | None) -> dict[str, Any]:
    """recipe.yaml as validated data: from `parsed` when this exact text was validated
    before, else read (errors are never kept, so bad input is refused afresh each time)."""
    text = read_text(file, display)
    entry = cache.key("recipe", _readers(), text) if parsed is not None else ""
    if parsed is not None and isinstance(known := parsed.get(entry), dict):
        return known
    data: dict[str, Any] | None = load_yaml_text(text, display)
    if data is None:
        raise ConfigError(f"{display}: empty file; see pipeline/heps/schemas/recipe.schema.json")
    errors = validate(data, "recipe", file, display)
    if errors:
        raise ConfigError(errors)
    if parsed is not None and _as_json(data) == data:  # kept only if JSON holds it exactly
        parsed.put(entry, data)
    return data


def _as_json(data: dict[str, Any]) -> Any:
    """`data` through JSON and back; None when JSON cannot hold it (a timestamp)."""
    try:
        return json.loads(json.dumps(data))
    except (TypeError, ValueError):
        return None


def _load(
    file: Path, display: str, repo: Path, node: NodeSettings, parsed: cache.Store | None = None
) -> Recipe:
    data = _parsed(file, display, parsed)
    paths = _Paths(file.parent, repo, display)  # `file` is resolved (confined) already
    if data["name"] != paths.folder.name:
        paths.problems.append(
            f"{display}: name: '{data['name']}' differs from the folder name "
            f"'{paths.folder.name}'; rename one so they match"
        )
    build, bootstrap = _build_of(data, paths)
    smoke = _smoke_of(data["smoke"], paths)
    profile = _profile_of(data["profile"], node, paths) if "profile" in data else None
    if paths.problems:
        raise ConfigError(paths.problems)
    return Recipe(
        name=data["name"],
        version=data["version"],
        description=data["description"],
        folder=paths.folder,
        repo=repo,
        display=display,
        smoke=smoke,
        build=build,
        bootstrap=bootstrap,
        profile=profile,
    )


def _profile_of(raw: dict[str, Any], node: NodeSettings, paths: _Paths) -> Profile:
    """The profile with cpu and memory parsed by the Kubernetes grammar and bounded by
    the largest node: what the hub offers must be something a node can run."""
    values = dict(raw)
    bounds = (
        ("cpu", lambda v: quantity.cpu(v, node.cpu)),
        ("memory", lambda v: quantity.canonical_memory(quantity.memory(v, node.memory))),
    )
    for key, parse in bounds:
        if key in values:
            try:
                values[key] = parse(values[key])
            except quantity.QuantityError as exc:
                paths.problems.append(f"{paths.display}: profile.{key}: {exc}")
                values[key] = None
    if values.get("gpu", 0) > node.gpus:
        paths.problems.append(
            f"{paths.display}: profile.gpu: {values['gpu']} GPUs: more than the largest "
            f"node's {node.gpus} (heps.yaml largest_node.gpus)"
        )
    return Profile(**values)


def _build_of(data: dict[str, Any], paths: _Paths) -> tuple[DockerBuild | None, Bootstrap | None]:
    if "bootstrap" in data:
        b = data["bootstrap"]
        return None, Bootstrap(
            suite=b["suite"],
            variant=b.get("variant", "minbase"),
            include=tuple(b.get("include", ())),
            mirror=b.get("mirror"),
            cmd=tuple(b.get("cmd", ("bash",))),
        )
    b = data.get("build", {})
    build = DockerBuild(
        context=paths.local(b.get("context", "."), "build.context", True, is_dir=True),
        dockerfile=paths.local(b.get("dockerfile", "Dockerfile"), "build.dockerfile", True),
        args=dict(b.get("args", {})),
        target=b.get("target"),
    )
    if not paths.problems:
        paths.problems.extend(_unreadable(build, paths.repo))
    return build, None


def _smoke_of(s: dict[str, Any], paths: _Paths) -> Smoke:
    structure = paths.local(s["structure"], "smoke.structure", True) if "structure" in s else None
    smoke = Smoke(
        structure=structure,
        commands=tuple(
            SmokeCommand(
                name=c["name"],
                run=tuple(c["run"]),
                expect_output=c.get("expect_output", ""),
                expect_exit=c.get("expect_exit", 0),
                timeout=c.get("timeout"),
            )
            for c in s.get("commands", ())
        ),
        http=HttpProbe(**s["http"]) if "http" in s else None,
    )
    for index, command in enumerate(smoke.commands):
        field_name = f"smoke.commands[{index}].expect_output"
        problem = _check_expectation(command.expect_output, field_name, paths.display)
        if problem:
            paths.problems.append(problem)
    names = [c.name for c in smoke.commands]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        paths.problems.append(
            f"{paths.display}: smoke.commands: name '{dup}' is used twice; make names unique"
        )
    return smoke
