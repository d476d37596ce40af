"""The Kubernetes adapter, the serve loop, leader election and the metrics agent, through
the real `kubernetes` client against the FakeApiServer test double (see fake_apiserver.py
for what it does not model; test_kube_live.py runs two of these scenarios against a real
API server when KUBECONFIG is set)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from heps_scheduler import agent, config, kube, leader, serve
from heps_scheduler.fgd import TaskClass
from heps_scheduler.framework import Scheduler
from heps_scheduler.model import (
    BURSTABLE,
    GUARANTEED,
    AntiAffinityTerm,
    Pod,
    Requirement,
    Toleration,
)
from heps_scheduler.snapshot import Snapshot
from tests.scheduler.fake_apiserver import FakeApiServer

CLASSES = [TaskClass(1000, 1, 1000, 1.0)]


def k8s_node(
    name: str, cpu: str = "8", memory: str = "32Gi", gpus: int = 0, **spec: Any
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "ephemeral-storage": "100Gi", "pods": "110"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": spec,
        "status": {"allocatable": allocatable, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def k8s_pod(
    name: str,
    cpu: str = "1",
    memory: str = "1Gi",
    scheduler: str = "heps-scheduler",
    node: str | None = None,
    gpus: int = 0,
) -> dict[str, Any]:
    limits = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    spec: dict[str, Any] = {
        "schedulerName": scheduler,
        "containers": [{"name": "notebook", "resources": {"limits": limits}}],
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "jhub",
            "uid": f"uid-{name}",
            "creationTimestamp": "2026-11-25T08:00:00Z",
        },
        "spec": spec,
        "status": {"phase": "Pending" if not node else "Running"},
    }


def make_scheduler(core: Any) -> kube.KubeScheduler:
    def build(snap: Snapshot) -> Scheduler:
        return Scheduler(snap, config.build(config.preset_settings("heps"), CLASSES))

    return kube.KubeScheduler(core, {"heps-scheduler": build}, clock=lambda: 1000.0)


def test_pod_from_a_jupyterhub_manifest_is_the_full_expected_object() -> None:
    obj = k8s_pod("jupyter-alice", cpu="4", memory="16Gi", gpus=1)
    obj["metadata"]["labels"] = {"component": "singleuser-server"}
    obj["spec"].update(
        {
            "priority": 10,
            "nodeSelector": {"nvidia.com/gpu.product": "A100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "initContainers": [{"name": "user-init", "resources": {"requests": {"cpu": "8"}}}],
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {"matchLabels": {"component": "singleuser-server"}},
                            "topologyKey": "kubernetes.io/hostname",
                        }
                    ]
                }
            },
        }
    )
    assert kube.pod_from_k8s(obj) == Pod(
        name="jupyter-alice",
        namespace="jhub",
        uid="uid-jupyter-alice",
        cpu_milli=8000,
        memory_mib=16384,
        gpus=1,
        gpu_milli=1000,
        priority=10,
        qos=BURSTABLE,
        created=datetime(2026, 11, 25, 8, 0, tzinfo=UTC).timestamp(),
        labels={"component": "singleuser-server"},
        node_selector={"nvidia.com/gpu.product": "A100"},
        tolerations=(Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule"),),
        anti_affinity=(
            AntiAffinityTerm((Requirement("component", "In", ("singleuser-server",)),)),
        ),
    )
    assert kube.pod_from_k8s(k8s_pod("g")).qos == GUARANTEED
    share = k8s_pod("s")
    share["spec"]["containers"][0]["resources"]["limits"]["heps.ihep.ac.cn/gpu-milli"] = "250"
    assert (kube.pod_from_k8s(share).gpus, kube.pod_from_k8s(share).gpu_milli) == (1, 250)


def test_node_conversion_and_metrics_annotation() -> None:
    obj = k8s_node(
        "gpu-1",
        cpu="96",
        memory="512Gi",
        gpus=8,
        unschedulable=True,
        taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
    )
    obj["status"]["conditions"].append({"type": "DiskPressure", "status": "True"})
    node = kube.node_from_k8s(obj)
    assert (node.cpu_milli, node.memory_mib, node.gpus) == (96000, 524288, 8)
    assert node.unschedulable and node.disk_pressure and node.taints[0].key == "nvidia.com/gpu"
    assert kube.metrics_from_k8s(obj) is None
    obj["metadata"]["annotations"] = {kube.METRICS_ANNOTATION: "not json"}
    assert kube.metrics_from_k8s(obj) is None


def test_schedules_binds_and_posts_events(fake: FakeApiServer, api: tuple[Any, Any]) -> None:
    core, _ = api
    fake.nodes = {"small": k8s_node("small", cpu="2"), "big": k8s_node("big", cpu="16")}
    fake.pods = {
        ("jhub", "placed"): k8s_pod("placed", cpu="2", node="small"),
        ("jhub", "alice"): k8s_pod("alice", cpu="4"),
        ("jhub", "huge"): k8s_pod("huge", cpu="64"),
        ("jhub", "other"): k8s_pod("other", scheduler="default-scheduler"),
    }
    scheduler = make_scheduler(core)
    scheduler.sync()
    assert "jhub/placed" in scheduler.snap.placements and len(scheduler.queue) == 2
    decisions = [scheduler.schedule_next(), scheduler.schedule_next(), scheduler.schedule_next()]
    assert [d.node if d else None for d in decisions] == ["big", None, None]
    assert fake.bindings == [kube.binding_body(kube.pod_from_k8s(k8s_pod("alice")), "big")]
    assert fake.pods[("jhub", "alice")]["spec"]["nodeName"] == "big"
    assert fake.pods[("jhub", "other")]["spec"].get("nodeName") is None
    reasons = [(e["reason"], e["type"], e["involvedObject"]["name"]) for e in fake.events]
    assert reasons == [("Scheduled", "Normal", "alice"), ("FailedScheduling", "Warning", "huge")]
    assert fake.events[1]["message"] == (
        "0/2 nodes are available: 2 Insufficient resources. preemption: no pod of lower priority."
    )  # every pod here is Guaranteed
    assert scheduler.queue.parked == 1


def test_conflict_means_already_bound_and_never_binds_twice(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    core, _ = api
    fake.nodes = {"a": k8s_node("a"), "b": k8s_node("b")}
    fake.pods = {("jhub", "bob"): k8s_pod("bob", cpu="6")}
    scheduler = make_scheduler(core)
    scheduler.sync()
    fake.pods[("jhub", "bob")]["spec"]["nodeName"] = "a"  # another replica got there first
    decision = scheduler.schedule_next()
    assert decision is not None and fake.bindings == []
    placed = scheduler.snap.placements["jhub/bob"]
    assert scheduler.snap.nodes[placed.node].name == "a"  # the real placement, once
    assert scheduler.snap.cpu_used.tolist() == [6000.0, 0.0]
    assert scheduler.schedule_next() is None and fake.events == []


def test_pod_deleted_before_binding_frees_its_reservation(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    core, _ = api
    fake.nodes = {"a": k8s_node("a")}
    fake.pods = {("jhub", "carol"): k8s_pod("carol", cpu="6")}
    scheduler = make_scheduler(core)
    scheduler.sync()
    del fake.pods[("jhub", "carol")]
    scheduler.schedule_next()
    assert scheduler.snap.placements == {} and scheduler.snap.cpu_used.tolist() == [0.0]


def test_node_events_wake_parked_pods_and_node_loss_resyncs(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    core, _ = api
    fake.nodes = {"a": k8s_node("a", unschedulable=True)}
    fake.pods = {("jhub", "dave"): k8s_pod("dave")}
    scheduler = make_scheduler(core)
    scheduler.sync()
    assert scheduler.schedule_next().node is None  # type: ignore[union-attr]
    fake.nodes["a"]["spec"] = {}
    scheduler.clock = lambda: 1002.0  # past the 1 s backoff
    scheduler.observe_node("MODIFIED", fake.nodes["a"])
    assert scheduler.schedule_next().node == "a"  # type: ignore[union-attr]
    fake.nodes["b"] = k8s_node("b")
    scheduler.observe_node("ADDED", fake.nodes["b"])
    assert [n.name for n in scheduler.snap.nodes] == ["a", "b"]
    assert "jhub/dave" in scheduler.snap.placements  # rebuilt from the API's truth


def test_lease_election_one_leader_takeover_after_expiry(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    _, coordination = api
    now = [1000.0]
    first = leader.LeaseElector(
        coordination, "kube-system", "heps-scheduler", "one", 15, lambda: now[0]
    )
    second = leader.LeaseElector(
        coordination, "kube-system", "heps-scheduler", "two", 15, lambda: now[0]
    )
    assert first.try_acquire_or_renew() and not second.try_acquire_or_renew()
    now[0] += 10
    assert first.try_acquire_or_renew() and not second.try_acquire_or_renew()
    now[0] += 16  # "one" stopped renewing
    assert second.try_acquire_or_renew() and not first.try_acquire_or_renew()
    spec = fake.leases[("kube-system", "heps-scheduler")]["spec"]
    assert (spec["holderIdentity"], spec["leaseTransitions"]) == ("two", 1)


def test_lease_race_has_one_winner(fake: FakeApiServer, api: tuple[Any, Any]) -> None:
    _, coordination = api
    now = [0.0]
    one = leader.LeaseElector(coordination, "ns", "lock", "one", 15, lambda: now[0])
    assert one.try_acquire_or_renew()
    now[0] = 100.0  # expired for everybody
    stale = json.loads(json.dumps(fake.leases[("ns", "lock")]))
    two = leader.LeaseElector(coordination, "ns", "lock", "two", 15, lambda: now[0])
    assert two.try_acquire_or_renew()
    fake.leases[("ns", "lock")]["metadata"]["resourceVersion"] = "999"  # a third writer
    stale["spec"]["holderIdentity"] = "three"
    with pytest.raises(client.ApiException) as caught:
        coordination.replace_namespaced_lease("lock", "ns", stale, _preload_content=False)
    assert caught.value.status == 409


def test_agent_reads_proc_and_publishes_what_the_scheduler_reads(
    fake: FakeApiServer, api: tuple[Any, Any], tmp_path: Path
) -> None:
    core, _ = api
    real = agent.read_sample()
    assert real.cpu_total > 0 and real.cpu_idle <= real.cpu_total
    before = agent.Sample(100.0, 10_000, 6_000, 500, {"eth0": 0}, 0)
    after = agent.Sample(110.0, 20_000, 8_000, 1_500, {"eth0": 625_000_000}, 2_000)
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "speed").write_text("1000\n")
    values = agent.metrics(before, after, sys=tmp_path)
    assert values == {"cpu": 0.7, "iowait": 0.1, "network": 0.5, "disk": 0.2, "timestamp": 110.0}
    fake.nodes = {"n1": k8s_node("n1")}
    agent.publish(core, "n1", values)
    metrics = kube.metrics_from_k8s(fake.nodes["n1"])
    assert metrics is not None and (metrics.cpu, metrics.iowait, metrics.network) == (0.7, 0.1, 0.5)
    assert metrics.timestamp == 110.0


def new_pod(name: str, cpu: str, scheduler: str = "heps-scheduler") -> dict[str, Any]:
    """A pod as a user submits it: no uid, timestamps or status; the server adds them."""
    pod = k8s_pod(name, cpu=cpu, scheduler=scheduler)
    del pod["status"], pod["metadata"]["uid"], pod["metadata"]["creationTimestamp"]
    return pod


def names(response: Any) -> list[str]:
    return sorted(o["metadata"]["name"] for o in kube.raw(response)["items"])


def test_lists_and_watches_honour_selectors_and_resource_versions(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    core, _ = api
    fake.nodes = {"a": k8s_node("a"), "b": k8s_node("b", unschedulable=True)}
    fake.pods = {
        ("jhub", "placed"): k8s_pod("placed", node="a"),
        ("jhub", "alice"): k8s_pod("alice"),
        ("other", "x"): k8s_pod("x", scheduler="default-scheduler"),
    }
    fake.pods[("jhub", "alice")]["metadata"]["labels"] = {"component": "singleuser-server"}
    fake.pods[("other", "x")]["metadata"]["namespace"] = "other"
    pods, raw = core.list_pod_for_all_namespaces, {"_preload_content": False}
    assert names(pods(field_selector="spec.nodeName=", **raw)) == ["alice", "x"]
    unbound_ours = "spec.schedulerName=heps-scheduler,spec.nodeName="
    assert names(pods(field_selector=unbound_ours, **raw)) == ["alice"]
    assert names(pods(label_selector="component in (hub, singleuser-server)", **raw)) == ["alice"]
    assert names(pods(label_selector="!component", **raw)) == ["placed", "x"]
    assert names(core.list_namespaced_pod("other", **raw)) == ["x"]
    assert names(core.list_node(field_selector="spec.unschedulable!=true", **raw)) == ["a"]
    with pytest.raises(client.ApiException) as refused:
        pods(field_selector="spec.containers=x", **raw)
    assert refused.value.status == 400
    assert "field label not supported: spec.containers" in str(refused.value.body)

    version = kube.raw(pods(**raw))["metadata"]["resourceVersion"]
    core.create_namespaced_pod("jhub", new_pod("bob", cpu="1"), **raw)
    bob = kube.pod_from_k8s(kube.raw(core.read_namespaced_pod("bob", "jhub", **raw)))
    core.create_namespaced_binding("jhub", kube.binding_body(bob, "a"), **raw)
    seen, stream = [], watch.Watch()
    for event in stream.stream(
        pods, resource_version=version, field_selector="spec.nodeName=", timeout_seconds=5
    ):
        seen.append((event["type"], event["raw_object"]["metadata"]["name"]))
        if len(seen) == 2:
            stream.stop()
    # only what changed after the list; bound, bob no longer matches spec.nodeName=
    assert seen == [("ADDED", "bob"), ("DELETED", "bob")]


def test_merge_patch_null_deletes_and_a_stale_version_conflicts(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    core, _ = api
    fake.nodes = {"n1": k8s_node("n1")}
    agent.publish(core, "n1", {"cpu": 0.5, "iowait": 0, "network": 0, "timestamp": 1.0})
    assert kube.metrics_from_k8s(fake.nodes["n1"]) is not None
    withdrawn = {"metadata": {"annotations": {kube.METRICS_ANNOTATION: None}, "labels": {"z": "b"}}}
    core.patch_node("n1", withdrawn, _preload_content=False)
    meta = fake.nodes["n1"]["metadata"]
    assert not meta.get("annotations")  # null deleted the key (RFC 7386)
    assert meta["labels"] == {"kubernetes.io/hostname": "n1", "z": "b"}  # merged, not replaced
    stale = {"metadata": {"resourceVersion": "1", "labels": {"z": "c"}}}
    with pytest.raises(client.ApiException) as conflict:
        core.patch_node("n1", stale, _preload_content=False)
    assert conflict.value.status == 409 and meta["labels"]["z"] == "b"


def until(fake: FakeApiServer, condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for the serve loop (another thread) to get somewhere; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        with fake.lock:
            if condition():
                return
        assert time.monotonic() < deadline, "the serve loop did not get there"
        time.sleep(0.02)


def test_serve_loop_schedules_what_the_watches_bring_binds_and_posts_events(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    core, coordination = api
    fake.nodes = {"small": k8s_node("small", cpu="2"), "big": k8s_node("big", cpu="16")}
    fake.pods = {
        ("jhub", "placed"): k8s_pod("placed", cpu="2", node="small"),
        ("jhub", "alice"): k8s_pod("alice", cpu="4"),
    }
    settings = config.SchedulerConfig()
    stop = threading.Event()
    loop = threading.Thread(
        target=serve.run, args=(core, coordination, settings, True, "kube-system", stop)
    )
    loop.start()

    def said() -> list[tuple[str, str]]:
        return [(e["reason"], e["involvedObject"]["name"]) for e in fake.events]

    try:
        until(fake, lambda: ("Scheduled", "alice") in said())  # from the first list
        # These arrive through the pod watch only, in this order.
        arriving = [
            new_pod("x", "1", "default-scheduler"),
            new_pod("bob", "8"),
            new_pod("huge", "64"),
        ]
        for pod in arriving:
            core.create_namespaced_pod("jhub", pod, _preload_content=False)
        until(fake, lambda: {("Scheduled", "bob"), ("FailedScheduling", "huge")} <= set(said()))
    finally:
        stop.set()
        fake.close()  # ends the watch streams
        loop.join(timeout=5)
    assert not loop.is_alive()
    bound = {b["metadata"]["name"]: b["target"]["name"] for b in fake.bindings}
    assert bound == {"alice": "big", "bob": "big"}  # small is full; x is not ours
    assert fake.pods[("jhub", "bob")]["spec"]["nodeName"] == "big"
    assert said()[:2] == [("Scheduled", "alice"), ("Scheduled", "bob")]
    assert {reason for reason, _ in said()[2:]} == {"FailedScheduling"}  # huge, retried
    lease = fake.leases[("kube-system", settings.scheduler_name)]["spec"]
    assert lease["holderIdentity"] == f"{socket.gethostname()}-{os.getpid()}"
