"""QoS exactly as Kubernetes computes it, effective requests, and the scheduling queue."""

from __future__ import annotations

from typing import Any

import pytest

from heps_scheduler.model import BEST_EFFORT, BURSTABLE, GUARANTEED, Pod, pod_requests, qos_class
from heps_scheduler.queue import SchedulingQueue


def container(
    requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": "c", "resources": resources}


@pytest.mark.parametrize(
    ("containers", "init", "expected"),
    [
        ([container()], [], BEST_EFFORT),
        (
            [container(limits={"cpu": "1", "memory": "1Gi"})],
            [],
            GUARANTEED,
        ),  # requests default to limits
        ([container({"cpu": "1", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"})], [], GUARANTEED),
        (
            [container({"cpu": "1000m", "memory": "1024Mi"}, {"cpu": "1", "memory": "1Gi"})],
            [],
            GUARANTEED,
        ),
        ([container({"cpu": "500m"}, {"cpu": "1", "memory": "1Gi"})], [], BURSTABLE),
        ([container({"cpu": "1"})], [], BURSTABLE),
        ([container(limits={"cpu": "1", "memory": "1Gi"}), container()], [], BURSTABLE),
        (
            [container(limits={"cpu": "1", "memory": "1Gi"})],
            [container({"cpu": "100m"})],
            BURSTABLE,
        ),
        ([container({"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "1"})], [], BEST_EFFORT),
        ([container({"cpu": "0"}, {"cpu": "0"})], [], BEST_EFFORT),
    ],
)
def test_qos_class_follows_kubernetes(
    containers: list[dict[str, Any]], init: list[dict[str, Any]], expected: str
) -> None:
    assert qos_class(containers, init) == expected


def test_effective_requests_take_the_largest_init_container() -> None:
    total = pod_requests(
        [container({"cpu": "500m", "memory": "1Gi"}), container(limits={"cpu": "1"})],
        [container({"cpu": "4", "memory": "256Mi"})],
    )
    assert total == {"cpu": 4.0, "memory": float(2**30)}


def test_queue_orders_by_priority_then_qos_then_age() -> None:
    queue = SchedulingQueue()
    pods = [
        Pod("old-besteffort", qos=BEST_EFFORT, created=1),
        Pod("new-guaranteed", qos=GUARANTEED, created=5),
        Pod("old-guaranteed", qos=GUARANTEED, created=2),
        Pod("burstable", qos=BURSTABLE, created=0),
        Pod("urgent", priority=100, qos=BEST_EFFORT, created=9),
    ]
    for pod in pods:
        queue.add(pod)
    order = [queue.pop() for _ in pods]
    assert [p.name for p in order if p] == [
        "urgent",
        "old-guaranteed",
        "new-guaranteed",
        "burstable",
        "old-besteffort",
    ]
    assert queue.pop() is None


def test_unschedulable_pod_backs_off_and_returns_only_after_a_cluster_change() -> None:
    queue = SchedulingQueue()
    pod = Pod("waits")
    assert queue.unschedulable(pod, now=0.0, generation=7) == 1.0
    assert queue.flush(now=5.0, generation=7) == 0  # nothing changed: retrying is pointless
    assert queue.flush(now=0.5, generation=8) == 0  # changed, but still backing off
    assert queue.flush(now=1.0, generation=8) == 1 and queue.pop() == pod
    assert queue.unschedulable(pod, now=2.0, generation=8) == 2.0
    for _ in range(5):
        backoff = queue.unschedulable(pod, now=2.0, generation=8)
    assert backoff == 10.0
    queue.scheduled(pod)
    assert queue.unschedulable(pod, now=3.0, generation=8) == 1.0
