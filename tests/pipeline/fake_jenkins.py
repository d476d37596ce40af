"""TEST DOUBLE of a Jenkins server: no Jenkins can run on this build host.

It speaks, over real HTTP, the endpoints python-jenkins calls for `heps jenkins` and the
post-receive hook: the crumb issuer (every POST must carry the crumb), Basic auth with
an API token (401 otherwise), the job tree (`api/json?tree=jobs[...]`), job names,
config.xml read and write, createItem (400 when the job exists, 404 without its
folder), doDelete (a folder takes its jobs along), build and buildWithParameters (201
with the queue item), queue items and build results. Like Jenkins, it stores configs
with plugin versions added and its own whitespace. The same tests run against a real
Jenkins when JENKINS_URL is set.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

CRUMB = "c0ffee-crumb"


@dataclass
class Build:
    job: str
    parameters: dict[str, str]
    number: int
    polls: int = 0


@dataclass
class FakeJenkins:
    user: str
    token: str
    result: str = "SUCCESS"
    configs: dict[str, str] = field(default_factory=dict)
    """Full name -> stored config.xml (folders too)."""
    builds: list[Build] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                fake.handle(self, "GET")

            def do_POST(self) -> None:
                fake.handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()

    def is_folder(self, name: str) -> bool:
        return "com.cloudbees.hudson.plugins.folder.Folder" in self.configs.get(name, "")

    def _tree(self, prefix: str) -> list[dict[str, Any]]:
        children = sorted(n for n in self.configs if n.rpartition("/")[0] == prefix and n != prefix)
        jobs = []
        for name in children:
            short = name.rpartition("/")[2]
            entry: dict[str, Any] = {"name": short, "url": f"{self.url}job/{short}/"}
            if self.is_folder(name):
                entry["_class"] = "com.cloudbees.hudson.plugins.folder.Folder"
                entry["jobs"] = self._tree(name)
            else:
                entry["_class"] = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
                entry["color"] = "blue"
            jobs.append(entry)
        return jobs

    @staticmethod
    def stored(xml: str) -> str:
        """What Jenkins keeps: its own plugin versions and indentation."""
        xml = re.sub(r'plugin="([a-z-]+)"', r'plugin="\1@1.0.test"', xml)
        return re.sub(r">\s+<", ">\n<", xml.strip()) + "\n"

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        with self.lock:
            self.requests.append((method, handler.path))
            code, payload, headers = self.route(handler, method, url.path, query, body)
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        handler.send_response(code)
        handler.send_header("X-Jenkins", "2.479.1")
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def route(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        path: str,
        query: dict[str, str],
        body: str,
    ) -> tuple[int, Any, dict[str, str]]:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.token}".encode()).decode()
        if handler.headers.get("Authorization") != expected:
            return 401, "Unauthorized", {}
        if path == "/crumbIssuer/api/json":
            return 200, {"crumbRequestField": "Jenkins-Crumb", "crumb": CRUMB}, {}
        if method == "POST" and handler.headers.get("Jenkins-Crumb") != CRUMB:
            return 403, "No valid crumb was included in the request", {}
        if path == "/api/json":
            return 200, {"jobs": self._tree("")}, {}
        match = re.fullmatch(r"/queue/item/(\d+)/api/json", path)
        if match:
            build = self.builds[int(match.group(1)) - 1]
            build.polls += 1
            if build.polls < 2:  # still waiting for an executor
                return 200, {"id": build.number, "why": "Waiting for next available executor"}, {}
            return 200, {"executable": {"number": build.number, "url": self.url}}, {}
        prefix = re.match(r"(?:/job/[^/]+)*", path)
        folder_parts = re.findall(r"/job/([^/]+)", prefix.group(0) if prefix else "")
        name = "/".join(folder_parts)
        rest = path[prefix.end() :] if prefix else path
        if rest == "/createItem" and method == "POST":
            full = f"{name}/{query['name']}" if name else query["name"]
            if name and not self.is_folder(name):
                return 404, "no such folder", {}
            if full in self.configs:
                return 400, f"A job already exists with the name '{full}'", {}
            self.configs[full] = self.stored(body)
            return 200, "", {}
        if name not in self.configs:
            return 404, "Not Found", {}
        if rest == "/api/json":
            return 200, {"name": folder_parts[-1]}, {}
        if rest == "/config.xml":
            if method == "POST":
                self.configs[name] = self.stored(body)
                return 200, "", {}
            return 200, self.configs[name], {"Content-Type": "application/xml"}
        if rest == "/doDelete" and method == "POST":
            for other in [n for n in self.configs if n == name or n.startswith(name + "/")]:
                del self.configs[other]
            return 302, "", {"Location": self.url}
        if rest in ("/build", "/buildWithParameters") and method == "POST":
            number = len(self.builds) + 1
            self.builds.append(Build(name, query, number))
            return 201, "", {"Location": f"{self.url}queue/item/{number}/"}
        match = re.fullmatch(r"/(\d+)/api/json", rest)
        if match:
            return 200, {"building": False, "result": self.result, "url": f"{self.url}{name}"}, {}
        return 404, "Not Found", {}
