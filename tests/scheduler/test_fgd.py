"""FGD as the paper's simulator computes it, checked against hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from heps_scheduler import config, fgd, simulate, trace
from heps_scheduler.cycle import CycleState
from heps_scheduler.fgd import GpuFragmentation, TaskClass, Workload, _squash, typical_pods
from heps_scheduler.framework import Scheduler
from heps_scheduler.model import GPU_MODEL_LABEL, Node, Pod
from heps_scheduler.simulate import Replay
from heps_scheduler.snapshot import Floats, Ints, Snapshot
from tests.scheduler.test_preemption import mixed_workload


def gpu_node(name: str, gpus: int = 4, model: str = "A100", cpu: int = 32000) -> Node:
    labels = {"kubernetes.io/hostname": name, GPU_MODEL_LABEL: model}
    return Node(name, cpu, 131072, gpus=gpus, gpu_model=model, labels=labels)


def squash(decrease: float) -> float:
    return math.floor(100 / (1 + math.exp(-decrease / 1000)))


def test_target_workload_is_the_most_common_exact_specs_covering_95_percent() -> None:
    pods = (
        [Pod(f"s{i}", cpu_milli=4000, gpus=1, gpu_milli=500) for i in range(50)]
        + [Pod(f"w{i}", cpu_milli=8000, gpus=1, gpu_milli=1000) for i in range(30)]
        + [Pod(f"c{i}", cpu_milli=2000) for i in range(16)]  # CPU-only tasks count too
        + [Pod(f"m{i}", cpu_milli=9000 + i, gpus=2, gpu_milli=1000) for i in range(4)]
    )
    classes = typical_pods(pods)
    # 50 + 30 + 16 = 96 >= 95 of 100: the four one-off specs are left out, then renormalised
    assert [(c.cpu_milli, c.gpus, c.gpu_milli) for c in classes] == [
        (4000, 1, 500),
        (8000, 1, 1000),
        (2000, 0, 0),
    ]
    assert [c.weight for c in classes] == pytest.approx([50 / 96, 30 / 96, 16 / 96])


def test_fragment_follows_the_papers_cases() -> None:
    classes = [
        TaskClass(1000, 1, 500, 0.4),  # a share
        TaskClass(1000, 2, 1000, 0.4),  # two whole GPUs
        TaskClass(1000, 0, 0, 0.2),  # CPU-only: every free GPU is a fragment for it
    ]
    workload = Workload(classes, ["A100"])
    free = np.array([[1000, 300, 0, 0], [1000, 1000, 1000, 1000]])
    count, usable = workload.stats(free)
    model = np.zeros(2, dtype=np.int64)
    frag = workload.fragment(free.sum(axis=1), np.array([5000.0, 5000.0]), model, count, usable)
    # node 0: the share fits (300 is its fragment); 2 whole GPUs do not (all 1300)
    assert frag.tolist() == pytest.approx([0.4 * 300 + 0.4 * 1300 + 0.2 * 1300, 0.2 * 4000])
    starved = workload.fragment(free.sum(axis=1), np.array([500.0, 0.0]), model, count, usable)
    assert starved.tolist() == pytest.approx([1300, 4000])  # no cpu: everything is a fragment


def test_a_model_constraint_makes_other_models_all_fragment() -> None:
    workload = Workload([TaskClass(0, 1, 1000, 1.0, ("V100",))], ["A100", "V100"])
    free = np.array([[1000, 1000], [1000, 1000]])
    count, usable = workload.stats(free)
    frag = workload.fragment(
        free.sum(axis=1), np.array([1e4, 1e4]), np.array([0, 1]), count, usable
    )
    assert frag.tolist() == [2000, 0]


def test_score_is_the_squashed_decrease_and_a_share_takes_its_best_gpu() -> None:
    snap = Snapshot([gpu_node("g1", gpus=2), gpu_node("g2", gpus=2)])
    snap.assume(Pod("a", gpus=1, gpu_milli=600), 1, (1,))  # g2: [1000, 400]
    plugin = GpuFragmentation([TaskClass(1000, 1, 500, 0.5), TaskClass(1000, 1, 1000, 0.5)])
    pod = Pod("b", cpu_milli=1000, gpus=1, gpu_milli=400)
    # g1: 600 left on either GPU, a fragment for whole GPUs only: +300.
    # g2: GPU 1 emptied: its 400 was a fragment for both classes: -400; GPU 0: +300.
    assert plugin.score(CycleState(), pod, snap, np.array([0, 1])).tolist() == [
        squash(-300),
        squash(400),
    ]
    assert plugin.select_gpu(pod, snap, 1) == 1
    assert plugin.select_gpu(pod, snap, 0) == 0  # equal GPUs: the first


def test_equal_scores_go_to_the_name_sorting_first() -> None:
    nodes = [gpu_node(name) for name in ("node-c", "node-a", "node-b")]
    for seed in range(4):
        snap = Snapshot(nodes)
        profile = config.build(config.preset_settings("fgd"), [TaskClass(0, 1, 1000, 1.0)])
        decision = Scheduler(snap, profile, seed).schedule(Pod("p", gpus=1, gpu_milli=1000))
        assert decision.node == "node-a"


def test_cached_scores_match_a_fresh_computation_after_many_placements() -> None:
    rng = np.random.default_rng(7)
    nodes = [gpu_node(f"n{i:02d}", gpus=int(rng.choice([2, 4, 8]))) for i in range(30)]
    classes = [TaskClass(4000, 1, 300, 0.3), TaskClass(2000, 1, 700, 0.3)]
    classes += [TaskClass(8000, 1, 1000, 0.3), TaskClass(16000, 2, 1000, 0.1)]
    snap = Snapshot(nodes)
    scheduler = Scheduler(snap, config.build(config.preset_settings("fgd"), classes))
    shapes = [Pod("s", 4000, gpus=1, gpu_milli=300), Pod("w", 8000, gpus=1, gpu_milli=1000)]
    shapes += [Pod("m", 16000, gpus=2, gpu_milli=1000), Pod("c", 2000)]
    for i in range(120):
        shape = shapes[int(rng.integers(len(shapes)))]
        scheduler.schedule(Pod(f"{shape.name}{i}", shape.cpu_milli, gpus=shape.gpus,
                               gpu_milli=shape.gpu_milli))  # fmt: skip
        if i % 10 == 0:  # some pods leave, so nodes change both ways
            scheduler.snap.forget(next(iter(snap.placements.values())).pod.key)
    cached = scheduler.profile.scores[0][0]
    for shape in shapes:
        feasible, _ = scheduler.feasible(shape)
        fresh = GpuFragmentation(classes).score(CycleState(), shape, snap, feasible)
        assert cached.score(CycleState(), shape, snap, feasible).tolist() == fresh.tolist()


class FreshFragmentation(GpuFragmentation):
    """FGD's score computed from scratch, node by node and placement by placement: the
    node as it would be is built GPU by GPU and its statistics counted anew, with none of
    the plugin's tables, lookups or per-GPU shortcuts."""

    def fresh(self, pod: Pod, snap: Snapshot, node: int) -> tuple[float, int]:
        """The node's score for the pod and the GPU a share takes (the first best)."""
        workload, model = self._bind(snap)
        free = snap.gpu_free[node]
        cpu = float(snap.cpu_cap[node] - snap.cpu_used[node])
        thresholds = np.array(workload.thresholds, dtype=np.int64)[:, None, None]

        def score(after: Ints) -> float:
            cases = np.stack([after, free])  # the placement, then the node as it is
            usable = cases[None] >= thresholds
            fragment = workload.fragment(
                cases.sum(axis=1)[None],
                np.array([[cpu - pod.cpu_milli, cpu]]),
                model[[node]][:, None],
                usable.sum(axis=2)[:, None].astype(float),
                (cases[None] * usable).sum(axis=2)[:, None].astype(float),
            )[0]
            return float(_squash(np.array([fragment[1] - fragment[0]]))[0])

        if not pod.shares_gpu:
            after = free.copy()
            after[np.flatnonzero(free == 1000)[: pod.gpus]] = 0
            return score(after), 0
        best, chosen = -1.0, 0
        for gpu in np.flatnonzero(free >= pod.gpu_milli).tolist():
            after = free.copy()
            after[gpu] -= pod.gpu_milli
            if (value := score(after)) > best:
                best, chosen = value, gpu
        return best, chosen

    def score(self, state: CycleState, pod: Pod, snap: Snapshot, nodes: Ints) -> Floats:
        return np.array([self.fresh(pod, snap, int(node))[0] for node in nodes])

    def select_gpu(self, pod: Pod, snap: Snapshot, node: int) -> int:
        return self.fresh(pod, snap, node)[1]


