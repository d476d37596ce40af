"""The scheduler's benchmarks on the openb trace (Weng et al., USENIX ATC 2023).

Sections (`python bench/scheduler_bench.py SECTION...`, or `bench/run.py scheduler` for
all of them; every table is printed as Markdown for docs/scheduler.md):

- speed: a 5,000-node cluster (the openb node list repeated, names made unique), the
  default trace until 130% arrival: decisions/s and p99 per decision, heps beside
  kube-default in the same run. Target: heps >= 270 decisions/s (kube-scheduler's
  SchedulingBasic/5000Nodes CI threshold).
- fidelity: FGD on the paper's 1,213 GPU-node cluster, default trace, 5 seeds: frag_rate
  and unallocated GPUs at 100% and 130% arrival, beside the paper's simulator's figures.
- acceptance: heps, kube-default, most-allocated and FGD at 130% on the default trace and
  the gpushare, multigpu and gpuspec families, 5 seeds each, on the 1,523-node cluster.
- ablation: what each part of heps buys, default trace, 3 seeds.
- generalisation: heps' spreadThreshold chosen by leave-one-family-out validation on
  generated variants of the default list (workload.py), every axis at 0-100%, then heps,
  FGD and kube-default there and on the seven lists, 5 seeds (hours on 2 cores).
- all-traces: every pod list of the trace folder, one seed (`heps-scheduler simulate
  --all-traces`).
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

from heps_scheduler import cli, config, report, simulate, trace, workload
from heps_scheduler.config import ProfileSettings
from heps_scheduler.fgd import typical_pods, whole_gpu_share
from heps_scheduler.framework import Scheduler
from heps_scheduler.model import GUARANTEED, Node, Pod
from heps_scheduler.snapshot import Snapshot

OPENB = Path(__file__).resolve().parents[2] / "shared" / "traces" / "openb"
ALL_NODES = OPENB / "openb_node_list_all_node.csv"
GPU_NODES = OPENB / "openb_node_list_gpu_node.csv"
SEEDS = range(5)
ACCEPTANCE = ["heps", "fgd", "kube-default"]
FAMILIES = ["default", "gpushare40", "multigpu20", "gpuspec10"]


def pods_of(name: str) -> list[Pod]:
    return trace.load_pods(OPENB / f"openb_pod_list_{name}.csv")


def repeated(nodes: list[Node], count: int) -> list[Node]:
    """`count` nodes: the list over and over, each copy's names made unique."""
    out = []
    for i in range(count):
        node = nodes[i % len(nodes)]
        name = f"{node.name}-r{i // len(nodes)}"
        out.append(replace(node, name=name, labels={**node.labels, "kubernetes.io/hostname": name}))
    return out


def speed(count: int = 5000) -> None:
    nodes = repeated(trace.load_nodes(ALL_NODES), count)
    pods = pods_of("default")
    capacity = sum(n.gpus for n in nodes) * 1000
    arrived = simulate.arrivals(pods, capacity, 1.3, seed=0)
    classes = typical_pods(pods)
    print(f"\n{count} nodes, {capacity // 1000} GPUs, {len(arrived)} pods to 130% arrival\n")
    print("| policy | nodes scored per decision | decisions/s | p99 per decision | CPU s |")
    print("| --- | --- | --- | --- | --- |")
    rates = {}
    for policy in ("heps", "kube-default"):
        settings = config.preset_settings(policy)
        scheduler = Scheduler(Snapshot(nodes), config.build(settings, classes), 0)
        timings = []
        cpu, wall = time.process_time(), time.perf_counter()
        for pod in arrived:
            timings.append(scheduler.schedule(pod).seconds)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        timings.sort()
        p99 = timings[int(0.99 * len(timings))] * 1000
        scored = "all feasible" if settings.percentage_of_nodes_to_score >= 100 else "adaptive"
        rates[policy] = len(arrived) / wall
        print(
            f"| {policy} | {scored} | {rates[policy]:.0f} | {p99:.2f} ms | {cpu:.1f} |",
            flush=True,
        )
    ratio = rates["heps"] / rates["kube-default"]
    print(
        f"\nheps {rates['heps']:.0f} decisions/s (target >= 270), {ratio:.2f} x kube-default's "
        "rate in the same run (target >= 0.5)"
    )


def fidelity() -> None:
    nodes, pods = trace.load_nodes(GPU_NODES), pods_of("default")
    print("\n| seed | frag_rate @100% | unallocated GPUs @100% | frag_rate @130% | @130% |")
    print("| --- | --- | --- | --- | --- |")
    at_full, at_end = [], []
    for seed in SEEDS:
        [r] = simulate.simulate(nodes, pods, ["fgd"], seed)
        full = r.at_full_load
        at_full.append(full["unallocated_gpus"])
        at_end.append(r.unallocated_gpus)
        print(
            f"| {seed} | {full['frag_rate']:.3f} | {full['unallocated_gpus']:.1f} | "
            f"{r.frag_rate:.3f} | {r.unallocated_gpus:.1f} |",
            flush=True,
        )
    print(
        f"| mean | | {statistics.mean(at_full):.1f} | | {statistics.mean(at_end):.1f} |\n"
        "| paper's simulator, seeds 42-51 | | 296.5 | | 286.3 |"
    )


