"""Preemption at PostFilter (preemption.py): victims of strictly lower priority, chosen
minimally on one node, never lowering the allocated GPUs; in a replay and through `serve`
against the API server double (victims deleted on their uid, the preemptor nominated,
then bound once the deletions arrive)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heps_scheduler import config, kube
from heps_scheduler.cycle import OK, UNSCHEDULABLE, Status
from heps_scheduler.fgd import TaskClass, typical_pods
from heps_scheduler.framework import Scheduler
from heps_scheduler.model import BEST_EFFORT, BURSTABLE, GUARANTEED, Node, Pod
from heps_scheduler.preemption import ClassPreemption
from heps_scheduler.simulate import Replay
from heps_scheduler.snapshot import NO_SHARE, Held, Kind, Snapshot
from tests.scheduler.fake_apiserver import FakeApiServer
from tests.scheduler.test_kube import k8s_node, k8s_pod, make_scheduler

CLASSES = [TaskClass(1000, 1, 1000, 1.0)]


def gpu_node(name: str, gpus: int = 4, cpu: int = 32000) -> Node:
    return Node(name, cpu, 262144, gpus=gpus, labels={"kubernetes.io/hostname": name})


def pod(name: str, qos: str, gpus: int = 1, milli: int = 1000, cpu: int = 1000) -> Pod:
    return Pod(name, cpu_milli=cpu, memory_mib=1024, gpus=gpus, gpu_milli=milli, qos=qos)


class Cluster:
    """A heps profile on a snapshot whose pods the test places on given GPUs; evictions
    are recorded (victim, preemptor, node) and drop the victim, as a replay's do."""

    def __init__(self, nodes: list[Node], **args: object) -> None:
        settings = config.preset_settings("heps")
        if args:
            merged = {**settings.args["ClassPreemption"], **args}
            settings = replace(settings, args={"ClassPreemption": merged})
        self.snap = Snapshot(nodes)
        self.scheduler = Scheduler(self.snap, config.build(settings, CLASSES))
        self.evicted: list[tuple[str, str, str]] = []
        self.scheduler.profile.handle.evictor = self.evict

    def evict(self, victim: Pod, preemptor: Pod, node: str) -> Status:
        self.snap.forget(victim.key)
        self.evicted.append((victim.name, preemptor.name, node))
        return OK

    def put(self, node: str, *placed: tuple[Pod, tuple[int, ...]]) -> None:
        for p, slots in placed:
            self.snap.assume(p, self.snap.index[node], slots)


def test_the_victims_are_the_fewest_of_the_lowest_priority_and_the_pod_lands_there() -> None:
    cordoned = replace(gpu_node("c"), unschedulable=True)  # its batch pods are no help
    cluster = Cluster([cordoned, gpu_node("a"), gpu_node("b")])  # c would win the tie
    cluster.put("c", *((pod(f"c-best-effort-{i}", BEST_EFFORT), (i,)) for i in range(4)))
    cluster.put(
        "a",
        (pod("a-best-effort", BEST_EFFORT), (0,)),
        (pod("a-burstable", BURSTABLE), (1,)),
        (pod("a-guaranteed-1", GUARANTEED), (2,)),
        (pod("a-guaranteed-2", GUARANTEED), (3,)),
    )
    cluster.put("b", *((pod(f"b-burstable-{i}", BURSTABLE), (i,)) for i in range(4)))
    alice = pod("alice", GUARANTEED)
    first = cluster.scheduler.schedule(alice)
    assert (first.node, first.nominated) == (None, "a")
    assert first.status == Status(plugin="ClassPreemption")
    assert cluster.evicted == [("a-best-effort", "alice", "a")]
    again = cluster.scheduler.schedule(alice, first.nominated)
    assert (again.node, again.gpu_slots) == ("a", (0,))
    assert sorted(cluster.snap.pods_on[cluster.snap.index["a"]]) == [
        "default/a-burstable",
        "default/a-guaranteed-1",
        "default/a-guaranteed-2",
        "default/alice",
    ]
    # a Burstable pod may take a BestEffort pod's place, never a Guaranteed one's
    bob = pod("bob", BURSTABLE)
    assert cluster.scheduler.schedule(bob).nominated is None
    assert len(cluster.evicted) == 1 and len(cluster.snap.placements) == 12


