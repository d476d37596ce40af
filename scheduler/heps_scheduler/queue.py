"""The scheduling queue: priority first, then QoS class, then age.

An unschedulable pod waits with exponential backoff (1 s doubling to 10 s, as
kube-scheduler does) and only returns once the cluster has changed since it failed:
retrying against the same cluster would fail the same way.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from heps_scheduler.model import QOS_RANK, Pod

INITIAL_BACKOFF, MAX_BACKOFF = 1.0, 10.0


def sort_key(pod: Pod) -> tuple[int, int, float]:
    return (-pod.priority, QOS_RANK[pod.qos], pod.created)


@dataclass
class _Parked:
    pod: Pod
    attempts: int
    ready_at: float
    generation: int
    """Cluster generation when it last failed."""


class SchedulingQueue:
    def __init__(self) -> None:
        self._active: list[tuple[tuple[int, int, float], int, Pod]] = []
        self._order = itertools.count()  # FIFO among equal keys
        self._parked: dict[str, _Parked] = {}
        self._attempts: dict[str, int] = {}

    def add(self, pod: Pod) -> None:
        heapq.heappush(self._active, (sort_key(pod), next(self._order), pod))

    def pop(self) -> Pod | None:
        return heapq.heappop(self._active)[2] if self._active else None

    def unschedulable(self, pod: Pod, now: float, generation: int) -> float:
        """Park a pod that fit nowhere; returns its backoff in seconds."""
        attempts = self._attempts.get(pod.key, 0) + 1
        self._attempts[pod.key] = attempts
        backoff = min(INITIAL_BACKOFF * 2.0 ** (attempts - 1), MAX_BACKOFF)
        self._parked[pod.key] = _Parked(pod, attempts, now + backoff, generation)
        return backoff

    def scheduled(self, pod: Pod) -> None:
        self._attempts.pop(pod.key, None)

    def flush(self, now: float, generation: int) -> int:
        """Move back pods whose backoff is over and whose cluster has changed since."""
        ready = [
            p for p in self._parked.values() if p.ready_at <= now and p.generation != generation
        ]
        for parked in ready:
            del self._parked[parked.pod.key]
            self.add(parked.pod)
        return len(ready)

    def __len__(self) -> int:
        return len(self._active)

    @property
    def parked(self) -> int:
        return len(self._parked)
