"""Replay a trace against several policies, on the same shuffled arrivals, and measure.

The method of the FGD paper (Weng et al., USENIX ATC 2023) on its openb trace: the task
list is tuned to `load` (130%) of the cluster's GPU capacity and arrives in a shuffled
order; tasks never leave, and a task that fits nowhere fails (no retry).

A policy that preempts (heps: preemption.py) evicts lower-priority tasks to place one that
fits nowhere; the victims leave at once, the task is placed on the node it was nominated
to, and a victim counts as failed for its class, as a task that found no node does (it is
never retried either): `failed` is every task not running at the end, `preempted` how
many of them were victims.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from heps_scheduler import config
from heps_scheduler.config import ProfileSettings
from heps_scheduler.cycle import OK, Status
from heps_scheduler.fgd import GpuFragmentation, TaskClass, typical_pods
from heps_scheduler.framework import Decision, Scheduler
from heps_scheduler.model import GUARANTEED, Node, Pod
from heps_scheduler.snapshot import Snapshot

MAX_LOAD = 10.0
"""Highest arrived GPU demand / capacity a replay accepts (the paper goes to 1.3)."""
MAX_ARRIVALS = 4_000_000
"""Most tasks one replay may draw (the default list at 130% of openb draws about 9,500)."""


class WorkloadError(ValueError):
    """A replay that cannot run as asked (a load out of range, or too many draws)."""


def arrivals(pods: list[Pod], capacity_milli: int, load: float, seed: int) -> list[Pod]:
    """The paper simulator's workload tuning, then its shuffle: every task once, plus tasks
    drawn at random (with replacement) while the GPU demand stays within `load` x
    capacity (or random tasks dropped while it exceeds it), all in a shuffled order.

    Bounded: a load outside (0, MAX_LOAD] or a list whose tasks are too small to reach it
    within MAX_ARRIVALS draws is a WorkloadError before anything is drawn."""
    if not 0 < load <= MAX_LOAD:  # NaN fails too
        raise WorkloadError(f"--load: {load} is outside 0..{MAX_LOAD:g} (1.3 is the paper's)")
    gpu_pods = [p.gpu_demand_milli for p in pods if p.gpu_demand_milli]
    target = load * capacity_milli
    if gpu_pods and target / (sum(gpu_pods) / len(pods)) > MAX_ARRIVALS:
        raise WorkloadError(
            f"reaching {load:g} x {capacity_milli / 1000:g} GPUs takes more than {MAX_ARRIVALS} "
            "tasks of this list; lower --load or use fewer nodes"
        )
    rng = np.random.default_rng(seed)
    chosen = list(pods)
    demand = sum(p.gpu_demand_milli for p in chosen)
    while demand > target and chosen:
        demand -= chosen.pop(int(rng.integers(len(chosen)))).gpu_demand_milli
    extra = 0
    # without GPU tasks no draw could ever end it; the cap holds whatever the estimate said
    while gpu_pods and demand < target and len(chosen) < MAX_ARRIVALS:
        pod = pods[int(rng.integers(len(pods)))]
        if demand + pod.gpu_demand_milli > target:
            break
        chosen.append(replace(pod, name=f"{pod.name}-tuned-{extra}"))
        demand += pod.gpu_demand_milli
        extra += 1
    return [chosen[int(i)] for i in rng.permutation(len(chosen))]


@dataclass
class PolicyResult:
    policy: str
    scheduled: int = 0
    failed: int = 0
    failed_by_class: dict[str, int] = field(default_factory=dict)
    failed_by_qos: dict[str, int] = field(default_factory=dict)
    """Tasks not running at the end, by class: never placed, or preempted."""
    preempted: int = 0
    """Of the failed, the victims of preemption (placed, then evicted)."""
    gpu_alloc_rate: float = 0.0
    frag_rate: float = 0.0
    """The paper's fragmentation rate: expected fragment / unallocated GPU capacity."""
    unallocated_gpus: float = 0.0
    at_full_load: dict[str, float] = field(default_factory=dict)
    """The same three metrics when arrivals first reach 100% of GPU capacity."""
    decisions_per_s: float = 0.0
    p99_decision_ms: float = 0.0
    curve: list[dict[str, float]] = field(default_factory=list)
    """Metrics against arrived load, one point per percent of GPU capacity."""

    @property
    def failed_guaranteed(self) -> int:
        return self.failed_by_qos.get(GUARANTEED, 0)


Progress = Callable[[str, int, int], None]
"""Called with (policy, pods decided, pods arriving) now and then during a replay."""


