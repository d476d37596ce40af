"""`heps review --base REV`: what a merge request will do, for the person approving it.

Recipes changed (and new), recipes rebuilt because their base changed, lint findings,
build and smoke results from a `heps run --report`, each image's size against what
the testbed overlay runs now, the rendered manifests' diff per overlay, and the Jenkins
job XML diff when `jenkins/` changed. Short when little changed: empty sections are
left out. Markdown for people, JSON for tools; secrets masked in both.
"""

from __future__ import annotations

import fnmatch
import html
import itertools
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heps.ci import jenkins_jobs
from heps.cluster import manifests, reconcile
from heps.core import log
from heps.core.errors import ConfigError, HepsError
from heps.core.references import split_reference
from heps.core.settings import SETTINGS_FILE, Settings
from heps.gitops import sources
from heps.images import fingerprint, graph, lint, recipes, source, versions
from heps.images import report as run_report
from heps.images.report import BUILT, RecipeReport
from heps.images.run import changed_recipes
from heps.systems import engine
from heps.systems.engine import ContainerEngine, EngineError
from heps.systems.git import Repository

NEW, CHANGED, BASE_CHANGED = "new", "changed", "base changed"
PIPELINE = (
    *("pipeline/", "scripts/", "jenkins/", ".ci/", "hub/", "user-init/", "scheduler/"),
    *("tests/", "bench/", "conftest.py", "setup.py", "setup.cfg"),  # run by make, pip, tox
    *("sitecustomize.py", "usercustomize.py"),  # Python runs them at start-up
    *("Makefile", "tox.ini", "pyproject.toml"),
    *(".githooks/", ".gitattributes", ".gitmodules"),  # what git would run or fetch
)
"""The pipeline's own code and what runs it: a change to them is code, not data."""


def is_pipeline(path: str) -> bool:
    """Whether a changed file (repository-relative, `/`-separated) is the pipeline's code;
    a `.gitattributes` counts in any folder (git reads each for the files below it)."""
    if path.rpartition("/")[2] == ".gitattributes":
        return True
    return any(path == top or (top[-1] == "/" and path.startswith(top)) for top in PIPELINE)


@dataclass
class AppReview:
    name: str
    version: str
    why: str
    lint: list[str] = field(default_factory=list)
    status: str = "not built"
    """From the run report: built, skipped, failed, or not built (no report)."""
    failed: str = ""
    smoke: list[str] = field(default_factory=list)
    size: str = ""


