"""TEST DOUBLE of the Kubernetes API server: no API server can run on this build host.

It speaks HTTP/1.1 to the real `kubernetes` client, only for what the scheduler and the
agent call, and answers as the API server does:

- nodes and pods: list (cluster-wide, pods also per namespace), delete (200 with the
  object; a watch sees DELETED; DeleteOptions' `preconditions` uid and resourceVersion
  must match, else 409 Conflict and nothing is deleted) and watch, both with
  `labelSelector` (=, ==, !=, in, notin, exists, !exists) and `fieldSelector` (=, ==, !=
  on the fields the API server indexes for that kind; 400 `field label not supported`
  for others); a watch without `resourceVersion` (or "0") starts with ADDED for what
  exists, one from a resourceVersion sends only what changed after it; an object that
  starts or stops matching the selectors arrives as ADDED / DELETED; `timeoutSeconds`
  ends the stream. Every list carries the current resourceVersion.
- watch expiry: after `compact()`, a watch from a resourceVersion older than the
  compaction gets HTTP 200 and one ERROR event with a 410 Expired Status, as the API
  server's watch cache answers; watches already open go on.
- bookmarks: a watch with `allowWatchBookmarks=true` gets a BOOKMARK event (an object
  with only kind, apiVersion and metadata.resourceVersion) whenever `bookmark()` is
  called; others never do.
- dropped connections: `drop_watches()` cuts every open watch without the closing chunk
  (the client sees a broken stream); while `down` is set every request gets 503.
- pods/status: merge patch only (415 for other patch types), which changes `status`
  alone, as the subresource does; 404 when the pod is gone, 409 on a stale
  resourceVersion in the patch.
- pods: read, create (defaults `schedulerName`, 409 when it exists), bind through the
  Binding API (201; 409 when the pod is already bound, 404 when it is gone; sets
  `spec.nodeName` and the PodScheduled condition); a test may name pods in `conflicts`
  whose next binding fails with 409 Conflict, as a concurrent write to the pod makes it.
- events: create (a name from `generateName`; 422 when the namespaces differ).
- nodes: read, and merge patch or strategic merge patch without lists (RFC 7386: `null`
  deletes a key; a `metadata.resourceVersion` in the patch must match, 409).
- leases: get, create, replace with resourceVersion conflicts (409).

Every change bumps a resourceVersion and is seen by watches. What it does not model:
pagination (`limit`, `continue`), `resourceVersionMatch`, `sendInitialEvents` (400, so
no test relies on them silently), periodic bookmarks and compaction (only when a test
calls them), 410 on lists, JSON patch (415), strategic merge of lists, graceful deletion
(`deletionTimestamp`, grace periods, finalizers: a delete removes at once), delete
options other than preconditions (propagation, dryRun), PodDisruptionBudgets and the
Eviction subresource, other kinds, authentication and RBAC, validation beyond what
is listed. Objects a test puts in `nodes` / `pods` directly show in lists but produce no
watch event.

Of the tests that use it, the bind-and-event and the lease scenarios also run against a
real API server in test_kube_live.py when KUBECONFIG is set; the others need the double.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

Response = tuple[int, Any]
# The fields the API server can select on (pkg/registry/core/*/strategy.go).
FIELDS = {
    "pods": (
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "nodes": ("metadata.name", "spec.unschedulable"),
}
# A change as a watch with selectors sees it: (matched before, matches now) -> event type.
SEEN_AS = {(False, True): "ADDED", (True, True): "MODIFIED", (True, False): "DELETED"}
NOT_MODELLED = ("limit", "continue", "resourceVersionMatch", "sendInitialEvents")
POD = r"/api/v1/namespaces/([^/]+)/pods/([^/]+)"
LEASE = r"/apis/coordination.k8s.io/v1/namespaces/([^/]+)/leases/([^/]+)"


@dataclass
class Change:
    version: int
    resource: str
    """"pods" or "nodes"."""
    old: dict[str, Any] | None
    new: dict[str, Any] | None


def status(code: int, reason: str, message: str) -> Response:
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


class FakeApiServer:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.bindings: list[dict[str, Any]] = []
        self.changes: list[Change] = []
        self.lock = threading.Condition()
        """Held while handling a request; notified on every change (watches wait on it)."""
        self.closed = False
        self.down = False
        """While set, every request gets 503 (the API server is unreachable)."""
        self.conflicts: set[tuple[str, str]] = set()
        """(namespace, name) of pods whose next binding fails with 409 Conflict."""
        self.compacted = 0
        """Watches from a resourceVersion older than this get 410 Expired."""
        self.drops = 0
        self.bookmarks = 0
        self._version = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        """Stop serving; open watches end as on a server's timeout."""
        with self.lock:
            self.closed = True
            self.lock.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    def compact(self) -> None:
        """Forget history up to now: new watches from older versions get 410."""
        with self.lock:
            self.compacted = self._version

    def drop_watches(self) -> None:
        """Cut every open watch mid-stream."""
        with self.lock:
            self.drops += 1
            self.lock.notify_all()

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to watches that allow them."""
        with self.lock:
            self.bookmarks += 1
            self.lock.notify_all()

    def delete(self, path: str, options: Any = None) -> Response:
        """Delete at once; DeleteOptions' preconditions (uid, resourceVersion) must match
        the object, else 409 and nothing changes."""
        key: Any
        if m := re.fullmatch(POD, path):
            key, resource, what = (m[1], m[2]), "pods", f'pods "{m[2]}"'
        elif m := re.fullmatch(r"/api/v1/nodes/([^/]+)", path):
            key, resource, what = m[1], "nodes", f'nodes "{m[1]}"'
        else:
            return status(404, "NotFound", "the server could not find the requested resource")
        store: dict[Any, dict[str, Any]] = self._store(resource)
        if key not in store:
            return status(404, "NotFound", f"{what} not found")
        meta = store[key]["metadata"]
        wanted = (options or {}).get("preconditions") or {}
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if wanted.get(field) is not None and wanted[field] != meta.get(field):
                return status(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on {what}: Precondition failed: {label} in "
                    f"precondition: {wanted[field]}, {label} in object meta: {meta.get(field)}",
                )
        obj = store.pop(key)
        obj["metadata"]["resourceVersion"] = self._rv()  # watches see its last state DELETED
        self.changes.append(Change(self._version, resource, copy.deepcopy(obj), None))
        self.lock.notify_all()
        return 200, obj

    @property
    def version(self) -> int:
        return self._version

    def _rv(self) -> str:
        self._version += 1
        return str(self._version)

    def _store(self, resource: str) -> dict[Any, dict[str, Any]]:
        return self.pods if resource == "pods" else self.nodes

    def _changed(self, resource: str, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """Record a write: a new resourceVersion on the object, an event for watches."""
        new["metadata"]["resourceVersion"] = self._rv()
        self.changes.append(Change(self._version, resource, old, copy.deepcopy(new)))
        self.lock.notify_all()

    # reads: lists and watches

    def current(self, resource: str, selects: Selector) -> list[dict[str, Any]]:
        items = []
        for obj in self._store(resource).values():
            obj["metadata"].setdefault("resourceVersion", self._rv())  # put in by a test
            if selects(obj):
                items.append(copy.deepcopy(obj))
        return items

    def listing(self, resource: str, selects: Selector) -> Response:
        kind = "PodList" if resource == "pods" else "NodeList"
        items = self.current(resource, selects)
        meta = {"resourceVersion": str(self._version)}
        return 200, {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": items}

    def watch_events(
        self, resource: str, selects: Selector, since: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """(version, event) for what changed after `since`, as the selectors see it."""
        found = []
        for change in self.changes:
            if change.version <= since or change.resource != resource:
                continue
            was = change.old is not None and selects(change.old)
            now = change.new is not None and selects(change.new)
            if (was, now) in SEEN_AS:
                obj = change.new if change.new is not None else change.old
                found.append((change.version, {"type": SEEN_AS[was, now], "object": obj}))
        return found

    def get(self, path: str, query: dict[str, str]) -> Response:
        if m := re.fullmatch(r"/api/v1/(nodes|pods)|/api/v1/namespaces/([^/]+)/(pods)", path):
            resource, namespace = m[1] or m[3], m[2]
            try:
                selects = Selector.parse(resource, namespace, query)
            except ValueError as exc:
                return status(400, "BadRequest", str(exc))
            return self.listing(resource, selects)
        if m := re.fullmatch(POD, path):
            pod = self.pods.get((m[1], m[2]))
            return (200, pod) if pod else status(404, "NotFound", f'pods "{m[2]}" not found')
        if m := re.fullmatch(r"/api/v1/nodes/([^/]+)", path):
            node = self.nodes.get(m[1])
            return (200, node) if node else status(404, "NotFound", f'nodes "{m[1]}" not found')
        if m := re.fullmatch(LEASE, path):
            lease = self.leases.get((m[1], m[2]))
            message = f'leases.coordination.k8s.io "{m[2]}" not found'
            return (200, lease) if lease else status(404, "NotFound", message)
        return status(404, "NotFound", "the server could not find the requested resource")

    # writes

    def post(self, path: str, body: Any) -> Response:
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/bindings", path):
            return self.bind(m[1], body)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path):
            return self.create_pod(m[1], body)
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/events", path):
            return self.create_event(m[1], body)
        if m := re.fullmatch(r"/apis/coordination.k8s.io/v1/namespaces/([^/]+)/leases", path):
            key = (m[1], body["metadata"]["name"])
            if key in self.leases:
                return status(
                    409, "AlreadyExists", f'leases.coordination.k8s.io "{key[1]}" already exists'
                )
            body["metadata"]["resourceVersion"] = self._rv()
            self.leases[key] = body
            return 201, body
        return status(404, "NotFound", "the server could not find the requested resource")

    def bind(self, namespace: str, body: dict[str, Any]) -> Response:
        name = body["metadata"]["name"]
        pod = self.pods.get((namespace, name))
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        if (namespace, name) in self.conflicts:
            self.conflicts.discard((namespace, name))
            return status(409, "Conflict", _modified("pods", name))
        if pod["spec"].get("nodeName"):
            return status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is '
                f'already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        old = copy.deepcopy(pod)
        pod["spec"]["nodeName"] = body["target"]["name"]
        conditions = pod.setdefault("status", {}).setdefault("conditions", [])
        conditions.append({"type": "PodScheduled", "status": "True"})
        self._changed("pods", old, pod)
        self.bindings.append(body)
        return 201, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}

    def create_pod(self, namespace: str, body: dict[str, Any]) -> Response:
        meta = body.setdefault("metadata", {})
        if meta.setdefault("namespace", namespace) != namespace:
            return status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )
        if (namespace, meta.get("name")) in self.pods:
            return status(409, "AlreadyExists", f'pods "{meta["name"]}" already exists')
        if not (body.get("spec") or {}).get("containers"):
            return status(
                422,
                "Invalid",
                f'Pod "{meta.get("name")}" is invalid: spec.containers: Required value',
            )
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ"))
        body["spec"].setdefault("schedulerName", "default-scheduler")
        body.setdefault("status", {}).setdefault("phase", "Pending")
        self.pods[(namespace, meta["name"])] = body
        self._changed("pods", None, body)
        return 201, body

    def create_event(self, namespace: str, body: dict[str, Any]) -> Response:
        meta = body["metadata"]
        if meta.get("namespace", namespace) != namespace or (
            body["involvedObject"].get("namespace", namespace) != namespace
        ):
            return status(
                422,
                "Invalid",
                "involvedObject.namespace: Invalid value: does not match event.namespace",
            )
        if not meta.get("name"):
            if not meta.get("generateName"):
                return status(400, "BadRequest", "name or generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta["resourceVersion"] = self._rv()
        self.events.append(body)
        return 201, body

    def put(self, path: str, body: Any) -> Response:
        if m := re.fullmatch(LEASE, path):
            current = self.leases.get((m[1], m[2]))
            if current is None:
                return status(404, "NotFound", f'leases.coordination.k8s.io "{m[2]}" not found')
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return status(409, "Conflict", _modified("leases.coordination.k8s.io", m[2]))
            body["metadata"]["resourceVersion"] = self._rv()
            self.leases[(m[1], m[2])] = body
            return 200, body
        return status(404, "NotFound", "the server could not find the requested resource")

    def patch(self, path: str, body: Any, content_type: str) -> Response:
        if m := re.fullmatch(POD + "/status", path):
            return self.patch_pod_status(m[1], m[2], body, content_type)
        m = re.fullmatch(r"/api/v1/nodes/([^/]+)", path)
        if m is None:
            return status(404, "NotFound", "the server could not find the requested resource")
        node = self.nodes.get(m[1])
        if node is None:
            return status(404, "NotFound", f'nodes "{m[1]}" not found')
        media = content_type.split(";")[0].strip()
        if media not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return status(415, "UnsupportedMediaType", f"the double does not model {media}")
        if not isinstance(body, dict):
            return status(400, "BadRequest", "a merge patch is a JSON object")
        if media.startswith("application/strategic") and _has_list_or_directive(body):
            return status(400, "BadRequest", "the double does not model strategic list merges")
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != node["metadata"].get("resourceVersion"):
            return status(409, "Conflict", _modified("nodes", m[1]))
        old = copy.deepcopy(node)
        patched = merge_patch(node, body)
        patched.setdefault("metadata", {})["name"] = m[1]
        self.nodes[m[1]] = patched
        self._changed("nodes", old, patched)
        return 200, patched

    def patch_pod_status(self, namespace: str, name: str, body: Any, content_type: str) -> Response:
        """The pods/status subresource, merge patch only: only `status` changes (the API
        server keeps the rest of the object as it was); a stale resourceVersion is 409."""
        pod = self.pods.get((namespace, name))
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found')
        media = content_type.split(";")[0].strip()
        if media != "application/merge-patch+json":
            return status(415, "UnsupportedMediaType", f"the double does not model {media}")
        if not isinstance(body, dict):
            return status(400, "BadRequest", "a merge patch is a JSON object")
        version = (body.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != pod["metadata"].get("resourceVersion"):
            return status(409, "Conflict", _modified("pods", name))
        old = copy.deepcopy(pod)
        pod["status"] = merge_patch(pod.get("status") or {}, body.get("status") or {})
        self._changed("pods", old, pod)
        return 200, pod


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch, RFC 7386: objects merge key by key, `null` deletes a key,
    anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _has_list_or_directive(patch: Any) -> bool:
    if isinstance(patch, list):
        return True
    if isinstance(patch, dict):
        return any(k.startswith("$") or _has_list_or_directive(v) for k, v in patch.items())
    return False


def _modified(resource: str, name: str) -> str:
    return (
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


_REQUIREMENT = re.compile(
    r"\s*(?:!\s*(?P<absent>[\w./-]+)"
    r"|(?P<key>[\w./-]+)\s*(?:(?P<op>==|!=|=)\s*(?P<value>[\w.-]*)"
    r"|\s(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?)\s*(?:,|$)"
)


@dataclass
class Selector:
    """What a list or watch selects: a namespace, label and field requirements."""

    namespace: str | None
    labels: list[tuple[str, str, frozenset[str]]]
    """(key, "in" / "notin" / "exists" / "!exists", values)"""
    fields: list[tuple[str, bool, str]]
    """(field, equal?, value)"""

    @classmethod
    def parse(cls, resource: str, namespace: str | None, query: dict[str, str]) -> Selector:
        """ValueError with the API server's message for a selector it would refuse."""
        return cls(
            namespace,
            _label_requirements(query.get("labelSelector", "")),
            _field_requirements(resource, query.get("fieldSelector", "")),
        )

    def __call__(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        labels = meta.get("labels") or {}
        for key, operator, values in self.labels:
            matched = {
                "exists": key in labels,
                "!exists": key not in labels,
                "in": labels.get(key) in values,
                "notin": labels.get(key) not in values,  # absent matches, as in Kubernetes
            }[operator]
            if not matched:
                return False
        return all((_field(obj, name) == value) == equal for name, equal, value in self.fields)


def _label_requirements(text: str) -> list[tuple[str, str, frozenset[str]]]:
    """A label selector as apimachinery's labels.Parse reads it (without `<` and `>`)."""
    found: list[tuple[str, str, frozenset[str]]] = []
    position = 0
    while position < len(text):
        m = _REQUIREMENT.match(text, position)
        if m is None or m.end() == position:
            raise ValueError(f"unable to parse requirement: {text[position:]!r}")
        position = m.end()
        if m["absent"]:
            found.append((m["absent"], "!exists", frozenset()))
        elif m["op"]:
            found.append((m["key"], "notin" if m["op"] == "!=" else "in", frozenset([m["value"]])))
        elif m["set"]:
            found.append((m["key"], m["set"], frozenset(v.strip() for v in m["values"].split(","))))
        else:
            found.append((m["key"], "exists", frozenset()))
    return found


def _field_requirements(resource: str, text: str) -> list[tuple[str, bool, str]]:
    found = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        m = re.fullmatch(r"([\w.]+)\s*(==|!=|=)\s*(.*)", term)
        if m is None:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
        if m[1] not in FIELDS[resource]:
            raise ValueError(f"field label not supported: {m[1]}")
        found.append((m[1], m[2] != "!=", m[3]))
    return found


def _field(obj: dict[str, Any], path: str) -> str:
    """A field as the API server's field sets render it: "" when unset, bools lowercase."""
    value: Any = obj
    for name in path.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


_UNAVAILABLE = status(503, "ServiceUnavailable", "the API server is down (FakeApiServer.down)")


@dataclass
class Seen:
    """What one watch has seen of the test's drops and bookmark requests."""

    drops: int
    bookmarks: int | None
    """None: the watch did not allow bookmarks."""

    def news(self, server: FakeApiServer) -> bool:
        return self.drops != server.drops or (
            self.bookmarks is not None and self.bookmarks != server.bookmarks
        )

    def bookmark(self, server: FakeApiServer) -> int:
        """The version to bookmark at if one was requested since, else 0."""
        if self.bookmarks is None or self.bookmarks == server.bookmarks:
            return 0
        self.bookmarks = server.bookmarks
        return server.version


def _handler(server: FakeApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and chunked watch streams

        def log_message(self, *args: Any) -> None:
            return

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"null")

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _query(self) -> tuple[str, dict[str, str]]:
            url = urlparse(self.path)
            return url.path, {k: v[-1] for k, v in parse_qs(url.query, True).items()}

        def do_DELETE(self) -> None:
            path, _ = self._query()
            options = self._body()
            with server.lock:
                self._send(*(_UNAVAILABLE if server.down else server.delete(path, options)))

        def do_GET(self) -> None:
            path, query = self._query()
            refused = [name for name in NOT_MODELLED if name in query]
            if server.down:
                self._send(*_UNAVAILABLE)
            elif refused:
                self._send(*status(400, "BadRequest", f"the double does not model {refused}"))
            elif query.get("watch", "false").lower() in ("true", "1", "t"):
                self._watch(path, query)
            else:
                with server.lock:
                    self._send(*server.get(path, query))

        def _write(self) -> None:
            path, _ = self._query()
            body = self._body()
            with server.lock:
                if server.down:
                    self._send(*_UNAVAILABLE)
                elif self.command == "PATCH":
                    self._send(*server.patch(path, body, self.headers.get("Content-Type", "")))
                else:
                    self._send(*(server.post if self.command == "POST" else server.put)(path, body))

        do_POST = do_PUT = do_PATCH = _write

        def _watch(self, path: str, query: dict[str, str]) -> None:
            m = re.fullmatch(r"/api/v1/(nodes|pods)|/api/v1/namespaces/([^/]+)/(pods)", path)
            if m is None:
                self._send(*status(405, "MethodNotAllowed", f"{path} cannot be watched"))
                return
            resource = m[1] or m[3]
            with server.lock:
                try:
                    selects = Selector.parse(resource, m[2], query)
                except ValueError as exc:
                    self._send(*status(400, "BadRequest", str(exc)))
                    return
                version = query.get("resourceVersion") or "0"
                if not version.isdigit():
                    self._send(*status(400, "BadRequest", f"invalid resourceVersion {version!r}"))
                    return
                since = int(version)
                expired = 0 < since < server.compacted
                initial = [] if since else server.current(resource, selects)
                since = since or server.version
                marks = query.get("allowWatchBookmarks", "false").lower() in ("true", "1")
                seen = Seen(server.drops, server.bookmarks if marks else None)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if expired:
                message = f"too old resource version: {since} ({server.compacted})"
                self._chunk({"type": "ERROR", "object": status(410, "Expired", message)[1]})
            else:
                for obj in initial:
                    self._chunk({"type": "ADDED", "object": obj})
                kind = "Pod" if resource == "pods" else "Node"
                seconds = float(query.get("timeoutSeconds") or 1800)
                if not self._follow(resource, kind, selects, since, seconds, seen):
                    self.close_connection = True  # dropped: no closing chunk
                    return
            self.wfile.write(b"0\r\n\r\n")

        def _follow(
            self,
            resource: str,
            kind: str,
            selects: Selector,
            since: int,
            seconds: float,
            seen: Seen,
        ) -> bool:
            """Stream changes until the timeout (True) or a drop (False)."""
            deadline = time.monotonic() + seconds
            while True:
                with server.lock:
                    events = server.watch_events(resource, selects, since)
                    left = deadline - time.monotonic()
                    if not events and not server.closed and left > 0 and not seen.news(server):
                        server.lock.wait(left)
                        events = server.watch_events(resource, selects, since)
                    done = server.closed or time.monotonic() >= deadline
                    dropped, mark = seen.drops != server.drops, seen.bookmark(server)
                if dropped:
                    return False
                for version, event in events:
                    self._chunk(event)
                    since = version
                if mark:
                    meta = {"resourceVersion": str(max(since, mark))}
                    self._chunk(
                        {
                            "type": "BOOKMARK",
                            "object": {"kind": kind, "apiVersion": "v1", "metadata": meta},
                        }
                    )
                if done:
                    return True

        def _chunk(self, event: dict[str, Any]) -> None:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

    return Handler
