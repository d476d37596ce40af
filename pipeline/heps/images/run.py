"""`heps run`: plan, then lint, build, smoke-test and push each recipe in dependency order.

A recipe is pushed only after all of its smoke checks passed; a recipe whose base
failed is not built. Independent recipes build in parallel.

SIGINT and SIGTERM stop the run: the containers it started (all labelled with its run
id) are removed, the recipe under way is not pushed, recipes not started stay unbuilt,
and the report says so. Containers left by a run that is gone (SIGKILL) are removed at
the start of the next one.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from heps.core import boundary, log, references
from heps.core.cache import Caches
from heps.core.credentials import Credentials, credentials
from heps.core.errors import ConfigError, StageError, with_retries
from heps.core.paths import write_atomic
from heps.core.settings import Settings
from heps.core.stages import Stage
from heps.images import (
    fingerprint,
    graph,
    lint,
    plan,
    push,
    recipes,
    smoke,
    source,
    versions,
)
from heps.images.build import BuildRequest, builder_for
from heps.images.journal import Entry, Journal
from heps.images.report import (
    BUILT,
    FAILED,
    SKIPPED,
    RecipeReport,
    as_json,
    as_junit,
)
from heps.systems.engine import (
    OWNER_LABEL,
    RECIPE_LABEL,
    RUN_LABEL,
    ContainerEngine,
    EngineError,
    Interrupted,
    config_auth,
    owner_gone,
)
from heps.systems.registry import Registry

T = TypeVar("T")


@dataclass(frozen=True)
class Selection:
    """Which recipes a run considers: named ones, or those changed since a revision and
    everything built on them, or all."""

    names: tuple[str, ...] = ()
    since: str | None = None
    everything: bool = False


@dataclass
class Prepared:
    """The planning half of a run, shared by `heps plan` and `heps run`."""

    settings: Settings
    graph: graph.Graph
    fingerprints: dict[str, fingerprint.Fingerprint]
    registry: Registry
    creds: Credentials | None
    plan: plan.Plan
    seconds: dict[str, float] = field(default_factory=dict)


def _selected(settings: Settings, tree: graph.Graph, selection: Selection) -> set[str] | None:
    if selection.everything:
        return None
    if selection.names:
        unknown = sorted(set(selection.names) - set(tree.nodes))
        if unknown:
            known = ", ".join(tree.order)
            raise ConfigError(f"recipes {', '.join(unknown)}: not found; known: {known}")
        return set(selection.names)
    if selection.since:
        return changed_recipes(tree, source.changed_since(settings.repo, selection.since))
    return None


def changed_recipes(tree: graph.Graph, changed: list[Path]) -> set[str]:
    """Recipes whose own sources are among the `changed` paths (not their dependents)."""
    return {name for name, node in tree.nodes.items() if _touched(node, changed)}


def _touched(node: graph.Node, changed: list[Path]) -> bool:
    roots = versions.source_paths(node)
    return any(path == root or root in path.parents for path in changed for root in roots)


def prepare(settings: Settings, selection: Selection) -> Prepared:
    started = time.monotonic()
    caches = Caches.under(settings.state_dir)
    found = recipes.discover(settings, caches.parsed)
    creds = credentials(settings, config_auth)
    registry = Registry(settings.registry, creds, settings.state_dir / "cache" / "labels")
    if selection.everything:  # every version tag is asked: the registry answers while the
        # graph and the fingerprints are computed; check() raises a problem after the tree's
        registry.look_ahead((r.name, r.version) for r in found)
    try:
        tree = graph.resolve(found, settings.registry, caches.parsed)
        fps = fingerprint.compute(tree, settings.build.ca_bundle, caches.files)
        registry.check()
    except BaseException:
        registry.drop_look_ahead()
        raise
    finally:
        caches.save()  # what was read stands for exactly those bytes, whatever came next
    chosen = _selected(settings, tree, selection)
    # A changed base rebuilds what is built on it; named recipes are built alone.
    made = plan.make(tree, fps, registry, chosen, with_dependents=selection.since is not None)
    seconds = {"plan": time.monotonic() - started}
    return Prepared(settings, tree, fps, registry, creds, made, seconds)


@dataclass
class ReportFiles:
    """Where a run's report goes (JSON, JUnit) and what it said last. Rewritten as each
    recipe finishes, and once more naming the error that ended the command, wherever it
    was met (planning, a stage, promotion, a bug): the CLI's boundary calls `failed`, so
    a run always leaves its report."""

    report: Path | None
    junit: Path | None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    results: list[RecipeReport] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)

    def write(self, results: list[RecipeReport], meta: dict[str, object], mask: log.Masker) -> None:
        self.results, self.meta = results, meta
        self._write(meta, mask, None)

    def failed(self, lines: list[str], mask: log.Masker) -> None:
        """The last report again (none yet: no recipes), with the command's error line."""
        error = "; ".join(lines)
        started = self.started.isoformat(timespec="seconds")
        self._write(
            {"started": started, **self.meta, "complete": False, "error": error}, mask, error
        )

    def _write(self, meta: dict[str, object], mask: log.Masker, error: str | None) -> None:
        if self.report:
            write_atomic(self.report, as_json(self.results, meta, mask))
        if self.junit:
            write_atomic(self.junit, as_junit(self.results, mask, error))


