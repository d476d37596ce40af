"""One settings object, documented dataclasses, validated once at load.

Precedence, lowest first: embedded defaults, ``heps.yaml`` at the repository root,
environment (``HEPS_*``), command-line flags. Credentials never come from files in the
repository: only from the environment, the Docker config, or the embedded registry's
state directory (outside the repository).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from requests.auth import HTTPBasicAuth

from heps.core import log
from heps.core.bounded import read_text
from heps.core.errors import ConfigError
from heps.core.references import is_repository_path
from heps.core.validation import load_yaml, validate


@dataclass(frozen=True)
class Identity:
    name: str
    email: str

    @classmethod
    def parse(cls, value: str, where: str) -> Identity:
        match = re.fullmatch(r"\s*(.+?)\s*<([^<>\s]+@[^<>\s]+)>\s*", value)
        if not match:
            raise ValueError(f"{where}: '{value}' is not 'Name <email>'")
        return cls(match.group(1), match.group(2))


T = TypeVar("T")

SETTINGS_FILE = "heps.yaml"
EMBEDDED_REGISTRY = "127.0.0.1:5000"
DEFAULT_AUTHOR = Identity("HEPS delivery", "delivery@heps.invalid")


@dataclass(frozen=True)
class Secret:
    """A string that prints as *** and is masked in every log line once created."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        log.register_secret(self.value)

    def __str__(self) -> str:
        return log.MASK


@dataclass(frozen=True)
class Credentials:
    username: str
    password: Secret
    source: str  # where they came from, for messages ("environment", "Docker config", ...)

    @property
    def basic_auth(self) -> HTTPBasicAuth:
        """For HTTP basic auth, as UTF-8 (as docker login sends them): requests would
        encode str as Latin-1, refusing or mangling a non-ASCII password."""
        return HTTPBasicAuth(self.username.encode(), self.password.value.encode())


@dataclass(frozen=True)
class RegistrySettings:
    """The registry images are pushed to and looked up in."""

    host: str = EMBEDDED_REGISTRY
    """HOST[:PORT]; the default is the embedded registry `heps services up` starts."""
    namespace: str = "heps"
    """Repository namespace; passed to Dockerfiles as the OWNER build argument."""
    tls: bool | None = None
    """HTTPS or not; None means plain HTTP for loopback hosts only."""

    @property
    def url(self) -> str:
        loopback = self.host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]")
        secure = self.tls if self.tls is not None else not loopback
        return f"{'https' if secure else 'http'}://{self.host}"

    def repository(self, name: str) -> str:
        return f"{self.host}/{self.namespace}/{name}"


@dataclass(frozen=True)
class BuildSettings:
    ca_bundle: Path | None = None
    """Site CA certificates (public), handed to every build as heps-site-ca.crt."""
    parallel: int = 2
    """How many independent recipes build at once."""
    debian_mirror: str = "http://deb.debian.org/debian"
    """Mirror for recipes that bootstrap a Debian root file system."""
    source_url: str | None = None
    """Written to the org.opencontainers.image.source label."""


@dataclass(frozen=True)
class LintSettings:
    failure_threshold: str | None = None
    """Lowest hadolint level that fails a recipe; None: .hadolint.yaml's, else error."""


@dataclass(frozen=True)
class SmokeSettings:
    timeout: float = 300.0
    """Seconds a smoke command may run before its container is killed."""


@dataclass(frozen=True)
class GitOpsSettings:
    overlays_dir: str = "k8s-overlays"
    """Folder holding kustomize `base/` and `overlays/<environment>/`."""
    branch: str = "main"
    """Branch promotions are pushed to (production goes to a review branch off it)."""
    author: Identity = DEFAULT_AUTHOR
    committer: Identity | None = None
    """Defaults to the author."""
    attempts: int = 10
    """Pushes tried when other writers keep moving the branch (each lost race costs one)."""
    remote: str | None = None
    """A separate GitOps repository URL; default: this repository's origin."""


@dataclass(frozen=True)
class ReconcileSettings:
    kubernetes_version: str = "1.31"
    """Schemas (kubernetes-validate) every rendered object must pass."""
    digest_required: tuple[str, ...] = ("production",)
    """Overlays that may run images by digest only."""
    privileged_allowed: tuple[str, ...] = ()
    """Kind/namespace/name/container allowed to be privileged."""
    field_manager: str = "heps-reconcile"
    """Server-side apply field manager: who owns the fields heps sets."""
    rollout_timeout: float = 300.0


@dataclass(frozen=True)
class JenkinsSettings:
    url: str | None = None
    """Base URL; JENKINS_URL overrides it. Credentials only from the environment."""


