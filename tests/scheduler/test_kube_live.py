"""The adapter against a real API server: runs when KUBECONFIG names a cluster.

It creates, in a namespace of its own, a pause pod that names a test scheduler, lets
KubeScheduler bind it, checks the binding and the Scheduled event, takes a Lease, and
deletes the namespace.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from heps_scheduler import config, kube, leader
from heps_scheduler.fgd import TaskClass
from heps_scheduler.framework import Scheduler
from heps_scheduler.snapshot import Snapshot

pytestmark = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="runs when KUBECONFIG names a Kubernetes cluster (no API server can run on this "
    "build host; test_kube.py runs these scenarios against FakeApiServer)",
)


@pytest.fixture
def cluster() -> Iterator[tuple[Any, Any, str]]:
    from kubernetes import client
    from kubernetes import config as kubeconfig

    kubeconfig.load_kube_config()
    core, coordination = client.CoreV1Api(), client.CoordinationV1Api()
    namespace = f"heps-sched-test-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    yield core, coordination, namespace
    core.delete_namespace(namespace)


def test_binds_a_real_pod_and_records_the_event(cluster: tuple[Any, Any, str]) -> None:
    core, _, namespace = cluster
    name = "heps-live-test"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "sleeper"},
            "spec": {
                "schedulerName": name,
                "containers": [
                    {
                        "name": "pause",
                        "image": "registry.k8s.io/pause:3.9",
                        "resources": {"limits": {"cpu": "10m", "memory": "16Mi"}},
                    }
                ],
            },
        },
    )

    heps = config.preset_settings("heps")
    # never preempt on a real cluster: a pod that fits nowhere must not delete others' pods
    settings = replace(heps, plugins={**heps.plugins, "postFilter": ()})

    def build(snap: Snapshot) -> Scheduler:
        return Scheduler(snap, config.build(settings, [TaskClass(1000, 1, 1000, 1.0)]))

    scheduler = kube.KubeScheduler(core, {name: build})
    scheduler.sync()
    decision = scheduler.schedule_next()
    assert decision is not None and decision.node is not None
    pod = core.read_namespaced_pod("sleeper", namespace)
    assert pod.spec.node_name == decision.node
    time.sleep(1)
    events = core.list_namespaced_event(namespace).items
    assert any(e.reason == "Scheduled" and e.involved_object.name == "sleeper" for e in events)
    again = kube.pod_from_k8s(
        kube.raw(core.read_namespaced_pod("sleeper", namespace, _preload_content=False))
    )
    assert scheduler.bind_api(again, decision.node).message == "binding failed (409)"


def test_lease_has_one_holder(cluster: tuple[Any, Any, str]) -> None:
    _, coordination, namespace = cluster
    one = leader.LeaseElector(coordination, namespace, "heps-test", "one")
    two = leader.LeaseElector(coordination, namespace, "heps-test", "two")
    assert one.try_acquire_or_renew() and not two.try_acquire_or_renew()
