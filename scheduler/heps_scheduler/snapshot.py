"""The cluster as the scheduler sees it: per-node arrays updated in place.

Assuming a pod onto a node changes that node's row and nothing else, so a scheduling
cycle never copies the cluster; filters and scores read whole columns at once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from heps_scheduler.model import Node, Pod

Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Kind = tuple[int, str]
"""A pod's (priority, QoS class)."""
NO_SHARE = 10**6
"""More thousandths than any GPU has: no pod holds this GPU."""


@dataclass(frozen=True)
class NodeMetrics:
    """What the node-metrics agent publishes, as fractions of the node (0..1)."""

    cpu: float
    iowait: float
    network: float
    timestamp: float


@dataclass
class Placement:
    pod: Pod
    node: int
    gpu_slots: tuple[int, ...] = ()
    """Indices of the node's GPUs the pod uses."""


@dataclass
class Held:
    """Per node, what the placed pods of one kind hold: kept as pods are assumed and
    forgotten, so preemption reads what lower-priority pods would free without walking
    every node's pods."""

    cpu: Floats
    mem: Floats
    eph: Floats
    gpu: Ints
    """Thousandths of each GPU."""
    smallest: Ints
    """The smallest thousandths of each GPU one such pod holds (NO_SHARE: none)."""


@dataclass
class Snapshot:
    nodes: list[Node]
    max_gpus: int = field(init=False)
    generation: int = 0
    """Bumped on every change that could make an unschedulable pod fit."""

    def __post_init__(self) -> None:
        n = len(self.nodes)
        self.index = {node.name: i for i, node in enumerate(self.nodes)}
        self.max_gpus = max((node.gpus for node in self.nodes), default=0) or 1
        self.cpu_cap = np.array([x.cpu_milli for x in self.nodes], dtype=np.float64)
        self.mem_cap = np.array([x.memory_mib for x in self.nodes], dtype=np.float64)
        self.eph_cap = np.array([x.ephemeral_mib for x in self.nodes], dtype=np.float64)
        self.cpu_used = np.zeros(n)
        self.mem_used = np.zeros(n)
        self.eph_used = np.zeros(n)
        self.gpu_count = np.array([x.gpus for x in self.nodes], dtype=np.int64)
        slots = np.arange(self.max_gpus)
        self.gpu_exists: Mask = slots[None, :] < self.gpu_count[:, None]
        self.gpu_free = np.where(self.gpu_exists, 1000, 0).astype(np.int64)
        """Free thousandths of each GPU; 0 where the node has no such GPU."""
        self.whole_free = self.gpu_count.copy()
        """Per node, the GPUs wholly free (kept with `gpu_free`, for the fit filter)."""
        self.max_free = np.where(self.gpu_count > 0, 1000, 0).astype(np.int64)
        """Per node, the largest free share of one GPU."""
        self.has_gpu: Mask = self.gpu_count > 0
        self.unschedulable: Mask = np.array([x.unschedulable for x in self.nodes], dtype=bool)
        self.disk_pressure: Mask = np.array(
            [
                x.disk_pressure
                or any(t.key == "node.kubernetes.io/disk-pressure" for t in x.taints)
                for x in self.nodes
            ],
            dtype=bool,
        )
        self.metrics_cpu = np.full(n, np.nan)
        self.metrics_io = np.full(n, np.nan)
        self.metrics_net = np.full(n, np.nan)
        self.metrics_time = np.full(n, -np.inf)
        self.metrics_seen = False
        """Whether any node has reported metrics (until then every node is unknown)."""
        self.node_version = np.zeros(n, dtype=np.int64)
        """Bumped for a node whenever its resources change (for caches keyed by node state)."""
        self.placements: dict[str, Placement] = {}
        self.anti_affine: dict[str, Placement] = {}
        """The placements whose pods carry anti-affinity terms."""
        self.pods_on: list[dict[str, Pod]] = [{} for _ in self.nodes]
        self.kinds: Counter[Kind] = Counter()
        """Placed pods per kind: whether any pod could be preempted."""
        self.held: dict[Kind, Held] = {}
        """Per kind, what its placed pods hold on each node."""

    # --- changes -------------------------------------------------------------------------

    def set_conditions(self, name: str, unschedulable: bool, disk_pressure: bool) -> None:
        """A node was cordoned or uncordoned, or its disk pressure changed."""
        i = self.index[name]
        self.unschedulable[i], self.disk_pressure[i] = unschedulable, disk_pressure
        self.generation += 1

    def assume(self, pod: Pod, node: int, gpu_slots: tuple[int, ...] = ()) -> None:
        """Count `pod` on `node` at once (before binding completes)."""
        if pod.key in self.placements:
            raise ValueError(f"{pod.key} is already placed")
        self.node_version[node] += 1
        self.cpu_used[node] += pod.cpu_milli
        self.mem_used[node] += pod.memory_mib
        self.eph_used[node] += pod.ephemeral_mib
        for slot in gpu_slots:
            self.gpu_free[node, slot] -= pod.gpu_milli if pod.shares_gpu else 1000
        self._gpu_changed(node)
        self.placements[pod.key] = Placement(pod, node, gpu_slots)
        if pod.anti_affinity:
            self.anti_affine[pod.key] = self.placements[pod.key]
        self.pods_on[node][pod.key] = pod
        self.kinds[pod.priority, pod.qos] += 1
        held = self._held(pod)
        held.cpu[node] += pod.cpu_milli
        held.mem[node] += pod.memory_mib
        held.eph[node] += pod.ephemeral_mib
        share = pod.gpu_milli if pod.shares_gpu else 1000
        for slot in gpu_slots:
            held.gpu[node, slot] += share
            held.smallest[node, slot] = min(held.smallest[node, slot], share)

    def forget(self, key: str) -> Pod | None:
        """Remove a pod (deleted, or its binding failed); frees its resources."""
        placement = self.placements.pop(key, None)
        if placement is None:
            return None
        self.anti_affine.pop(key, None)
        pod, node = placement.pod, placement.node
        self.node_version[node] += 1
        self.cpu_used[node] -= pod.cpu_milli
        self.mem_used[node] -= pod.memory_mib
        self.eph_used[node] -= pod.ephemeral_mib
        for slot in placement.gpu_slots:
            self.gpu_free[node, slot] += pod.gpu_milli if pod.shares_gpu else 1000
        self._gpu_changed(node)
        del self.pods_on[node][key]
        self.kinds[pod.priority, pod.qos] -= 1
        held = self._held(pod)
        held.cpu[node] -= pod.cpu_milli
        held.mem[node] -= pod.memory_mib
        held.eph[node] -= pod.ephemeral_mib
        share = pod.gpu_milli if pod.shares_gpu else 1000
        for slot in placement.gpu_slots:
            held.gpu[node, slot] -= share
            if held.smallest[node, slot] == share:  # it may have been the smallest: look again
                held.smallest[node, slot] = min(
                    (
                        other.pod.gpu_milli if other.pod.shares_gpu else 1000
                        for other in map(self.placements.__getitem__, self.pods_on[node])
                        if slot in other.gpu_slots
                        and (other.pod.priority, other.pod.qos) == (pod.priority, pod.qos)
                    ),
                    default=NO_SHARE,
                )
        self.generation += 1
        return pod

    def _held(self, pod: Pod) -> Held:
        kind = (pod.priority, pod.qos)
        held = self.held.get(kind)
        if held is None:
            n, shape = len(self.nodes), (len(self.nodes), self.max_gpus)
            held = Held(
                np.zeros(n),
                np.zeros(n),
                np.zeros(n),
                np.zeros(shape, dtype=np.int64),
                np.full(shape, NO_SHARE, dtype=np.int64),
            )
            self.held[kind] = held
        return held

    def _gpu_changed(self, node: int) -> None:
        self.whole_free[node] = int((self.gpu_free[node] == 1000).sum())
        self.max_free[node] = int(self.gpu_free[node].max())

    def set_metrics(self, name: str, metrics: NodeMetrics) -> None:
        self.metrics_seen = True
        i = self.index[name]
        self.metrics_cpu[i] = metrics.cpu
        self.metrics_io[i] = metrics.iowait
        self.metrics_net[i] = metrics.network
        self.metrics_time[i] = metrics.timestamp

    def fresh_metrics(self, max_age: float, now: float) -> Mask:
        """Nodes whose metrics are younger than `max_age` seconds; the rest are unknown."""
        fresh: Mask = (now - self.metrics_time) <= max_age
        return fresh

    # --- derived columns -----------------------------------------------------------------

    @property
    def cpu_free(self) -> Floats:
        free: Floats = self.cpu_cap - self.cpu_used
        return free

    @property
    def mem_free(self) -> Floats:
        free: Floats = self.mem_cap - self.mem_used
        return free

    def gpu_allocated_milli(self) -> int:
        return int((np.where(self.gpu_exists, 1000, 0) - self.gpu_free).sum())

    def gpu_capacity_milli(self) -> int:
        return int(self.gpu_count.sum() * 1000)
