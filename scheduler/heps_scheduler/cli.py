"""`heps-scheduler`: run the scheduler or the node-metrics agent in a cluster, or simulate.

Exit codes: 0 success, 1 a failure while running, 2 bad usage or configuration (no
cluster credentials, unreadable config, unknown policy, missing trace file).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from heps_scheduler import __version__, boundary, config, report, serve, simulate, trace, workload

MAX_SEEDS = 1000


def _simulate_parser(sub: Any) -> None:
    sim = sub.add_parser("simulate", help="replay openb traces against scheduling policies")
    sim.add_argument("--nodes", type=Path, required=True)
    what = sim.add_mutually_exclusive_group(required=True)
    what.add_argument("--pods", type=Path, help="one pod list")
    what.add_argument(
        "--all-traces", type=Path, metavar="DIR", help="every openb_pod_list_*.csv in DIR"
    )
    sim.add_argument(
        "--policy",
        default="heps,kube-default,most-allocated,fgd",
        help="comma-separated: " + ", ".join(config.PRESETS),
    )
    sim.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="AXIS:RATIO",
        help="replay a variant of --pods instead (workload.py): multigpu, gpushare or gpuspec "
        "0-100 (%% of GPU demand, of GPU demand, of GPU tasks), cpu 0-1000 (per mille of the "
        "cluster's cpu asked by CPU-only tasks); repeat for several; generated per seed",
    )
    sim.add_argument("--seed", type=int, default=0, help="the first seed")
    sim.add_argument("--seeds", type=int, default=1, help="how many seeds, from --seed on")
    sim.add_argument("--load", type=float, default=1.3, help="arrived GPU demand / capacity")
    sim.add_argument("--json", type=Path, help="write the results here")
    sim.add_argument("--plot", type=Path, help="write a PNG of the metrics against load")


def main(argv: list[str] | None = None) -> int:
    return boundary.guarded("heps-scheduler", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="heps-scheduler")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.add_argument("--version", action="version", version=f"heps-scheduler {__version__}")
    _simulate_parser(sub)
    run = sub.add_parser("run", help="schedule pods that name this scheduler (in a cluster)")
    run.add_argument("--config", type=Path, help="scheduler config YAML (plugin weights)")
    run.add_argument("--leader-elect", action="store_true", help="hold a Lease before scheduling")
    run.add_argument("--lease-namespace", default="kube-system")
    agent = sub.add_parser("agent", help="publish this node's load from /proc (DaemonSet)")
    agent.add_argument("--node", required=True, help="this node's name (downward API)")
    agent.add_argument("--interval", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.command in ("run", "agent"):
        return serve.main(args)
    try:
        return _simulate(args)
    except (trace.TraceError, simulate.WorkloadError, workload.VariantError) as exc:
        boundary.say("heps-scheduler", f"error: {exc}")
        return 2


def _usage_error(args: argparse.Namespace, policies: list[str]) -> str | None:
    unknown = [p for p in policies if p not in config.PRESETS]
    if unknown:
        return f"--policy: unknown {', '.join(unknown)}; known: {', '.join(config.PRESETS)}"
    if not args.nodes.exists():  # what kind of file it is, trace.load_* checks
        return f"{args.nodes}: no such file"
    if args.pods is not None and not args.pods.exists():
        return f"{args.pods}: no such file"
    if args.variant and args.pods is None:
        return "--variant: give the base list with --pods (openb_pod_list_default.csv)"
    if args.all_traces is not None and not sorted(args.all_traces.glob("openb_pod_list_*.csv")):
        return f"{args.all_traces}: no openb_pod_list_*.csv here"
    for option, target in (("--json", args.json), ("--plot", args.plot)):
        if target is not None and not target.parent.is_dir():
            return f"{option}: {target.parent} is not a folder"
    if not 1 <= args.seeds <= MAX_SEEDS:
        return f"--seeds: 1 to {MAX_SEEDS}"
    if args.seed < 0:
        return "--seed: 0 or more"
    if not 0 < args.load <= simulate.MAX_LOAD:  # NaN fails too
        return f"--load: {args.load} is outside 0..{simulate.MAX_LOAD:g} (1.3 is the paper's)"
    return None


def _simulate(args: argparse.Namespace) -> int:
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    problem = _usage_error(args, policies)
    if problem:
        boundary.say("heps-scheduler", f"error: {problem}")
        return 2
    variants = [workload.parse(v) for v in args.variant]  # all checked before any run
    nodes = trace.load_nodes(args.nodes)
    files = [args.pods] if args.pods else sorted(args.all_traces.glob("openb_pod_list_*.csv"))
    pod_lists = {f: trace.load_pods(f) for f in files}  # every file checked before any run
    runs = []
    table = bool(args.all_traces or variants)
    if table:
        print(report.markdown_header(policies), flush=True)
    for path, base in pod_lists.items():
        options: list[workload.Variant | None] = [*variants] or [None]
        for variant in options:
            stem = boundary.printable(path.stem)  # a file name reaches the terminal as text
            label = f"{stem}-{variant.label}" if variant else stem
            for seed in range(args.seed, args.seed + args.seeds):
                pods = workload.generate(base, nodes, variant, seed) if variant else base
                progress = report.TerminalProgress(f"{label} seed {seed}")
                results = simulate.simulate(nodes, pods, policies, seed, args.load, progress)
                progress.clear()
                runs.append(
                    {
                        "pods": str(path),
                        "variant": variant.label if variant else None,
                        "label": label,
                        "seed": seed,
                        "load": args.load,
                        "results": results,
                    }
                )
                if table:
                    print(report.markdown_row(label, seed, results), flush=True)
                else:
                    name = boundary.printable(path.name)
                    print(f"{name}, seed {seed}, arrivals to {args.load:.0%} of GPU capacity")
                    print(report.summary(results) + "\n", flush=True)
    if args.json:
        body = [{**run, "results": [asdict(r) for r in run["results"]]} for run in runs]
        args.json.write_text(json.dumps(body, indent=2))
    if args.plot:
        last = runs[-1]
        simulate.plot(last["results"], str(args.plot), f"{last['label']}, seed {last['seed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