def test_reprieve_keeps_every_pod_the_preemptor_does_not_need() -> None:
    cluster = Cluster([gpu_node("a", gpus=2, cpu=8000)])
    cluster.put(
        "a",
        (pod("share", BEST_EFFORT, milli=500), (0,)),
        (pod("cpu-only", BEST_EFFORT, gpus=0, milli=0, cpu=4000), ()),
        (pod("whole", BEST_EFFORT), (1,)),
    )
    decision = cluster.scheduler.schedule(pod("alice", GUARANTEED, cpu=2000))
    # the whole GPU's holder is reprieved first (more GPU); freeing GPU 0 is enough
    assert decision.nominated == "a" and cluster.evicted == [("share", "alice", "a")]
    assert cluster.snap.gpu_allocated_milli() == 1000


def test_preemption_never_lowers_the_allocated_gpus_unless_told() -> None:
    for keep, evicted in ((True, []), (False, [("whole", "alice", "a")])):
        cluster = Cluster([gpu_node("a", gpus=1)], keepAllocatedGpus=keep)
        cluster.put("a", (pod("whole", BEST_EFFORT), (0,)))
        decision = cluster.scheduler.schedule(pod("alice", GUARANTEED, milli=300))
        assert cluster.evicted == evicted
        assert decision.status.code == (UNSCHEDULABLE if keep else OK.code)
    assert decision.status.plugin == "ClassPreemption"


def test_a_preemptor_waits_for_its_victims_instead_of_preempting_again() -> None:
    cluster = Cluster([gpu_node("a", gpus=2)])
    cluster.put("a", *((pod(f"batch-{i}", BEST_EFFORT), (i,)) for i in range(2)))
    waiting: list[tuple[str, str, str]] = []
    cluster.scheduler.profile.handle.evictor = lambda v, p, n: (
        waiting.append((v.name, p.name, n)) or OK
    )  # the API accepted the deletion; the victim is still in the cache
    alice = pod("alice", GUARANTEED)
    first = cluster.scheduler.schedule(alice)
    assert first.nominated == "a" and waiting == [("batch-1", "alice", "a")]
    second = cluster.scheduler.schedule(alice, first.nominated)
    assert (second.node, second.nominated) == (None, "a")
    assert second.status.message == "preemption: waiting for 1 victim(s) to leave a"
    assert len(waiting) == 1
    [plugin] = cluster.scheduler.profile.post_filters
    assert set(plugin.pending) == {"default/alice"}
    cluster.snap.forget("default/batch-1")  # the watch says DELETED
    assert cluster.scheduler.schedule(alice, "a").node == "a"
    late = cluster.scheduler.schedule(pod("late", BEST_EFFORT))  # fits nowhere either
    assert late.status.message == "preemption: no pod of lower priority"
    assert plugin.pending == {}  # what alice waited for is gone: forgotten


CONFIG = """\
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
  - schedulerName: heps-scheduler
    pluginConfig:
      - name: ClassPreemption
        args: {ARGS}
  - schedulerName: no-preemption
    plugins:
      postFilter:
        disabled: [{name: ClassPreemption}]
"""