@dataclass
class Review:
    base: str
    head: str
    apps: list[AppReview] = field(default_factory=list)
    overlays: dict[str, str] = field(default_factory=dict)
    """Overlay -> unified diff of its rendered objects (Secrets masked)."""
    jenkins: str = ""
    problems: list[str] = field(default_factory=list)
    """Why the change cannot be merged as is: own changes without a version bump,
    untracked files in a build context, job definitions `heps jenkins render` refuses."""
    pipeline: list[str] = field(default_factory=list)
    """Changed files of the pipeline itself (PIPELINE): a maintainer must read them."""
    isolated: bool = False
    """Made by `heps ci merge-request`: the change's own code ran nowhere, with nothing."""
    attention: list[str] = field(default_factory=list)
    """What a security reviewer must look at: pipeline settings, jobs and production
    changed, bootstrap mirrors, build contexts beyond the recipe's folder,
    symlinks in a context, and every policy exception the overlays declare."""

    @property
    def empty(self) -> bool:
        return not (
            self.apps
            or self.overlays
            or self.jenkins
            or self.problems
            or self.pipeline
            or self.attention
        )

    def as_json(self, masker: log.Masker) -> str:
        return json.dumps(masker.mask(asdict(self)), indent=2) + "\n"  # mask, then encode

    def markdown(self, masker: log.Masker) -> str:
        """Every string but the headings is untrusted (names, paths, messages, build and
        smoke output): inline text is escaped, output goes in fenced blocks, so none of it
        can open a section, close `<details>`, or carry HTML, links, images or controls."""

        def text(value: str) -> str:
            return _inline(masker.redact(value))

        span = f"{text(self.base[:12])}..{text(self.head)}"
        if self.empty:
            return f"# Review {span}\n\nNothing to review: no recipe, overlay or job changed.\n"
        out = []
        if self.pipeline:
            shown = ", ".join(self.pipeline[:10]) + (", ..." if len(self.pipeline) > 10 else "")
            isolated = "its code did not run with any credential; " if self.isolated else ""
            out.append(
                f"**This merge request changes the pipeline** ({text(shown)}): {isolated}"
                "a maintainer must read it.\n"
            )
        out.append(f"# Review {span}\n")
        if self.problems:
            out.append("## Refused\n")
            out.extend(f"- {text(p)}" for p in self.problems)
            out.append("")
        if self.attention:
            out.append("## Needs a maintainer's eye\n")
            out.extend(f"- {text(p)}" for p in self.attention)
            out.append("")
        if self.apps:
            out.append(
                "| recipe | version | why | lint | build and smoke | size |\n"
                "| --- | --- | --- | --- | --- | --- |"
            )
            for a in self.apps:
                findings = f"{len(a.lint)} finding(s)" if a.lint else "clean"
                result = a.status + (f": {a.failed}" if a.failed else "")
                if a.smoke:
                    passed = sum(s.endswith(": passed") for s in a.smoke)
                    result += f" ({passed}/{len(a.smoke)} smoke)"
                cells = [a.name, a.version, a.why, findings, result, a.size or "-"]
                out.append("| " + " | ".join(map(text, cells)) + " |")
            details = [f"{a.name}: {line}" for a in self.apps for line in a.lint + a.smoke]
            if details:
                out.append("\n<details><summary>lint and smoke details</summary>\n")
                out.append(_fenced(masker.redact("\n".join(details))))
                out.append("\n</details>")
        for overlay, diff in sorted(self.overlays.items()):
            out.append(f"\n## Overlay {text(overlay)}\n\n{_fenced(masker.redact(diff), 'diff')}")
        if self.jenkins:
            out.append(f"\n## Jenkins jobs\n\n{_fenced(masker.redact(self.jenkins), 'diff')}")
        return masker.redact("\n".join(out) + "\n")


_MARKUP = re.compile(r"([\\`*~\[\]|])")
"""What starts Markdown inline markup (code, emphasis, links and images, table cells)
and the backslash that would undo an escape; `<`, `>` and `&` become entities."""


def _inline(value: str) -> str:
    """Untrusted text as one line of Markdown that renders as itself: controls and line
    breaks shown as escapes (a line break could start a section or an HTML block)."""
    flat = log.printable(value).replace("\n", "\\n").replace("\t", " ")
    return html.escape(_MARKUP.sub(r"\\\1", flat), quote=False)


def _fenced(value: str, info: str = "") -> str:
    """Untrusted text as a fenced code block: its fence is longer than any run of
    backticks inside, so no line of it closes the block; controls shown as escapes."""
    body = log.printable(value).rstrip()
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{body}\n{fence}"


def make(settings: Settings, base: str, report: Path | None, masker: log.Masker) -> Review:
    """The review of the change since `base`; its overlay diffs already masked by
    `masker` (they are encoded as YAML here, so masking later would miss escaped forms)."""
    repo = settings.repo
    git = Repository(repo)
    resolved = git.commit_of(base, "--base")
    if resolved is None:
        raise ConfigError(
            f"--base {base}: not a commit of this repository; fetch it or name another"
        )
    head = (git.head() or "unknown")[:12]
    dirty = " (with uncommitted changes)" if git.is_dirty() else ""
    review = Review(resolved, head + dirty)
    tree = graph.resolve(recipes.discover(settings), settings.registry)
    changed_paths = source.changed_since(repo, base)
    changed = changed_recipes(tree, changed_paths)
    affected = tree.dependents(changed)
    runs = _report(report)
    for name in tree.order:
        if name not in affected:
            continue
        recipe = tree.nodes[name].recipe
        existed = git.show(base, recipe.display) is not None
        why = (CHANGED if existed else NEW) if name in changed else BASE_CHANGED
        app = AppReview(name, recipe.version, why)
        app.lint = [str(f) for f in lint.lint(tree, name, settings.lint).findings]
        _add_run(app, runs.get(name))
        review.apps.append(app)
    _add_sizes(settings, review.apps, runs)
    review.problems = versions.unbumped(tree, changed, base)
    paths = [p.relative_to(repo).as_posix() for p in changed_paths]
    review.pipeline = sorted(p for p in paths if is_pipeline(p))
    review.attention = _changed_settings(settings, paths)
    review.attention += [line for name in sorted(changed) for line in _recipe_flags(tree, name)]
    overlays_dir = settings.gitops.overlays_dir
    if any(p.startswith(overlays_dir + "/") for p in paths):
        review.overlays = _overlay_diffs(settings, review.base, review.attention, masker)
    if any(p.startswith("jenkins/") for p in paths):
        try:
            review.jenkins = _jobs_diff(repo, review.base)
        except ConfigError as exc:
            review.problems.extend(f"heps jenkins render refuses: {p}" for p in exc.problems)
    return review


