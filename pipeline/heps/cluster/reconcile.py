"""`heps reconcile`: make the cluster run what an overlay renders, and nothing else.

Render, validate and check policies (heps.cluster.manifests) first: nothing reaches the cluster
unless every object passes. Then, with a cluster: server-side apply (field manager
`reconcile.field_manager`) of each object whose server-side dry run differs from what
runs (so a second run changes nothing), prune what the previous run applied and this
render no longer has (an inventory ConfigMap per overlay; an object is deleted only
while it still carries the labels reconcile applied it with),
and wait for rollouts. Without a cluster, `--dry-run` shows the diff against the render
this machine last applied. Secrets are masked in every diff.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from heps.cluster import manifests
from heps.cluster.manifests import Key, Manifest, key_of, show
from heps.core import log
from heps.core.errors import ConfigError, StageError
from heps.core.paths import overlay_dir
from heps.core.settings import Settings
from heps.core.stages import Stage

INVENTORY_PREFIX = "heps-inventory-"
INVENTORY_NAMESPACE = "heps"
MANAGED_BY, OVERLAY_LABEL = "app.kubernetes.io/managed-by", "heps.ihep.ac.cn/overlay"
MANAGER = "heps-reconcile"
VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation", "creationTimestamp", "uid")
# Applied first: what other objects live in or refer to.
ORDER = ("Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "Role")
ROLLOUT_KINDS = ("Deployment", "DaemonSet", "StatefulSet")


class Cluster(Protocol):
    """What reconcile needs of a Kubernetes API server (heps.cluster.kube_api implements it)."""

    def apply(self, obj: dict[str, Any], manager: str, dry_run: bool) -> dict[str, Any]: ...

    def get(self, key: Key) -> dict[str, Any] | None: ...

    def delete(self, key: Key) -> None: ...


@dataclass
class Outcome:
    diff: str
    """Unified diff, Secrets masked; empty when nothing would change."""
    changed: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    """In the inventory, gone from the render, but no longer labelled ours: left alone."""
    rolled_out: list[str] = field(default_factory=list)


def check(settings: Settings, overlay: str) -> list[Manifest]:
    """The overlay rendered, or a ConfigError with one line per schema or policy problem."""
    folder = overlay_dir(settings.repo, settings, overlay)
    rendered = manifests.render(settings.repo, folder)
    problems = manifests.schema_problems(rendered, settings.reconcile.kubernetes_version)
    pins = (settings.repo, folder)
    problems += manifests.policy_problems(rendered, overlay, settings.reconcile, pins)
    if problems:
        raise ConfigError(problems)
    return rendered


def comparable(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """An object without what the server changes by itself (status, versions, owners)."""
    if obj is None:
        return None
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in VOLATILE_METADATA}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != "deployment.kubernetes.io/revision"
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return {
        **{k: v for k, v in obj.items() if k != "status"},
        "metadata": meta,
    }


def _text(obj: dict[str, Any] | None, masker: log.Masker) -> list[str]:
    if obj is None:
        return []
    safe = yaml.safe_dump(masker.mask(manifests.masked(obj)), sort_keys=True)  # mask, then encode
    return safe.splitlines(keepends=True)


def diff(
    before: dict[Key, dict[str, Any]], after: dict[Key, dict[str, Any]], masker: log.Masker
) -> str:
    """Per-object unified diff of two sets of objects, for people: Secrets' data and the
    run's secrets masked."""
    chunks: list[str] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        name = show(key)
        chunks.extend(
            difflib.unified_diff(
                _text(old, masker),
                _text(new, masker),
                f"{name} (before)" if old else "/dev/null",
                f"{name} (after)" if new else "/dev/null",
            )
        )
    return "".join(chunks)


def prune_set(previous: Iterable[Key], rendered: list[Manifest]) -> list[Key]:
    """What the last reconcile applied and this render lacks, to delete. Namespaces are
    never pruned: deleting one would delete everything in it, users' pods included."""
    current = {m.key for m in rendered}
    return sorted(k for k in set(previous) - current if k[1] != "Namespace")


def owned(obj: dict[str, Any], overlay: str) -> dict[str, Any]:
    """The object as applied: labelled as reconciled from this overlay, which is what
    pruning checks before it deletes anything (as kubectl's ApplySet does)."""
    meta = dict(obj.get("metadata") or {})
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY: MANAGER, OVERLAY_LABEL: overlay}
    return {**obj, "metadata": meta}


def is_owned(obj: dict[str, Any], overlay: str) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY) == MANAGER and labels.get(OVERLAY_LABEL) == overlay


def apply_order(rendered: list[Manifest]) -> list[Manifest]:
    def rank(m: Manifest) -> int:
        return ORDER.index(m.kind) if m.kind in ORDER else len(ORDER)

    return sorted(rendered, key=rank)


def rollout_pending(obj: dict[str, Any]) -> str | None:
    """Why a workload has not finished rolling out, or None when it has."""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation", 0)
    if status.get("observedGeneration", 0) < generation:
        return "the controller has not seen the new spec yet"
    kind = obj.get("kind")
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        updated, ready = status.get("updatedNumberScheduled", 0), status.get("numberAvailable", 0)
    else:
        want = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        ready = status.get("availableReplicas" if kind == "Deployment" else "readyReplicas", 0)
    if updated < want:
        return f"{updated} of {want} updated"
    if ready < want:
        return f"{ready} of {want} available"
    return None


