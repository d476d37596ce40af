"""TEST DOUBLE of the Kubernetes API for `heps reconcile`: no API server can run on this
build host. It keeps objects in memory and answers as heps.cluster.kube_api.KubeCluster
does against a real API server (same return values, same StageError lines).

What it models of server-side apply: the body must name apiVersion, kind and name and
must not carry `metadata.managedFields` (400); a `metadata.resourceVersion` in the body
must match the live one (409); a namespaced object needs its Namespace (404, a
StageError in both). Each field manager owns the fields it applied: applying merges into
the live object, keeps fields other managers own, removes fields only the applier owned
and no longer sends, and changing a field another manager owns is a conflict (409)
unless forced (KubeCluster always forces, as
`kubectl apply --server-side --force-conflicts` does). A no-op apply leaves
resourceVersion alone; `status` in a body is ignored; a dry run stores nothing.
Workloads report a finished rollout on the next read; deleting a Namespace deletes
what is in it at once.

What it does not model: lists are atomic here (one manager owns a whole list), where a
real server merges `containers`, `ports`, `env`... item by item, by the keys the OpenAPI
schema names; Update operations (kubectl edit/patch), finalizers and graceful deletion;
defaulting and validation (kubernetes-validate checks schemas before anything reaches a
cluster); admission; which kinds keep a `generation` (here every kind with a spec does).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from heps.cluster.manifests import Key, key_of, show
from heps.core.errors import StageError
from heps.core.stages import Stage

Path = tuple[str, ...]
# Set by the server, never owned by a field manager (the apiserver strips them likewise).
SERVER_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
)
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")


class MemoryCluster:
    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.owners: dict[Key, dict[str, set[Path]]] = {}
        """Per object, per field manager: the leaf fields it applied."""
        self.applied: list[Key] = []
        self.deleted: list[Key] = []
        self._version = itertools.count(1)

    def get(self, key: Key) -> dict[str, Any] | None:
        obj = self.objects.get(key)
        if obj is not None and obj["kind"] in WORKLOADS:
            obj["status"] = _rolled_out(obj)
        return copy.deepcopy(obj)

    def apply(
        self, obj: dict[str, Any], manager: str, dry_run: bool, *, force: bool = True
    ) -> dict[str, Any]:
        key = key_of(obj)
        old = self.objects.get(key)
        self._admit(key, obj, old)
        fields = _leaves(_owned_part(obj))
        owners = {m: set(paths) for m, paths in self.owners.get(key, {}).items()}
        live = _leaves(_owned_part(old)) if old else {}
        conflicts = sorted(
            (other, path)
            for other, paths in owners.items()
            if other != manager
            for path in paths & fields.keys()
            if live.get(path) != fields[path]
        )
        if conflicts and not force:
            raise _refused(key, _conflict_message(conflicts))
        for other, path in conflicts:
            owners[other].discard(path)
        dropped = owners.get(manager, set()) - fields.keys()
        owners[manager] = set(fields)
        owners = {m: paths for m, paths in owners.items() if paths}
        result = copy.deepcopy(old) if old else {"metadata": {}}
        result["apiVersion"], result["kind"] = obj["apiVersion"], obj["kind"]
        for path in dropped:
            if not any(path in paths for paths in owners.values()):
                _remove(result, path)
        for path, value in fields.items():
            _put(result, path, copy.deepcopy(value))
        self._stamp(key, result, old, owners)
        if not dry_run and result != old:
            self.objects[key] = result
            self.owners[key] = owners
            self.applied.append(key)
        return copy.deepcopy(result)

    def delete(self, key: Key) -> None:
        self.deleted.append(key)
        gone = [key]
        if key[1] == "Namespace":
            gone += [k for k in self.objects if k[2] == key[3]]
        for k in gone:
            self.objects.pop(k, None)
            self.owners.pop(k, None)

    def _admit(self, key: Key, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """What the API server refuses before it merges anything."""
        meta = obj.get("metadata") or {}
        if "managedFields" in meta:
            raise _refused(key, "metadata.managedFields must be nil")
        if not (key[0] and key[1] and key[3]):
            raise _refused(key, "apiVersion, kind and metadata.name must be set")
        if key[2] and ("v1", "Namespace", "", key[2]) not in self.objects:
            raise _refused(key, f'namespaces "{key[2]}" not found')
        version = meta.get("resourceVersion")
        if version and (old is None or version != old["metadata"]["resourceVersion"]):
            raise _refused(
                key,
                f'Operation cannot be fulfilled on {key[1].lower()}s "{key[3]}": the object '
                "has been modified; please apply your changes to the latest version and try again",
            )

    def _stamp(
        self,
        key: Key,
        result: dict[str, Any],
        old: dict[str, Any] | None,
        owners: dict[str, set[Path]],
    ) -> None:
        """The server's own metadata: uid, managedFields, and versions when something changed."""
        meta = result["metadata"]
        meta.update(name=key[3], uid=meta.get("uid", f"uid-{key[3]}"))
        if key[2]:
            meta["namespace"] = key[2]
        meta["managedFields"] = [
            {
                "manager": m,
                "operation": "Apply",
                "apiVersion": key[0],
                "fieldsType": "FieldsV1",
                "fieldsV1": _fields_v1(owners[m]),
            }
            for m in sorted(owners)
        ]
        if old is not None and result == old:
            return
        if "spec" in result and (old is None or old.get("spec") != result.get("spec")):
            meta["generation"] = meta.get("generation", 0) + 1
        meta["resourceVersion"] = str(next(self._version))


def _refused(key: Key, message: str) -> StageError:
    """What KubeCluster raises for the API server's 4xx answer (its Status message)."""
    return StageError(Stage.RECONCILE, f"apply {show(key)}: {message}")


def _owned_part(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields a field manager can own: not status, not the server's metadata."""
    meta = obj.get("metadata") or {}
    rest = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status", "metadata")}
    owned_meta = {k: v for k, v in meta.items() if k not in (*SERVER_METADATA, "managedFields")}
    return {**rest, "metadata": owned_meta} if owned_meta else rest


def _leaves(obj: dict[str, Any], prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf field by path; a list is one leaf (atomic), as is an empty map."""
    found: dict[Path, Any] = {}
    for name, value in obj.items():
        path = (*prefix, name)
        if isinstance(value, dict) and value:
            found.update(_leaves(value, path))
        else:
            found[path] = value
    return found


def _put(obj: dict[str, Any], path: Path, value: Any) -> None:
    for name in path[:-1]:
        child = obj.get(name)
        if not isinstance(child, dict):
            child = obj[name] = {}
        obj = child
    if value == {} and isinstance(obj.get(path[-1]), dict):
        return  # an empty map merges: what others own in it stays
    obj[path[-1]] = value


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Delete a field, and the maps it leaves empty."""
    parents = [obj]
    for name in path[:-1]:
        child = parents[-1].get(name)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for parent, name in zip(reversed(parents[:-1]), reversed(path[:-1]), strict=True):
        if parent[name]:
            break
        del parent[name]


def _fields_v1(paths: set[Path]) -> dict[str, Any]:
    """Owned fields in the API's FieldsV1 form: {"f:metadata": {"f:labels": {...}}}."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for name in path:
            node = node.setdefault(f"f:{name}", {})
    return tree


def _conflict_message(conflicts: list[tuple[str, Path]]) -> str:
    lines = [f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts]
    if len(lines) == 1:
        return f"Apply failed with 1 conflict: {lines[0]}"
    return f"Apply failed with {len(lines)} conflicts: " + "\n".join(lines)


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
