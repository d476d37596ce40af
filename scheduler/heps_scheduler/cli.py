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

from heps_scheduler import __version__, config, serve, simulate, trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="heps-scheduler")
    sub = parser.add_subparsers(dest="command", required=True)
    parser.add_argument("--version", action="version", version=f"heps-scheduler {__version__}")
    sim = sub.add_parser("simulate", help="replay an openb trace against scheduling policies")
    sim.add_argument("--nodes", type=Path, required=True)
    sim.add_argument("--pods", type=Path, required=True)
    sim.add_argument(
        "--policy",
        default="heps,kube-default,most-allocated,fgd",
        help="comma-separated: " + ", ".join(config.PRESETS),
    )
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--load", type=float, default=1.3, help="arrived GPU demand / capacity")
    sim.add_argument("--json", type=Path, help="write the results here")
    sim.add_argument("--plot", type=Path, help="write a PNG of the metrics against load")
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
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    unknown = [p for p in policies if p not in config.PRESETS]
    for path in (args.nodes, args.pods):
        if not path.is_file():
            print(f"heps-scheduler: error: {path}: no such file", file=sys.stderr)
            return 2
    if unknown:
        print(
            f"heps-scheduler: error: --policy: unknown {', '.join(unknown)}; "
            f"known: {', '.join(config.PRESETS)}",
            file=sys.stderr,
        )
        return 2
    results = simulate.simulate(
        trace.load_nodes(args.nodes), trace.load_pods(args.pods), policies, args.seed, args.load
    )
    header = (
        f"{'policy':15} {'scheduled':>9} {'failed':>6} {'gpu_alloc':>9} {'frag':>6} "
        f"{'unalloc_gpus':>12} {'dec/s':>7} {'p99_ms':>7}  failed by class / qos"
    )
    print(header)
    for r in results:
        print(
            f"{r.policy:15} {r.scheduled:9d} {r.failed:6d} {r.gpu_alloc_rate:9.3f} "
            f"{r.frag_rate:6.3f} {r.unallocated_gpus:12.1f} {r.decisions_per_s:7.0f} "
            f"{r.p99_decision_ms:7.2f}  {r.failed_by_class} {r.failed_by_qos}"
        )
    if args.json:
        body = [
            {k: v for k, v in asdict(r).items() if k != "curve"} | {"curve": r.curve}
            for r in results
        ]
        args.json.write_text(
            json.dumps({"seed": args.seed, "load": args.load, "results": body}, indent=2)
        )
    if args.plot:
        simulate.plot(results, str(args.plot), f"{args.pods.name}, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