def _report(path: Path | None) -> dict[str, RecipeReport]:
    return {} if path is None else {e.name: e for e in run_report.read(path, f"--report {path}")}


def _add_run(app: AppReview, entry: RecipeReport | None) -> None:
    if entry is None:
        return
    app.status = entry.status
    if entry.failed_stage:
        app.failed = f"{entry.failed_stage}: {(entry.error or '').partition(chr(10))[0][:200]}"
    app.smoke = [
        f"smoke {s.kind} {s.name}: " + ("passed" if s.passed else f"FAILED {s.detail[:200]}")
        for s in entry.smoke
    ]


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _add_sizes(settings: Settings, apps: list[AppReview], runs: dict[str, RecipeReport]) -> None:
    """The built image's size against the image the testbed overlay runs (both from the
    local engine, the old one pulled by digest if missing). Left blank without an engine."""
    built = {a.name: runs[a.name] for a in apps if a.name in runs and runs[a.name].status == BUILT}
    if not built:
        return
    try:
        client = engine.connect()
    except HepsError:
        return
    repositories = {name: settings.registry.repository(name) for name in built}
    try:
        current = sources.current(settings.repo, settings, "testbed", repositories)
    except ConfigError:  # no testbed overlay: nothing runs yet to compare with
        current = []
    running = {item["app"]: item["image"] for item in current if "@sha256:" in item["image"]}
    for app in apps:
        if app.name not in built:
            continue
        refs = built[app.name].references or [built[app.name].image]
        new = _image_size(client, refs[0], pull=False)
        old = _image_size(client, running[app.name], pull=True) if app.name in running else None
        if new is None:
            continue
        if old is None:
            app.size = _human(new)
        else:
            sign = "+" if new >= old else "-"
            app.size = f"{sign}{_human(abs(new - old))} ({_human(old)} to {_human(new)})"


def _image_size(client: ContainerEngine, reference: str, pull: bool) -> int | None:
    found = client.image(reference)
    if found is not None or not pull:
        return found.size if found else None
    repo, _, digest = reference.partition("@")
    try:
        pulled = client.image(client.pull(split_reference(repo)[0], digest, None))
    except EngineError:
        return None
    return pulled.size if pulled else None


_SYNTAX = re.compile(r"#\s*syntax\s*=", re.IGNORECASE)


def _changed_settings(settings: Settings, paths: list[str]) -> list[str]:
    """Files that change the pipeline itself or production, by what they change."""
    overlays = settings.gitops.overlays_dir
    watched = (
        (SETTINGS_FILE, "changes the pipeline's settings (heps.yaml)"),
        ("jenkins/*", "changes the Jenkins jobs or pipelines that hold the credentials"),
        (f"{overlays}/overlays/production/*", "changes the production overlay"),
        (f"{overlays}/base/*", "changes the base of every overlay, production included"),
        # Its sign-in and proxy addresses are only type-checked (heps_hub.values): they say
        # where the hub sends its OAuth client secret and the proxy's token.
        (
            f"{overlays}/overlays/*/hub-values.yaml",
            "changes the hub's values (where its client secret and tokens go)",
        ),
    )
    found = []
    for pattern, what in watched:
        hits = [p for p in paths if fnmatch.fnmatchcase(p, pattern)]
        if hits:
            found.append(f"{what}: {', '.join(hits[:5])}" + (" ..." if len(hits) > 5 else ""))
    return found