def _state(snap: Snapshot, meter: GpuFragmentation) -> dict[str, float]:
    capacity = snap.gpu_capacity_milli()
    unallocated = capacity - snap.gpu_allocated_milli()
    frag = meter.cluster_fragment(snap)
    return {
        "gpu_alloc_rate": 1 - unallocated / capacity,
        "frag_rate": frag / unallocated if unallocated else 0.0,
        "unallocated_gpus": unallocated / 1000,
    }


class Replay:
    """One policy's scheduler on a fresh cluster, placing tasks as the replay does: a task
    nominated by a preemption is tried again at once on its node (its victims left at
    once), and a Permit wait times out (a replay has no clock)."""

    def __init__(
        self, nodes: list[Node], settings: ProfileSettings, classes: list[TaskClass], seed: int
    ) -> None:
        self.snap = Snapshot(nodes)
        self.scheduler = Scheduler(self.snap, config.build(settings, classes), seed)
        self.scheduler.profile.handle.evictor = self._evict
        self.victims: list[tuple[Pod, str]] = []
        """Every pod preempted, with the node it was evicted from."""

    def _evict(self, victim: Pod, preemptor: Pod, node: str) -> Status:
        self.snap.forget(victim.key)
        self.victims.append((victim, node))
        return OK

    def place(self, pod: Pod) -> Decision:
        decision = self.scheduler.schedule(pod)
        if decision.node is None and decision.nominated is not None:
            retry = self.scheduler.schedule(pod, decision.nominated)
            retry.seconds += decision.seconds
            decision = retry
        if decision.node is not None and not self.scheduler.bind(decision, now=math.inf).ok:
            decision.node = None
        return decision


def _failed(result: PolicyResult, pod: Pod) -> None:
    result.failed += 1
    result.failed_by_class[pod.gpu_class] = result.failed_by_class.get(pod.gpu_class, 0) + 1
    result.failed_by_qos[pod.qos] = result.failed_by_qos.get(pod.qos, 0) + 1


def run_policy(
    nodes: list[Node],
    arrived: list[Pod],
    policy: str,
    classes: list[TaskClass],
    seed: int,
    progress: Progress | None = None,
) -> PolicyResult:
    replay = Replay(nodes, config.preset_settings(policy), classes, seed)
    snap = replay.snap
    meter = GpuFragmentation(classes)
    result = PolicyResult(policy)
    capacity = snap.gpu_capacity_milli()
    demand, next_mark = 0, 1
    timings = np.zeros(len(arrived))
    started = time.perf_counter()
    for i, pod in enumerate(arrived):
        decision = replay.place(pod)
        timings[i] = decision.seconds
        demand += pod.gpu_demand_milli
        if decision.node is None:
            _failed(result, pod)
        else:
            result.scheduled += 1
        if demand * 100 >= next_mark * capacity:
            point = _state(snap, meter)
            result.curve.append({"arrived": demand / capacity, **point})
            if demand >= capacity and not result.at_full_load:
                result.at_full_load = point
            next_mark = demand * 100 // capacity + 1
            if progress:
                progress(policy, i + 1, len(arrived))
    elapsed = time.perf_counter() - started
    for victim, _ in replay.victims:
        result.scheduled -= 1
        result.preempted += 1
        _failed(result, victim)
    final = _state(snap, meter)
    result.gpu_alloc_rate, result.frag_rate = final["gpu_alloc_rate"], final["frag_rate"]
    result.unallocated_gpus = final["unallocated_gpus"]
    result.decisions_per_s = len(arrived) / elapsed if elapsed else 0.0
    result.p99_decision_ms = float(np.percentile(timings, 99) * 1000) if len(arrived) else 0.0
    return result


def simulate(
    nodes: list[Node],
    pods: list[Pod],
    policies: list[str],
    seed: int,
    load: float = 1.3,
    progress: Progress | None = None,
) -> list[PolicyResult]:
    """Every policy on the same arrivals; FGD's target workload is the trace's task mix."""
    capacity = sum(n.gpus for n in nodes) * 1000
    arrived = arrivals(pods, capacity, load, seed)
    classes = typical_pods(pods)
    return [run_policy(nodes, arrived, p, classes, seed, progress) for p in policies]


def plot(results: list[PolicyResult], path: str, title: str) -> None:
    """The three metrics against arrived workload, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for metric, axis in zip(("gpu_alloc_rate", "frag_rate", "unallocated_gpus"), axes, strict=True):
        for result in results:
            xs = [p["arrived"] * 100 for p in result.curve]
            axis.plot(xs, [p[metric] for p in result.curve], label=result.policy)
        axis.set_xlabel("arrived GPU demand (% of capacity)")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
