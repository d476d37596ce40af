"""The embedded services a fresh build host needs: the Docker engine and a registry.

`heps services up` installs Debian's `docker.io`, `docker-registry` and `debootstrap`
when they are missing (as root), starts `dockerd` unless DOCKER_HOST names another
engine, and starts the CNCF distribution registry on 127.0.0.1:5000 with two accounts:
one that pushes (`heps`, for the main job) and one that only pulls (`heps-pull`, for the
merge-request job). htpasswd auth cannot tell them apart, so the embedded registry uses
the registry's token auth with its own token service (`registry_auth`, on the next
port): the registry itself refuses a push with the pull account. The generated
credentials live in the state directory (mode 0600), outside the repository, where
`heps` finds the push account's when the registry is the embedded one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import requests

from heps.core import log, process
from heps.core.errors import ConfigError
from heps.core.settings import EMBEDDED_REGISTRY, Settings, embedded_credentials_file
from heps.core.stages import Stage
from heps.systems import engine

PACKAGES = {
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "debootstrap": "debootstrap",
}
APT_TIMEOUT = 1800.0


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
        done = process.run(command, env=env, timeout=APT_TIMEOUT)
        if not done.ok:
            raise ConfigError(f"{done.failure()}; run `{' '.join(command)}` by hand to see why")


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
    process.spawn([dockerd], state_dir / "dockerd.log")
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
    """A distribution registry, its data under `root`: htpasswd auth with one account, or,
    given a pull account and `token_address`, token auth through `registry_auth`."""

    root: Path
    address: str
    """HOST:PORT it listens on."""
    username: str
    password: str
    pull_username: str | None = None
    pull_password: str | None = field(default=None, repr=False)
    token_address: str | None = None
    """HOST:PORT of its token service; None: htpasswd, where every account can push."""

    def config(self) -> str:
        if self.token_address:
            from heps.systems import registry_auth  # JWT and X.509 only where tokens are used

            auth = (
                f"auth: {{token: {{realm: 'http://{self.token_address}/token', "
                f"service: {registry_auth.SERVICE}, issuer: {registry_auth.ISSUER}, "
                f"rootcertbundle: {self.root / 'token.crt'}}}}}\n"
            )
        else:
            auth = f"auth: {{htpasswd: {{realm: heps, path: {self.root / 'htpasswd'}}}}}\n"
        return (
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, "
            "delete: {enabled: true}}\n"
            f"http: {{addr: '{self.address}'}}\n" + auth
        )

    def start_token_service(self) -> process.Daemon:
        """Keys (made once), accounts, then the token service, answering."""
        from heps.systems import registry_auth

        assert self.token_address and self.pull_username and self.pull_password
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "token.crt").exists():
            registry_auth.write_keys(self.root)
        registry_auth.write_accounts(
            self.root,
            {
                self.username: (self.password, registry_auth.PUSH_ACTIONS),
                self.pull_username: (self.pull_password, registry_auth.PULL_ACTIONS),
            },
        )
        command = [sys.executable, "-m", "heps.systems.registry_auth", str(self.root)]
        daemon = process.spawn([*command, self.token_address], self.root / "token.log")
        (self.root / "token.pid").write_text(str(daemon.pid))
        self._wait(daemon, f"http://{self.token_address}/token", "token.log")
        return daemon

    def start(self, config_text: str | None = None) -> process.Daemon:
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
        daemon = process.spawn(
            [binary, "serve", str(self.root / "config.yml")], self.root / "registry.log"
        )
        (self.root / "registry.pid").write_text(str(daemon.pid))
        self._wait(daemon, f"http://{self.address}/v2/", "registry.log")
        return daemon

    def _wait(self, daemon: process.Daemon, url: str, logfile: str) -> None:
        deadline = time.monotonic() + 20
        while not _answers(url):
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / logfile).read_text().strip().splitlines()[-3:]
                raise ConfigError(f"{url}: did not start: {' / '.join(tail)}")
            time.sleep(0.1)

    def answering(self) -> bool:
        return _answers(f"http://{self.address}/v2/")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code in (200, 401)
    except requests.RequestException:
        return False


EMBEDDED_AUTH = "127.0.0.1:5001"
PULL_CREDENTIALS = "pull-credentials.json"
"""Beside the push account's file: what a merge-request job binds on this host."""


def _account(path: Path, username: str) -> dict[str, str]:
    """A generated account, kept in `path` (0600) from the first call on."""
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
    else:
        stored = {"username": username, "password": secrets.token_urlsafe(24)}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(stored, handle)
    return stored


def embedded_registry(settings: Settings) -> RegistryService:
    """The embedded registry, its two accounts generated once and kept in the state dir."""
    creds_file = embedded_credentials_file(settings.state_dir)
    push = _account(creds_file, "heps")
    pull = _account(creds_file.parent / PULL_CREDENTIALS, "heps-pull")
    return RegistryService(
        creds_file.parent,
        EMBEDDED_REGISTRY,
        push["username"],
        push["password"],
        pull["username"],
        pull["password"],
        EMBEDDED_AUTH,
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
            if not _answers(f"http://{service.token_address}/token"):
                service.start_token_service()
            service.start()
        folder = embedded_credentials_file(settings.state_dir).parent
        lines.append(
            f"registry: {service.address} (push: user {service.username}, password in "
            f"{folder / 'credentials.json'}; pull only: user {service.pull_username}, "
            f"password in {folder / PULL_CREDENTIALS})"
        )
        challenge = requests.get(f"http://{service.address}/v2/", timeout=5).headers
        if challenge.get("WWW-Authenticate", "").lower().startswith("basic"):
            lines.append(
                "registry: started before pull-only accounts (htpasswd: every account can "
                "push); restart it: heps services down && heps services up"
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
    """Stop the embedded registry and its token service (the Docker engine is left running)."""
    root = embedded_credentials_file(settings.state_dir).parent
    lines = [_stop("registry", root / "registry.pid", ["serve", str(root / "config.yml")])]
    if (root / "token.pid").exists():
        token = ["-m", "heps.systems.registry_auth", str(root), EMBEDDED_AUTH]
        lines.append(_stop("token service", root / "token.pid", token))
    return lines


def _stop(what: str, pidfile: Path, arguments: list[str]) -> str:
    """Only the process heps started is signalled: the pid file's process must run with
    `arguments` (this state directory's); a pid is reused by others."""
    if not pidfile.exists():
        return f"{what}: not started by heps"
    text = pidfile.read_text().strip()
    pidfile.unlink()
    if not text.isdigit():
        return f"{what}: {pidfile} held no pid ({text[:20]!r}); removed, nothing stopped"
    pid = int(text)
    command = _command_line(pid)
    if command is None:
        return f"{what}: was not running (stale pid {pid} cleaned)"
    if command[1:] != arguments:
        shown = " ".join(command)[:80]
        return f"{what}: pid {pid} now runs `{shown}`, not our {what}; left alone"
    os.kill(pid, signal.SIGTERM)
    return f"{what}: stopped (pid {pid})"