def run_reported(
    prepared: Prepared,
    client: ContainerEngine | None,
    do_push: bool,
    files: ReportFiles,
    masker: log.Masker,
) -> tuple[Runner, list[RecipeReport]]:
    """A run that always leaves its report: `files` are rewritten atomically as each
    recipe finishes and once more at the end, on errors and signals too, so what was
    pushed is named; then the run's journal is closed."""

    def write(complete: bool) -> None:
        meta = _meta(runner, files.started, do_push, complete)
        files.write(runner.results(), meta, masker)

    runner = Runner(prepared, client, do_push, partial(write, False))
    try:
        results = runner.run()
    finally:
        write(True)
    runner.finished()
    return runner, results


def _meta(runner: Runner, started: datetime, pushed: bool, complete: bool) -> dict[str, object]:
    """The report's header: which run, whether it is complete or a report so far, on which
    registry, how long, whether it pushed."""
    cfg = runner.p.settings
    return {
        "run": runner.run_id,
        "complete": complete,
        "interrupted": signal.Signals(runner.interrupted).name if runner.interrupted else None,
        "started": started.isoformat(timespec="seconds"),
        "registry": cfg.registry.host,
        "namespace": cfg.registry.namespace,
        "pushed": pushed,
        "parallel": cfg.build.parallel,
        "plan_seconds": round(runner.p.seconds["plan"], 3),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 3),
    }


