"""Score plugins: each rates the candidate nodes 0..100 (higher is better).

Where a plugin would give every node the same score for a pod (a GPU pod for
GpuNodeAvoidance, no metrics yet for the load plugins), its PreScore says Skip, as
kube-scheduler's plugins do, and the framework skips its Score: a constant changes no
choice.

The baselines are kube-scheduler's own formulas (NodeResourcesFit LeastAllocated and
MostAllocated, NodeResourcesBalancedAllocation) over cpu and memory with weight 1 each,
and FGD's fragmentation gradient (fgd.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from heps_scheduler.cycle import OK, SKIP, CycleState, Status
from heps_scheduler.fgd import TaskClass
from heps_scheduler.model import BEST_EFFORT, GUARANTEED, Pod
from heps_scheduler.snapshot import Floats, Ints, Snapshot

MAX_SCORE = 100.0


class ScorePlugin(Protocol):
    name: str

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats: ...


FRACTIONS = "NodeResources/fractions"
"""CycleState key: the candidates' cpu and memory fractions, clipped to 0..1, computed once
a cycle for every plugin that scores by them (kube-scheduler's PreScore state pattern)."""


LEAST_ALLOCATED = "LeastAllocated/scores"
"""CycleState key: LeastAllocated's scores, which LeastAllocatedLargePods repeats."""


def _fractions(state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> tuple[Floats, Floats]:
    """cpu and memory requested on each node after placing the pod, as fractions 0..1."""
    cached = state.data.get(FRACTIONS)
    if isinstance(cached, tuple) and cached[0] is nodes:
        return cached[1], cached[2]
    # requests and use are never negative: only the top needs a bound
    cpu: Floats = np.minimum((snap.cpu_used[nodes] + pod.cpu_milli) / snap.cpu_cap[nodes], 1)
    mem: Floats = np.minimum((snap.mem_used[nodes] + pod.memory_mib) / snap.mem_cap[nodes], 1)
    state.data[FRACTIONS] = (nodes, cpu, mem)
    return cpu, mem


class LeastAllocated:
    """kube-scheduler's default: prefer the node with the most room left."""

    name = "LeastAllocated"

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        cached = state.data.get(LEAST_ALLOCATED)
        if isinstance(cached, tuple) and cached[0] is nodes:  # LeastAllocatedLargePods too
            same: Floats = cached[1]
            return same
        cpu, mem = _fractions(state, pod, snap, nodes)
        result: Floats = ((1 - cpu) + (1 - mem)) / 2 * MAX_SCORE
        state.data[LEAST_ALLOCATED] = (nodes, result)
        return result


class LeastAllocatedLargePods(LeastAllocated):
    """LeastAllocated for multi-GPU and CPU-only pods only (constant for a one-GPU or shared
    pod): weighed beside LeastAllocated, pods that use at most one GPU spread less, so FGD
    packs them, while the pods that need a node's cpu spread as before (docs/scheduler.md,
    ablation)."""

    name = "LeastAllocatedLargePods"

    def pre_score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Status:
        return Status(SKIP) if pod.gpus == 1 else OK

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        if pod.gpus == 1:
            return np.zeros(len(nodes))
        return super().score(state, pod, snap, nodes)


SPREADING = (LeastAllocated.name, LeastAllocatedLargePods.name)
"""The plugins that spread pods by cpu and memory."""


def multi_gpu_share(classes: list[TaskClass]) -> float:
    """The share of the target workload's GPU demand that tasks of several GPUs make."""
    demand = [(c.weight * c.gpus * c.gpu_milli, c.gpus > 1) for c in classes]
    total = sum(d for d, _ in demand)
    return sum(d for d, multi in demand if multi) / total if total else 0.0


class SpreadingWithoutVictims:
    """PreScore: the spreading plugins (SPREADING) count for a pod only while every running
    pod is of its priority and QoS class. Then no pod could give way to it: once the GPUs
    are full, every pod that arrives fails, and spreading, by leaving no node whole for
    long, fails the multi-GPU pods early instead and so fewer pods. Where lower classes
    run, preemption places the important pods and FGD's packing alone keeps the GPUs
    allocated. Enabled by the profile's `spread_without_victims` (config.build)."""

    name = "SpreadingWithoutVictims"

    def pre_score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Status:
        kind = (pod.priority, pod.qos)
        if any(count and other != kind for other, count in snap.kinds.items()):
            state.skip_score.update(SPREADING)
        return OK


class MostAllocated:
    """Pack: prefer the fullest node (the JupyterHub user-scheduler's choice)."""

    name = "MostAllocated"

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        cpu, mem = _fractions(state, pod, snap, nodes)
        result: Floats = (cpu + mem) / 2 * MAX_SCORE
        return result


class BalancedAllocation:
    """kube-scheduler's NodeResourcesBalancedAllocation: (1 - std of the fractions) * 100."""

    name = "BalancedAllocation"

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        cpu, mem = _fractions(state, pod, snap, nodes)
        std = np.abs(cpu - mem) / 2  # std of two values
        result: Floats = (1 - std) * MAX_SCORE
        return result


def pick_gpus(pod: Pod, free: np.ndarray, best_fit: bool) -> np.ndarray:
    """Per candidate node, the GPU slot a shared pod takes (-1 for none), best or first fit."""
    fits = free >= pod.gpu_milli
    if best_fit:
        return np.where(fits.any(axis=1), np.argmin(np.where(fits, free, 10**9), axis=1), -1)
    return np.where(fits.any(axis=1), np.argmax(fits, axis=1), -1)


class GpuNodeAvoidance:
    """Keep CPU-only pods off GPU nodes, and off GPU nodes with idle GPUs most of all."""

    name = "GpuNodeAvoidance"

    def pre_score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Status:
        return Status(SKIP) if pod.gpus else OK

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        if pod.gpus:
            return np.full(len(nodes), MAX_SCORE)
        count = snap.gpu_count[nodes]
        idle = snap.whole_free[nodes]
        result: Floats = np.where(count > 0, (1 - idle / np.maximum(count, 1)) * 50, MAX_SCORE)
        return result


class GpuPacking:
    """Prefer the node whose GPUs are the most allocated once the pod is there (a node
    without GPUs counts as full), for every pod: GPU pods fill busy GPUs and leave idle
    nodes whole; CPU-only pods take the cpu of nodes whose GPUs are already used."""

    name = "GpuPacking"

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        capacity = snap.gpu_count[nodes] * 1000
        free = snap.gpu_free[nodes].sum(axis=1) - pod.gpu_demand_milli
        used = np.where(capacity > 0, 1 - free / np.maximum(capacity, 1), 1.0)
        result: Floats = used * MAX_SCORE
        return result


class LoadAware:
    """Prefer nodes that are idle by their real metrics (cpu, iowait, network).

    Stale or missing metrics count as `unknown_load`, never as idle."""

    name = "LoadAware"

    def __init__(
        self,
        max_age: float = 60.0,
        unknown_load: float = 0.5,
        weights: tuple[float, float, float] = (1.0, 1.0, 0.5),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_age, self.unknown_load, self.weights = max_age, unknown_load, weights
        self.clock = clock

    def load(self, snap: Snapshot, nodes: Ints) -> Floats:
        if not snap.metrics_seen:  # a replay, or no agent has reported yet
            return np.full(len(nodes), self.unknown_load)
        w_cpu, w_io, w_net = self.weights
        measured = (
            w_cpu * snap.metrics_cpu[nodes]
            + w_io * snap.metrics_io[nodes]
            + w_net * snap.metrics_net[nodes]
        ) / (w_cpu + w_io + w_net)
        fresh = snap.fresh_metrics(self.max_age, self.clock())[nodes] & ~np.isnan(measured)
        result: Floats = np.where(fresh, np.clip(measured, 0, 1), self.unknown_load)
        return result

    def pre_score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Status:
        return OK if snap.metrics_seen else Status(SKIP)

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        result: Floats = (1 - self.load(snap, nodes)) * MAX_SCORE
        return result


class QosAware:
    """By measured load: Guaranteed pods avoid loaded nodes, BestEffort pods may take busy
    ones (leaving quiet nodes to the pods that need them), Burstable is neutral.

    It acts on real load only, not on allocation: packing BestEffort pods by allocation
    starves GPU nodes of the CPU their GPUs need (measured on the openb trace)."""

    name = "QosAware"

    def __init__(self, load: LoadAware) -> None:
        self.load = load

    def pre_score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Status:
        varies = snap.metrics_seen and pod.qos in (GUARANTEED, BEST_EFFORT)
        return OK if varies else Status(SKIP)

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        if pod.qos == GUARANTEED:
            quiet: Floats = (1 - self.load.load(snap, nodes)) * MAX_SCORE
            return quiet
        if pod.qos == BEST_EFFORT:
            busy: Floats = self.load.load(snap, nodes) * MAX_SCORE
            return busy
        return np.full(len(nodes), MAX_SCORE / 2)
