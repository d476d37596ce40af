"""TEST DOUBLE of a Jenkins server: no Jenkins can run on this build host.

It speaks, over real HTTP, the endpoints python-jenkins calls for `heps jenkins` and the
post-receive hook: the crumb issuer (every POST must carry the crumb), Basic auth with
an API token (401 otherwise), the job tree (`api/json?tree=jobs[...]`), job names,
config.xml read and write, createItem (400 when the job exists, 404 without its
folder), doDelete (a folder takes its jobs along). Like Jenkins, it stores configs
with plugin versions added and its own whitespace.

Builds go the way Jenkins takes them: build and buildWithParameters answer 201 with a
queue item (queue ids are global and unrelated to build numbers); `/build` of a job
with parameters is refused (400 "Nothing is submitted"), `buildWithParameters` of a job
without them too (500), a folder or a disabled job cannot be built; a build gets every
parameter its job defines (defaults for those not given, undefined ones dropped). A
queue item waits for one poll, then leaves the queue as build number N of its job
(numbered per job from 1); that build reports `building: true` for one poll, then
`result` (the `result` attribute at that moment).

What it does not model: executors, quiet periods and queue item expiry, cancelling,
console logs, the values a choice parameter accepts, permissions other than
"authenticated"; queue items are kept (Jenkins forgets them five minutes after they
leave). Of the tests that use it, only test_jenkins.py's
test_sync_creates_then_changes_nothing_then_updates_only_what_differs runs against a
real Jenkins instead, when JENKINS_URL is set.
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

import defusedxml.ElementTree

CRUMB = "c0ffee-crumb"

FOLDER_CLASS = "com.cloudbees.hudson.plugins.folder.Folder"
JOB_CLASS = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
PARAMETERS_CLASS = "hudson.model.ParametersDefinitionProperty"


@dataclass
class Build:
    job: str
    number: int
    """Numbered per job from 1, as Jenkins does."""
    parameters: dict[str, str]
    reads: int = 0
    """Reads of its api/json: it is building until the second."""


@dataclass
class QueueItem:
    id: int
    job: str
    parameters: dict[str, str]
    reads: int = 0
    build: Build | None = None
    """Set once it has left the queue (on its second read)."""


@dataclass
class FakeJenkins:
    user: str
    token: str
    result: str = "SUCCESS"
    configs: dict[str, str] = field(default_factory=dict)
    """Full name -> stored config.xml (folders too)."""
    queue: list[QueueItem] = field(default_factory=list)
    builds: list[Build] = field(default_factory=list)
    first_queue_id: int = 301
    """Jenkins's queue ids count across all jobs since its start; never 1 here."""
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
                entry["_class"] = FOLDER_CLASS
                entry["jobs"] = self._tree(name)
            else:
                entry["_class"] = JOB_CLASS
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
            return self._queue_item(int(match.group(1)))
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
            return 200, self.job_info(name), {}
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
            return self._enqueue(name, rest == "/buildWithParameters", query)
        match = re.fullmatch(r"/(\d+)/api/json", rest)
        if match:
            return self._build_info(name, int(match.group(1)))
        return 404, "Not Found", {}

    def job_info(self, name: str) -> dict[str, Any]:
        """A job's api/json as Jenkins answers it: class, buildable, parameter definitions."""
        if self.is_folder(name):
            return {"_class": FOLDER_CLASS, "name": name.rsplit("/", 1)[-1], "jobs": []}
        definitions = [
            {"name": key, "defaultParameterValue": {"value": value}}
            for key, value in parameter_defaults(self.configs[name]).items()
        ]
        return {
            "_class": JOB_CLASS,
            "name": name.rsplit("/", 1)[-1],
            "buildable": "<disabled>true</disabled>" not in self.configs[name],
            "property": [{"_class": PARAMETERS_CLASS, "parameterDefinitions": definitions}]
            if definitions
            else [],
        }

    def job_url(self, name: str) -> str:
        return self.url + "".join(f"job/{part}/" for part in name.split("/"))

    def _enqueue(
        self, name: str, with_parameters: bool, query: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        config = self.configs[name]
        if self.is_folder(name):
            return 404, "Not Found", {}  # a folder has no build action
        if "<disabled>true</disabled>" in config:
            return 409, f"{name} is not buildable", {}
        defined = parameter_defaults(config)
        if defined and not with_parameters:
            return 400, "Nothing is submitted", {}
        if with_parameters and not defined:
            return 500, "java.lang.IllegalStateException: This build is not parameterized!", {}
        values = {key: query.get(key, default) for key, default in defined.items()}
        item = QueueItem(self.first_queue_id + len(self.queue), name, values)
        self.queue.append(item)
        return 201, "", {"Location": f"{self.url}queue/item/{item.id}/"}

    def _queue_item(self, number: int) -> tuple[int, Any, dict[str, str]]:
        item = next((q for q in self.queue if q.id == number), None)
        if item is None:
            return 404, "Not Found", {}
        item.reads += 1
        task = {"name": item.job.rpartition("/")[2], "url": self.job_url(item.job)}
        answer: dict[str, Any] = {"id": number, "task": task}
        if item.build is None and item.reads < 2:
            answer["_class"] = "hudson.model.Queue$BuildableItem"
            answer["why"] = "Waiting for next available executor"
            return 200, answer, {}
        if item.build is None:
            started = [b.number for b in self.builds if b.job == item.job]
            item.build = Build(item.job, max(started, default=0) + 1, item.parameters)
            self.builds.append(item.build)
        answer["_class"] = "hudson.model.Queue$LeftItem"
        answer["cancelled"] = False
        url = f"{self.job_url(item.job)}{item.build.number}/"
        answer["executable"] = {"number": item.build.number, "url": url}
        return 200, answer, {}

    def _build_info(self, name: str, number: int) -> tuple[int, Any, dict[str, str]]:
        build = next((b for b in self.builds if b.job == name and b.number == number), None)
        if build is None:
            return 404, "Not Found", {}
        build.reads += 1
        done = build.reads >= 2
        parameters = [{"name": k, "value": v} for k, v in build.parameters.items()]
        info = {
            "number": number,
            "url": f"{self.job_url(name)}{number}/",
            "building": not done,
            "result": self.result if done else None,
            "actions": [{"_class": "hudson.model.ParametersAction", "parameters": parameters}],
        }
        return 200, info, {}


def parameter_defaults(config: str) -> dict[str, str]:
    """The parameters a job's config.xml defines, with the value Jenkins uses when none is
    given: the default, or a choice parameter's first choice."""
    root = defusedxml.ElementTree.fromstring(config.split("?>", 1)[-1])
    defaults = {}
    for definition in root.iterfind(".//parameterDefinitions/*"):
        choices = definition.findall("choices//string")
        default = choices[0].text if choices else definition.findtext("defaultValue")
        defaults[definition.findtext("name") or ""] = default or ""
    return defaults