def inventory_key(overlay: str) -> Key:
    return ("v1", "ConfigMap", INVENTORY_NAMESPACE, INVENTORY_PREFIX + overlay)


def inventory_object(overlay: str, keys: Iterable[Key], revision: str) -> dict[str, Any]:
    """The list of what this overlay applied, kept in the cluster for the next prune."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": INVENTORY_PREFIX + overlay,
            "namespace": INVENTORY_NAMESPACE,
            "labels": {MANAGED_BY: MANAGER, OVERLAY_LABEL: overlay},
            "annotations": {"heps.ihep.ac.cn/revision": revision},
        },
        "data": {"objects": json.dumps(sorted(keys), indent=1)},
    }


def inventory_keys(obj: dict[str, Any] | None) -> list[Key]:
    if obj is None:
        return []
    listed = json.loads((obj.get("data") or {}).get("objects", "[]"))
    return [(str(a), str(k), str(ns), str(n)) for a, k, ns, n in listed]


def state_file(settings: Settings, overlay: str) -> Path:
    """Where this machine keeps the render it last applied (masked), for offline diffs."""
    context = os.environ.get("HEPS_KUBE_CONTEXT", "default")
    return settings.state_dir / "reconcile" / context / f"{overlay}.yaml"


def load_state(path: Path) -> dict[Key, dict[str, Any]]:
    if not path.exists():
        return {}
    return {key_of(o): o for o in yaml.safe_load_all(path.read_text()) if o}


def save_state(path: Path, rendered: list[Manifest]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all([manifests.masked(m.obj) for m in rendered]))
    tmp.replace(path)


def offline(
    settings: Settings, overlay: str, rendered: list[Manifest], masker: log.Masker
) -> Outcome:
    """--dry-run without a cluster: the diff against this machine's last applied render."""
    before = load_state(state_file(settings, overlay))
    after = {m.key: manifests.masked(m.obj) for m in rendered}
    return Outcome(diff(before, after, masker))


def online(
    settings: Settings,
    overlay: str,
    rendered: list[Manifest],
    cluster: Cluster,
    dry_run: bool,
    revision: str,
    masker: log.Masker,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Apply what differs, prune what is gone, wait for rollouts."""
    manager = settings.reconcile.field_manager
    live: dict[Key, dict[str, Any]] = {}
    planned: dict[Key, dict[str, Any]] = {}
    changed: list[Manifest] = []
    for m in apply_order(rendered):
        body = owned(m.obj, overlay)
        current = comparable(cluster.get(m.key))
        # A namespace that does not exist yet cannot take a dry run of its objects.
        wanted = comparable(cluster.apply(body, manager, dry_run=True)) if current else body
        if current != wanted:
            changed.append(m)
            planned[m.key] = wanted or body
            if current:
                live[m.key] = current
    previous = inventory_keys(cluster.get(inventory_key(overlay)))
    gone, kept = [], []
    for key in prune_set(previous, rendered):
        obj = cluster.get(key)
        if obj is None:
            continue  # already deleted by someone else
        if not is_owned(obj, overlay):
            kept.append(show(key))
            continue
        gone.append(key)
        live[key] = comparable(obj) or obj
    refs = [m.ref for m in changed]
    outcome = Outcome(diff(live, planned, masker), refs, [show(k) for k in gone], kept)
    if dry_run:
        return outcome
    for m in changed:
        log.phase(Stage.RECONCILE, None, f"apply {m.ref}")
        cluster.apply(owned(m.obj, overlay), manager, dry_run=False)
    for key in gone:
        log.phase(Stage.RECONCILE, None, f"prune {show(key)}")
        cluster.delete(key)
    cluster.apply(inventory_object(overlay, [m.key for m in rendered], revision), manager, False)
    waiting = [m.key for m in changed if m.kind in ROLLOUT_KINDS]
    outcome.rolled_out = wait_for_rollouts(
        cluster, waiting, settings.reconcile.rollout_timeout, clock, sleep
    )
    save_state(state_file(settings, overlay), rendered)
    return outcome


def wait_for_rollouts(
    cluster: Cluster,
    keys: list[Key],
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> list[str]:
    deadline = clock() + timeout
    pending = {k: "not read yet" for k in keys}
    while pending:
        for key in list(pending):
            obj = cluster.get(key)
            why = "deleted meanwhile" if obj is None else rollout_pending(obj)
            if why is None:
                log.phase(Stage.RECONCILE, None, f"rolled out {show(key)}")
                del pending[key]
            else:
                pending[key] = why
        if pending and clock() >= deadline:
            waiting = "; ".join(f"{show(k)}: {why}" for k, why in sorted(pending.items()))
            raise StageError(Stage.RECONCILE, f"rollout not done after {timeout:.0f}s: {waiting}")
        if pending:
            sleep(2.0)
    return [show(k) for k in keys]
