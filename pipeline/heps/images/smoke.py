"""Smoke-test a built image for real: structure tests, command checks, an HTTP probe.

Every check runs the image in a container of its own, labelled with the run and the
recipe, which is killed at its timeout and removed afterwards, so a hanging image cannot
hang the pipeline. A run told to stop (the `stop` event) ends the check under way.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import requests
import yaml

from heps.core import log, process, tools
from heps.core.errors import ConfigError
from heps.core.stages import Stage
from heps.core.validation import load_yaml
from heps.images.recipes import HttpProbe, Recipe, SmokeCommand, expectation
from heps.images.report import SmokeKind, SmokeResult
from heps.systems.engine import LOG_BYTES, LOG_LINES, Container, ContainerEngine, Interrupted, Logs

OUTPUT_TAIL = 2000


def _tail(text: str) -> str:
    return text if len(text) <= OUTPUT_TAIL else "..." + text[-OUTPUT_TAIL:]


def _output(logs: Logs) -> str:
    """What a result shows of a container's output, saying when the start was dropped."""
    shown = _tail(logs.text.strip())
    if logs.truncated:
        return f"(truncated to its last {LOG_LINES} lines or {LOG_BYTES >> 10} KiB) {shown}"
    return shown


@dataclass(frozen=True)
class Checker:
    """Where and how the checks of one image run."""

    engine: ContainerEngine
    labels: dict[str, str]
    """Put on every container: the run and the recipe."""
    stop: threading.Event
    default_timeout: float

    def start(self, image: str, command: list[str] | None, publish: int | None = None) -> Container:
        return self.engine.run(image, command, self.labels, publish)


def run_all(checker: Checker, recipe: Recipe, image: str) -> list[SmokeResult]:
    """All of the recipe's checks against `image`; one result each, failures included.

    Interrupted when the run is told to stop: its results would say nothing."""
    checks: list[Callable[[], SmokeResult]] = []
    if recipe.smoke.structure is not None:
        checks.append(partial(structure, checker, recipe, image))
    checks += [partial(command, checker, image, check) for check in recipe.smoke.commands]
    if recipe.smoke.http is not None:
        checks.append(partial(http, checker, image, recipe.smoke.http))
    results: list[SmokeResult] = []
    for run_check in checks:
        if checker.stop.is_set():
            raise Interrupted(Stage.SMOKE, "interrupted before a check")
        result = run_check()
        if checker.stop.is_set():
            raise Interrupted(
                Stage.SMOKE, f"interrupted during the {result.kind} check {result.name}"
            )
        verdict = "passed" if result.passed else f"FAILED: {result.detail}"
        log.phase(Stage.SMOKE, recipe.name, f"{result.kind} {result.name}: {verdict}")
        results.append(result)
    return results


def structure(checker: Checker, recipe: Recipe, image: str) -> SmokeResult:
    """container-structure-test with the recipe's config as heps checked it; its
    results read back as JSON."""
    assert recipe.smoke.structure is not None
    timeout = checker.default_timeout
    started = time.monotonic()
    name = recipe.show(recipe.smoke.structure)
    binary = tools.find("container-structure-test")
    if binary is None:
        return SmokeResult(
            name, SmokeKind.STRUCTURE, False, 0.0, "container-structure-test not installed"
        )
    config, refused = _host_options(recipe.smoke.structure, name)
    if refused:
        return SmokeResult(name, SmokeKind.STRUCTURE, False, 0.0, refused)
    # Only what reaches the engine: the host's variables (credentials) stay out of reach.
    env = {k: v for k, v in os.environ.items() if k in _TOOL_ENV}
    try:
        with tempfile.TemporaryDirectory(prefix="heps-structure-") as folder:
            # The tool reads what heps checked, written again as plain YAML: never the
            # recipe's file, which Go may read otherwise (JSON keys match in any case).
            checked = Path(folder) / "structure.yaml"
            checked.write_text(yaml.safe_dump(config), encoding="utf-8")
            command = [binary, "test", "--image", image, "--config", str(checked)]
            done = process.run(
                [*command, "--output", "json", "--no-color"],
                timeout=timeout,
                stop=checker.stop,
                env=env,
            )
    except process.ProcessError as exc:
        # Killed: the containers it started (unlabelled: it has no option for labels) are
        # the ones from exactly this image, which nothing else runs before it is pushed.
        for leftover in checker.engine.started_from(image):
            checker.engine.remove_container(leftover)
        return SmokeResult(name, SmokeKind.STRUCTURE, False, time.monotonic() - started, str(exc))
    seconds = time.monotonic() - started
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return SmokeResult(
            name, SmokeKind.STRUCTURE, False, seconds, _tail(done.stderr or done.stdout)
        )
    failed = [
        f"{r['Name']}: {'; '.join(r.get('Errors') or ['failed'])}"
        for r in report.get("Results", [])
        if not r.get("Pass")
    ]
    detail = f"{report.get('Pass', 0)}/{report.get('Total', 0)} passed"
    if failed:
        detail += ": " + " | ".join(failed)
    ok = done.returncode == 0 and not failed
    return SmokeResult(name, SmokeKind.STRUCTURE, ok, seconds, _tail(detail))