SAMPLE = Path(__file__).resolve().parents[2] / "scheduler" / "examples" / "openb-sample"


def sample_workload(seed: int) -> tuple[list[Node], list[Pod]]:
    """The openb sample's nodes and its pods arriving to 130% of the GPUs."""
    nodes, pods = trace.load_nodes(SAMPLE / "nodes.csv"), trace.load_pods(SAMPLE / "pods.csv")
    return nodes, simulate.arrivals(pods, sum(n.gpus for n in nodes) * 1000, 1.3, seed=seed)


def mixed_cluster(seed: int) -> tuple[list[Node], list[Pod]]:
    """Nodes of 8, 4, 2 and no GPUs of two models, and pods of every GPU shape and class."""
    nodes = [
        gpu_node(f"n{i:02d}", gpus=[8, 4, 2, 0][i % 4], model=["A100", "V100"][i % 3 == 0],
                 cpu=[96000, 64000, 32000, 48000][i % 4])
        for i in range(16)
    ]  # fmt: skip
    return nodes, mixed_workload(300, seed)


@pytest.mark.parametrize(
    ("workload", "seed", "distinct_above"),
    [
        (sample_workload, 1, fgd.DISTINCT_ABOVE),
        (sample_workload, 2, 0),
        (mixed_cluster, 3, fgd.DISTINCT_ABOVE),
        (mixed_cluster, 4, 0),
    ],
)
def test_replays_decide_as_fgd_computed_afresh_node_by_node(
    workload: Callable[[int], tuple[list[Node], list[Pod]]],
    seed: int,
    distinct_above: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plugin's tables, shared per GPU request, its vectorised per-GPU cases and its
    computing each distinct node state once (on every call with distinct_above 0) place
    every pod, on the same GPUs, and preempt the same victims as FGD computed from
    scratch for every node and placement (heps' preset: preemption and GPU shares)."""
    monkeypatch.setattr(fgd, "DISTINCT_ABOVE", distinct_above)
    nodes, pods = workload(seed)
    classes = typical_pods(pods)
    runs = []
    for fresh in (False, True):
        replay = Replay(nodes, config.preset_settings("heps"), classes, 0)
        profile = replay.scheduler.profile
        if fresh:
            oracle = FreshFragmentation(classes)
            scores = [
                (oracle if isinstance(p, GpuFragmentation) else p, w) for p, w in profile.scores
            ]
            replay.scheduler.profile = replace(profile, scores=scores, gpu_selector=oracle)
        placed = [(p.name, d.node, d.gpu_slots) for p in pods for d in [replay.place(p)]]
        runs.append((placed, [(v.name, node) for v, node in replay.victims]))
    assert runs[0] == runs[1]
    placed, victims = runs[0]
    by_name = {p.name: p for p in pods}
    assert len(victims) > 10
    assert any(by_name[name].shares_gpu and node for name, node, _ in placed)
    assert any(
        by_name[name].gpus and not by_name[name].shares_gpu and node for name, node, _ in placed
    )


def test_nodes_alike_but_for_the_cpu_left_after_the_pod_score_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each distinct node state is computed once, and the cpu interval after the pod is
    part of the state: nodes alike but for it score as FGD computed afresh does."""
    monkeypatch.setattr(fgd, "DISTINCT_ABOVE", 0)
    classes = [TaskClass(4000, 1, 500, 0.5), TaskClass(8000, 1, 1000, 0.5)]
    snap = Snapshot([gpu_node(f"g{i}") for i in range(4)])
    for i, used in enumerate([23000, 20000, 27000, 20000]):  # 9000, 12000, 5000, 12000 free
        snap.assume(Pod(f"cpu{i}", used), i)
    pod, nodes = Pod("s", 2000, gpus=1, gpu_milli=500), np.arange(4)
    expected = FreshFragmentation(classes).score(CycleState(), pod, snap, nodes)
    scores = GpuFragmentation(classes).score(CycleState(), pod, snap, nodes)
    assert scores.tolist() == expected.tolist()
    assert expected[0] < expected[1] == expected[3]  # 7000 left: the 8000-cpu class is out
