"""TEST DOUBLE of the Kubernetes API for `heps reconcile`: no API server can run on this
build host. It keeps objects in memory and behaves as server-side apply does for the
fields reconcile looks at: apply returns the object with the server's own metadata
(uid, resourceVersion, managedFields, generation) and status, a dry run stores nothing,
workloads report a finished rollout on the next read. The same scenarios run against a
real cluster (heps.cluster.kube_api.KubeCluster) in test_reconcile.py when KUBECONFIG is set.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from heps.cluster.manifests import Key, key_of


class MemoryCluster:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.applied: list[Key] = []
        self.deleted: list[Key] = []
        self._version = itertools.count(1)

    def get(self, key: Key) -> dict[str, Any] | None:
        obj = self.objects.get(key)
        if obj is not None and obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            obj["status"] = _rolled_out(obj)
        return copy.deepcopy(obj)

    def apply(self, obj: dict[str, Any], manager: str, dry_run: bool) -> dict[str, Any]:
        key = key_of(obj)
        old = self.objects.get(key)
        result = copy.deepcopy(obj)
        meta = result.setdefault("metadata", {})
        spec_changed = old is None or old.get("spec") != obj.get("spec")
        generation = (old or {}).get("metadata", {}).get("generation", 0) + int(spec_changed)
        meta.update(
            uid=(old or {}).get("metadata", {}).get("uid", f"uid-{key[3]}"),
            resourceVersion=str(next(self._version)),
            generation=generation,
            managedFields=[{"manager": manager, "operation": "Apply"}],
        )
        if old is not None and "status" in old:
            result["status"] = old["status"]
        if not dry_run:
            self.objects[key] = result
            self.applied.append(key)
        return copy.deepcopy(result)

    def delete(self, key: Key) -> None:
        self.deleted.append(key)
        self.objects.pop(key, None)


def _rolled_out(obj: dict[str, Any]) -> dict[str, Any]:
    replicas = obj.get("spec", {}).get("replicas", 1)
    generation = obj["metadata"].get("generation", 1)
    if obj["kind"] == "DaemonSet":
        return {
            "observedGeneration": generation,
            "desiredNumberScheduled": 3,
            "updatedNumberScheduled": 3,
            "numberAvailable": 3,
        }
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
        "readyReplicas": replicas,
    }