@dataclass(frozen=True)
class Settings:
    repo: Path
    """Repository root; recipe paths may not leave it."""
    recipes_dir: str = "app-recipes"
    registry: RegistrySettings = RegistrySettings()
    build: BuildSettings = BuildSettings()
    smoke: SmokeSettings = SmokeSettings()
    lint: LintSettings = LintSettings()
    gitops: GitOpsSettings = GitOpsSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    jenkins: JenkinsSettings = JenkinsSettings()
    state_dir: Path = field(default_factory=lambda: default_state_dir())
    """Where the embedded registry keeps its data and credentials (outside the repo)."""

    @property
    def recipes_path(self) -> Path:
        return self.repo / self.recipes_dir


def default_state_dir() -> Path:
    env = os.environ.get("HEPS_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "heps"


def embedded_credentials_file(state_dir: Path) -> Path:
    return state_dir / "registry" / "credentials.json"


def load(
    repo: Path,
    *,
    registry: str | None = None,
    namespace: str | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Settings for `repo` from heps.yaml, the environment and flags, validated.

    Defaults live in the dataclasses above and nowhere else: a key heps.yaml leaves out
    keeps the field's default."""
    env = dict(os.environ) if env is None else env
    repo = repo.resolve()
    if not repo.is_dir():
        raise ConfigError(f"{repo}: not a directory; pass --repo with the repository root")
    raw: dict[str, Any] = {}
    path = repo / SETTINGS_FILE
    if path.exists():
        raw = load_yaml(path, SETTINGS_FILE) or {}
        problems = validate(raw, "settings", path, SETTINGS_FILE)
        if problems:
            raise ConfigError(problems)
    top = {k: v for k, v in raw.items() if k == "recipes_dir"}
    settings = Settings(
        repo=repo,
        **top,
        registry=_section(RegistrySettings, raw.get("registry", {})),
        build=_section(BuildSettings, raw.get("build", {}), ca_bundle=Path),
        smoke=_section(SmokeSettings, raw.get("smoke", {})),
        lint=_section(LintSettings, raw.get("lint", {})),
        gitops=_gitops(raw.get("gitops", {}), env),
        reconcile=_section(
            ReconcileSettings,
            raw.get("reconcile", {}),
            digest_required=tuple,
            privileged_allowed=tuple,
        ),
        jenkins=_section(JenkinsSettings, raw.get("jenkins", {})),
        state_dir=Path(env["HEPS_STATE_DIR"]) if "HEPS_STATE_DIR" in env else default_state_dir(),
    )
    host = registry or env.get("HEPS_REGISTRY")
    ns = namespace or env.get("HEPS_NAMESPACE")
    if host or ns:
        settings = replace(
            settings,
            registry=replace(
                settings.registry,
                host=host or settings.registry.host,
                namespace=ns or settings.registry.namespace,
            ),
        )
    if "HEPS_CA_BUNDLE" in env:
        ca = env["HEPS_CA_BUNDLE"]
        settings = replace(
            settings, build=replace(settings.build, ca_bundle=Path(ca) if ca else None)
        )
    _check(settings)
    return settings


def _section(cls: type[T], raw: dict[str, Any], **convert: Callable[[Any], Any]) -> T:
    """A settings dataclass from its heps.yaml section; absent keys keep their defaults."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: convert[k](v) if k in convert else v for k, v in raw.items() if k in names}
    return cls(**values)


_GITOPS_ENV = {
    "author": "HEPS_GIT_AUTHOR",
    "committer": "HEPS_GIT_COMMITTER",
    "remote": "HEPS_GITOPS_REPO",
}


def _gitops(raw: dict[str, Any], env: dict[str, str]) -> GitOpsSettings:
    merged = raw | {key: env[name] for key, name in _GITOPS_ENV.items() if env.get(name)}
    try:
        return _section(
            GitOpsSettings,
            merged,
            author=lambda text: Identity.parse(text, "gitops.author"),
            committer=lambda text: Identity.parse(text, "gitops.committer"),
        )
    except ValueError as exc:
        raise ConfigError(f"{SETTINGS_FILE}: {exc}; write it as 'Name <email>'") from None


def _check(settings: Settings) -> None:
    problems = []
    ca = settings.build.ca_bundle
    if ca is not None and not ca.is_file():
        problems.append(
            f"{SETTINGS_FILE}: build.ca_bundle: {ca} is not a file; "
            "point it at a PEM bundle or set HEPS_CA_BUNDLE= to disable"
        )
    if not settings.recipes_path.is_dir():
        problems.append(
            f"{SETTINGS_FILE}: recipes_dir: {settings.recipes_path} is not a directory; "
            "create it or run from the repository root (--repo PATH)"
        )
    namespace = settings.registry.namespace
    if not is_repository_path(namespace):  # the flag and HEPS_NAMESPACE skip the schema
        problems.append(
            f"{SETTINGS_FILE}: registry.namespace: {namespace!r} is not a repository path; "
            "use lowercase letters and digits, parts joined by . _ - or / (from heps.yaml, "
            "HEPS_NAMESPACE or --namespace)"
        )
    if problems:
        raise ConfigError(problems)


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
