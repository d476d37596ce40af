"""The extension points, as kube-scheduler's framework runs them: order, Skip, PreFilter's
narrowing, PostFilter when nothing fits, NormalizeScore before the weights, Reserve
failures undone in reverse order, Permit's Wait/allow/reject/timeout, Bind; plugins made
by name from a registry; the same through the serve path against FakeApiServer."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heps_scheduler import config, kube, simulate, trace
from heps_scheduler.cycle import OK, SKIP, UNSCHEDULABLE, WAIT, CycleState, Status
from heps_scheduler.fgd import GpuFragmentation, TaskClass, typical_pods
from heps_scheduler.framework import FrameworkError, Handle, Scheduler
from heps_scheduler.model import Node, Pod
from heps_scheduler.plugins import DEFAULT_PLUGINS, REGISTRY, Registration
from heps_scheduler.snapshot import Floats, Mask, Snapshot
from tests.scheduler.fake_apiserver import FakeApiServer
from tests.scheduler.test_kube import k8s_node, k8s_pod

Ints = Any
CLASSES = [TaskClass(1000, 1, 1000, 1.0)]


def nodes(*names: str, cpu: int = 16000) -> list[Node]:
    return [Node(n, cpu, 65536, labels={"kubernetes.io/hostname": n}) for n in names]


class Recorder:
    """A plugin at every point; what it answers is set per test, what it sees is logged."""

    reason = "node(s) were banned"

    def __init__(self, name: str, log: list[str], **answers: Any) -> None:
        self.name, self.log, self.answers = name, log, answers

    def pre_filter(self, state: CycleState, pod: Pod, snap: Snapshot) -> tuple[Status, Any]:
        self.log.append(f"{self.name}.preFilter")
        return self.answers.get("pre_filter", (OK, None))  # type: ignore[no-any-return]

    def filter(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Mask:
        self.log.append(f"{self.name}.filter")
        banned = self.answers.get("ban", ())
        return np.array([snap.nodes[n].name not in banned for n in nodes], dtype=bool)

    def post_filter(
        self, state: CycleState, pod: Pod, snap: Snapshot, reasons: dict[str, int]
    ) -> tuple[Status, str | None]:
        self.log.append(f"{self.name}.postFilter {reasons}")
        return self.answers.get("post_filter", (Status(UNSCHEDULABLE), None))  # type: ignore[no-any-return]

    def pre_score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Status:
        self.log.append(f"{self.name}.preScore")
        return self.answers.get("pre_score", OK)  # type: ignore[no-any-return]

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        self.log.append(f"{self.name}.score")
        raw: Floats = snap.cpu_cap[nodes] - snap.cpu_used[nodes]  # free millicores: unbounded
        return raw

    def normalize_score(self, state: CycleState, pod: Pod, scores: Floats) -> None:
        self.log.append(f"{self.name}.normalizeScore")
        scores *= self.answers.get("scale", 100 / scores.max())

    def reserve(self, state: CycleState, pod: Pod, node: str) -> Status:
        self.log.append(f"{self.name}.reserve {node}")
        return self.answers.get("reserve", OK)  # type: ignore[no-any-return]

    def unreserve(self, state: CycleState, pod: Pod, node: str) -> None:
        self.log.append(f"{self.name}.unreserve {node}")

    def permit(self, state: CycleState, pod: Pod, node: str) -> tuple[Status, float]:
        self.log.append(f"{self.name}.permit {node}")
        return self.answers.get("permit", (OK, 0.0))  # type: ignore[no-any-return]

    def bind(self, state: CycleState, pod: Pod, node: str) -> Status:
        self.log.append(f"{self.name}.bind {node}")
        return self.answers.get("bind", Status(SKIP))  # type: ignore[no-any-return]


def registry_with(*plugins: Recorder) -> dict[str, Registration]:
    """The in-tree registry plus out-of-tree plugins, as kube-scheduler's WithPlugin."""

    def maker(plugin: Recorder) -> Callable[[dict[str, object], Handle], object]:
        return lambda args, handle: plugin

    return {**REGISTRY, **{p.name: Registration(Recorder, maker(p)) for p in plugins}}


def settings(points: dict[str, tuple[str, ...]], scores: dict[str, float]) -> Any:
    plugins = {**DEFAULT_PLUGINS, **points}
    kube_default = config.preset_settings("kube-default")
    return replace(kube_default, weights=scores, plugins=plugins, tie_break="name")


def scheduler(snap: Snapshot, points: dict[str, tuple[str, ...]], *plugins: Recorder,
              scores: dict[str, float] | None = None) -> Scheduler:  # fmt: skip
    profile = config.build(
        settings(points, scores if scores is not None else {p.name: 1 for p in plugins}),
        CLASSES,
        registry=registry_with(*plugins),
    )
    return Scheduler(snap, profile)