class Runner:
    """Carries one run: which images exist locally, what failed, the per-recipe reports."""

    def __init__(
        self,
        prepared: Prepared,
        client: ContainerEngine | None,
        do_push: bool,
        progress: Callable[[], None] | None = None,
    ):
        self.p = prepared
        self.client = client
        self.do_push = do_push
        self.progress = progress
        """Called as each recipe finishes: writes the report so far."""
        self.report_problem: str | None = None
        """Why the report so far could not be written (a full disk), once said."""
        self.masker = log.Masker.of([prepared.creds.password.value] if prepared.creds else [])
        """For the tracebacks a bug leaves in the state folder."""
        self.image_ids: dict[str, str] = {}
        self.reports: dict[str, RecipeReport] = {}
        self.before: dict[str, RecipeReport] = {}
        """Each report as planned, before a thread starts writing to it."""
        self.running: set[str] = set()
        self.run_id = uuid.uuid4().hex[:12]
        """Labels every container this run starts (io.heps.run)."""
        self.journal = Journal(prepared.settings.state_dir, self.run_id)
        self.recovered: list[Entry] = []
        """Pushes of runs gone before their report, named in this run's report."""
        self.stop = threading.Event()
        self.interrupted: int | None = None
        """The signal that stopped the run, if one did."""
        self.at: dict[str, Stage] = {}
        """The stage each recipe is in (or failed in)."""
        self.bad_input: set[str] = set()
        """Recipes that failed on a ConfigError: the run exits 2, not 1."""

    def revision(self, name: str) -> source.Revision:
        """The commit, and whether this recipe's own sources differ from it."""
        return source.revision(
            self.p.settings.repo, versions.source_paths(self.p.graph.nodes[name])
        )

    def references(self, entry: plan.PlanEntry) -> tuple[str, ...]:
        """Tags a build gets: the version tag and VERSION-g<commit>, or the rebuild tag
        alone when only what it is built on changed (the version tag never moves)."""
        if entry.rebuild:
            return (entry.reference,)
        repo = self.p.settings.registry.repository(entry.name)
        rev = self.revision(entry.name)
        tag = references.immutable_tag(entry.version, rev.commit, rev.dirty, entry.fingerprint)
        return (f"{repo}:{entry.version}", f"{repo}:{tag}")

    @property
    def engine(self) -> ContainerEngine:
        if self.client is None:
            raise AssertionError("a run with recipes to build needs a Docker engine")
        return self.client

    def base_image(self, name: str) -> str:
        """Local image ID of a base: built in this run, or pulled by its registry digest."""
        if name in self.image_ids:
            return self.image_ids[name]
        found = self.p.plan.looked_up[name]
        digest = found.digest
        if digest is None or self.p.registry.digest(name, digest) is None:
            raise StageError(Stage.BUILD, f"base {found.reference} vanished from the registry")
        repo = self.p.settings.registry.repository(name)
        log.phase(Stage.BUILD, name, f"pulling base {repo}@{digest}")
        image_id = self.engine.pull(repo, digest, self.p.creds)
        self.image_ids[name] = image_id
        return image_id

    def _timed(self, report: RecipeReport, stage: Stage, action: Callable[[], T]) -> T:
        if self.stop.is_set():
            raise Interrupted(stage, f"interrupted before the {stage} stage")
        started = time.monotonic()
        self.at[report.name] = stage
        try:
            return action()
        finally:
            report.seconds[stage] = round(time.monotonic() - started, 3)

    def one(self, entry: plan.PlanEntry) -> RecipeReport:
        """Lint, build, smoke-test and push one recipe; failures land in its report."""
        report = self.reports[entry.name]
        self.at[entry.name] = Stage.PUSH if self.do_push else Stage.LINT
        try:
            if self.do_push and entry.version_taken:
                node = self.p.graph.nodes[entry.name]
                raise StageError(
                    Stage.VERSION, versions.version_taken(node, entry.image, entry.built_from)
                )
            completed = None
            if self.do_push:
                completed = push.complete(
                    self.p.registry, entry.name, tuple(report.references), entry.fingerprint
                )
            if completed is None:
                self._ship(entry, report)
            else:
                self._pushed(report, completed)
            report.status = BUILT
        except (StageError, EngineError) as exc:  # EngineError: refused something mid-stage
            report.status = FAILED
            report.failed_stage, report.error = self._failure(report, exc)
            log.phase(report.failed_stage, entry.name, f"FAILED: {report.error}")
        except Exception as exc:  # the recipe's boundary: it fails alone, in one line
            stage = self.at[entry.name]
            where = f"{stage} of {entry.name}"
            kind, lines = boundary.describe(exc, where, self.p.settings.state_dir, self.masker)
            if kind == boundary.Kind.INPUT:
                self.bad_input.add(entry.name)  # the run exits 2, as for bad input anywhere
            report.status, report.failed_stage, report.error = FAILED, stage, "; ".join(lines)
            log.phase(stage, entry.name, f"FAILED: {report.error}")
        return report

    def _failure(self, report: RecipeReport, exc: StageError | EngineError) -> tuple[Stage, str]:
        """The failed stage and what to report of it."""
        if isinstance(exc, StageError):
            stage = exc.stage
        else:
            ran = (Stage.PUSH, Stage.SMOKE, Stage.BUILD)
            stage = next((s for s in ran if s in report.seconds), Stage.BUILD)
        if not (isinstance(exc, Interrupted) or self.stop.is_set()):
            return stage, str(exc)
        # Once stopping, the engine's complaints about containers removed under it say
        # nothing; an interrupted push says itself what it pushed.
        detail = f": {exc}" if stage == Stage.PUSH else "; not pushed"
        return stage, f"interrupted ({self._signal_name()}) during {stage}{detail}"

    def _ship(self, entry: plan.PlanEntry, report: RecipeReport) -> None:
        """Lint, build, smoke-test and (unless --no-push) push one recipe."""
        node = self.p.graph.nodes[entry.name]
        settings = self.p.settings
        result = self._timed(
            report, Stage.LINT, lambda: lint.lint(self.p.graph, entry.name, settings.lint)
        )
        report.lint = list(result.findings)
        for finding in result.findings:
            log.phase(Stage.LINT, entry.name, str(finding))
        if result.failed:
            raise StageError(Stage.LINT, "; ".join(str(f) for f in result.findings[:5]))
        request = BuildRequest(
            node=node,
            fingerprint=self.p.fingerprints[entry.name],
            tags=tuple(report.references),
            bases={b: self.base_image(b) for b in self.p.graph.base_names(entry.name)},
            revision=self.revision(entry.name).commit,
            source_url=settings.build.source_url,
            ca_bundle=settings.build.ca_bundle,
            debian_mirror=settings.build.debian_mirror,
        )
        builder = builder_for(node.recipe, self.engine, self.stop)
        built = self._timed(report, Stage.BUILD, lambda: builder.build(request))
        self.image_ids[entry.name] = built.image_id
        checker = smoke.Checker(
            self.engine,
            {RUN_LABEL: self.run_id, RECIPE_LABEL: entry.name},
            self.stop,
            settings.smoke.timeout,
        )
        report.smoke = self._timed(
            report, Stage.SMOKE, lambda: smoke.run_all(checker, node.recipe, built.image_id)
        )
        failed = [r for r in report.smoke if not r.passed]
        if failed:
            raise StageError(Stage.SMOKE, "; ".join(f"{r.name}: {r.detail}" for r in failed))
        if self.do_push:
            refs = tuple(report.references)
            self.at[entry.name] = Stage.PUSH
            intent = self.journal.intend(
                entry.name, entry.version, entry.fingerprint, built.image_id, refs
            )
            pushed = self._timed(
                report,
                Stage.PUSH,
                lambda: with_retries(  # a registry outage: retried, for this recipe alone
                    partial(
                        push.push,
                        self.engine,
                        self.p.registry,
                        self.p.creds,
                        entry.name,
                        built.image_id,
                        refs,
                        entry.fingerprint,
                        self.stop,
                    )
                ),
            )
            self.journal.pushed(intent, pushed.digest)
            self._pushed(report, pushed)

    @staticmethod
    def _pushed(report: RecipeReport, pushed: push.Pushed) -> None:
        report.digest, report.pin, report.pushed = pushed.digest, pushed.immutable, True

    def _signal_name(self) -> str:
        return signal.Signals(self.interrupted).name if self.interrupted else "stopped"

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM set the stop event (main thread only: elsewhere, no handlers)."""

        def handle(signum: int, _frame: object) -> None:
            if self.interrupted is None:
                self.interrupted = signum
                name = signal.Signals(signum).name
                log.phase(Stage.RUN, None, f"{name}: stopping; nothing more is pushed")
            self.stop.set()

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def remove_containers(self, labels: dict[str, str]) -> None:
        """Remove this run's (or, at the start, dead runs') labelled containers."""
        if self.client is None:
            return
        for container_id, found in self.client.labelled(labels):
            ours = bool(labels.get(RUN_LABEL)) or owner_gone(found.get(OWNER_LABEL, ""))
            if ours and self.client.remove_container(container_id):
                what = f"removed container {container_id[:12]} of run {found.get(RUN_LABEL)}"
                log.phase(Stage.RUN, found.get(RECIPE_LABEL), what)

    def run(self) -> list[RecipeReport]:
        for entry in self.p.plan.entries:
            self.reports[entry.name] = RecipeReport(
                name=entry.name,
                version=entry.version,
                reason=entry.reason,
                image=entry.reference,
                detail=entry.detail,
                fingerprint=entry.fingerprint,
                references=list(self.references(entry)) if entry.build else [entry.reference],
                digest=entry.digest,
                pin="" if entry.build else entry.reference,
            )
        self._recover()
        self.before = {
            n: replace(r, seconds={}, lint=[], smoke=[]) for n, r in self.reports.items()
        }
        timings = self.p.settings.state_dir / TIMINGS_FILE
        self.remove_containers({OWNER_LABEL: ""})  # left by runs that are gone
        try:
            with self._signals():
                self._schedule(
                    critical_first([e for e in self.p.plan.entries if e.build], _read(timings))
                )
        finally:
            self.remove_containers({RUN_LABEL: self.run_id})
        _remember(timings, self.reports.values())
        return self.results()

    def results(self) -> list[RecipeReport]:
        """Every recipe's report; of those under way (their threads still write to them),
        the state before they started, so a report written meanwhile reads consistent data."""
        return [
            self.before[e.name] if e.name in self.running else self.reports[e.name]
            for e in self.p.plan.entries
        ]

    def _recover(self) -> None:
        """Name in this run's report what runs gone before their report pushed (found
        in the registry again by fingerprint, so skipped or completed here)."""
        for left in self.journal.leftovers():
            report = self.reports.get(left.name)
            if report is None or report.fingerprint != left.fingerprint:
                continue
            self.recovered.append(left)
            report.detail = f"pushed by interrupted run {left.run}"
            log.phase(
                Stage.RUN,
                left.name,
                f"{left.references[-1]}@{left.digest}: pushed by run {left.run}, "
                "which ended before its report; reported here",
            )

    def finished(self) -> None:
        """The run's report is written: its journal, and what it recovered, can go."""
        self.journal.close()
        self.journal.forget(self.recovered)

    def _progress(self) -> None:
        """The report so far, written as each recipe finishes; a failure is said once
        (the pushes are in the journal meanwhile) and the run goes on."""
        if self.progress is None:
            return
        try:
            self.progress()
        except OSError as exc:
            if self.report_problem is None:
                self.report_problem = boundary.environment_line(exc)
                log.phase(Stage.RUN, None, f"report not written: {self.report_problem}")

    def _schedule(self, waiting: list[plan.PlanEntry]) -> None:
        """Start recipes as their bases are built and slots free up, in `waiting`'s order."""
        entries = {e.name: e for e in self.p.plan.entries}
        for entry in self.p.plan.entries:
            if not entry.build:
                log.phase(Stage.PLAN, entry.name, f"skipped: {entry.reference} is unchanged")
        running: dict[Future[RecipeReport], str] = {}
        slots = self.p.settings.build.parallel
        with ThreadPoolExecutor(max_workers=slots) as pool:
            while waiting or running:
                if self.stop.is_set():
                    for entry in waiting:
                        report = self.reports[entry.name]
                        report.status, report.failed_stage = FAILED, Stage.BUILD
                        report.error = f"not built: the run was interrupted ({self._signal_name()})"
                    waiting = []
                    # Ends the smoke checks under way at once (again each turn: a check
                    # may have started its container just after the previous sweep).
                    self.remove_containers({RUN_LABEL: self.run_id})
                for entry in list(waiting):  # critical path first, as slots free up
                    bases = [b for b in entry.bases if b in entries and entries[b].build]
                    failed = [b for b in bases if self.reports[b].status == FAILED]
                    if failed:
                        waiting.remove(entry)
                        report = self.reports[entry.name]
                        report.status, report.failed_stage = FAILED, Stage.BUILD
                        report.error = f"not built: its base {', '.join(failed)} failed"
                        log.phase(Stage.BUILD, entry.name, report.error)
                    elif len(running) < slots and all(
                        self.reports[b].status == BUILT for b in bases
                    ):
                        waiting.remove(entry)
                        self.running.add(entry.name)
                        running[pool.submit(self.one, entry)] = entry.name
                if not running:
                    continue
                # A timeout, so a signal is acted on while recipes are still under way.
                done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    self.running.discard(running.pop(future))
                    future.result()
                if done:
                    self._progress()


