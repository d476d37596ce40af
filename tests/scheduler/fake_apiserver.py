"""TEST DOUBLE of the Kubernetes API server: no API server can run on this build host.

It speaks, in memory, only the endpoints the scheduler and agent call through the real
`kubernetes` client: list nodes and pods, read a pod, create bindings (201, or 409 when
the pod is already bound, 404 when it is gone), create events, merge-patch a node, and
get/create/replace Leases with resourceVersion conflicts (409). The same scenarios run
against a real cluster in test_kube_live.py when KUBECONFIG is set.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeApiServer:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.bindings: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._version = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
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

            def do_GET(self) -> None:
                with server.lock:
                    self._send(*server.get(self.path.split("?")[0]))

            def do_POST(self) -> None:
                with server.lock:
                    self._send(*server.post(self.path.split("?")[0], self._body()))

            def do_PUT(self) -> None:
                with server.lock:
                    self._send(*server.put(self.path.split("?")[0], self._body()))

            def do_PATCH(self) -> None:
                with server.lock:
                    self._send(
                        *server.patch(
                            self.path.split("?")[0],
                            self._body(),
                            self.headers.get("Content-Type", ""),
                        )
                    )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self) -> None:
        self.httpd.shutdown()

    def _rv(self) -> str:
        self._version += 1
        return str(self._version)

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
        return code, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": reason,
            "message": message,
            "code": code,
        }

    def get(self, path: str) -> tuple[int, Any]:
        if path == "/api/v1/nodes":
            return 200, {"kind": "NodeList", "apiVersion": "v1", "items": list(self.nodes.values())}
        if path == "/api/v1/pods":
            return 200, {"kind": "PodList", "apiVersion": "v1", "items": list(self.pods.values())}
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)", path):
            pod = self.pods.get((m[1], m[2]))
            return (200, pod) if pod else self._status(404, "NotFound", f'pods "{m[2]}" not found')
        if m := re.fullmatch(
            r"/apis/coordination.k8s.io/v1/namespaces/([^/]+)/leases/([^/]+)", path
        ):
            lease = self.leases.get((m[1], m[2]))
            return (200, lease) if lease else self._status(404, "NotFound", "lease not found")
        return self._status(404, "NotFound", path)

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/bindings", path):
            pod = self.pods.get((m[1], body["metadata"]["name"]))
            if pod is None:
                return self._status(404, "NotFound", "pod not found")
            if pod["spec"].get("nodeName"):
                return self._status(
                    409,
                    "Conflict",
                    f"pod {pod['metadata']['name']} is already assigned to node "
                    f'"{pod["spec"]["nodeName"]}"',
                )
            pod["spec"]["nodeName"] = body["target"]["name"]
            self.bindings.append(body)
            return 201, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}
        if re.fullmatch(r"/api/v1/namespaces/([^/]+)/events", path):
            self.events.append(body)
            return 201, body
        if m := re.fullmatch(r"/apis/coordination.k8s.io/v1/namespaces/([^/]+)/leases", path):
            key = (m[1], body["metadata"]["name"])
            if key in self.leases:
                return self._status(409, "AlreadyExists", "lease exists")
            body["metadata"]["resourceVersion"] = self._rv()
            self.leases[key] = body
            return 201, body
        return self._status(404, "NotFound", path)

    def put(self, path: str, body: Any) -> tuple[int, Any]:
        if m := re.fullmatch(
            r"/apis/coordination.k8s.io/v1/namespaces/([^/]+)/leases/([^/]+)", path
        ):
            current = self.leases.get((m[1], m[2]))
            if current is None:
                return self._status(404, "NotFound", "lease not found")
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", "the object has been modified")
            body["metadata"]["resourceVersion"] = self._rv()
            self.leases[(m[1], m[2])] = body
            return 200, body
        return self._status(404, "NotFound", path)

    def patch(self, path: str, body: Any, content_type: str) -> tuple[int, Any]:
        if m := re.fullmatch(r"/api/v1/nodes/([^/]+)", path):
            node = self.nodes.get(m[1])
            if node is None:
                return self._status(404, "NotFound", "node not found")
            if "merge-patch" not in content_type:
                return self._status(415, "UnsupportedMediaType", content_type)
            annotations = node["metadata"].setdefault("annotations", {})
            annotations.update(body["metadata"]["annotations"])
            return 200, node
        return self._status(404, "NotFound", path)
