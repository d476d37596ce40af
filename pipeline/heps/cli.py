"""`heps`: the command users, operators and Jenkins run.

Exit codes (the contract in DESIGN.md): 0 success, 1 a recipe failed (lint, build,
smoke, push), 2 bad usage, configuration or environment; a command stopped by SIGINT or
SIGTERM (a Jenkins abort) exits 130 or 143 after writing the reports it promised. They
are decided here, in one place, from the two error kinds of `heps.errors`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from heps import __version__
from heps.core import boundary, log
from heps.core.errors import ConfigError

# `heps --help`, `--version` and a bad argument import nothing else (the standard library
# and these): each verb imports what it uses, inside its function.
if TYPE_CHECKING:
    from heps.core import settings
    from heps.gitops.pin import Pin
    from heps.images import graph, recipes
    from heps.images.run import Selection
    from heps.systems.registry import Registry

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise ConfigError(f"usage: {message}; see `{self.prog} --help`")


def _global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--repo, --registry, --namespace and -v, on `heps` itself (with the defaults) and on
    every verb (without: a value given after the verb overrides one given before it)."""

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--repo", type=Path, default=default(Path.cwd()), help="repository root (default: .)"
    )
    parser.add_argument(
        "--registry",
        default=default(None),
        help="registry HOST[:PORT] (default: heps.yaml or embedded)",
    )
    parser.add_argument(
        "--namespace", default=default(None), help="repository namespace / OWNER (default: heps)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False))


Verb = Callable[..., argparse.ArgumentParser]


def _parser() -> argparse.ArgumentParser:
    from heps.platform import command as platform_command

    parser = _Parser(prog="heps", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"heps {__version__}")
    _global_options(parser, defaults=True)
    common = _Parser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    verb = partial(sub.add_parser, parents=[common])
    _image_verbs(verb)
    _gitops_verbs(verb)
    _cluster_verbs(verb)
    _ci_verbs(verb, common)
    platform_command.add_parser(verb, common)
    p = verb("services", help="start or stop the embedded Docker engine and registry")
    p.add_argument("action", choices=["up", "down"])
    p = verb("schema", help="print a published JSON Schema")
    p.add_argument("name", choices=["recipe", "settings", "jobs"])
    return parser


def _selection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipes", nargs="*", help="recipe names (default: all)")
    p.add_argument("--all", action="store_true", help="every recipe")
    p.add_argument("--since", metavar="REV", help="recipes changed since a git revision")


def _gitops_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--push", action="store_true", help="push with retries, not a local commit")
    p.add_argument("--gitops-repo", metavar="URL", help="a separate GitOps repository")
    p.add_argument("--branch", help="branch to push to (default: gitops.branch)")


def _image_verbs(verb: Verb) -> None:
    p = verb("plan", help="show what would be built, in order, and why")
    _selection_options(p)
    p.add_argument("--json", action="store_true", help="the same data as JSON")
    p = verb("lint", help="hadolint and the project's rules on every Dockerfile")
    p.add_argument("recipes", nargs="*", help="recipe names (default: all)")
    p.add_argument(
        "--since", metavar="REV", help="recipes changed since REV; refuse changes without a bump"
    )
    p = verb("run", help="lint, build, smoke-test and push")
    _selection_options(p)
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--junit", type=Path, help="write JUnit XML here")
    p.add_argument(
        "--no-push", action="store_true", help="build and smoke-test only (merge requests)"
    )
    p.add_argument(
        "--promote", metavar="ENV", help="then pin the images in this overlay and commit"
    )
    _gitops_target(p)


def _gitops_verbs(verb: Verb) -> None:
    p = verb("promote", help="pin pushed images in an overlay and commit")
    p.add_argument("--overlay", required=True, metavar="ENV")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--report", type=Path, help="pins from a `heps run --report` file")
    source.add_argument("--from", dest="source", metavar="ENV", help="pins from what ENV runs")
    _gitops_target(p)
    p = verb("status", help="which app runs which version and digest, per overlay")
    p.add_argument("--overlay", metavar="ENV")
    p = verb("rollback", help="pin an earlier digest of an app by a new commit")
    p.add_argument("--overlay", required=True, metavar="ENV")
    p.add_argument("app")
    p.add_argument("--to", metavar="VERSION", help="version to go back to (default: the last pin)")
    _gitops_target(p)


def _cluster_verbs(verb: Verb) -> None:
    p = verb(
        "reconcile", help="render, validate and check an overlay, then apply it to the cluster"
    )
    p.add_argument("--overlay", required=True, metavar="ENV")
    p.add_argument(
        "--dry-run", action="store_true", help="change nothing; show the diff (no cluster needed)"
    )
    p.add_argument("--context", help="kubeconfig context (default: the current one)")


def _ci_verbs(verb: Verb, common: _Parser) -> None:
    p = verb("jenkins", help="render, sync or trigger the Jenkins jobs (jenkins/)")
    jenkins_sub = p.add_subparsers(dest="jenkins_command", required=True, parser_class=_Parser)
    job_verb = partial(jenkins_sub.add_parser, parents=[common])
    j = job_verb("render", help="write every job's config.xml as sync sends it")
    j.add_argument("--out", type=Path, default=Path("build/jenkins"), help="default build/jenkins")
    j = job_verb("sync", help="create/update what differs, delete our stale jobs")
    j.add_argument("--dry-run", action="store_true", help="only print the diff")
    j = job_verb("trigger", help="start a build (and follow it with --wait)")
    j.add_argument("job", help="full name, e.g. heps/reconcile")
    j.add_argument("--param", action="append", default=[], metavar="K=V")
    j.add_argument("--wait", action="store_true", help="wait for the result; exit 1 unless SUCCESS")
    p = verb("review", help="the merge-request report: what changes, and how it went")
    p.add_argument("--base", required=True, metavar="REV", help="what the change is compared with")
    p.add_argument("--report", type=Path, help="the `heps run --report` of this change")
    p.add_argument("--out", type=Path, help="write the Markdown here (default: print it)")
    p.add_argument("--json", type=Path, help="also write the same data as JSON")
    p = verb("ci", help="what the CI jobs run: the trusted pipeline on untrusted input")
    ci_sub = p.add_subparsers(dest="ci_command", required=True, parser_class=_Parser)
    m = ci_sub.add_parser(
        "merge-request",
        parents=[common],
        help="lint, build and smoke-test a merge request's checkout as data; push nothing",
    )
    m.add_argument("--checkout", type=Path, required=True, metavar="DIR", help="the MR's checkout")
    m.add_argument("--base", required=True, metavar="REV", help="the trusted revision in it")
    m.add_argument("--out", type=Path, required=True, metavar="DIR", help="reports go here")
    p = verb("hook", help="git hooks for the shared bare repository")
    p.add_argument("name", choices=["post-receive"])
    p.add_argument("--git-dir", type=Path, default=Path("."), help="the bare repository")


def _selection(args: argparse.Namespace) -> Selection:
    from heps.images.run import Selection

    if sum(bool(x) for x in (args.recipes, args.all, args.since)) > 1:
        raise ConfigError("usage: give recipe names, --all or --since, not several")
    return Selection(tuple(args.recipes), args.since, args.all or not (args.recipes or args.since))


def _unbumped(cfg: settings.Settings, tree: graph.Graph, since: str | None) -> list[str]:
    """With --since: own changes without a version bump, and untracked context files."""
    from heps.images import source, versions
    from heps.images.run import changed_recipes

    if not since:
        return []
    changed = changed_recipes(tree, source.changed_since(cfg.repo, since))
    problems = versions.unbumped(tree, changed, since)
    for problem in problems:
        print(f"heps: error: {problem}", file=sys.stderr)
    return problems


def _plan(cfg: settings.Settings, args: argparse.Namespace) -> int:
    from heps.images.run import prepare

    prepared = prepare(cfg, _selection(args))
    problems = _unbumped(cfg, prepared.graph, args.since)
    if args.json:
        print(json.dumps(prepared.plan.as_json(), indent=2))
        return EXIT_FAILED if problems else EXIT_OK
    for index, entry in enumerate(prepared.plan.entries, 1):
        action = "build" if entry.build else "skip "
        note = "  (version taken: bump it before pushing)" if entry.version_taken else ""
        if entry.rebuild:
            note = f"  ({entry.detail}; as {entry.reference.rsplit(':', 1)[1]})"
        bases = f"  on {', '.join(entry.bases)}" if entry.bases else ""
        print(f"{index:3d}. {action} {entry.name} {entry.version}: {entry.reason}{bases}{note}")
    print(
        f"{len(prepared.plan.to_build)} to build, "
        f"{len(prepared.plan.entries) - len(prepared.plan.to_build)} unchanged"
    )
    return EXIT_FAILED if problems else EXIT_OK


def _lint(cfg: settings.Settings, args: argparse.Namespace) -> int:
    from heps.images import graph, lint, recipes, source
    from heps.images.run import changed_recipes

    tree = graph.resolve(recipes.discover(cfg), cfg.registry)
    if args.since and args.recipes:
        raise ConfigError("usage: give recipe names or --since, not both")
    names = args.recipes or list(tree.order)
    if args.since:
        changed = changed_recipes(tree, source.changed_since(cfg.repo, args.since))
        names = [n for n in tree.order if n in changed]
    unknown = sorted(set(names) - set(tree.nodes))
    if unknown:
        raise ConfigError(
            f"recipes {', '.join(unknown)}: not found; known: {', '.join(tree.order)}"
        )
    failed = 0
    for name in names:
        result = lint.lint(tree, name, cfg.lint)
        for finding in result.findings:
            print(finding)
        failed += result.failed
    problems = _unbumped(cfg, tree, args.since)
    print(f"{len(names)} recipes linted, {failed} failed")
    return EXIT_FAILED if failed or problems else EXIT_OK


def _run(cfg: settings.Settings, args: argparse.Namespace, masker: log.Masker) -> int:
    from heps.core.stages import Stage
    from heps.gitops import sources
    from heps.images import report
    from heps.images.run import ReportFiles, prepare, run_reported, summary
    from heps.systems import engine

    if args.promote and args.no_push:
        raise ConfigError("run --promote: drop --no-push; only pushed images can be pinned")
    files = args.files or ReportFiles(None, None)
    prepared = prepare(cfg, _selection(args))
    if not prepared.plan.to_build:
        log.phase(Stage.PLAN, None, "nothing to do: every image is in the registry")
    client = engine.connect() if prepared.plan.to_build else None

    runner, results = run_reported(prepared, client, not args.no_push, files, masker)
    failed = [r.name for r in results if r.status == report.FAILED]
    print(summary(results))
    if runner.interrupted:
        return 128 + runner.interrupted  # as a shell reports a process ended by the signal
    code = EXIT_USAGE if runner.bad_input else EXIT_FAILED if failed else EXIT_OK
    if not args.promote:
        return code
    shipped = [r for r in results if r.status != report.FAILED and r.digest]
    if shipped:  # what was pushed (or found unchanged) is promoted, failed apps keep their pins
        known = {name: node.recipe for name, node in prepared.graph.nodes.items()}
        pins = sources.pins_from_results(shipped, "run --promote", cfg, known)
        promoted = _promote_pins(cfg, args, prepared.registry, args.promote, pins, known)
        code = max(code, promoted)
    if failed:
        print(
            f"heps: not promoted to {args.promote} (failed): {', '.join(failed)}; "
            "their pins are unchanged",
            file=sys.stderr,
        )
    return code


def _recipes(cfg: settings.Settings) -> dict[str, recipes.Recipe]:
    from heps.core.cache import Caches
    from heps.images import recipes

    parsed = Caches.under(cfg.state_dir).parsed
    try:
        return {r.name: r for r in recipes.discover(cfg, parsed)}
    finally:
        parsed.save()


def _docker_auth(host: str) -> dict[str, str]:
    """The Docker config's credentials, through the engine's SDK: imported only when the
    environment holds none (its import is a tenth of a second of every command)."""
    from heps.systems import engine

    return engine.config_auth(host)


def _platform(cfg: settings.Settings, args: argparse.Namespace) -> int:
    from heps.platform import command

    return command.run(cfg, args)


def _registry(cfg: settings.Settings) -> Registry:
    from heps.core import credentials
    from heps.systems.registry import Registry

    creds = credentials.credentials(cfg, _docker_auth)
    registry = Registry(cfg.registry, creds, cfg.state_dir / "cache" / "labels")
    registry.check()
    return registry


def _promote_pins(
    cfg: settings.Settings,
    args: argparse.Namespace,
    registry: Registry,
    overlay: str,
    pins: list[Pin],
    known: dict[str, recipes.Recipe],
    new_branch: str | None = None,
) -> int:
    from heps.gitops import promote

    remote = args.gitops_repo or cfg.gitops.remote
    push = args.push or bool(remote)
    request = promote.Request(overlay, pins, known, push, remote, args.branch, new_branch)
    done = promote.promote(cfg, registry, request)
    for app in done.edit.unused:
        print(f"heps: {app}: not used by overlay {overlay} (nor its bases); not pinned")
    for app, places in sorted(done.edit.used.items()):
        print(f"{app}: {', '.join(places)}")
    if done.commit is None:
        print(f"{overlay}: already pinned, nothing to commit")
    else:
        where = f" on {done.branch}" if done.branch else ""
        tries = f" after {done.attempts} attempts" if done.attempts > 1 else ""
        print(f"{overlay}: committed {done.commit[:12]}{where}{tries}")
    return EXIT_OK


def _promote(cfg: settings.Settings, args: argparse.Namespace) -> int:
    from heps.gitops import promote, sources

    registry = _registry(cfg)
    known = _recipes(cfg)
    if args.report:
        pins = sources.pins_from_report(args.report, cfg, known)
        return _promote_pins(cfg, args, registry, args.overlay, pins, known)
    apps = {name: cfg.registry.repository(name) for name in known}
    pins = sources.pins_from_overlay(cfg.repo, cfg, args.source, apps)
    if not pins:
        raise ConfigError(f"--from {args.source}: that overlay pins no image by digest yet")
    branch = promote.production_branch([p.app for p in pins])
    return _promote_pins(cfg, args, registry, args.overlay, pins, known, branch)


def _status(cfg: settings.Settings, args: argparse.Namespace) -> int:
    from heps.core.references import split_reference
    from heps.gitops import sources
    from heps.images.journal import Journal

    registry = _registry(cfg)
    apps = {name: cfg.registry.repository(name) for name in _recipes(cfg)}
    root = cfg.repo / cfg.gitops.overlays_dir / "overlays"
    if args.overlay:
        overlays = [args.overlay]
    else:
        overlays = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    rows = [("OVERLAY", "APP", "TAG", "DIGEST", "IN REGISTRY", "WHERE")]
    for overlay in overlays:
        for item in sources.current(cfg.repo, cfg, overlay, apps):
            _, tag, digest = split_reference(item["image"])
            if digest is None:
                held = "not pinned"
            else:
                held = "yes" if registry.manifest(item["app"], digest) else "NO"
            rows.append((overlay, item["app"], tag or "-", digest or "-", held, item["where"]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5])
    for left in Journal(cfg.state_dir, None).leftovers():
        print(
            f"pushed by run {left.run}, which ended before its report: {left.name} "
            f"{left.references[-1]}@{left.digest}; `heps run {left.name} --promote ENV` "
            "reports and pins it without rebuilding"
        )
    return EXIT_OK


def _rollback(cfg: settings.Settings, args: argparse.Namespace) -> int:
    from heps.gitops import sources
    from heps.gitops.pin import Pin

    registry = _registry(cfg)
    known = _recipes(cfg)
    if args.app not in known:
        raise ConfigError(f"rollback {args.app}: no such recipe")
    repository = cfg.registry.repository(args.app)
    if args.to:
        digest = registry.digest(args.app, args.to)
        if digest is None:
            raise ConfigError(
                f"rollback {args.app} --to {args.to}: not in registry {cfg.registry.host}"
            )
        pin = Pin(args.app, repository, args.to, digest, args.to, f"rollback to {args.to}")
    else:
        pin = sources.previous_pin(cfg.repo, cfg, args.overlay, args.app, repository)
    return _promote_pins(cfg, args, registry, args.overlay, [pin], known)


def _reconcile(cfg: settings.Settings, args: argparse.Namespace, masker: log.Masker) -> int:
    from heps.cluster import kube_api, reconcile  # the commands below import only what they use
    from heps.core.errors import with_retries
    from heps.images import source

    rendered = reconcile.check(cfg, args.overlay)
    print(f"{args.overlay}: {len(rendered)} objects rendered, valid, policies pass")
    if not kube_api.credentials_present():
        if not args.dry_run:
            raise ConfigError(
                "reconcile: no Kubernetes credentials (KUBECONFIG, ~/.kube/config or in-cluster); "
                "set them, or add --dry-run to diff against the last applied render"
            )
        outcome = reconcile.offline(cfg, args.overlay, rendered, masker)
        where = "the render this machine last applied"
    else:
        revision = source.revision(cfg.repo, [cfg.repo / cfg.gitops.overlays_dir]).commit
        cluster = kube_api.KubeCluster(args.context)
        outcome = with_retries(
            lambda: reconcile.online(
                cfg, args.overlay, rendered, cluster, args.dry_run, revision, masker
            )
        )
        where = "the cluster"
    print(outcome.diff or f"{args.overlay}: no difference from {where}", end="")
    print("" if not outcome.diff else "\n", end="")
    verb = "would change" if args.dry_run else "changed"
    for ref in outcome.changed:
        print(f"{verb}: {ref}")
    for ref in outcome.pruned:
        print(f"{'would prune' if args.dry_run else 'pruned'}: {ref}")
    for ref in outcome.kept:
        print(f"kept: {ref} (no longer labelled as reconciled from {args.overlay})")
    for ref in outcome.rolled_out:
        print(f"rolled out: {ref}")
    return EXIT_OK


def _jenkins(cfg: settings.Settings, args: argparse.Namespace) -> int:
    from heps.ci import jenkins_jobs, jenkins_server
    from heps.core import paths

    if args.jenkins_command == "render":
        out = paths.output_dir(cfg.repo, args.out, "heps jenkins render --out")
        for path in jenkins_jobs.write(jenkins_jobs.render(cfg.repo), out):
            print(path)
        return EXIT_OK
    server = jenkins_server.connect(cfg.jenkins.url)
    if args.jenkins_command == "sync":
        done = jenkins_server.sync(server, jenkins_jobs.render(cfg.repo), args.dry_run)
        print(done.diff, end="")
        verb = "would be " if args.dry_run else ""
        for what in ("created", "updated", "deleted", "unchanged"):
            names = getattr(done, what)
            if names:
                print(f"{verb if what != 'unchanged' else ''}{what}: {', '.join(names)}")
        return EXIT_OK
    parameters = {}
    for pair in args.param:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {pair}: write it as NAME=VALUE")
        parameters[key] = value
    where, result = jenkins_server.trigger(server, args.job, parameters, args.wait)
    print(f"{args.job}: {where}" + (f" {result}" if result else " queued"))
    return EXIT_OK if result in (None, jenkins_server.SUCCESS) else EXIT_FAILED


def _review(cfg: settings.Settings, args: argparse.Namespace, masker: log.Masker) -> int:
    from heps.ci import review
    from heps.core import paths

    done = review.make(cfg, args.base, args.report, masker)
    if args.json:
        paths.write_atomic(args.json, done.as_json(masker))
    if args.out:
        paths.write_atomic(args.out, done.markdown(masker))
        print(f"review written to {args.out}")
    else:
        print(done.markdown(masker), end="")
    for problem in done.problems:
        print(f"heps: error: {problem}", file=sys.stderr)
    return EXIT_FAILED if done.problems else EXIT_OK


def _ci(cfg: settings.Settings, args: argparse.Namespace, masker: log.Masker) -> int:
    from heps.ci import merge_request
    from heps.images.run import summary

    done = merge_request.run(cfg, args.checkout, args.base, args.files, masker)
    print(summary(done.results))
    print("\n".join(str(path) for path in done.written))
    for problem in done.review.problems:
        print(f"heps: error: {problem}", file=sys.stderr)
    if done.interrupted:
        return 128 + done.interrupted  # as `run` does
    return EXIT_FAILED if done.failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run one command; every byte it prints is masked and terminal-safe (URL passwords
    from the start, the run's secrets once its credentials are known)."""
    with log.guarded_output(log.Masker()):
        return _main(argv)


_OUTPUTS = {"run": ("report", "junit"), "review": ("out", "json")}


def _check_outputs(args: argparse.Namespace) -> None:
    """Every file a command will write is checked before it runs: a bad path must not
    surface after a push, with no report. The reports `run` and `ci merge-request`
    promise (`args.files`) are written by the boundary too, naming what ended them,
    once the command has started."""
    from heps.core import paths

    for name in _OUTPUTS.get(args.command, ()):
        value = getattr(args, name)
        if value is not None:
            setattr(args, name, paths.output_file(value, f"--{name}"))
    args.files = None
    if args.command == "run" and (args.report or args.junit):
        from heps.images.run import ReportFiles

        args.files = ReportFiles(args.report, args.junit)
    elif args.command == "ci" and args.ci_command == "merge-request":
        from heps.ci.merge_request import Reports

        args.files = Reports.under(args.out, args.base)


@dataclass
class _Where:
    """What the boundary names when a command fails: the verb and the state folder."""

    command: str = "heps"
    state_dir: Path | None = None
    masker: log.Masker = field(default_factory=log.Masker)
    """What the error line is masked with: the command's secrets once they are known."""
    reports: _Reports | None = None
    """The reports the command promises, written once more naming the error."""


class _Reports(Protocol):
    def failed(self, lines: list[str], mask: log.Masker) -> None: ...


EXIT_CODES = {
    boundary.Kind.INPUT: EXIT_USAGE,
    boundary.Kind.ENVIRONMENT: EXIT_USAGE,
    boundary.Kind.FAILURE: EXIT_FAILED,
    boundary.Kind.TEMPORARY: EXIT_FAILED,
    boundary.Kind.BUG: EXIT_FAILED,
}
"""The one place an error becomes an exit code: permanent errors of input and of the
environment exit 2; failures, temporary errors after their retries and bugs (one line,
the traceback kept in the state folder) exit 1."""


class Terminated(BaseException):
    """SIGTERM (a Jenkins abort) in whatever the command was doing: raised where it runs,
    as SIGINT raises KeyboardInterrupt, so the boundary writes the promised reports. A
    `run` handles both signals itself while its recipes are under way."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


@contextmanager
def _terminable() -> Iterator[None]:
    """SIGTERM raises Terminated while the block runs (main thread only: signal handlers
    can be set nowhere else)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(exc: BaseException, where: _Where) -> tuple[int, list[str]]:
    """An error's exit code and its lines (EXIT_CODES), a bug's traceback kept."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, ["interrupted (SIGINT)"]
    if isinstance(exc, Terminated):
        return 128 + signal.SIGTERM, ["terminated (SIGTERM)"]
    kind, lines = boundary.describe(exc, where.command, where.state_dir, where.masker)
    return EXIT_CODES[kind], lines


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    where = _Where(masker=log.Masker())  # URL passwords only, until credentials are known
    log.setup(where.masker)
    try:
        with _terminable():
            return _command(parser, argv, where)
    except SystemExit:
        raise  # --help and --version
    except BaseException as exc:  # the boundary: whatever happened, one line
        code, lines = exit_code(exc, where)
        lines += _failed_reports(where, lines)
        with log.guarded_output(where.masker):  # an error's text may quote a secret too
            for line in lines:
                print(f"heps: {'' if code > EXIT_USAGE else 'error: '}{line}", file=sys.stderr)
        return code


def _failed_reports(where: _Where, lines: list[str]) -> list[str]:
    """The promised reports, written naming the error; a line more if they cannot be."""
    if where.reports is None:
        return []
    try:
        where.reports.failed(lines, where.masker)
    except Exception as exc:  # said, not raised: the error that ended the command stays first
        _, problems = boundary.describe(exc, where.command, where.state_dir, where.masker)
        if set(problems) <= set(lines):  # the error was the report's own (a full disk)
            return []
        return [f"reports not written: {'; '.join(problems)}"]
    return []


def _command(parser: argparse.ArgumentParser, argv: list[str] | None, where: _Where) -> int:
    args, extra = parser.parse_known_args(argv)
    sub_verb = getattr(args, "jenkins_command", None) or getattr(args, "ci_command", None)
    where.command = " ".join(filter(None, ["heps", args.command, sub_verb]))
    if extra:
        raise ConfigError(
            f"usage: unrecognized arguments: {' '.join(extra)}; see `{where.command} --help`"
        )
    log.setup(where.masker, args.verbose)
    # Imported once the arguments parsed: `--help` and a usage error need none of it.
    from heps.core import credentials, settings
    from heps.core.validation import schema

    if args.command == "schema":
        print(json.dumps(schema(args.name), indent=2))
        return EXIT_OK
    if args.command == "hook":  # runs in a bare repository: no settings to load
        from heps.ci import hook

        where.masker = log.Masker.of([os.environ.get(credentials.JENKINS_TOKEN, "")])
        with log.guarded_output(where.masker):
            log.setup(where.masker, args.verbose)
            return hook.post_receive(args.git_dir.resolve(), sys.stdin, dict(os.environ))
    _check_outputs(args)
    cfg = settings.load(args.repo, registry=args.registry, namespace=args.namespace)
    where.state_dir = cfg.state_dir
    if args.command == "services":
        from heps.systems import services

        action = services.up if args.action == "up" else services.down
        print("\n".join(action(cfg)))
        return EXIT_OK
    # Every secret the command holds, masked in whatever it prints from here on.
    masker = credentials.masker(cfg, credentials.credentials(cfg, _docker_auth))
    where.masker = masker
    commands: dict[str, Callable[[settings.Settings, argparse.Namespace], int]] = {
        "plan": _plan,
        "lint": _lint,
        "run": partial(_run, masker=masker),
        "promote": _promote,
        "status": _status,
        "rollback": _rollback,
        "reconcile": partial(_reconcile, masker=masker),
        "jenkins": _jenkins,
        "review": partial(_review, masker=masker),
        "ci": partial(_ci, masker=masker),
        "platform": _platform,
    }
    command = commands[args.command]
    # Settings and credentials are the operator's and fine: from here the command works on
    # the repository, and whatever ends it is said in the reports it promised as well.
    where.reports = args.files
    with log.guarded_output(masker):
        log.setup(masker, args.verbose)
        return command(cfg, args)


if __name__ == "__main__":
    sys.exit(main())