TIMINGS_FILE = "build-seconds.json"
"""Per recipe, the seconds its last build took (lint to push): the critical path's weights."""


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _remember(path: Path, reports: Iterable[RecipeReport]) -> None:
    built = {r.name: round(sum(r.seconds.values()), 3) for r in reports if r.status == BUILT}
    if built:  # a no-op run writes nothing
        write_atomic(path, json.dumps(_read(path) | built, indent=1, sort_keys=True) + "\n")


def critical_first(
    entries: list[plan.PlanEntry], seconds: dict[str, float]
) -> list[plan.PlanEntry]:
    """`entries` (in build order), those heading the longest remaining chain of build
    seconds first (a recipe's own last known seconds plus its longest chain of recipes
    built on it), then those with the most dependents: the makespan's lower bound is the
    longest chain, so its head must never wait behind a short leaf."""
    users: dict[str, list[str]] = {e.name: [] for e in entries}
    for entry in entries:
        for base in entry.bases:
            if base in users:
                users[base].append(entry.name)
    chain: dict[str, float] = {}
    below: dict[str, set[str]] = {}
    for entry in reversed(entries):
        mine = users[entry.name]
        chain[entry.name] = seconds.get(entry.name, 0.0) + max(
            (chain[u] for u in mine), default=0.0
        )
        below[entry.name] = set(mine).union(*(below[u] for u in mine))
    rank = {e.name: i for i, e in enumerate(entries)}
    return sorted(entries, key=lambda e: (-chain[e.name], -len(below[e.name]), rank[e.name]))


def summary(reports: list[RecipeReport]) -> str:
    """A table for the terminal and the CI log."""
    rows = [("RECIPE", "VERSION", "STATUS", "WHY", "IMAGE / ERROR")]
    for r in reports:
        if r.status == FAILED:
            detail = f"{r.failed_stage}: {(r.error or '').splitlines()[0][:110]}"
        else:
            detail = f"{r.image}@{r.digest}" if r.digest else r.image
        rows.append((r.name, r.version, r.status, r.reason, detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4]
        for row in rows
    ]
    built = sum(r.status == BUILT for r in reports)
    skipped = sum(r.status == SKIPPED for r in reports)
    failed = sum(r.status == FAILED for r in reports)
    lines.append(f"{built} built, {skipped} skipped, {failed} failed")
    return "\n".join(lines)