EVERY_POINT = {
    "preFilter": ("A", "B"),
    "filter": ("NodeResourcesFit", "A"),
    "postFilter": ("A",),
    "preScore": ("A", "B"),
    "reserve": ("A", "B"),
    "permit": ("A", "B"),
    "bind": ("A", "B", "DefaultBinder"),
}


def test_a_cycle_runs_every_point_in_kube_schedulers_order() -> None:
    log: list[str] = []
    a, b = Recorder("A", log), Recorder("B", log)
    snap = Snapshot(nodes("n1", "n2", "n3"))
    snap.assume(Pod("busy", cpu_milli=8000), 1)
    sched = scheduler(snap, EVERY_POINT, a, b)
    decision = sched.schedule(Pod("p", cpu_milli=1000))
    assert decision.node == "n1" and decision.status == OK  # n1 and n3 tie; n1 sorts first
    assert sched.bind(decision) == Status(plugin="DefaultBinder")  # A and B skipped
    assert log == [
        "A.preFilter", "B.preFilter", "A.filter", "A.preScore", "B.preScore",
        "A.score", "A.normalizeScore", "B.score", "B.normalizeScore",
        "A.reserve n1", "B.reserve n1", "A.permit n1", "B.permit n1",
        "A.bind n1", "B.bind n1",
    ]  # fmt: skip
    assert "default/p" in snap.placements and snap.placements["default/p"].node == 0


def test_normalize_score_maps_to_0_100_before_weights_and_out_of_range_is_refused() -> None:
    log: list[str] = []
    snap = Snapshot(nodes("small", "large", cpu=16000))
    snap.assume(Pod("busy", cpu_milli=12000), 0)
    a = Recorder("A", log)
    sched = scheduler(snap, {}, a, scores={"A": 3})
    state = CycleState()
    total = sched.score(state, Pod("p", cpu_milli=1000), np.arange(2))
    assert isinstance(total, np.ndarray)
    assert total.tolist() == pytest.approx([3 * 100 * 4000 / 16000, 3 * 100.0])
    broken = Recorder("A", log, scale=1.0)  # leaves raw millicores: above 100
    with pytest.raises(FrameworkError, match=r"plugin A returns scores outside 0\.\.100"):
        scheduler(snap, {}, broken, scores={"A": 1}).schedule(Pod("q", cpu_milli=1))


def test_pre_filter_narrows_rejects_or_skips_its_own_filter() -> None:
    log: list[str] = []
    snap = Snapshot(nodes("n1", "n2", "n3"))
    only_n3 = Recorder("A", log, pre_filter=(OK, np.array([2])))
    decision = scheduler(snap, {"preFilter": ("A",)}, only_n3, scores={}).schedule(Pod("p"))
    assert decision.node == "n3"
    refuse = Recorder("A", log, pre_filter=(Status(UNSCHEDULABLE, "quota exceeded"), None))
    decision = scheduler(snap, {"preFilter": ("A",)}, refuse, scores={}).schedule(Pod("q"))
    assert decision.node is None and decision.reasons == {"quota exceeded": 3}
    assert decision.status.plugin == "A"
    skip = Recorder("A", log, pre_filter=(Status(SKIP), None), ban=("n1", "n2", "n3"))
    points: dict[str, tuple[str, ...]] = {"preFilter": ("A",), "filter": ("A",)}
    log.clear()
    assert scheduler(snap, points, skip, scores={}).schedule(Pod("r")).node == "n1"
    assert log == ["A.preFilter"]  # its Filter, which bans every node, did not run


def test_post_filter_runs_when_no_node_fits_and_may_nominate() -> None:
    log: list[str] = []
    snap = Snapshot(nodes("n1", "n2"))
    a = Recorder("A", log, ban=("n1", "n2"), post_filter=(OK, "n2"))
    decision = scheduler(snap, {"filter": ("A",), "postFilter": ("A",)}, a).schedule(Pod("p"))
    assert decision.node is None and decision.nominated == "n2"
    assert log[-1] == "A.postFilter {'node(s) were banned': 2}"
    assert decision.message(2) == "0/2 nodes are available: 2 node(s) were banned."
    assert snap.placements == {}


def test_pre_score_skip_drops_that_plugins_score() -> None:
    log: list[str] = []
    snap = Snapshot(nodes("n1", "n2"))
    a = Recorder("A", log, pre_score=Status(SKIP))
    b = Recorder("B", log)
    scheduler(snap, {"preScore": ("A", "B")}, a, b).schedule(Pod("p"))
    assert "A.score" not in log and "B.score" in log