def test_the_configuration_sets_and_checks_the_preemption_args(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.yaml"
    path.write_text(CONFIG.replace("ARGS", "classPriority: {Burstable: 0}"))
    heps, plain = config.load(path).profiles
    assert heps.plugins["postFilter"] == ("ClassPreemption",) and plain.plugins["postFilter"] == ()
    assert heps.args["ClassPreemption"] == {
        "minCandidateNodesPercentage": 0,
        "minCandidateNodesAbsolute": 10,
        "classPriority": {"Burstable": 0},
    }
    [plugin] = config.build(heps, CLASSES).post_filters
    assert plugin.args.class_priority == {GUARANTEED: 2, BURSTABLE: 0, BEST_EFFORT: 0}
    for args, message in (
        ("classPriority: {Gold: 3}", "classPriority: map QoS classes"),
        ("minCandidateNodesAbsolute: 0, minCandidateNodesPercentage: 0", "are both 0"),
        ("keepAllocatedGpus: maybe", "keepAllocatedGpus: 'maybe'; use true or false"),
    ):
        path.write_text(CONFIG.replace("ARGS", args))
        with pytest.raises(ValueError) as error:
            config.load(path)
        assert str(error.value).startswith(f"{path}: profiles[0]: pluginConfig[0]: args: ")
        assert message in str(error.value) and "\n" not in str(error.value)


def best_effort(name: str, node: str) -> dict[str, Any]:
    """A batch pod bound to `node` with one GPU and no cpu or memory request: BestEffort."""
    obj = k8s_pod(name, node=node, gpus=1)
    obj["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    return obj


def test_serve_deletes_the_victim_nominates_and_binds_once_it_is_gone(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    core, _ = api
    fake.nodes = {"gpu": k8s_node("gpu", gpus=1)}
    fake.pods = {
        ("jhub", "batch"): best_effort("batch", "gpu"),
        ("jhub", "alice"): k8s_pod("alice", gpus=1),  # Guaranteed, pending
    }
    scheduler = make_scheduler(core)
    scheduler.sync()
    first = scheduler.schedule_next()
    assert first is not None and (first.node, first.nominated) == (None, "gpu")
    assert ("jhub", "batch") not in fake.pods and fake.bindings == []
    alice = fake.pods[("jhub", "alice")]
    assert alice["status"] == {"phase": "Pending", "nominatedNodeName": "gpu"}
    assert alice["spec"] == k8s_pod("alice", gpus=1)["spec"]
    events = [(e["reason"], e["involvedObject"]["name"], e["message"]) for e in fake.events]
    assert events == [
        ("Preempted", "batch", "Preempted by jhub/alice on node gpu"),
        ("FailedScheduling", "alice", "0/1 nodes are available: 1 Insufficient resources."),
    ]
    assert fake.events[0]["involvedObject"]["uid"] == "uid-batch"
    # the cache lets the victim go only when the watch says so; until then alice waits
    assert "jhub/batch" in scheduler.snap.placements
    scheduler.clock = lambda: 1002.0
    scheduler.queue.flush(scheduler.clock(), scheduler.snap.generation - 1)
    waiting = scheduler.schedule_next()
    assert waiting is not None and waiting.node is None and len(fake.events) == 3
    assert fake.events[2]["message"].endswith("preemption: waiting for 1 victim(s) to leave gpu.")
    scheduler.observe_pod("DELETED", best_effort("batch", "gpu"))
    scheduler.clock = lambda: 1010.0
    scheduler.queue.flush(scheduler.clock(), scheduler.snap.generation)
    bound = scheduler.schedule_next()
    assert bound is not None and bound.node == "gpu"
    assert fake.bindings == [kube.binding_body(kube.pod_from_k8s(alice), "gpu")]
    assert scheduler.nominated == {} and list(fake.pods) == [("jhub", "alice")]


def test_serve_deletes_only_the_pod_the_cache_knew(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    """A victim deleted and created again under its name (another uid) is not deleted: the
    double, like the API server, refuses the uid precondition."""
    core, _ = api
    fake.nodes = {"gpu": k8s_node("gpu", gpus=1)}
    fake.pods = {
        ("jhub", "batch"): best_effort("batch", "gpu"),
        ("jhub", "alice"): k8s_pod("alice", gpus=1),
    }
    scheduler = make_scheduler(core)
    scheduler.sync()
    fake.pods[("jhub", "batch")]["metadata"]["uid"] = "uid-batch-again"
    decision = scheduler.schedule_next()
    assert decision is not None and decision.node is None and decision.nominated is None
    assert decision.status.code == "Error" and "failed (409)" in decision.status.message
    assert fake.pods[("jhub", "batch")]["metadata"]["uid"] == "uid-batch-again"
    assert "nominatedNodeName" not in fake.pods[("jhub", "alice")]["status"]
    assert [e["reason"] for e in fake.events] == ["FailedScheduling"]


def test_the_double_refuses_what_the_api_server_refuses(fake: FakeApiServer) -> None:
    fake.pods = {("jhub", "alice"): k8s_pod("alice")}
    path = "/api/v1/namespaces/jhub/pods/alice"
    with fake.lock:
        code, body = fake.delete(path, {"preconditions": {"uid": "someone-else"}})
        assert (code, body["reason"]) == (409, "Conflict") and ("jhub", "alice") in fake.pods
        assert "Precondition failed: UID in precondition: someone-else" in body["message"]
        patch = {"status": {"nominatedNodeName": "a"}, "spec": {"nodeName": "a"}}
        code, obj = fake.patch(path + "/status", patch, "application/merge-patch+json")
        assert code == 200 and obj["status"]["nominatedNodeName"] == "a"
        assert "nodeName" not in obj["spec"]  # the status subresource changes status only
        assert fake.patch(path + "/status", patch, "application/json-patch+json")[0] == 415
        assert fake.delete(path, {"preconditions": {"uid": "uid-alice"}})[0] == 200
        assert fake.patch(path + "/status", patch, "application/merge-patch+json")[0] == 404
        assert fake.delete(path)[0] == 404


def rebuilt(snap: Snapshot) -> dict[Kind, Held]:
    """The oracle: what each kind's pods hold per node, summed afresh from the placements."""
    n, shape = len(snap.nodes), (len(snap.nodes), snap.max_gpus)
    held = {
        kind: Held(
            np.zeros(n),
            np.zeros(n),
            np.zeros(n),
            np.zeros(shape, dtype=np.int64),
            np.full(shape, NO_SHARE, dtype=np.int64),
        )
        for kind in snap.held
    }
    for placement in snap.placements.values():
        placed, node = placement.pod, placement.node
        columns = held[placed.priority, placed.qos]
        columns.cpu[node] += placed.cpu_milli
        columns.mem[node] += placed.memory_mib
        columns.eph[node] += placed.ephemeral_mib
        share = placed.gpu_milli if placed.shares_gpu else 1000
        for slot in placement.gpu_slots:
            columns.gpu[node, slot] += share
            columns.smallest[node, slot] = min(columns.smallest[node, slot], share)
    return held


def mixed_workload(count: int, seed: int) -> list[Pod]:
    """Pods of a few shapes (as a trace's tasks and a hub's profiles repeat theirs), of
    every class, two spec priorities, and every GPU shape: CPU only, a share of a GPU, one
    and several whole GPUs."""
    rng = np.random.default_rng(seed)
    shapes = []
    for gpus, milli in [(0, 0), (1, 300), (1, 500), (1, 1000), (2, 1000), (4, 1000), (8, 1000)]:
        for qos in (GUARANTEED, BURSTABLE, BEST_EFFORT):
            cpu, memory = int(rng.integers(1, 24)) * 1000, int(rng.integers(1, 64)) * 1024
            shapes.append(Pod("", cpu, memory, 1024 * (gpus == 2), gpus, milli, qos=qos))
    weights = np.array([2.0 if s.gpus == 1 else 1.0 for s in shapes])
    picks = rng.choice(len(shapes), size=count, p=weights / weights.sum())
    return [
        replace(shapes[k], name=f"p{i}", priority=int(rng.random() < 0.1), created=float(i))
        for i, k in enumerate(picks.tolist())
    ]


def test_preemption_decides_as_it_would_from_columns_rebuilt_at_every_decision() -> None:
    """The snapshot keeps each kind's columns as pods come and go, and the plugin screens
    only the nodes changed since its last call: a replay decides exactly as one whose
    columns are rebuilt from the placements, and whose caches are dropped, before every
    decision."""
    nodes = [
        gpu_node(f"n{i}", gpus=[8, 4, 2, 0][i % 4], cpu=[96000, 64000, 32000, 48000][i % 4])
        for i in range(24)
    ]
    pods = mixed_workload(500, seed=3)
    settings = config.preset_settings("heps")
    # fewer candidates than possible nodes, so that the order they are tried in counts
    args = {**settings.args["ClassPreemption"], "minCandidateNodesAbsolute": 3}
    settings = replace(settings, args={**settings.args, "ClassPreemption": args})
    runs = []
    for oracle in (False, True):
        replay = Replay(nodes, settings, typical_pods(pods), 0)
        [plugin] = replay.scheduler.profile.post_filters
        assert isinstance(plugin, ClassPreemption)
        placed = []
        for p in pods:
            if oracle:
                replay.snap.held = rebuilt(replay.snap)
                plugin._lower.clear()
                plugin._tried.clear()
            else:
                for kind, columns in rebuilt(replay.snap).items():
                    kept = replay.snap.held[kind]
                    for name in ("cpu", "mem", "eph", "gpu", "smallest"):
                        assert np.array_equal(getattr(kept, name), getattr(columns, name))
            decision = replay.place(p)
            placed.append((p.name, decision.node))
        runs.append((placed, [(v.name, node) for v, node in replay.victims]))
    assert runs[0] == runs[1]
    victims = {v for v, _ in runs[0][1]}
    by_name = {p.name: p for p in pods}
    assert len(victims) > 20
    assert {by_name[v].gpu_class for v in victims} >= {"shared-gpu", "whole-gpu", "multi-gpu"}
