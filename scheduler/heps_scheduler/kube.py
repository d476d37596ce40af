"""The Kubernetes adapter: cluster objects in, bindings and events out.

Talks through the official `kubernetes` client, sending plain dict bodies and reading raw
JSON (`_preload_content=False`): the generated models fail to deserialise the Status
that a successful Binding returns (kubernetes-client/python#547, still so in 37.x).
Conversions from API objects are pure functions, tested without a server.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from heps_scheduler.cycle import ERROR, OK, WAIT, Status
from heps_scheduler.framework import Decision, Scheduler
from heps_scheduler.model import (
    GPU_MODEL_LABEL,
    GPU_RESOURCE,
    GPU_SHARE_RESOURCE,
    AntiAffinityTerm,
    Node,
    Pod,
    Requirement,
    SpreadConstraint,
    Taint,
    Toleration,
    pod_requests,
    qos_class,
    quantity,
)
from heps_scheduler.queue import SchedulingQueue
from heps_scheduler.snapshot import NodeMetrics, Snapshot

log = logging.getLogger("heps_scheduler")
METRICS_ANNOTATION = "heps.ihep.ac.cn/node-metrics"
"""Where the node-metrics agent publishes (JSON with a timestamp) and the scheduler reads."""
MIB = 2**20


def _requirements(expressions: list[dict[str, Any]] | None) -> tuple[Requirement, ...]:
    return tuple(
        Requirement(e["key"], e["operator"], tuple(e.get("values") or ()))
        for e in expressions or ()
    )


def _label_selector(selector: dict[str, Any] | None) -> tuple[Requirement, ...]:
    selector = selector or {}
    equal = [Requirement(k, "In", (v,)) for k, v in (selector.get("matchLabels") or {}).items()]
    return (*equal, *_requirements(selector.get("matchExpressions")))


def pod_from_k8s(obj: dict[str, Any]) -> Pod:
    """A Pod manifest (as the API returns it) as the scheduler's plain data."""
    meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    containers, init = spec.get("containers") or [], spec.get("initContainers") or []
    requests = pod_requests(containers, init)
    gpus = int(requests.get(GPU_RESOURCE, 0))
    share = int(requests.get(GPU_SHARE_RESOURCE, 0))
    affinity = spec.get("affinity") or {}
    required = (affinity.get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = tuple(
        _requirements(t.get("matchExpressions")) for t in required.get("nodeSelectorTerms") or ()
    )
    anti = (affinity.get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or []
    created = meta.get("creationTimestamp")
    return Pod(
        name=meta.get("name", ""),
        namespace=meta.get("namespace", "default"),
        uid=str(meta.get("uid") or ""),
        cpu_milli=round(requests.get("cpu", 0) * 1000),
        memory_mib=round(requests.get("memory", 0) / MIB),
        ephemeral_mib=round(requests.get("ephemeral-storage", 0) / MIB),
        gpus=1 if share and not gpus else gpus,
        gpu_milli=share if share and not gpus else (1000 if gpus else 0),
        priority=int(spec.get("priority") or 0),
        qos=qos_class(containers, init),
        created=datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        if created
        else 0.0,
        labels=dict(meta.get("labels") or {}),
        node_selector=dict(spec.get("nodeSelector") or {}),
        node_affinity=terms,
        tolerations=tuple(
            Toleration(
                t.get("key", ""),
                t.get("operator", "Equal"),
                t.get("value", ""),
                t.get("effect", ""),
            )
            for t in spec.get("tolerations") or ()
        ),
        anti_affinity=tuple(
            AntiAffinityTerm(
                _label_selector(t.get("labelSelector")),
                t.get("topologyKey", "kubernetes.io/hostname"),
            )
            for t in anti
        ),
        spread=tuple(
            SpreadConstraint(
                int(c["maxSkew"]), c["topologyKey"], _label_selector(c.get("labelSelector"))
            )
            for c in spec.get("topologySpreadConstraints") or ()
            if c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"
        ),
    )


def node_from_k8s(obj: dict[str, Any]) -> Node:
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    allocatable = status.get("allocatable") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    labels = dict(meta.get("labels") or {})
    return Node(
        name=meta["name"],
        cpu_milli=round(quantity(allocatable.get("cpu", 0)) * 1000),
        memory_mib=round(quantity(allocatable.get("memory", 0)) / MIB),
        ephemeral_mib=round(quantity(allocatable.get("ephemeral-storage", 2**50)) / MIB),
        gpus=int(quantity(allocatable.get(GPU_RESOURCE, 0))),
        gpu_model=labels.get(GPU_MODEL_LABEL, ""),
        labels=labels,
        taints=tuple(
            Taint(t["key"], t.get("value", ""), t.get("effect", "NoSchedule"))
            for t in spec.get("taints") or ()
        ),
        unschedulable=bool(spec.get("unschedulable")),
        disk_pressure=conditions.get("DiskPressure") == "True",
    )


def metrics_from_k8s(obj: dict[str, Any]) -> NodeMetrics | None:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(METRICS_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return NodeMetrics(
            float(data["cpu"]),
            float(data["iowait"]),
            float(data["network"]),
            float(data["timestamp"]),
        )
    except (ValueError, KeyError, TypeError):
        log.warning(
            "node %s: unreadable %s annotation", obj["metadata"]["name"], METRICS_ANNOTATION
        )
        return None


def kube_key(obj: dict[str, Any]) -> str:
    """namespace/name, as `Pod.key`."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"


def binding_body(pod: Pod, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }


def event_body(
    pod_obj: dict[str, Any], reason: str, message: str, warning: bool, component: str, now: datetime
) -> dict[str, Any]:
    """A core/v1 Event about the pod, as kube-scheduler posts them."""
    meta = pod_obj["metadata"]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "generateName": f"{meta['name']}.",
            "namespace": meta.get("namespace", "default"),
        },
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "namespace": meta.get("namespace", "default"),
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def _status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def raw(response: Any) -> Any:
    """The JSON body of a `_preload_content=False` response."""
    return json.loads(response.data or b"null")


@dataclass
class BindResult:
    bound: bool
    detail: str


Builder = Callable[[Snapshot], Scheduler]
"""Makes one profile's scheduling cycle on a snapshot."""


class KubeScheduler:
    """Keeps one snapshot of the cluster, schedules the pods that name one of its profiles
    (by `schedulerName`, as kube-scheduler serves every profile of its configuration) with
    that profile, and binds."""

    def __init__(
        self,
        core: Any,
        builders: dict[str, Builder],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not builders:
            raise ValueError("KubeScheduler needs at least one profile")
        self.core = core
        self.builders = builders
        self.clock = clock
        self.queue = SchedulingQueue()
        self.pods: dict[str, dict[str, Any]] = {}
        """Pending pods of ours, by key, as last seen."""
        self.node_objs: dict[str, dict[str, Any]] = {}
        self.orphans: dict[str, dict[str, Any]] = {}
        """Pods bound to a node not (yet) known, counted once their node appears."""
        self.waiting: dict[str, tuple[dict[str, Any], Scheduler, Decision]] = {}
        """Pods a Permit plugin holds, reserved, with their profile's cycle."""
        self.nominated: dict[str, str] = {}
        """Pods that preempted, by key: the node their next attempt tries first."""
        self.schedulers = self._build(Snapshot([]))

    def _build(self, snap: Snapshot) -> dict[str, Scheduler]:
        """Every profile's cycle on `snap`, binding through the API on this cache's clock;
        pods Permit held on the old snapshot go back to the queue."""
        schedulers = {name: build(snap) for name, build in self.builders.items()}
        for scheduler in schedulers.values():
            scheduler.profile.handle.binder = self.bind_api
            scheduler.profile.handle.evictor = self.evict_api
            scheduler.profile.handle.clock = lambda: self.clock()
        for _, _, decision in self.waiting.values():  # still in the old snapshot: forget
            self.snap.forget(decision.pod.key)
            self.queue.unschedulable(decision.pod, self.clock(), snap.generation - 1)
        self.waiting.clear()
        return schedulers

    @property
    def scheduler(self) -> Scheduler:
        """The first profile's cycle (every profile shares the snapshot)."""
        return next(iter(self.schedulers.values()))

    @property
    def snap(self) -> Snapshot:
        return self.scheduler.snap

    def ours(self, obj: dict[str, Any]) -> bool:
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        return (
            spec.get("schedulerName") in self.builders
            and not spec.get("nodeName")
            and phase not in ("Succeeded", "Failed")
            and not obj["metadata"].get("deletionTimestamp")
        )

    def sync(self) -> None:
        """Replace the cache with a full list of nodes, then of pods."""
        self.replace("node", raw(self.core.list_node(_preload_content=False))["items"])
        self.replace(
            "pod", raw(self.core.list_pod_for_all_namespaces(_preload_content=False))["items"]
        )

    def replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        """A fresh list of one kind replaces what the cache holds of it: pods missing from
        it were deleted (their capacity is freed, their queue entries dropped), nodes
        missing from it are removed with the placements on them."""
        if kind == "node":
            self.node_objs = {n["metadata"]["name"]: n for n in items}
            self._rebuild()
            return
        listed = {kube_key(obj) for obj in items}
        for key in [k for k in self.snap.placements if k not in listed]:
            self.snap.forget(key)
        for known in (self.pods, self.orphans, self.nominated):
            for key in [k for k in known if k not in listed]:
                del known[key]  # a queue entry without its object is dropped
        for obj in items:
            self.observe_pod("MODIFIED", obj)
        self.queue.flush(self.clock(), self.snap.generation)

    def _rebuild(self) -> None:
        """A new snapshot of the known nodes, keeping the placements on nodes still there."""
        old = self.snap
        snap = Snapshot([node_from_k8s(n) for n in self.node_objs.values()])
        for name, obj in self.node_objs.items():
            metrics = metrics_from_k8s(obj)
            if metrics is not None:
                snap.set_metrics(name, metrics)
        self.schedulers = self._build(snap)
        for placement in old.placements.values():
            node = old.nodes[placement.node].name
            if node in snap.index:
                snap.assume(placement.pod, snap.index[node], self._slots(placement.pod, node))
        for obj in list(self.orphans.values()):
            self.observe_pod("MODIFIED", obj)
        snap.generation = old.generation + 1
        self.queue.flush(self.clock(), snap.generation)

    def observe_pod(self, kind: str, obj: dict[str, Any]) -> None:
        """A pod event from a list or watch: track placements, queue pods that are ours."""
        pod = pod_from_k8s(obj)
        phase = (obj.get("status") or {}).get("phase")
        node = (obj.get("spec") or {}).get("nodeName")
        gone = kind == "DELETED" or phase in ("Succeeded", "Failed")
        placed = self.snap.placements.get(pod.key)
        self.orphans.pop(pod.key, None)
        if gone:
            if self.snap.forget(pod.key) is not None:
                self.queue.flush(self.clock(), self.snap.generation)
            self.pods.pop(pod.key, None)
            self.nominated.pop(pod.key, None)
            return
        if node and node not in self.snap.index:
            self.snap.forget(pod.key)
            self.orphans[pod.key] = obj
            return
        if node:
            self.pods.pop(pod.key, None)  # bound, by us or by another scheduler
            self.nominated.pop(pod.key, None)
            if placed is None or self.snap.nodes[placed.node].name != node:
                self.snap.forget(pod.key)  # bound elsewhere than we assumed (or by others)
                self.snap.assume(pod, self.snap.index[node], self._slots(pod, node))
            return
        if self.ours(obj) and placed is None and pod.key not in self.pods:
            self.pods[pod.key] = obj
            self.queue.add(pod)

    def _slots(self, pod: Pod, node: str) -> tuple[int, ...]:
        return self.scheduler.gpu_slots(pod, self.snap.index[node]) if pod.gpus else ()

    def observe_node(self, kind: str, obj: dict[str, Any]) -> None:
        """Node added, removed or changed: rebuild the snapshot when the node set changes."""
        name = obj["metadata"]["name"]
        if kind == "DELETED" or name not in self.snap.index:
            if kind == "DELETED":
                self.node_objs.pop(name, None)
            else:
                self.node_objs[name] = obj
            self._rebuild()
            return
        self.node_objs[name] = obj
        node = node_from_k8s(obj)
        self.snap.set_conditions(name, node.unschedulable, node.disk_pressure)
        metrics = metrics_from_k8s(obj)
        if metrics is not None:
            self.snap.set_metrics(name, metrics)
        self.queue.flush(self.clock(), self.snap.generation)

    def schedule_next(self) -> Decision | None:
        """Finish what Permit released, then one pod's scheduling and binding cycles."""
        self.poll_waiting()
        pod = self.queue.pop()
        if pod is None:
            return None
        obj = self.pods.get(pod.key)
        if obj is None:
            return None  # deleted while waiting
        scheduler = self.schedulers[obj["spec"]["schedulerName"]]
        decision = scheduler.schedule(pod, self.nominated.get(pod.key))
        if decision.node is None:
            message = decision.message(len(self.snap.nodes))
            if decision.status.message and decision.status.message not in decision.reasons:
                message += f" {decision.status.message}."  # PostFilter's, as kube-scheduler
            if decision.nominated is not None:
                self.nominate(pod, decision.nominated)
            self._unschedulable(obj, pod, message)
            return decision
        self._bind(obj, scheduler, decision)
        return decision

    def poll_waiting(self) -> None:
        """Bind the pods Permit plugins have allowed since; requeue those rejected or timed
        out; the others keep waiting, reserved."""
        for obj, scheduler, decision in list(self.waiting.values()):
            self._bind(obj, scheduler, decision)

    def _unschedulable(self, obj: dict[str, Any], pod: Pod, message: str) -> None:
        backoff = self.queue.unschedulable(pod, self.clock(), self.snap.generation)
        self.event(obj, "FailedScheduling", message, warning=True)
        log.info("%s: unschedulable, retry in %.0fs: %s", pod.key, backoff, message)

    def _bind(self, obj: dict[str, Any], scheduler: Scheduler, decision: Decision) -> None:
        """The binding cycle (the profile's Bind plugins call `bind_api`), then what its
        outcome means for the queue; the framework has unreserved a pod that failed."""
        pod = decision.pod
        status = scheduler.bind(decision)
        if status.code == WAIT:
            self.waiting[pod.key] = (obj, scheduler, decision)
            return
        self.waiting.pop(pod.key, None)
        if status.ok:
            self.queue.scheduled(pod)
            self.pods.pop(pod.key, None)
            self.nominated.pop(pod.key, None)
            message = f"Successfully assigned {pod.key} to {decision.node}"
            self.event(obj, "Scheduled", message, warning=False)
            log.info("%s: bound to %s", pod.key, decision.node)
            return
        http = _status(status.cause) if isinstance(status.cause, Exception) else None
        if http is None:  # a Permit plugin rejected it, or its wait timed out
            self._unschedulable(obj, pod, f"{status.plugin}: {status.message}")
            return
        if http == 409:  # a conflict: bound already (by us or another), or requeue
            detail = self._conflict(pod).detail
        elif http == 404:  # the pod is gone; a vanished node shows up as a node event
            self.pods.pop(pod.key, None)
            detail = "pod deleted before binding"
        else:
            self.queue.unschedulable(pod, self.clock(), self.snap.generation - 1)
            detail = f"binding failed ({http}); will retry"
        log.info("%s: %s", pod.key, detail)

    def bind_api(self, pod: Pod, node: str) -> Status:
        """Bind through the Binding API (the profiles' binder); an API error comes back as
        an Error status carrying the exception."""
        try:
            self.core.create_namespaced_binding(
                pod.namespace, binding_body(pod, node), _preload_content=False
            )
        except Exception as exc:  # the client raises ApiException; only its status matters here
            status = _status(exc)
            if status is None:
                raise
            return Status(ERROR, f"binding failed ({status})", cause=exc)
        return OK

    def evict_api(self, victim: Pod, preemptor: Pod, node: str) -> Status:
        """Preemption's eviction (the profiles' evictor): delete the victim through the API,
        on condition that it is still the pod the cache knew (its uid), and post a
        Preempted event on it. The cache lets it go when the watch says DELETED."""
        body = {"preconditions": {"uid": victim.uid}} if victim.uid else {}
        try:
            self.core.delete_namespaced_pod(
                victim.name, victim.namespace, body=body, _preload_content=False
            )
        except Exception as exc:  # the client raises ApiException; only its status matters
            status = _status(exc)
            if status is None:
                raise
            if status != 404:  # 404: gone already, which is what preemption wanted
                return Status(ERROR, f"deleting {victim.key} failed ({status})", cause=exc)
        obj = {"metadata": {"name": victim.name, "namespace": victim.namespace, "uid": victim.uid}}
        message = f"Preempted by {preemptor.key} on node {node}"
        self.event(obj, "Preempted", message, warning=False)
        log.info("%s: preempted by %s on %s", victim.key, preemptor.key, node)
        return OK

    def nominate(self, pod: Pod, node: str) -> None:
        """Set the pod's status.nominatedNodeName, as kube-scheduler does after preempting;
        its next attempt tries that node first."""
        self.nominated[pod.key] = node
        patch = {"status": {"nominatedNodeName": node}}
        try:
            self.core.patch_namespaced_pod_status(
                pod.name,
                pod.namespace,
                patch,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
        except Exception as exc:  # the client raises ApiException; only its status matters
            if _status(exc) is None:
                raise
            log.warning("%s: nominatedNodeName %s not recorded: %s", pod.key, node, exc)

    def _conflict(self, pod: Pod) -> BindResult:
        """After a 409: the pod's current state decides. Bound: count it where it is.
        Gone: forget it. Still pending: back to the queue (with backoff) to try again."""
        try:
            current = raw(
                self.core.read_namespaced_pod(pod.name, pod.namespace, _preload_content=False)
            )
        except Exception as exc:  # the client raises ApiException; only its status matters
            if _status(exc) == 404:
                self.pods.pop(pod.key, None)
                return BindResult(False, "pod deleted before binding")
            if _status(exc) is None:
                raise
            current = None
        node = ((current or {}).get("spec") or {}).get("nodeName")
        if current is not None:
            self.observe_pod("MODIFIED", current)
        if node:
            self.pods.pop(pod.key, None)
            return BindResult(False, f"already bound to {node}")
        self.queue.unschedulable(pod, self.clock(), self.snap.generation - 1)
        return BindResult(False, "binding conflict (409); requeued")

    def event(self, obj: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        component = (obj.get("spec") or {}).get("schedulerName") or next(iter(self.builders))
        body = event_body(obj, reason, message, warning, component, datetime.now(UTC))
        try:
            self.core.create_namespaced_event(
                body["metadata"]["namespace"], body, _preload_content=False
            )
        except Exception as exc:  # events are best effort, as in kube-scheduler
            log.warning("event %s for %s not recorded: %s", reason, obj["metadata"]["name"], exc)