def test_a_reserve_failure_unreserves_every_plugin_in_reverse_order() -> None:
    log: list[str] = []
    a = Recorder("A", log)
    b = Recorder("B", log, reserve=Status(UNSCHEDULABLE, "device busy"))
    c = Recorder("C", log)
    snap = Snapshot(nodes("n1"))
    sched = scheduler(snap, {"reserve": ("A", "B", "C")}, a, b, c, scores={})
    decision = sched.schedule(Pod("p"))
    assert decision.node is None and decision.status == Status(UNSCHEDULABLE, "device busy", "B")
    assert log == ["A.reserve n1", "B.reserve n1", "C.unreserve n1", "B.unreserve n1",
                   "A.unreserve n1"]  # fmt: skip
    assert snap.placements == {} and snap.cpu_used.tolist() == [0.0]


def test_permit_deny_wait_allow_and_timeout() -> None:
    log: list[str] = []
    snap = Snapshot(nodes("n1"))
    deny = Recorder("A", log, permit=(Status(UNSCHEDULABLE, "not now"), 0.0))
    decision = scheduler(snap, {"permit": ("A",)}, deny, scores={}).schedule(Pod("p"))
    assert decision.node is None and decision.status.message == "not now"
    assert snap.placements == {} and "A.unreserve n1" not in log  # A reserves nothing

    now = [0.0]
    gate = Recorder("G", log, permit=(Status(WAIT), 30.0))
    sched = scheduler(snap, {"permit": ("G",), "reserve": ("G",)}, gate, scores={})
    sched.profile.handle.clock = lambda: now[0]
    bound: list[str] = []

    def binder(pod: Pod, node: str) -> Status:
        bound.append(node)
        return OK

    sched.profile.handle.binder = binder
    held = sched.schedule(Pod("held"))
    assert held.node == "n1" and held.status.code == WAIT and "default/held" in snap.placements
    assert sched.bind(held).code == WAIT and bound == []
    sched.profile.handle.waiting["default/held"].allow("G")
    assert sched.bind(held) == Status(plugin="DefaultBinder") and bound == ["n1"]

    late = sched.schedule(Pod("late"))
    now[0] = 31.0
    status = sched.bind(late)
    assert status.code == UNSCHEDULABLE and "timeout" in status.message
    assert "default/late" not in snap.placements and log[-1] == "G.unreserve n1"

    rejected = sched.schedule(Pod("rejected"))
    sched.profile.handle.waiting["default/rejected"].reject("G", "quota")
    assert sched.bind(rejected) == Status(UNSCHEDULABLE, "quota", "G")
    assert "default/rejected" not in snap.placements
    # a replay has no clock: bind(now=inf) times the wait out at once
    replayed = sched.schedule(Pod("replayed"))
    assert sched.bind(replayed, now=math.inf).code == UNSCHEDULABLE


def test_a_failed_bind_unreserves() -> None:
    log: list[str] = []
    a = Recorder("A", log, bind=Status("Error", "API down"))
    snap = Snapshot(nodes("n1"))
    sched = scheduler(snap, {"reserve": ("A",), "bind": ("A", "DefaultBinder")}, a, scores={})
    decision = sched.schedule(Pod("p"))
    assert sched.bind(decision) == Status("Error", "API down", "A")
    assert log[-1] == "A.unreserve n1" and snap.placements == {}


def test_one_plugin_instance_serves_every_point_and_unknown_names_are_refused() -> None:
    made: list[Handle] = []

    def make(args: dict[str, object], handle: Handle) -> Recorder:
        made.append(handle)
        return Recorder("A", [])

    registry = {**REGISTRY, "A": Registration(Recorder, make)}
    only_a = {point: tuple(n for n in names if n != "B") for point, names in EVERY_POINT.items()}
    profile = config.build(settings(only_a, {"A": 1}), CLASSES, registry=registry)
    assert len(made) == 1 and made[0] is profile.handle
    instances = {id(p) for p in (profile.pre_filters[0], profile.reserves[0], profile.permits[0])}
    assert instances == {id(profile.scores[0][0])}
    with pytest.raises(ValueError, match="unknown permit plugin Nope"):
        config.build(settings({"permit": ("Nope",)}, {}), CLASSES)
    with pytest.raises(ValueError, match="plugin GpuPacking does not extend filter"):
        config.build(settings({"filter": ("GpuPacking",)}, {}), CLASSES)


V1 = """\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
  - schedulerName: heps-scheduler
    plugins:
      filter:
        disabled: [{name: "*"}]
        enabled: [{name: NodeResourcesFit}]
      score:
        enabled: [{name: GpuFragmentation, weight: 7}, {name: GpuPacking}]
"""


