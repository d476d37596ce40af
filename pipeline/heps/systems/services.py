"""The embedded services a fresh build host needs: the Docker engine and a registry.

`heps services up` installs Debian's `docker.io`, `docker-registry` and `debootstrap`
when they are missing (as root), starts `dockerd` unless DOCKER_HOST names another
engine, and starts the CNCF distribution registry on 127.0.0.1:5000 with htpasswd
auth. Its generated credentials live in the state directory (mode 0600), outside the
repository, where `heps` finds them when the registry is the embedded one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import requests

from heps.core import log
from heps.core.errors import ConfigError
from heps.core.settings import EMBEDDED_REGISTRY, Settings, embedded_credentials_file
from heps.core.stages import Stage
from heps.systems import engine

PACKAGES = {
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "debootstrap": "debootstrap",
}


def ensure_binaries(binaries: list[str]) -> None:
    """Install the Debian packages providing `binaries` when they are missing (root only)."""
    missing = [
        b for b in binaries if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()
    ]
    if not missing:
        return
    packages = sorted({PACKAGES[b] for b in missing})
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ConfigError(
            f"{', '.join(missing)}: not installed; install the Debian packages "
            f"{' '.join(packages)} (apt-get install, as root)"
        )
    log.phase(Stage.SERVICES, None, f"installing {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise ConfigError(f"{' '.join(command)}: failed ({tail[0]}); run it by hand to see why")


def _spawn(command: list[str], logfile: Path) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session so it outlives this command."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def ensure_docker(state_dir: Path) -> None:
    try:
        engine.connect()
        return
    except ConfigError:
        if os.environ.get("DOCKER_HOST"):
            raise  # another engine was asked for; starting a local one would hide the problem
    ensure_binaries(["dockerd"])
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    log.phase(Stage.SERVICES, None, f"starting dockerd (log: {state_dir / 'dockerd.log'})")
    _spawn([dockerd], state_dir / "dockerd.log")
    deadline = time.monotonic() + 60
    while True:
        try:
            engine.connect()
            return
        except ConfigError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@dataclass(frozen=True)
class RegistryService:
    """A distribution registry with htpasswd auth, its data under `root`."""

    root: Path
    address: str
    """HOST:PORT it listens on."""
    username: str
    password: str

    def config(self) -> str:
        return (
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: '{self.address}'}}\n"
            f"auth: {{htpasswd: {{realm: heps, path: {self.root / 'htpasswd'}}}}}\n"
        )

    def start(self, config_text: str | None = None) -> subprocess.Popen[bytes]:
        """Write config (default: `config()`) and htpasswd, start, wait until it answers."""
        ensure_binaries(["docker-registry"])
        self.root.mkdir(parents=True, exist_ok=True)
        # The registry checks this hash on every request. The password is 144 random
        # bits, so bcrypt's work factor adds nothing but latency: keep it at its minimum.
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd = self.root / "htpasswd"
        htpasswd.write_text(f"{self.username}:{hashed}\n")
        htpasswd.chmod(0o600)
        (self.root / "config.yml").write_text(config_text or self.config())
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        process = _spawn(
            [binary, "serve", str(self.root / "config.yml")], self.root / "registry.log"
        )
        (self.root / "registry.pid").write_text(str(process.pid))
        deadline = time.monotonic() + 20
        while not self.answering():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "registry.log").read_text().strip().splitlines()[-3:]
                raise ConfigError(f"registry on {self.address}: did not start: {' / '.join(tail)}")
            time.sleep(0.1)
        return process

    def answering(self) -> bool:
        try:
            return requests.get(f"http://{self.address}/v2/", timeout=2).status_code in (200, 401)
        except requests.RequestException:
            return False


def embedded_registry(settings: Settings) -> RegistryService:
    """The embedded registry, its credentials generated once and kept in the state dir."""
    creds_file = embedded_credentials_file(settings.state_dir)
    if creds_file.exists():
        stored = json.loads(creds_file.read_text())
    else:
        stored = {"username": "heps", "password": secrets.token_urlsafe(24)}
        creds_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(creds_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle)
    return RegistryService(
        creds_file.parent, EMBEDDED_REGISTRY, stored["username"], stored["password"]
    )


def up(settings: Settings) -> list[str]:
    """Start what is missing; lines saying what runs where."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    ensure_docker(settings.state_dir)
    ensure_binaries(["debootstrap"])
    lines = [f"Docker engine: {os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}"]
    if settings.registry.host == EMBEDDED_REGISTRY:
        service = embedded_registry(settings)
        if not service.answering():
            log.phase(Stage.SERVICES, None, f"starting the embedded registry on {service.address}")
            service.start()
        lines.append(
            f"registry: {service.address} (user {service.username}, password in "
            f"{embedded_credentials_file(settings.state_dir)})"
        )
    else:
        lines.append(f"registry: {settings.registry.host} (not embedded; nothing started)")
    return lines


def _command_line(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def down(settings: Settings) -> list[str]:
    """Stop the embedded registry (the Docker engine is left running).

    Only the process heps started is signalled: the pid file's process must be the
    registry binary serving this state directory's config (a pid is reused by others)."""
    root = embedded_credentials_file(settings.state_dir).parent
    pidfile = root / "registry.pid"
    if not pidfile.exists():
        return ["registry: not started by heps"]
    text = pidfile.read_text().strip()
    pidfile.unlink()
    if not text.isdigit():
        return [f"registry: {pidfile} held no pid ({text[:20]!r}); removed, nothing stopped"]
    pid = int(text)
    command = _command_line(pid)
    if command is None:
        return [f"registry: was not running (stale pid {pid} cleaned)"]
    expected = ["docker-registry", "serve", str(root / "config.yml")]
    if [os.path.basename(part) for part in command[:1]] + command[1:] != expected:
        shown = " ".join(command)[:80]
        return [f"registry: pid {pid} now runs `{shown}`, not our registry; left alone"]
    os.kill(pid, signal.SIGTERM)
    return [f"registry: stopped (pid {pid})"]
