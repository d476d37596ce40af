"""Each filter and score plugin on small hand-made clusters, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest

from heps_scheduler import config, scores
from heps_scheduler.cycle import CycleState
from heps_scheduler.fgd import TaskClass
from heps_scheduler.filters import (
    DiskPressure,
    InterPodAntiAffinity,
    NodeAffinity,
    NodeResourcesFit,
    NodeUnschedulable,
    PodTopologySpread,
    TaintToleration,
)
from heps_scheduler.framework import Decision, Scheduler, nodes_to_find
from heps_scheduler.model import (
    BEST_EFFORT,
    GPU_MODEL_LABEL,
    GUARANTEED,
    AntiAffinityTerm,
    Node,
    Pod,
    Requirement,
    SpreadConstraint,
    Taint,
    Toleration,
)
from heps_scheduler.snapshot import NodeMetrics, Snapshot


def gpu_node(name: str, gpus: int = 4, model: str = "A100", **kw: object) -> Node:
    labels = {"kubernetes.io/hostname": name, GPU_MODEL_LABEL: model, "zone": "z1"}
    return Node(name, 32000, 131072, gpus=gpus, gpu_model=model, labels=labels, **kw)  # type: ignore[arg-type]


def cpu_node(name: str, **kw: object) -> Node:
    return Node(name, 16000, 65536, labels={"kubernetes.io/hostname": name, "zone": "z2"}, **kw)  # type: ignore[arg-type]


def allowed(plugin: object, pod: Pod, snap: Snapshot) -> list[str]:
    mask = plugin.filter(CycleState(), pod, snap, np.arange(len(snap.nodes)))  # type: ignore[attr-defined]
    return [snap.nodes[i].name for i in np.flatnonzero(mask)]


def heps_scheduler(snap: Snapshot, classes: list[TaskClass] | None = None) -> Scheduler:
    classes = classes or [TaskClass(1000, 1, 500, 0.5), TaskClass(1000, 1, 1000, 0.5)]
    return Scheduler(snap, config.build(config.preset_settings("heps"), classes))


def test_no_node_fits_reports_reasons_per_filter() -> None:
    snap = Snapshot(
        [cpu_node("c1"), cpu_node("c2", unschedulable=True), gpu_node("g1", disk_pressure=True)]
    )
    decision = heps_scheduler(snap).schedule(Pod("huge", cpu_milli=64000, memory_mib=1))
    assert decision.node is None
    assert decision.reasons == {
        "node(s) were unschedulable": 1,
        "node(s) had disk pressure": 1,
        "Insufficient resources": 1,
    }
    assert decision.message(3) == (
        "0/3 nodes are available: 1 Insufficient resources, "
        "1 node(s) had disk pressure, 1 node(s) were unschedulable."
    )


def test_gpu_model_mismatch_and_node_selector() -> None:
    snap = Snapshot(
        [gpu_node("a100", model="A100"), gpu_node("v100", model="V100"), cpu_node("cpu")]
    )
    pod = Pod("train", gpus=1, gpu_milli=1000, gpu_models=("V100",))
    assert allowed(NodeAffinity(), pod, snap) == ["v100"]
    assert (
        allowed(NodeAffinity(), Pod("t", gpus=1, gpu_milli=1000, gpu_models=("H100",)), snap) == []
    )
    assert allowed(NodeAffinity(), Pod("s", node_selector={"zone": "z2"}), snap) == ["cpu"]
    term = (Requirement(GPU_MODEL_LABEL, "In", ("A100", "H100")),)
    assert allowed(NodeAffinity(), Pod("a", node_affinity=(term,)), snap) == ["a100"]
    not_in = (Requirement("zone", "NotIn", ("z1",)),)
    assert allowed(NodeAffinity(), Pod("n", node_affinity=(not_in,)), snap) == ["cpu"]


def test_taints_tolerations_and_unschedulable() -> None:
    tainted = gpu_node("gpu", taints=(Taint("nvidia.com/gpu", "present", "NoSchedule"),))
    soft = cpu_node("soft", taints=(Taint("x", "y", "PreferNoSchedule"),))
    snap = Snapshot([tainted, soft, cpu_node("cordoned", unschedulable=True)])
    assert allowed(TaintToleration(), Pod("p"), snap) == ["soft", "cordoned"]
    tolerant = Pod("p", tolerations=(Toleration("nvidia.com/gpu", "Exists"),))
    assert allowed(TaintToleration(), tolerant, snap) == ["gpu", "soft", "cordoned"]
    assert allowed(NodeUnschedulable(), Pod("p"), snap) == ["gpu", "soft"]


def test_disk_pressure_by_condition_or_taint_unless_tolerated() -> None:
    by_taint = cpu_node("t", taints=(Taint("node.kubernetes.io/disk-pressure", "", "NoSchedule"),))
    snap = Snapshot([cpu_node("ok"), cpu_node("cond", disk_pressure=True), by_taint])
    assert allowed(DiskPressure(), Pod("p"), snap) == ["ok"]
    tolerant = Pod("p", tolerations=(Toleration("node.kubernetes.io/disk-pressure", "Exists"),))
    assert allowed(DiskPressure(), tolerant, snap) == ["ok", "cond", "t"]
    assert allowed(TaintToleration(), Pod("p"), snap) == ["ok", "cond", "t"]  # handled above


def test_resources_fit_whole_gpus_and_shares() -> None:
    snap = Snapshot([gpu_node("g", gpus=2), cpu_node("c")])
    snap.assume(Pod("half", gpus=1, gpu_milli=600), 0, (0,))
    fit = NodeResourcesFit()
    assert allowed(fit, Pod("share", gpus=1, gpu_milli=400), snap) == ["g"]
    assert allowed(fit, Pod("two", gpus=2, gpu_milli=1000), snap) == []
    assert allowed(fit, Pod("one", gpus=1, gpu_milli=1000), snap) == ["g"]
    assert allowed(fit, Pod("cpu", cpu_milli=20000), snap) == ["g"]
    assert allowed(fit, Pod("disk", ephemeral_mib=2**31), snap) == []


def test_required_anti_affinity_both_ways() -> None:
    snap = Snapshot([cpu_node("a"), cpu_node("b")])
    selector = (Requirement("app", "In", ("hub",)),)
    snap.assume(Pod("hub-0", labels={"app": "hub"}), 0)
    replica = Pod("hub-1", labels={"app": "hub"}, anti_affinity=(AntiAffinityTerm(selector),))
    assert allowed(InterPodAntiAffinity(), replica, snap) == ["b"]
    snap.assume(Pod("loner", anti_affinity=(AntiAffinityTerm(selector),)), 1)
    assert allowed(InterPodAntiAffinity(), Pod("hub-2", labels={"app": "hub"}), snap) == ["a"]
    by_zone = Pod("z", labels={"app": "hub"}, anti_affinity=(AntiAffinityTerm(selector, "zone"),))
    assert allowed(InterPodAntiAffinity(), by_zone, snap) == []  # both nodes are in zone z2


def test_topology_spread_do_not_schedule() -> None:
    snap = Snapshot([gpu_node("g1"), cpu_node("c1"), cpu_node("c2")])  # zones z1, z2, z2
    selector = (Requirement("app", "In", ("nb",)),)
    snap.assume(Pod("nb-0", labels={"app": "nb"}), 1)
    pod = Pod("nb-1", labels={"app": "nb"}, spread=(SpreadConstraint(1, "zone", selector),))
    spread = PodTopologySpread(NodeAffinity())
    assert allowed(spread, pod, snap) == ["g1"]  # z2 has 1, z1 has 0: only z1 keeps skew <= 1
    unlabelled = Pod("x", spread=(SpreadConstraint(1, "rack", selector),))
    assert allowed(spread, unlabelled, snap) == []


def test_least_most_and_balanced_allocation_formulas() -> None:
    snap = Snapshot([Node("n", 4000, 4096)])
    snap.assume(Pod("used", cpu_milli=1000, memory_mib=3072), 0)
    pod = Pod("p", cpu_milli=1000, memory_mib=0)
    nodes = np.array([0])
    # after: cpu 2000/4000 = 0.5, memory 3072/4096 = 0.75
    assert scores.LeastAllocated().score(CycleState(), pod, snap, nodes)[0] == pytest.approx(
        (0.5 + 0.25) / 2 * 100
    )
    assert scores.MostAllocated().score(CycleState(), pod, snap, nodes)[0] == pytest.approx(
        (0.5 + 0.75) / 2 * 100
    )
    assert scores.BalancedAllocation().score(CycleState(), pod, snap, nodes)[0] == pytest.approx(
        (1 - 0.125) * 100
    )


def test_stale_metrics_count_as_unknown_not_idle() -> None:
    snap = Snapshot([cpu_node("fresh-busy"), cpu_node("stale-idle"), cpu_node("never")])
    snap.set_metrics("fresh-busy", NodeMetrics(0.9, 0.9, 0.9, timestamp=1000.0))
    snap.set_metrics("stale-idle", NodeMetrics(0.0, 0.0, 0.0, timestamp=100.0))
    load = scores.LoadAware(max_age=60, unknown_load=0.5, clock=lambda: 1010.0)
    values = load.load(snap, np.arange(3))
    assert values.tolist() == pytest.approx([0.9, 0.5, 0.5])
    qos = scores.QosAware(load)
    guaranteed = qos.score(CycleState(), Pod("g", qos=GUARANTEED), snap, np.arange(3))
    besteffort = qos.score(CycleState(), Pod("b", qos=BEST_EFFORT), snap, np.arange(3))
    assert guaranteed.tolist() == pytest.approx([10.0, 50.0, 50.0])  # loaded node avoided
    assert besteffort.tolist() == pytest.approx([90.0, 50.0, 50.0])  # may take the busy one
    snap.metrics_time[:] = 1000.0  # fresh everywhere now: the formerly stale node is idle
    assert load.load(snap, np.arange(3)).tolist() == pytest.approx([0.9, 0.0, 0.5])


def test_least_allocated_large_pods_spreads_only_pods_beyond_one_gpu() -> None:
    snap = Snapshot([gpu_node("busy"), gpu_node("idle")])
    snap.assume(Pod("used", cpu_milli=16000, memory_mib=65536), 0)
    nodes = np.arange(2)
    large = scores.LeastAllocatedLargePods()
    for pod in (Pod("two", gpus=2), Pod("cpu-only", cpu_milli=1000)):
        assert large.score(CycleState(), pod, snap, nodes).tolist() == pytest.approx(
            scores.LeastAllocated().score(CycleState(), pod, snap, nodes).tolist()
        )
        assert (
            large.score(CycleState(), pod, snap, nodes)[1]
            > large.score(CycleState(), pod, snap, nodes)[0]
        )
    for pod in (Pod("one", gpus=1), Pod("share", gpus=1, gpu_milli=500)):
        assert large.score(CycleState(), pod, snap, nodes).tolist() == [0.0, 0.0]


def test_gpu_node_avoidance() -> None:
    snap = Snapshot([gpu_node("g"), cpu_node("c")])
    avoid = scores.GpuNodeAvoidance().score(
        CycleState(), Pod("cpu-only", cpu_milli=1), snap, np.arange(2)
    )
    assert avoid.tolist() == [0.0, 100.0]


def test_fgd_puts_a_share_on_the_fullest_gpu_that_fits() -> None:
    snap = Snapshot([gpu_node("g1", gpus=2), gpu_node("g2", gpus=2)])
    snap.assume(Pod("a", gpus=1, gpu_milli=600), 1, (1,))
    decision = heps_scheduler(snap).schedule(Pod("b", gpus=1, gpu_milli=400))
    assert (decision.node, decision.gpu_slots) == ("g2", (1,))
    assert snap.gpu_free.tolist() == [[1000, 1000], [1000, 0]]


def test_assumed_pods_count_at_once() -> None:
    snap = Snapshot([gpu_node("g", gpus=1)])
    scheduler = heps_scheduler(snap)
    assert scheduler.schedule(Pod("first", gpus=1, gpu_milli=1000)).node == "g"
    second: Decision = scheduler.schedule(Pod("second", gpus=1, gpu_milli=1000))
    assert second.node is None and second.reasons == {"Insufficient resources": 1}
    scheduler.snap.forget(Pod("first", gpus=1, gpu_milli=1000).key)
    assert scheduler.schedule(Pod("third", gpus=1, gpu_milli=1000)).node == "g"


def test_nodes_scored_per_cycle_are_capped_like_kube_scheduler() -> None:
    assert nodes_to_find(50, 0) == 50
    assert nodes_to_find(1523, 0) == 575  # 50 - 1523/125 = 37.8 %
    assert nodes_to_find(10000, 0) == 500  # 5 % floor
    assert nodes_to_find(150, 0) == 100  # never fewer than 100
    assert nodes_to_find(1523, 100) == 1523


def test_config_file_weights_and_errors(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "scheduler.yaml"
    path.write_text(
        "profiles:\n  - name: heps\n    scores: {GpuFragmentation: 3, LoadAware: 1}\n"
        "metrics: {maxAge: 30}\n"
    )
    loaded = config.load(path)
    assert loaded.profiles[0].weights == {"GpuFragmentation": 3.0, "LoadAware": 1.0}
    assert loaded.metrics.max_age == 30.0
    path.write_text("profiles:\n  - name: custom\n    scores: {Nope: 1}\n")
    with pytest.raises(ValueError, match="unknown score plugins Nope"):
        config.build(config.load(path).profiles[0], [])
    path.write_text("profile: []\n")
    with pytest.raises(ValueError, match="unknown keys"):
        config.load(path)


def test_spreading_counts_only_while_whole_one_gpu_tasks_make_the_threshold() -> None:
    from heps_scheduler.fgd import TaskClass, whole_gpu_share

    settings = config.preset_settings("heps")
    assert 0 < settings.spread_threshold < 1
    whole = [TaskClass(8000, 1, 1000, 0.9), TaskClass(4000, 1, 500, 0.1)]  # 95% of demand
    multi = [TaskClass(8000, 1, 1000, 0.5), TaskClass(64000, 8, 1000, 0.5)]  # 1/9 of it
    assert whole_gpu_share(whole) == pytest.approx(0.9 / 0.95)
    assert whole_gpu_share(multi) == pytest.approx(1 / 9)
    spreading = {"LeastAllocated", "LeastAllocatedLargePods"}
    assert spreading <= {p.name for p, _ in config.build(settings, whole).scores}
    names = {p.name for p, _ in config.build(settings, multi).scores}
    assert not spreading & names and "GpuFragmentation" in names


def test_below_the_threshold_spreading_counts_while_no_pod_of_another_class_runs() -> None:
    """With few multi-GPU tasks in the learned workload, the spreading plugins stay in the
    profile below the threshold, and SpreadingWithoutVictims drops them for a pod as soon
    as a pod of another class runs (then preemption has something to take)."""
    settings = config.preset_settings("heps")
    few = [
        TaskClass(8000, 1, 1000, 0.5),
        TaskClass(4000, 1, 500, 0.4),
        TaskClass(32000, 4, 1000, 0.02),
    ]
    assert scores.multi_gpu_share(few) == pytest.approx(80 / 780)
    profile = config.build(settings, few)
    spreading = set(scores.SPREADING)
    assert spreading <= {p.name for p, _ in profile.scores}
    gate = next(p for p in profile.pre_scores if isinstance(p, scores.SpreadingWithoutVictims))
    snap = Snapshot([gpu_node("a"), gpu_node("b")])
    nodes = np.arange(2)
    guaranteed = Pod("g", 1000, 1024, gpus=1, gpu_milli=1000, qos=GUARANTEED)
    for placed, skipped in [
        (Pod("g0", 1000, 1024, qos=GUARANTEED), set()),
        (Pod("be", qos=BEST_EFFORT), spreading),
    ]:
        snap.assume(placed, 0)
        state = CycleState()
        gate.pre_score(state, guaranteed, snap, nodes)
        assert state.skip_score == skipped
    many = [*few[:2], TaskClass(32000, 4, 1000, 0.2)]  # 800 of 1,500 milli-GPUs multi-GPU
    assert scores.multi_gpu_share(many) > settings.spread_without_victims
    profile = config.build(settings, many)
    assert not spreading & {p.name for p, _ in profile.scores}
    assert not any(isinstance(p, scores.SpreadingWithoutVictims) for p in profile.pre_scores)
