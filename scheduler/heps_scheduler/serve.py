"""The long-running parts: the scheduler loop (watches, leader election) and the agent."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import socket
import sys
import threading
import time
from typing import Any

from heps_scheduler import agent, config, informer, kube, leader
from heps_scheduler.fgd import TaskClass, typical_pods
from heps_scheduler.framework import Scheduler
from heps_scheduler.model import Pod
from heps_scheduler.snapshot import Snapshot

log = logging.getLogger("heps_scheduler")
# The task mix FGD optimises for until enough arrivals are seen: the platform's profiles.
DEFAULT_CLASSES = [
    TaskClass(4000, 1, 500, 0.4),
    TaskClass(8000, 1, 1000, 0.5),
    TaskClass(16000, 2, 1000, 0.1),
]


def clients() -> tuple[Any, Any]:
    """CoreV1 and CoordinationV1 clients: in-cluster service account, else KUBECONFIG."""
    from kubernetes import client
    from kubernetes import config as kubeconfig

    try:
        kubeconfig.load_incluster_config()
    except kubeconfig.ConfigException:
        try:
            kubeconfig.load_kube_config()
        except (kubeconfig.ConfigException, OSError) as exc:
            raise SystemExit(
                f"heps-scheduler: error: no Kubernetes credentials ({exc}); run in a pod with a "
                "service account or set KUBECONFIG"
            ) from None
    return client.CoreV1Api(), client.CoordinationV1Api()


MIN_OBSERVED = 50
"""Pods seen before the target workload is learned from them instead of DEFAULT_CLASSES."""


def observed(scheduler: kube.KubeScheduler | None) -> list[Pod]:
    """The pods the cache holds: placed ones and ours waiting."""
    if scheduler is None:
        return []
    placed = [p.pod for p in scheduler.snap.placements.values()]
    return placed + [kube.pod_from_k8s(obj) for obj in scheduler.pods.values()]


def target_workload(pods: list[Pod]) -> list[TaskClass]:
    """FGD's target workload (and the spreading threshold's share) learned from the pods
    seen, as the paper learns it from arrivals; the platform's profiles until enough have
    been seen. Relearned whenever the snapshot is rebuilt (a node set change, a relist)."""
    return typical_pods(pods) if len(pods) >= MIN_OBSERVED else DEFAULT_CLASSES


def apply(scheduler: kube.KubeScheduler, change: informer.Change) -> None:
    """One change from a reflector into the scheduler's cache."""
    kind, what, obj = change
    if what == informer.RELIST:
        scheduler.replace(kind, obj)
    elif kind == "node":
        scheduler.observe_node(what, obj)
    else:
        scheduler.observe_pod(what, obj)


def run(
    core: Any,
    coordination: Any,
    settings: config.SchedulerConfig,
    leader_elect: bool,
    lease_namespace: str,
    stop: threading.Event,
) -> None:
    scheduler: kube.KubeScheduler | None = None

    def builder(profile: config.ProfileSettings) -> kube.Builder:
        def build(snap: Snapshot) -> Scheduler:
            classes = target_workload(observed(scheduler))
            return Scheduler(snap, config.build(profile, classes, settings.metrics))

        return build

    builders = {p.scheduler_name or settings.scheduler_name: builder(p) for p in settings.profiles}
    scheduler = kube.KubeScheduler(core, builders)
    changes: queue.Queue[informer.Change] = queue.Queue()
    for list_fn, kind in ((core.list_node, "node"), (core.list_pod_for_all_namespaces, "pod")):
        reflector = informer.Reflector(list_fn, kind, changes, stop)
        threading.Thread(target=reflector.run, daemon=True).start()
    listed: set[str] = set()  # schedule only once both kinds have been listed
    identity = f"{socket.gethostname()}-{os.getpid()}"
    elector = leader.LeaseElector(coordination, lease_namespace, settings.scheduler_name, identity)
    leading, renewed = not leader_elect, 0.0
    while not stop.is_set():
        if leader_elect and time.time() - renewed > elector.lease_seconds / 3:
            was, leading, renewed = leading, elector.try_acquire_or_renew(), time.time()
            if leading != was:
                log.info("%s %s the lease", identity, "holds" if leading else "lost")
                if leading:
                    scheduler.sync()  # another leader may have bound pods meanwhile
        try:
            change = changes.get(timeout=0.5)
            apply(scheduler, change)
            if change[1] == informer.RELIST:
                listed.add(change[0])
        except queue.Empty:
            scheduler.queue.flush(time.time(), scheduler.snap.generation)
        while leading and len(listed) == 2 and scheduler.schedule_next() is not None:
            pass


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    try:
        settings = (
            config.load(args.config) if getattr(args, "config", None) else config.SchedulerConfig()
        )
    except (OSError, ValueError) as exc:
        print(f"heps-scheduler: error: {exc}", file=sys.stderr)
        return 2
    try:
        core, coordination = clients()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "agent":
        before = agent.read_sample()
        while True:
            time.sleep(args.interval)
            after = agent.read_sample()
            agent.publish(core, args.node, agent.metrics(before, after))
            before = after
    run(core, coordination, settings, args.leader_elect, args.lease_namespace, threading.Event())
    return 0