def acceptance(families: list[str] = FAMILIES) -> None:
    nodes = trace.load_nodes(ALL_NODES)
    print("\n" + report.markdown_header(ACCEPTANCE))
    for family in families:
        pods = pods_of(family)
        for seed in SEEDS:
            results = simulate.simulate(nodes, pods, ACCEPTANCE, seed)
            print(report.markdown_row(family, seed, results), flush=True)


def _variant(base: str, **changes: object) -> ProfileSettings:
    return replace(config.preset_settings(base), **changes)  # type: ignore[arg-type]


ABLATION: dict[str, ProfileSettings] = {
    "FGD, ties broken at random": _variant("fgd", tie_break="random"),
    "FGD + GpuPacking as tie-break (weight 1 of 100)": _variant(
        "fgd", weights={"GpuFragmentation": 100, "GpuPacking": 1}
    ),
    "FGD + LeastAllocated, weight 100": _variant(
        "fgd", weights={"GpuFragmentation": 100, "LeastAllocated": 100}
    ),
    "heps, kube-scheduler's adaptive node cap": _variant("heps", percentage_of_nodes_to_score=0),
    "heps before per-class weights (LeastAllocated 300 for every pod, no GpuNodeAvoidance)": (
        _variant("heps", weights={"GpuFragmentation": 100, "LeastAllocated": 300})
    ),
    "heps without GpuNodeAvoidance": _variant(
        "heps",
        weights={"GpuFragmentation": 100, "LeastAllocated": 210, "LeastAllocatedLargePods": 90},
    ),
    "heps, LeastAllocated 300 for every pod (no LeastAllocatedLargePods)": _variant(
        "heps",
        weights={"GpuFragmentation": 100, "LeastAllocated": 300, "GpuNodeAvoidance": 300},
    ),
}
"""Variants beside the acceptance rows (FGD, heps and kube-default on the default trace)."""


def ablation(seeds: range = range(3)) -> None:
    nodes, pods = trace.load_nodes(ALL_NODES), pods_of("default")
    classes = typical_pods(pods)
    capacity = sum(n.gpus for n in nodes) * 1000
    print(
        f"\n| variant | unallocated GPUs (mean of {len(seeds)} seeds) | failed Guaranteed (mean) |"
    )
    print("| --- | --- | --- |")
    for label, settings in ABLATION.items():
        unallocated, failed = [], []
        for seed in seeds:
            snap = Snapshot(nodes)
            scheduler = Scheduler(snap, config.build(settings, classes), seed)
            lost = 0
            for pod in simulate.arrivals(pods, capacity, 1.3, seed):
                lost += scheduler.schedule(pod).node is None and pod.qos == GUARANTEED
            unallocated.append((capacity - snap.gpu_allocated_milli()) / 1000)
            failed.append(lost)
        print(
            f"| {label} | {statistics.mean(unallocated):.1f} | {statistics.mean(failed):.0f} |",
            flush=True,
        )


AXES_RATIOS = {
    axis: [r * (3 if axis == "cpu" else 1) for r in (0, 25, 50, 75, 100)] for axis in workload.AXES
}
"""Every axis at 0, 25, 50, 75 and 100% of its range (cpu: 0..300 per mille, its family's)."""
HELD = ["default", "cpu0", "cpu050", "gpushare40", "gpushare100", "gpuspec10", "multigpu20"]
Outcome = tuple[float, int]
"""Unallocated GPUs and failed Guaranteed pods at the end of a replay."""


def _replay(nodes: list[Node], pods: list[Pod], settings: ProfileSettings, seed: int) -> Outcome:
    capacity = sum(n.gpus for n in nodes) * 1000
    snap = Snapshot(nodes)
    scheduler = Scheduler(snap, config.build(settings, typical_pods(pods)), seed)
    lost = 0
    for pod in simulate.arrivals(pods, capacity, 1.3, seed):
        lost += scheduler.schedule(pod).node is None and pod.qos == GUARANTEED
    return (capacity - snap.gpu_allocated_milli()) / 1000, lost


def _heps_with(
    runs: dict[str, list[dict[str, Outcome]]], shares: dict[str, list[float]], label: str, t: float
) -> list[Outcome]:
    """heps at threshold t from the two runs it chooses between: spreading on, or FGD
    (spreading off: FGD with GpuNodeAvoidance, which decided as FGD on every run measured)."""
    return [
        run["spreading"] if share >= t else run["fgd"]
        for run, share in zip(runs[label], shares[label], strict=True)
    ]


