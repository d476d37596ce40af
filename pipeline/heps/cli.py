"""`heps`: the command users, operators and Jenkins run.

Exit codes (the contract in DESIGN.md): 0 success, 1 a recipe failed (lint, build,
smoke, push), 2 bad usage, configuration or environment. They are decided here, in
one place, from the two error kinds of `heps.errors`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from heps import __version__, engine, graph, lint, log, recipes, report, services, settings
from heps.errors import ConfigError, HepsError, TemporaryError
from heps.run import Runner, Selection, prepare, summary
from heps.validation import schema

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise ConfigError(f"usage: {message}; see `heps {self.prog.split()[-1]} --help`")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="heps", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"heps {__version__}")
    parser.add_argument(
        "--repo", type=Path, default=Path.cwd(), help="repository root (default: .)"
    )
    parser.add_argument("--registry", help="registry HOST[:PORT] (default: heps.yaml or embedded)")
    parser.add_argument("--namespace", help="repository namespace / OWNER (default: heps)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def selection(p: argparse.ArgumentParser) -> None:
        p.add_argument("recipes", nargs="*", help="recipe names (default: all)")
        p.add_argument("--all", action="store_true", help="every recipe")
        p.add_argument("--since", metavar="REV", help="recipes changed since a git revision")

    p = sub.add_parser("plan", help="show what would be built, in order, and why")
    selection(p)
    p.add_argument("--json", action="store_true", help="the same data as JSON")
    p = sub.add_parser("lint", help="hadolint and the project's rules on every Dockerfile")
    p.add_argument("recipes", nargs="*")
    p = sub.add_parser("run", help="lint, build, smoke-test and push")
    selection(p)
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--junit", type=Path, help="write JUnit XML here")
    p.add_argument(
        "--no-push", action="store_true", help="build and smoke-test only (merge requests)"
    )
    p = sub.add_parser("services", help="start or stop the embedded Docker engine and registry")
    p.add_argument("action", choices=["up", "down"])
    p = sub.add_parser("schema", help="print a published JSON Schema")
    p.add_argument("name", choices=["recipe", "settings"])
    return parser


def _selection(args: argparse.Namespace) -> Selection:
    if sum(bool(x) for x in (args.recipes, args.all, args.since)) > 1:
        raise ConfigError("usage: give recipe names, --all or --since, not several")
    return Selection(tuple(args.recipes), args.since, args.all or not (args.recipes or args.since))


def _plan(cfg: settings.Settings, args: argparse.Namespace) -> int:
    prepared = prepare(cfg, _selection(args))
    if args.json:
        print(json.dumps(prepared.plan.as_json(), indent=2))
        return EXIT_OK
    for index, entry in enumerate(prepared.plan.entries, 1):
        action = "build" if entry.build else "skip "
        note = "  (version taken: bump it before pushing)" if entry.version_taken else ""
        bases = f"  on {', '.join(entry.bases)}" if entry.bases else ""
        print(f"{index:3d}. {action} {entry.name} {entry.version}: {entry.reason}{bases}{note}")
    print(
        f"{len(prepared.plan.to_build)} to build, "
        f"{len(prepared.plan.entries) - len(prepared.plan.to_build)} unchanged"
    )
    return EXIT_OK


def _lint(cfg: settings.Settings, args: argparse.Namespace) -> int:
    tree = graph.resolve(recipes.discover(cfg), cfg.registry)
    names = args.recipes or list(tree.order)
    unknown = sorted(set(names) - set(tree.nodes))
    if unknown:
        raise ConfigError(
            f"recipes {', '.join(unknown)}: not found; known: {', '.join(tree.order)}"
        )
    failed = 0
    for name in names:
        result = lint.lint(tree, name)
        for finding in result.findings:
            print(finding)
        failed += result.failed
    print(f"{len(names)} recipes linted, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


def _run(cfg: settings.Settings, args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    prepared = prepare(cfg, _selection(args))
    if not prepared.plan.to_build:
        log.phase("plan", None, "nothing to do: every image is in the registry")
    client = engine.connect() if prepared.plan.to_build else None
    results = Runner(prepared, client, not args.no_push).run()
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "registry": cfg.registry.host,
        "namespace": cfg.registry.namespace,
        "pushed": not args.no_push,
        "plan_seconds": round(prepared.seconds["plan"], 3),
    }
    if args.report:
        report.write_atomic(args.report, report.as_json(results, meta))
    if args.junit:
        report.write_atomic(args.junit, report.as_junit(results))
    print(summary(results))
    return EXIT_FAILED if any(r.status == report.FAILED for r in results) else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    log.setup()
    try:
        args = parser.parse_args(argv)
        log.setup(args.verbose)
        if args.command == "schema":
            print(json.dumps(schema(args.name), indent=2))
            return EXIT_OK
        cfg = settings.load(args.repo, registry=args.registry, namespace=args.namespace)
        if args.command == "services":
            action = services.up if args.action == "up" else services.down
            print("\n".join(action(cfg)))
            return EXIT_OK
        command = {"plan": _plan, "lint": _lint, "run": _run}[args.command]
        return command(cfg, args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(log.redact(f"heps: error: {problem}"), file=sys.stderr)
        return EXIT_USAGE
    except TemporaryError as exc:
        print(log.redact(f"heps: error: {exc} (temporary; retry later)"), file=sys.stderr)
        return EXIT_FAILED
    except HepsError as exc:
        print(log.redact(f"heps: error: {exc}"), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("heps: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
