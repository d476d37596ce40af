"""A Jenkins server through python-jenkins: sync the rendered jobs (create and update
what differs, delete only jobs marked as this project's), and trigger a build and
follow it to its result. The URL comes from JENKINS_URL or heps.yaml `jenkins.url`;
the user and API token only from JENKINS_USER / JENKINS_API_TOKEN (masked in output).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import requests

import jenkins
from heps.ci import jenkins_jobs
from heps.core import log
from heps.core.errors import ConfigError, StageError, TemporaryError
from heps.core.stages import Stage

SUCCESS = "SUCCESS"
Server = Any
"""A python-jenkins `jenkins.Jenkins` (the library has no type hints)."""


@dataclass
class SyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    diff: str = ""


def connect(url: str | None, env: dict[str, str] | None = None) -> Server:
    env = dict(os.environ) if env is None else env
    url = env.get("JENKINS_URL") or url
    if not url:
        raise ConfigError(
            "Jenkins: no server; set JENKINS_URL or jenkins.url in heps.yaml "
            "(`heps jenkins render` needs none)"
        )
    user, token = env.get("JENKINS_USER"), env.get("JENKINS_API_TOKEN")
    if bool(user) != bool(token):
        raise ConfigError("environment: set both JENKINS_USER and JENKINS_API_TOKEN, or neither")
    return jenkins.Jenkins(url.rstrip("/"), username=user, password=token or None, timeout=30)


def _call(what: str, action: Callable[[], Any]) -> Any:
    """python-jenkins errors as the pipeline's two kinds, naming what was being done."""
    try:
        return action()
    except jenkins.NotFoundException:
        return None
    except jenkins.TimeoutException:
        raise TemporaryError(f"Jenkins: {what}: timed out") from None
    except requests.HTTPError as exc:  # codes python-jenkins does not translate
        response = exc.response
        code = response.status_code if response is not None else 0
        if code >= 500:
            raise TemporaryError(f"Jenkins: {what}: HTTP {code}") from None
        body = log.redact_urls(response.text[:200]) if response is not None else ""
        raise StageError(Stage.JENKINS, f"{what}: HTTP {code} {body}".strip()) from None
    except jenkins.JenkinsException as exc:
        text = log.redact_urls(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        if any(code in text for code in ("[401]", "[403]", "Unauthorized", "Forbidden")):
            raise ConfigError(
                f"Jenkins refused {what} ({text}); check JENKINS_USER / JENKINS_API_TOKEN "
                "and the user's permissions"
            ) from None
        if "[500]" in text:
            raise TemporaryError(f"Jenkins: {what}: {text}") from None
        raise StageError(Stage.JENKINS, f"{what}: {text}") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise ConfigError(
            f"Jenkins: cannot reach the server for {what} ({type(exc).__name__})"
        ) from None


def sync(server: Server, rendered: dict[str, str], dry_run: bool) -> SyncResult:
    result = SyncResult()
    live = {j["fullname"] for j in _call("listing jobs", server.get_all_jobs)}
    diffs = []
    for name, xml in rendered.items():
        if name not in live:
            diffs.append(jenkins_jobs.diff(name, None, xml))
            if not dry_run:
                _call(f"creating {name}", partial(server.create_job, name, xml))
            result.created.append(name)
            continue
        current = _call(f"reading {name}", partial(server.get_job_config, name))
        if current is not None:
            xml = jenkins_jobs.keeping_credentials(xml, current)
        if current is not None and jenkins_jobs.normalized(current) == jenkins_jobs.normalized(xml):
            result.unchanged.append(name)
            continue
        diffs.append(jenkins_jobs.diff(name, current, xml))
        if not dry_run:
            _call(f"updating {name}", partial(server.reconfig_job, name, xml))
        result.updated.append(name)
    # deepest first, so a folder goes after what is inside it
    for name in sorted(live - set(rendered), key=lambda n: -n.count("/")):
        current = _call(f"reading {name}", partial(server.get_job_config, name))
        if current is None or not jenkins_jobs.is_ours(current):
            continue  # not made by this project: never deleted
        diffs.append(jenkins_jobs.diff(name, current, None))
        if not dry_run:
            _call(f"deleting {name}", partial(server.delete_job, name))
        result.deleted.append(name)
    result.diff = "".join(diffs)
    return result


def trigger(
    server: Server,
    name: str,
    parameters: dict[str, str],
    wait: bool,
    timeout: float = 3 * 3600,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, str | None]:
    """Start a build; (where it is, its result when waited for)."""
    parameters = _parameters_for(server, name, parameters)
    queued = _call(
        f"starting {name}", lambda: server.build_job(name, parameters=parameters or None)
    )
    if not isinstance(queued, int):
        raise StageError(Stage.JENKINS, f"{name}: Jenkins queued no build (answer: {queued!r})")
    where = f"{server.server}queue/item/{queued}/"
    if not wait:
        return where, None
    deadline = time.monotonic() + timeout
    number = None
    while number is None:
        item = _call(f"reading queue item {queued}", lambda: server.get_queue_item(queued))
        if item.get("cancelled"):
            raise StageError(Stage.JENKINS, f"{name}: the queued build was cancelled")
        number = (item.get("executable") or {}).get("number")
        if number is None:
            _tick(deadline, name, sleep)
    log.phase(Stage.JENKINS, None, f"{name} #{number} started")
    while True:
        info = _call(f"reading {name} #{number}", lambda: server.get_build_info(name, number))
        if not info.get("building") and info.get("result"):
            return str(info.get("url") or where), str(info["result"])
        _tick(deadline, name, sleep)


def _parameters_for(server: Server, name: str, given: dict[str, str]) -> dict[str, str]:
    """What to send: the job's parameter defaults under the given values.

    A job with parameters must be started through buildWithParameters (plain /build
    answers 400), which python-jenkins picks only when parameters are sent; a job
    without them refuses any (500), and a folder or a disabled job cannot be built."""
    if _call(f"reading {name}", lambda: server.get_job_name(name)) is None:
        raise ConfigError(f"jenkins trigger {name}: no such job; `heps jenkins sync` creates it")
    info = _call(f"reading {name}", lambda: server.get_job_info(name)) or {}
    if not info.get("buildable"):
        what = "a folder" if "Folder" in str(info.get("_class")) else "disabled"
        raise ConfigError(f"jenkins trigger {name}: {what}, not a job that can be built")
    defaults = {
        str(d.get("name")): str((d.get("defaultParameterValue") or {}).get("value", ""))
        for prop in info.get("property") or []
        for d in prop.get("parameterDefinitions") or []
    }
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise ConfigError(
            f"jenkins trigger {name}: --param {', '.join(unknown)}: not a parameter of "
            f"this job (its parameters: {known})"
        )
    return defaults | given


def _tick(deadline: float, name: str, sleep: Callable[[float], None]) -> None:
    if time.monotonic() > deadline:
        raise StageError(Stage.JENKINS, f"{name}: no result before the timeout")
    sleep(1.0)