def _recipe_flags(tree: graph.Graph, name: str) -> list[str]:
    """A changed recipe's bootstrap mirror, a context beyond its folder, and
    symlinks in its context (sent as links, never followed, but worth a look)."""
    node = tree.nodes[name]
    recipe, build = node.recipe, node.recipe.build
    flags = []
    if recipe.bootstrap is not None and recipe.bootstrap.mirror:
        flags.append(
            f"{recipe.display}: bootstrap.mirror: {recipe.bootstrap.mirror} is fetched by the "
            "build host itself; check it is the site's mirror"
        )
    if node.dockerfile is not None:
        shown = recipe.show(node.dockerfile.path)
        lines = node.dockerfile.path.read_text(encoding="utf-8").lstrip().splitlines()
        directives = itertools.takewhile(lambda line: line.startswith("#"), lines)
        if any(_SYNTAX.match(line) for line in directives):
            flags.append(
                f"{shown}: a '# syntax=' directive names a builder frontend image, code "
                "that BuildKit would run; the pipeline's builder ignores it, remove it"
            )
    if build is not None:
        if not build.context.is_relative_to(recipe.folder):
            where = (
                "the whole repository"
                if build.context == recipe.repo
                else recipe.show(build.context)
            )
            flags.append(
                f"{recipe.display}: build.context: {where} is outside the recipe's folder; "
                "everything in it can reach the image (.git never does)"
            )
        links = [
            rel
            for rel in fingerprint.context_files(recipe, build)
            if (build.context / rel).is_symlink()
        ]
        if links:
            flags.append(
                f"{recipe.display}: build.context: symlinks {', '.join(links[:5])} "
                "(sent as links, never followed)"
            )
    return flags


def _overlay_diffs(
    settings: Settings, base: str, attention: list[str], masker: log.Masker
) -> dict[str, str]:
    root = settings.repo / settings.gitops.overlays_dir
    overlays = sorted(p.name for p in (root / "overlays").iterdir() if p.is_dir())
    diffs = {}
    with tempfile.TemporaryDirectory(prefix="heps-review-") as tmp:
        old_root = Path(tmp)
        Repository(settings.repo).export(base, [settings.gitops.overlays_dir], old_root)
        for overlay in overlays:
            after = _objects(settings.repo, root / "overlays" / overlay, attention, overlay)
            old_folder = old_root / settings.gitops.overlays_dir / "overlays" / overlay
            before = _objects(old_root, old_folder) if old_folder.is_dir() else {}
            text = reconcile.diff(before, after, masker)
            if text:
                diffs[overlay] = text
    return diffs


def _objects(
    repo: Path, folder: Path, attention: list[str] | None = None, overlay: str = ""
) -> dict[manifests.Key, dict[str, Any]]:
    """The rendered objects; with `attention`, every policy exception they declare is
    added to it."""
    try:
        rendered = manifests.render(repo, folder)
        if attention is not None:
            attention += [
                f"overlay {overlay}: policy exception: {line}"
                for line in manifests.declared_exceptions(rendered)
            ]
        return {m.key: m.obj for m in rendered}
    except ConfigError as exc:  # a broken overlay is worth showing, not a crash
        key = ("render", "error", "", folder.name)
        return {key: {"error": "; ".join(exc.problems)}}


def _jobs_diff(repo: Path, base: str) -> str:
    with tempfile.TemporaryDirectory(prefix="heps-review-") as tmp:
        exported = Repository(repo).export(base, ["jenkins"], Path(tmp))
        after, *was = jenkins_jobs.render_each([repo, Path(tmp)] if exported else [repo])
    if isinstance(after, ConfigError):
        raise after
    # the base's definitions, when they did not render (or it had none): everything is new
    before = was[0] if was and not isinstance(was[0], ConfigError) else {}
    return "".join(
        jenkins_jobs.diff(name, before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    )
