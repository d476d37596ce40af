"""Score plugins: each rates the candidate nodes 0..100 (higher is better).

The baselines are kube-scheduler's own formulas (NodeResourcesFit LeastAllocated and
MostAllocated, NodeResourcesBalancedAllocation) over cpu and memory with weight 1 each,
and FGD's fragmentation gradient (Weng et al., USENIX ATC 2023).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from heps_scheduler.filters import Ints
from heps_scheduler.model import BEST_EFFORT, GUARANTEED, Pod
from heps_scheduler.snapshot import Floats, Snapshot

MAX_SCORE = 100.0


class ScorePlugin(Protocol):
    name: str

    def score(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats: ...


def _fractions(pod: Pod, snap: Snapshot, nodes: Ints) -> tuple[Floats, Floats]:
    """cpu and memory requested on each node after placing the pod, as fractions."""
    cpu: Floats = (snap.cpu_used[nodes] + pod.cpu_milli) / snap.cpu_cap[nodes]
    mem: Floats = (snap.mem_used[nodes] + pod.memory_mib) / snap.mem_cap[nodes]
    return cpu, mem


class LeastAllocated:
    """kube-scheduler's default: prefer the node with the most room left."""

    name = "LeastAllocated"

    def score(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        cpu, mem = _fractions(pod, snap, nodes)
        result: Floats = ((1 - np.clip(cpu, 0, 1)) + (1 - np.clip(mem, 0, 1))) / 2 * MAX_SCORE
        return result


class MostAllocated:
    """Pack: prefer the fullest node (the JupyterHub user-scheduler's choice)."""

    name = "MostAllocated"

    def score(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        cpu, mem = _fractions(pod, snap, nodes)
        result: Floats = (np.clip(cpu, 0, 1) + np.clip(mem, 0, 1)) / 2 * MAX_SCORE
        return result


class BalancedAllocation:
    """kube-scheduler's NodeResourcesBalancedAllocation: (1 - std of the fractions) * 100."""

    name = "BalancedAllocation"

    def score(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        cpu, mem = _fractions(pod, snap, nodes)
        std = np.abs(np.clip(cpu, 0, 1) - np.clip(mem, 0, 1)) / 2  # std of two values
        result: Floats = (1 - std) * MAX_SCORE
        return result


@dataclass(frozen=True)
class TaskClass:
    """One kind of task in the target workload, with its share of arrivals."""

    cpu_milli: float
    memory_mib: float
    gpus: int
    gpu_milli: int
    weight: float


def workload_classes(pods: list[Pod], share_step: int = 100) -> list[TaskClass]:
    """The GPU task mix of `pods`: shares rounded up to `share_step`, mean cpu per class."""
    groups: dict[tuple[int, int], list[Pod]] = {}
    for pod in pods:
        if pod.gpus == 0:
            continue  # CPU-only tasks cannot use GPUs: they define no GPU fragment
        milli = -(-pod.gpu_milli // share_step) * share_step if pod.shares_gpu else 1000
        groups.setdefault((pod.gpus, milli), []).append(pod)
    total = sum(len(g) for g in groups.values()) or 1
    return [
        TaskClass(
            cpu_milli=float(np.mean([p.cpu_milli for p in group])),
            memory_mib=float(np.mean([p.memory_mib for p in group])),
            gpus=gpus,
            gpu_milli=milli,
            weight=len(group) / total,
        )
        for (gpus, milli), group in sorted(groups.items())
    ]


def fragmentation(
    free: np.ndarray, cpu_free: Floats, mem_free: Floats, classes: list[TaskClass]
) -> Floats:
    """FGD's expected GPU fragment of each node (thousandths of a GPU) for the task mix.

    For a task class, a node's free GPU resources that the class cannot use are
    fragments: all of them when the node lacks the cpu or memory for the task; for a
    GPU share, the GPUs with less free than the share; for k whole GPUs, partly used GPUs,
    or everything when fewer than k GPUs are wholly free.
    """
    total = free.sum(axis=1).astype(np.float64)
    result = np.zeros(len(total))
    for c in classes:
        if c.gpus == 1 and c.gpu_milli < 1000:
            frag = np.where(free < c.gpu_milli, free, 0).sum(axis=1)
        else:
            whole = (free == 1000).sum(axis=1)
            partial = np.where(free < 1000, free, 0).sum(axis=1)
            frag = np.where(whole >= c.gpus, partial, total)
        room = (cpu_free >= c.cpu_milli) & (mem_free >= c.memory_mib)
        result += c.weight * np.where(room, frag, total)
    return result


def pick_gpus(pod: Pod, free: np.ndarray, best_fit: bool) -> np.ndarray:
    """Per candidate node, the GPU slot a shared pod takes (-1 for none), best or first fit."""
    fits = free >= pod.gpu_milli
    if best_fit:
        return np.where(fits.any(axis=1), np.argmin(np.where(fits, free, 10**9), axis=1), -1)
    return np.where(fits.any(axis=1), np.argmax(fits, axis=1), -1)


def free_after(pod: Pod, free: np.ndarray, best_fit: bool) -> np.ndarray:
    """The candidates' GPU free matrix once the pod is placed on each of them."""
    after = free.copy()
    rows = np.arange(len(free))
    if pod.shares_gpu:
        slot = pick_gpus(pod, free, best_fit)
        ok = slot >= 0
        after[rows[ok], slot[ok]] -= pod.gpu_milli
    elif pod.gpus:
        taken = np.cumsum(free == 1000, axis=1) <= pod.gpus
        after = np.where((free == 1000) & taken, 0, after)
    return after


class GpuFragmentation:
    """FGD: prefer the node whose expected fragmentation grows least (or shrinks most)."""

    name = "GpuFragmentation"

    def __init__(self, classes: list[TaskClass]) -> None:
        self.classes = classes

    def score(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        free = snap.gpu_free[nodes]
        cpu, mem = snap.cpu_free[nodes], snap.mem_free[nodes]
        before = fragmentation(free, cpu, mem, self.classes)
        after = fragmentation(
            free_after(pod, free, True), cpu - pod.cpu_milli, mem - pod.memory_mib, self.classes
        )
        return _min_max(-(after - before))


class GpuNodeAvoidance:
    """Keep CPU-only pods off GPU nodes, and off GPU nodes with idle GPUs most of all."""

    name = "GpuNodeAvoidance"

    def score(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        if pod.gpus:
            return np.full(len(nodes), MAX_SCORE)
        count = snap.gpu_count[nodes]
        idle = (snap.gpu_free[nodes] == 1000).sum(axis=1)
        result: Floats = np.where(count > 0, (1 - idle / np.maximum(count, 1)) * 50, MAX_SCORE)
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
        w_cpu, w_io, w_net = self.weights
        measured = (
            w_cpu * snap.metrics_cpu[nodes]
            + w_io * snap.metrics_io[nodes]
            + w_net * snap.metrics_net[nodes]
        ) / (w_cpu + w_io + w_net)
        fresh = snap.fresh_metrics(self.max_age, self.clock())[nodes] & ~np.isnan(measured)
        result: Floats = np.where(fresh, np.clip(measured, 0, 1), self.unknown_load)
        return result

    def score(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
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

    def score(self, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        if pod.qos == GUARANTEED:
            quiet: Floats = (1 - self.load.load(snap, nodes)) * MAX_SCORE
            return quiet
        if pod.qos == BEST_EFFORT:
            busy: Floats = self.load.load(snap, nodes) * MAX_SCORE
            return busy
        return np.full(len(nodes), MAX_SCORE / 2)


def _min_max(values: Floats) -> Floats:
    if len(values) == 0:
        return values
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        return np.full(len(values), MAX_SCORE)
    result: Floats = (values - low) / (high - low) * MAX_SCORE
    return result
