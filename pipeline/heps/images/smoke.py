"""Smoke-test a built image for real: structure tests, command checks, an HTTP probe.

Every check runs the image in a container of its own, which is killed at its timeout
and removed afterwards, so a hanging image cannot hang the pipeline.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

import docker
import docker.errors
import requests

from heps.core import log, tools
from heps.images.recipes import HttpProbe, Recipe, SmokeCommand, expectation

OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class SmokeResult:
    name: str
    kind: str
    """structure, command or http."""
    passed: bool
    seconds: float
    detail: str = ""


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL else "..." + text[-OUTPUT_TAIL:]


def run_all(
    client: docker.DockerClient, recipe: Recipe, image: str, default_timeout: float
) -> list[SmokeResult]:
    """All of the recipe's checks against `image`; one result each, failures included."""
    results: list[SmokeResult] = []
    if recipe.smoke.structure is not None:
        results.append(structure(recipe, image, default_timeout))
    for check in recipe.smoke.commands:
        results.append(command(client, recipe.name, image, check, default_timeout))
    if recipe.smoke.http is not None:
        results.append(http(client, recipe.name, image, recipe.smoke.http))
    for result in results:
        verdict = "passed" if result.passed else f"FAILED: {result.detail}"
        log.phase("smoke", recipe.name, f"{result.kind} {result.name}: {verdict}")
    return results


def structure(recipe: Recipe, image: str, timeout: float) -> SmokeResult:
    """container-structure-test with the recipe's config, read back as JSON."""
    assert recipe.smoke.structure is not None
    started = time.monotonic()
    name = recipe.show(recipe.smoke.structure)
    binary = tools.find("container-structure-test")
    if binary is None:
        return SmokeResult(name, "structure", False, 0.0, "container-structure-test not installed")
    command = [binary, "test", "--image", image, "--config", str(recipe.smoke.structure)]
    try:
        done = subprocess.run(
            [*command, "--output", "json", "--no-color"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return SmokeResult(name, "structure", False, timeout, f"timed out after {timeout:.0f}s")
    seconds = time.monotonic() - started
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return SmokeResult(name, "structure", False, seconds, _tail(done.stderr or done.stdout))
    failed = [
        f"{r['Name']}: {'; '.join(r.get('Errors') or ['failed'])}"
        for r in report.get("Results", [])
        if not r.get("Pass")
    ]
    detail = f"{report.get('Pass', 0)}/{report.get('Total', 0)} passed"
    if failed:
        detail += ": " + " | ".join(failed)
    ok = done.returncode == 0 and not failed
    return SmokeResult(name, "structure", ok, seconds, _tail(detail))


def _remove(container: docker.models.containers.Container) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        log.phase("smoke", None, f"container {container.short_id} already gone")


def command(
    client: docker.DockerClient, name: str, image: str, check: SmokeCommand, default: float
) -> SmokeResult:
    """Run one command in the image; pass on the expected exit code and output."""
    timeout = check.timeout or default
    started = time.monotonic()
    container = client.containers.run(image, list(check.run), detach=True, network_disabled=False)
    try:
        try:
            status = container.wait(timeout=timeout)
        except (requests.ConnectionError, requests.Timeout):  # docker-py's read timeout
            container.kill()
            return SmokeResult(
                check.name, "command", False, timeout, f"killed after {timeout:.0f}s timeout"
            )
        output = container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        _remove(container)
    seconds = time.monotonic() - started
    code = status.get("StatusCode")
    problems = []
    if code != check.expect_exit:
        problems.append(f"exit code {code}, expected {check.expect_exit}")
    if check.expect_output and not expectation(check.expect_output).search(output):
        problems.append(f"output does not match /{check.expect_output}/")
    if problems:
        detail = "; ".join(problems) + (f"; output: {_tail(output.strip())}" if output else "")
        return SmokeResult(check.name, "command", False, seconds, detail)
    return SmokeResult(check.name, "command", True, seconds, _tail(output.strip()[-200:]))


def http(client: docker.DockerClient, name: str, image: str, probe: HttpProbe) -> SmokeResult:
    """Start the image's default command and wait for a 2xx on the probe's port and path."""
    started = time.monotonic()
    label = f"{probe.port}{probe.path}"
    container = client.containers.run(
        image, detach=True, ports={f"{probe.port}/tcp": ("127.0.0.1", None)}
    )
    last = "no answer"
    try:
        while time.monotonic() - started < probe.timeout:
            container.reload()
            if container.status == "exited":
                logs = container.logs().decode(errors="replace")
                return SmokeResult(
                    label,
                    "http",
                    False,
                    time.monotonic() - started,
                    f"container exited before answering; output: {_tail(logs.strip())}",
                )
            bound = (container.ports.get(f"{probe.port}/tcp") or [{}])[0].get("HostPort")
            if bound:
                url = f"http://127.0.0.1:{bound}{probe.path}"
                try:
                    answer = requests.get(url, timeout=5)
                    if 200 <= answer.status_code < 300:
                        return SmokeResult(
                            label,
                            "http",
                            True,
                            time.monotonic() - started,
                            f"{answer.status_code} from {probe.path}",
                        )
                    last = f"HTTP {answer.status_code}"
                except requests.RequestException as exc:
                    last = type(exc).__name__
            time.sleep(0.5)
        logs = container.logs().decode(errors="replace")
        return SmokeResult(
            label,
            "http",
            False,
            probe.timeout,
            f"no 2xx within {probe.timeout:.0f}s (last: {last}); output: {_tail(logs.strip())}",
        )
    finally:
        _remove(container)