def test_v1_points_merge_as_kube_scheduler_merges_plugin_sets(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(V1)
    [profile] = config.load(path).profiles
    assert profile.plugins["filter"] == ("NodeResourcesFit",)
    assert profile.plugins["bind"] == ("DefaultBinder",)
    heps = list(config.PRESETS["heps"])
    assert list(profile.weights) == [*heps, "GpuPacking"]  # a default keeps its place
    assert profile.weights["GpuFragmentation"] == 7 and profile.weights["GpuPacking"] == 1
    # with every default filter off but the fit, a cordoned node is used
    snap = Snapshot([Node("cordoned", 8000, 1024, unschedulable=True)])
    built = Scheduler(snap, config.build(profile, CLASSES))
    assert built.schedule(Pod("p", cpu_milli=1000)).node == "cordoned"
    path.write_text(V1.replace('[{name: "*"}]', "[]"))
    built = Scheduler(Snapshot(snap.nodes), config.build(config.load(path).profiles[0], CLASSES))
    assert built.schedule(Pod("p", cpu_milli=1000)).node is None


def test_serve_holds_a_pod_permit_waits_on_and_binds_it_once_allowed(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    core, _ = api
    fake.nodes = {"a": k8s_node("a")}
    fake.pods = {("jhub", "erin"): k8s_pod("erin"), ("jhub", "finn"): k8s_pod("finn")}
    log: list[str] = []
    gate = Recorder("Gate", log, permit=(Status(WAIT), 60.0))
    now = [1000.0]

    def build(snap: Snapshot) -> Scheduler:
        points = {"permit": ("Gate",)}
        profile = config.build(
            replace(config.preset_settings("heps"), plugins={**DEFAULT_PLUGINS, **points}),
            CLASSES,
            registry=registry_with(gate),
        )
        return Scheduler(snap, profile)

    scheduler = kube.KubeScheduler(core, {"heps-scheduler": build}, clock=lambda: now[0])
    scheduler.sync()
    first, second = scheduler.schedule_next(), scheduler.schedule_next()
    assert first is not None and second is not None
    assert {first.pod.name, second.pod.name} == {"erin", "finn"} and fake.bindings == []
    assert len(scheduler.snap.placements) == 2  # both reserved while they wait
    waiting = scheduler.schedulers["heps-scheduler"].profile.handle.waiting
    waiting["jhub/erin"].allow("Gate")
    scheduler.poll_waiting()
    assert [b["metadata"]["name"] for b in fake.bindings] == ["erin"]
    assert fake.pods[("jhub", "erin")]["spec"]["nodeName"] == "a"
    now[0] += 61  # finn's wait times out: unreserved, back in the queue, an event says why
    scheduler.poll_waiting()
    assert "jhub/finn" not in scheduler.snap.placements and scheduler.queue.parked == 1
    failed = [e for e in fake.events if e["reason"] == "FailedScheduling"]
    assert [e["involvedObject"]["name"] for e in failed] == ["finn"]
    assert "Gate: rejected due to timeout" in failed[0]["message"]


SAMPLE = Path(__file__).resolve().parents[2] / "scheduler" / "examples" / "openb-sample"


@pytest.mark.parametrize("preset", ["heps", "fgd"])
def test_pre_score_skips_change_no_decision(preset: str) -> None:
    """The presets' PreScore Skips (a constant score left out) and FGD's shared tables
    decide exactly as every score computed afresh for every pod would."""
    nodes, pods = trace.load_nodes(SAMPLE / "nodes.csv"), trace.load_pods(SAMPLE / "pods.csv")
    classes = typical_pods(pods)
    arrived = simulate.arrivals(pods, sum(n.gpus for n in nodes) * 1000, 1.3, seed=1)
    settings = config.preset_settings(preset)
    assert settings.plugins["preScore"] == tuple(
        n
        for n in ("LeastAllocatedLargePods", "GpuNodeAvoidance", "LoadAware", "QosAware")
        if n in settings.weights
    )
    fast = Scheduler(Snapshot(nodes), config.build(settings, classes))
    plain = replace(settings, plugins={**settings.plugins, "preScore": ()})
    slow = Scheduler(Snapshot(nodes), config.build(plain, classes))
    decided = 0
    for pod in arrived:
        a, b = fast.schedule(pod), slow.schedule(pod)
        fragmentation = slow.profile.scores[0][0]
        assert isinstance(fragmentation, GpuFragmentation)
        fragmentation._scores.clear()  # every score afresh
        fragmentation._tables.clear()
        assert (a.node, a.gpu_slots) == (b.node, b.gpu_slots), pod.name
        decided += a.node is not None
    assert decided > len(arrived) // 2
