"""Informer semantics against the API server double: list, then watch from the list's
resourceVersion; a broken or expired watch lists again and the list replaces the cache."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from heps_scheduler import informer, kube, serve
from tests.scheduler.fake_apiserver import FakeApiServer
from tests.scheduler.test_kube import k8s_node, k8s_pod, make_scheduler


class Cluster:
    """A KubeScheduler fed by two reflectors (threads) against the double; `pump` applies
    their changes in the test's thread until a condition holds."""

    def __init__(self, core: Any) -> None:
        self.scheduler = make_scheduler(core)
        self.changes: queue.Queue[informer.Change] = queue.Queue()
        self.stop = threading.Event()
        self.reflectors = {
            kind: informer.Reflector(fn, kind, self.changes, self.stop, watch_seconds=1, pause=0.1)
            for fn, kind in ((core.list_node, "node"), (core.list_pod_for_all_namespaces, "pod"))
        }
        self.threads = [
            threading.Thread(target=r.run, daemon=True) for r in self.reflectors.values()
        ]
        for thread in self.threads:
            thread.start()

    def pump(self, condition: Callable[[], bool], seconds: float = 30.0) -> None:
        """Apply changes until `condition` holds (the deadline only for a loaded host)."""
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "the cache did not get there"
            with contextlib.suppress(queue.Empty):
                serve.apply(self.scheduler, self.changes.get(timeout=0.05))

    def gpus_free(self, node: str) -> int:
        """Wholly free GPUs of `node` in the cache (-1 while the cache does not know it)."""
        snap = self.scheduler.snap
        return int(snap.whole_free[snap.index[node]]) if node in snap.index else -1

    def close(self) -> None:
        self.stop.set()


@pytest.fixture
def cluster(fake: FakeApiServer, api: tuple[Any, Any]) -> Iterator[Cluster]:
    fake.nodes = {"gpu": k8s_node("gpu", cpu="32", gpus=4), "cpu": k8s_node("cpu", cpu="32")}
    fake.pods = {("jhub", "alice"): k8s_pod("alice", node="gpu", gpus=1)}
    running = Cluster(api[0])
    yield running
    running.close()
    fake.close()


def _gap(fake: FakeApiServer, change: Callable[[], None]) -> None:
    """Cut the watches and keep the server away while `change` happens, then compact so
    that no watch could replay it: only a new list can show it."""
    with fake.lock:
        fake.down = True
    fake.drop_watches()
    with fake.lock:
        change()
        fake.compacted = fake.version
        fake.down = False


def test_a_pod_deleted_while_the_watch_is_down_frees_its_gpu(
    fake: FakeApiServer, cluster: Cluster
) -> None:
    cluster.pump(lambda: "jhub/alice" in cluster.scheduler.snap.placements)
    assert cluster.gpus_free("gpu") == 3
    lists = cluster.reflectors["pod"].relists
    _gap(fake, lambda: fake.delete("/api/v1/namespaces/jhub/pods/alice"))
    cluster.pump(lambda: cluster.reflectors["pod"].relists > lists and cluster.changes.empty())
    cluster.pump(lambda: "jhub/alice" not in cluster.scheduler.snap.placements)
    assert cluster.gpus_free("gpu") == 4


def test_a_node_deleted_during_the_gap_is_gone_after_the_relist(
    fake: FakeApiServer, cluster: Cluster
) -> None:
    cluster.pump(lambda: set(cluster.scheduler.snap.index) == {"gpu", "cpu"})
    _gap(fake, lambda: fake.delete("/api/v1/nodes/cpu"))
    cluster.pump(lambda: set(cluster.scheduler.snap.index) == {"gpu"})
    assert "jhub/alice" in cluster.scheduler.snap.placements  # kept on the node still there


def test_a_pod_deleted_with_the_watch_up_arrives_as_deleted(
    fake: FakeApiServer, cluster: Cluster
) -> None:
    cluster.pump(lambda: cluster.gpus_free("gpu") == 3)
    lists = cluster.reflectors["pod"].relists
    with fake.lock:
        fake.delete("/api/v1/namespaces/jhub/pods/alice")
    cluster.pump(lambda: cluster.gpus_free("gpu") == 4)
    assert cluster.reflectors["pod"].relists == lists  # by the watch, not by a new list


def test_an_expired_watch_lists_again_and_a_bookmark_avoids_it(
    fake: FakeApiServer, cluster: Cluster
) -> None:
    pods = cluster.reflectors["pod"]
    cluster.pump(lambda: pods.relists == 1 and "jhub/alice" in cluster.scheduler.snap.placements)
    with fake.lock:  # changes the pod watch never sees: node writes only
        fake.delete("/api/v1/nodes/cpu")
        fake.compacted = fake.version
    # the pod watch resumes from its last pod version, now compacted: 410, list again
    cluster.pump(lambda: pods.relists == 2)
    # with a bookmark at the current version first, the same resumes without a list
    fake.bookmark()
    cluster.pump(lambda: pods.version == str(fake.version))
    with fake.lock:
        fake.compacted = fake.version
    time.sleep(2.5)  # past the next watch timeout (1 s): it resumes from the bookmark
    assert pods.relists == 2


def test_a_binding_conflict_requeues_the_pod(fake: FakeApiServer, api: tuple[Any, Any]) -> None:
    core, _ = api
    fake.nodes = {"a": k8s_node("a")}
    fake.pods = {("jhub", "erin"): k8s_pod("erin", cpu="2")}
    fake.conflicts = {("jhub", "erin")}
    now = [1000.0]
    scheduler = make_scheduler(core)
    scheduler.clock = lambda: now[0]
    scheduler.sync()
    decision = scheduler.schedule_next()
    assert decision is not None and decision.node == "a" and fake.bindings == []
    assert scheduler.snap.placements == {} and scheduler.queue.parked == 1  # requeued
    now[0] += 2  # past the backoff
    scheduler.queue.flush(now[0], scheduler.snap.generation)
    assert scheduler.schedule_next().node == "a"  # type: ignore[union-attr]
    assert [b["target"]["name"] for b in fake.bindings] == ["a"]
    assert fake.pods[("jhub", "erin")]["spec"]["nodeName"] == "a"
    assert kube.kube_key(fake.pods[("jhub", "erin")]) in scheduler.snap.placements


def test_serve_learns_the_target_workload_from_the_pods_it_sees(
    fake: FakeApiServer, api: tuple[Any, Any]
) -> None:
    fake.nodes = {"gpu": k8s_node("gpu", cpu="96", gpus=8)}
    fake.pods = {("jhub", f"p{i}"): k8s_pod(f"p{i}", node="gpu", gpus=i % 2) for i in range(49)}
    scheduler = make_scheduler(api[0])
    scheduler.sync()
    assert serve.target_workload(serve.observed(scheduler)) == serve.DEFAULT_CLASSES
    fake.pods[("jhub", "p49")] = k8s_pod("p49", gpus=1)  # pending, ours: seen too
    scheduler.sync()
    learned = serve.target_workload(serve.observed(scheduler))
    assert sorted((c.gpus, c.gpu_milli, round(c.weight, 2)) for c in learned) == [
        (0, 0, 0.5),
        (1, 1000, 0.5),
    ]