def _judge(
    runs: dict[str, list[dict[str, Outcome]]],
    shares: dict[str, list[float]],
    labels: list[str],
    t: float,
) -> tuple[float, int, float]:
    """Worst heps/FGD ratio of mean unallocated GPUs, lists with fewer failed Guaranteed
    pods than kube-default, mean ratio."""
    ratios, wins = [], 0
    for label in labels:
        heps = _heps_with(runs, shares, label, t)
        fgd = [r["fgd"] for r in runs[label]]
        kube = [r["kube-default"] for r in runs[label]]
        ratios.append(statistics.mean(h[0] for h in heps) / statistics.mean(f[0] for f in fgd))
        wins += statistics.mean(h[1] for h in heps) < statistics.mean(k[1] for k in kube)
    return max(ratios), wins, statistics.mean(ratios)


def generalisation(seeds: range = SEEDS) -> None:
    """Leave-one-family-out choice of heps' spreadThreshold on generated variants of the
    default list, then heps, FGD and kube-default on every axis and the seven lists."""
    nodes, base = trace.load_nodes(ALL_NODES), pods_of("default")
    spreading = replace(config.preset_settings("heps"), spread_threshold=0.0)
    policies = {
        "spreading": spreading,
        "fgd": config.preset_settings("fgd"),
        "kube-default": config.preset_settings("kube-default"),
    }
    runs: dict[str, list[dict[str, Outcome]]] = {}
    shares: dict[str, list[float]] = {}
    lists: list[tuple[str, str | None]] = [
        (f"{a}:{r}", None) for a, ratios in AXES_RATIOS.items() for r in ratios
    ]
    lists += [(name, name) for name in HELD]
    for seed in seeds:
        for label, held in lists:
            pods = (
                pods_of(held)
                if held
                else workload.generate(base, nodes, workload.parse(label), seed)
            )
            outcome = {name: _replay(nodes, pods, s, seed) for name, s in policies.items()}
            runs.setdefault(label, []).append(outcome)
            shares.setdefault(label, []).append(whole_gpu_share(typical_pods(pods)))
            print(f"{label} seed {seed}: {outcome}", file=sys.stderr, flush=True)
    generated = [label for label, held in lists if held is None]
    seen = sorted({round(x, 3) for v in shares.values() for x in v})
    # thresholds halfway between the shares seen; ties go to the lowest
    candidates = sorted({0.0, 1.01} | {round((a + b) / 2, 4) for a, b in pairwise(seen)})
    print("\n| held-out axis | threshold | worst heps/FGD, other axes | worst heps/FGD, held out |")
    print("| --- | --- | --- | --- |")
    for axis in workload.AXES:
        train = [label for label in generated if not label.startswith(axis)]
        test = [label for label in generated if label.startswith(axis)]

        def rank(t: float, train: list[str] = train) -> tuple[float, int, float, float]:
            worst, wins, mean = _judge(runs, shares, train, t)
            return round(worst, 3), -wins, mean, t

        t = min(candidates, key=rank)
        print(
            f"| {axis} | {t:.3f} | {_judge(runs, shares, train, t)[0]:.3f} | "
            f"{_judge(runs, shares, test, t)[0]:.3f} |"
        )
    t = config.preset_settings("heps").spread_threshold
    print(f"\nThe preset's threshold {t}:\n")
    print("| workload | s | heps unalloc / failed G | FGD | kube-default |")
    print("| --- | --- | --- | --- | --- |")
    for label, _ in lists:
        heps = _heps_with(runs, shares, label, t)
        cells = [heps, [r["fgd"] for r in runs[label]], [r["kube-default"] for r in runs[label]]]
        means = [
            f"{statistics.mean(o[0] for o in c):.1f} / {statistics.mean(o[1] for o in c):.0f}"
            for c in cells
        ]
        print(f"| {label} | {statistics.mean(shares[label]):.3f} | {' | '.join(means)} |")


def all_traces() -> None:
    cli.main(["simulate", "--nodes", str(ALL_NODES), "--all-traces", str(OPENB)])


SECTIONS = {
    "speed": speed,
    "fidelity": fidelity,
    "acceptance": acceptance,
    "ablation": ablation,
    "generalisation": generalisation,
    "all-traces": all_traces,
}


def main(sections: list[str]) -> None:
    for name in sections or list(SECTIONS):
        print(f"\n## scheduler: {name}", flush=True)
        SECTIONS[name]()


if __name__ == "__main__":
    unknown = sorted(set(sys.argv[1:]) - set(SECTIONS))
    if unknown:
        sys.exit(f"scheduler_bench: unknown sections {unknown}; known: {list(SECTIONS)}")
    main(sys.argv[1:])