_HOST_OPTIONS = ("privileged", "capabilities", "bindMounts", "envVars", "envFile")
"""containerRunOptions that would give a smoke container the host: its privileges,
folders or environment (`envVars` copies the named host variables in)."""
_TOOL_ENV = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "TMPDIR")


def _host_options(path: Path, name: str) -> tuple[Any, str]:
    """The structure config as read, and why it may not run ("" when it may)."""
    try:
        config = load_yaml(path, name)
    except ConfigError as exc:
        return None, "; ".join(exc.problems)
    if not isinstance(config, dict):
        return None, f"{name}: not a container-structure-test config (a mapping); fix the file"
    options = config.get("containerRunOptions")
    asked = sorted(k for k in _HOST_OPTIONS if isinstance(options, dict) and options.get(k))
    if not asked:
        return config, ""
    return None, (
        f"{name}: containerRunOptions: {', '.join(asked)}: not allowed; smoke containers run "
        "without privileges, host folders or the host's environment (remove them; set "
        "variables with globalEnvVars)"
    )


def _remove(container: Container) -> None:
    if not container.remove():
        log.phase(Stage.SMOKE, None, f"container {container.short_id} already gone")


def command(checker: Checker, image: str, check: SmokeCommand) -> SmokeResult:
    """Run one command in the image; pass on the expected exit code and output."""
    timeout = check.timeout or checker.default_timeout
    started = time.monotonic()
    container = checker.start(image, list(check.run))
    try:
        code = container.wait(timeout)
        if code is None:
            container.kill()
            return SmokeResult(
                check.name,
                SmokeKind.COMMAND,
                False,
                timeout,
                f"killed after {timeout:.0f}s timeout",
            )
        logs = container.logs()
    finally:
        _remove(container)
    seconds = time.monotonic() - started
    problems = []
    if code != check.expect_exit:
        problems.append(f"exit code {code}, expected {check.expect_exit}")
    if check.expect_output and not expectation(check.expect_output).search(logs.text):
        problems.append(f"output does not match /{check.expect_output}/")
    if problems:
        detail = "; ".join(problems) + (f"; output: {_output(logs)}" if logs.text else "")
        return SmokeResult(check.name, SmokeKind.COMMAND, False, seconds, detail)
    cut = " (truncated)" if logs.truncated else ""
    return SmokeResult(check.name, SmokeKind.COMMAND, True, seconds, logs.text.strip()[-200:] + cut)


def _answered(
    container: Container, probe: HttpProbe, seconds: float, answer: requests.Response
) -> SmokeResult:
    """A 2xx: passed, unless the start cost more CPU than the recipe's budget."""
    label, detail = f"{probe.port}{probe.path}", f"{answer.status_code} from {probe.path}"
    if probe.cpu_seconds is None:
        return SmokeResult(label, SmokeKind.HTTP, True, seconds, detail)
    used = container.cpu_seconds()
    detail += f" after {used:.2f} CPU-s (budget {probe.cpu_seconds:g})"
    if used > probe.cpu_seconds:
        detail += "; the start got costlier: see docs/benchmarks.md, 'A cheaper floor'"
    return SmokeResult(label, SmokeKind.HTTP, used <= probe.cpu_seconds, seconds, detail)


def _ask(session: requests.Session, port: str, path: str) -> requests.Response:
    """One GET of the container's own loopback port: no redirect followed (a 3xx is
    the answer), the body left unread."""
    url = f"http://127.0.0.1:{port}{path}"  # the schema has path start with '/'
    with session.get(url, timeout=5, allow_redirects=False, stream=True) as answer:
        return answer


def http(checker: Checker, image: str, probe: HttpProbe) -> SmokeResult:
    """Start the image's default command and wait for a 2xx on the probe's port and path.

    Only the container's published loopback port is asked, with nothing of the host's:
    no .netrc, proxy or CA variables (trust_env off). A redirect fails the probe at once,
    naming where it pointed: following it could reach any host, with a host's password."""
    started = time.monotonic()
    label = f"{probe.port}{probe.path}"
    container = checker.start(image, None, publish=probe.port)
    last = "no answer"
    session = requests.Session()
    session.trust_env = False
    try:
        while time.monotonic() - started < probe.timeout and not checker.stop.is_set():
            if not container.running():
                return SmokeResult(
                    label,
                    SmokeKind.HTTP,
                    False,
                    time.monotonic() - started,
                    f"container exited before answering; output: {_output(container.logs())}",
                )
            bound = container.host_port(probe.port)
            if bound:
                try:
                    answer = _ask(session, bound, probe.path)
                    if 200 <= answer.status_code < 300:
                        return _answered(container, probe, time.monotonic() - started, answer)
                    if answer.is_redirect:
                        where = answer.headers.get("Location", "")[:200]
                        return SmokeResult(
                            label,
                            SmokeKind.HTTP,
                            False,
                            time.monotonic() - started,
                            f"HTTP {answer.status_code} to {where!r}: redirects are not "
                            "followed; probe the path that answers 2xx itself",
                        )
                    last = f"HTTP {answer.status_code}"
                except requests.RequestException as exc:
                    last = type(exc).__name__
            time.sleep(0.5)
        return SmokeResult(
            label,
            SmokeKind.HTTP,
            False,
            probe.timeout,
            f"no 2xx within {probe.timeout:.0f}s (last: {last}); "
            f"output: {_output(container.logs())}",
        )
    finally:
        session.close()
        _remove(container)
