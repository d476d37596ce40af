"""Registry credentials, the `Secret` type that keeps them out of reprs and messages,
and the run's `Masker`, made from every secret the run holds.

Credentials never come from files in the repository: only from the environment, the
Docker config (through the engine's look-up, handed in), or the embedded registry's state
directory outside the repository.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from heps.core import log
from heps.core.bounded import MAX_BYTES, read_text
from heps.core.errors import ConfigError
from heps.core.settings import EMBEDDED_REGISTRY, Settings, embedded_credentials_file

RECIPE_FILE = "recipe.yaml"
MIN_SECRET = 8
"""Shorter secrets are refused: masking them would hide ordinary text ("1.0.0", "heps")."""
JENKINS_TOKEN = "JENKINS_API_TOKEN"  # noqa: S105 (the variable's name, not a token)


@dataclass(frozen=True)
class Secret:
    """A string that prints as ***: never in a repr, an f-string or a message."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return log.MASK


@dataclass(frozen=True)
class Credentials:
    username: str
    password: Secret
    source: str  # where they came from, for messages ("environment", "Docker config", ...)

    @property
    def basic_auth(self) -> tuple[bytes, bytes]:
        """For HTTP basic auth, as UTF-8 (as docker login sends them):
        requests would encode str as Latin-1, refusing or mangling a non-ASCII password."""
        return self.username.encode(), self.password.value.encode()


def credentials(
    settings: Settings,
    docker_auth: Callable[[str], dict[str, str]],
    env: dict[str, str] | None = None,
) -> Credentials | None:
    """Registry credentials: environment, then Docker config (`docker_auth(host)`, the
    engine's lookup), then the embedded registry's."""
    env = dict(os.environ) if env is None else env
    user, password = env.get("HEPS_REGISTRY_USERNAME"), env.get("HEPS_REGISTRY_PASSWORD")
    if user and password:
        return Credentials(user, Secret(password), "HEPS_REGISTRY_USERNAME/PASSWORD")
    if bool(user) != bool(password):
        raise ConfigError(
            "environment: HEPS_REGISTRY_USERNAME and HEPS_REGISTRY_PASSWORD: only one is set; "
            "set both or neither"
        )
    host = settings.registry.host
    found = docker_auth(host)
    if found.get("username") and found.get("password"):
        return Credentials(found["username"], Secret(found["password"]), "Docker config")
    stored = embedded_credentials_file(settings.state_dir)
    if host == EMBEDDED_REGISTRY and stored.exists():
        return _stored_credentials(stored)
    return None


def _stored_credentials(path: Path) -> Credentials:
    """The embedded registry's credentials file: {"username": ..., "password": ...}."""
    try:
        data = json.loads(read_text(path, str(path), limit=64 * 1024))
    except ValueError:
        data = None
    fields = data if isinstance(data, dict) else {}
    user, password = fields.get("username"), fields.get("password")
    if not (isinstance(user, str) and user and isinstance(password, str) and password):
        raise ConfigError(
            f"{path}: not a credentials file (JSON with string username and password); "
            "fix it, or delete it and run `heps services up` to create a new one"
        )
    return Credentials(user, Secret(password), str(path))


def masker(
    settings: Settings, creds: Credentials | None, env: dict[str, str] | None = None
) -> log.Masker:
    """The run's masker, from its registry password and Jenkins token. A secret that would
    mask ordinary text (short, or found in the configuration's names, versions and words)
    is refused here, before the command starts, naming where it came from."""
    env = dict(os.environ) if env is None else env
    held: list[tuple[str, str, str]] = []  # (secret, where it came from, how to replace it)
    if creds is not None:
        held.append((creds.password.value, creds.source, _fix(creds.source, settings)))
    if env.get(JENKINS_TOKEN):
        fix = f"set {JENKINS_TOKEN} to an API token Jenkins generates (user > Security)"
        held.append((env[JENKINS_TOKEN], JENKINS_TOKEN, fix))
    problems = []
    texts: list[tuple[str, str]] | None = None
    for secret, source, fix in held:
        if len(secret) < MIN_SECRET:
            why = f"is shorter than {MIN_SECRET} characters"
        else:
            texts = texts if texts is not None else list(_ordinary_text(settings, creds))
            why = next((f"appears in {where}" for where, text in texts if secret in text), "")
        if why:
            problems.append(
                f"{source}: the secret {why}, so masking it would hide ordinary text in "
                f"every output; {fix}"
            )
    if problems:
        raise ConfigError(problems)
    return log.Masker.of(secret for secret, _, _ in held)


def _fix(source: str, settings: Settings) -> str:
    new = f"a random password of at least {MIN_SECRET} characters found nowhere in the repository"
    if source == "HEPS_REGISTRY_USERNAME/PASSWORD":
        return f"set HEPS_REGISTRY_PASSWORD (and the registry's password) to {new}"
    if source == "Docker config":
        return f"give the registry {new}, then `docker login {settings.registry.host}`"
    return f"delete {source} and run `heps services up` to make a new one"


def _ordinary_text(settings: Settings, creds: Credentials | None) -> Iterator[tuple[str, str]]:
    """(where, text) of what output shows and masking must not hide: the registry's host,
    namespace and user, recipe and overlay folder names, and the configuration files
    (names, versions, job names and every other word in them). Only the repository's own
    files are read, never through a link; one pass of system calls (500 recipes: ~10 ms)."""
    yield "the registry host", settings.registry.host
    yield "the registry namespace", settings.registry.namespace
    if creds is not None:
        yield "the registry user name", creds.username
    repo = settings.repo.resolve()
    for name in ("heps.yaml", "jenkins/jobs.yaml"):
        yield from _file_text(str(repo / name), name)
    overlays = settings.repo / settings.gitops.overlays_dir / "overlays"
    for folder, has_recipes in ((settings.recipes_path, True), (overlays, False)):
        real = folder.resolve()
        if not (real.is_dir() and real.is_relative_to(repo)):
            continue
        display = os.path.relpath(folder, settings.repo)
        with os.scandir(real) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                yield f"the name of {display}/{entry.name}", entry.name
                if has_recipes and entry.is_dir(follow_symlinks=False):
                    file = f"{display}/{entry.name}/{RECIPE_FILE}"
                    yield from _file_text(f"{entry.path}/{RECIPE_FILE}", file)


def _file_text(path: str, display: str) -> Iterator[tuple[str, str]]:
    """The file's text, if it is a regular file and not a link; what is malformed or too
    large is the loaders' to report, so this reads what it can."""
    try:  # O_NONBLOCK: a FIFO named recipe.yaml must not hang the start
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # missing, or a link (ELOOP): nothing of the repository's to read
        return
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):  # checked before fdopen, which refuses a folder
        os.close(fd)
        return
    with os.fdopen(fd, "rb", buffering=0) as handle:  # unbuffered: no 4 MiB buffer per file
        data = handle.readall() if found.st_size <= MAX_BYTES else handle.read(MAX_BYTES)
    yield display, data.decode("utf-8", "replace")
