"""One settings object, documented dataclasses, validated once at load.

Precedence, lowest first: embedded defaults, ``heps.yaml`` at the repository root,
environment (``HEPS_*``), command-line flags. Credentials never come from files in the
repository: only from the environment, the Docker config, or the embedded registry's
state directory (outside the repository).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from heps.core import quantity
from heps.core.bounded import read_bytes
from heps.core.errors import ConfigError
from heps.core.paths import confine
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
LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Host names that never leave the machine: plain HTTP may carry credentials there."""
DEFAULT_AUTHOR = Identity("HEPS delivery", "delivery@heps.invalid")


@dataclass(frozen=True)
class RegistrySettings:
    """The registry images are pushed to and looked up in."""

    host: str = EMBEDDED_REGISTRY
    """HOST[:PORT]; the default is the embedded registry `heps services up` starts."""
    namespace: str = "heps"
    """Repository namespace; passed to Dockerfiles as the OWNER build argument."""
    tls: bool | None = None
    """HTTPS or not; None means plain HTTP for loopback hosts only."""
    token_host: str = ""
    """The host of the registry's token service when not the registry's own (Docker Hub,
    GitLab): the operator's `HEPS_REGISTRY_TOKEN_HOST`, never heps.yaml's."""

    @property
    def loopback(self) -> bool:
        return urlsplit(f"//{self.host}").hostname in LOOPBACK

    @property
    def url(self) -> str:
        secure = self.tls if self.tls is not None else not self.loopback
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
    namespaces: tuple[str, ...] = ("heps",)
    """The platform's namespace policy: the only namespaces an overlay may create and use
    (never a reserved one: the schema refuses `default` and `kube-*`)."""
    field_manager: str = "heps-reconcile"
    """Server-side apply field manager: who owns the fields heps sets."""
    rollout_timeout: float = 300.0


@dataclass(frozen=True)
class NodeSettings:
    """The largest node sessions run on: what a recipe's profile may ask at most."""

    cpu: Decimal = Decimal(128)
    memory: Decimal = Decimal(2 * 1024**4)
    gpus: int = 8


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
    largest_node: NodeSettings = NodeSettings()
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
    keeps the field's default. heps.yaml is repository content a merge request can
    change: every path it names must resolve inside the repository (`recipes_dir`,
    `gitops.overlays_dir`, `build.ca_bundle`); only the operator (environment, flags)
    names host files such as a CA bundle outside it."""
    env = dict(os.environ) if env is None else env
    repo = repo.resolve()
    if not repo.is_dir():
        raise ConfigError(f"{repo}: not a directory; pass --repo with the repository root")
    raw: dict[str, Any] = {}
    path = repo / SETTINGS_FILE
    if path.exists():
        confine(repo, path, file=SETTINGS_FILE, field="the file itself")  # a symlink out
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
            namespaces=tuple,
        ),
        jenkins=_section(JenkinsSettings, raw.get("jenkins", {})),
        largest_node=_node(raw.get("largest_node", {})),
        state_dir=Path(env["HEPS_STATE_DIR"]) if "HEPS_STATE_DIR" in env else default_state_dir(),
    )
    host = registry or env.get("HEPS_REGISTRY")
    ns = namespace or env.get("HEPS_NAMESPACE")
    settings = replace(
        settings,
        registry=replace(
            settings.registry,
            host=host or settings.registry.host,
            namespace=ns or settings.registry.namespace,
            token_host=env.get("HEPS_REGISTRY_TOKEN_HOST", "").lower().strip("[]"),
        ),
    )
    settings = _confined(settings)  # heps.yaml's own paths, before the operator's
    if "HEPS_CA_BUNDLE" in env:
        ca = env["HEPS_CA_BUNDLE"]
        settings = replace(
            settings, build=replace(settings.build, ca_bundle=Path(ca) if ca else None)
        )
        if ca:
            check_ca_bundle(Path(ca), "HEPS_CA_BUNDLE", comments=True)
    _check(settings)
    return settings


def _confined(settings: Settings) -> Settings:
    """heps.yaml's paths resolved inside the repository (ConfigError otherwise); the CA
    bundle it names must also be what it claims."""
    repo = settings.repo
    for name, value in (
        ("recipes_dir", settings.recipes_dir),
        ("gitops.overlays_dir", settings.gitops.overlays_dir),
    ):
        confine(repo, value, file=SETTINGS_FILE, field=name)
    ca = settings.build.ca_bundle
    if ca is None:
        return settings
    resolved = confine(repo, ca, file=SETTINGS_FILE, field="build.ca_bundle")
    check_ca_bundle(resolved, f"{SETTINGS_FILE}: build.ca_bundle", comments=False)
    return replace(settings, build=replace(settings.build, ca_bundle=resolved))


_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END CERTIFICATE-----"
)


def check_ca_bundle(path: Path, where: str, *, comments: bool) -> None:
    """A CA bundle is PEM CERTIFICATE blocks and nothing else (blank lines, and `#`
    comment lines where `comments`: system bundles of the operator carry labels): it is
    copied into every build context, so a private key, a credentials file or any other
    text is refused in one line."""
    if not path.is_file():
        raise ConfigError(
            f"{where}: {path} is not a file; point it at a PEM bundle or set "
            "HEPS_CA_BUNDLE= to disable"
        )
    data = read_bytes(path, where)
    blocks = list(_PEM_BLOCK.finditer(data))
    rest = _PEM_BLOCK.sub(b"", data)
    stray = [
        line
        for line in rest.splitlines()
        if line.strip() and not (comments and line.startswith(b"#"))
    ]
    bad = not blocks or bool(stray)
    for block in blocks:
        try:
            der = base64.b64decode(b"".join(block.group(1).split()), validate=True)
        except binascii.Error:
            bad = True
            continue
        bad = bad or not der.startswith(b"\x30")  # an X.509 certificate is a DER SEQUENCE
    if bad:
        raise ConfigError(
            f"{where}: {path} is not a PEM bundle of certificates only (found "
            f"{len(blocks)} certificate block(s) and {len(stray)} other line(s)); "
            "name a file of -----BEGIN CERTIFICATE----- blocks"
        )


def _section(cls: type[T], raw: dict[str, Any], **convert: Callable[[Any], Any]) -> T:
    """A settings dataclass from its heps.yaml section; absent keys keep their defaults."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: convert[k](v) if k in convert else v for k, v in raw.items() if k in names}
    return cls(**values)


def _node(raw: dict[str, Any]) -> NodeSettings:
    try:
        return _section(
            NodeSettings,
            raw,
            cpu=lambda v: quantity.cpu(v, Decimal(1 << 20)),
            memory=lambda v: quantity.memory(v, Decimal(1 << 70)),
        )
    except quantity.QuantityError as exc:
        raise ConfigError(f"{SETTINGS_FILE}: largest_node: {exc}") from None


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
    if not settings.recipes_path.is_dir():
        problems.append(
            f"{SETTINGS_FILE}: recipes_dir: {settings.recipes_path} is not a directory; "
            "create it or run from the repository root (--repo PATH)"
        )
    if settings.registry.tls is False and not settings.registry.loopback:
        problems.append(
            f"{SETTINGS_FILE}: registry.tls: false would send the registry credentials in "
            f"clear to {settings.registry.host}; plain HTTP is for loopback registries only"
        )
    if not re.fullmatch(r"[A-Za-z0-9.-]+(:[0-9]+)?", settings.registry.host):
        problems.append(  # the flag and HEPS_REGISTRY skip the schema; never echoed: it
            # may hold a password (user:password@host)
            f"{SETTINGS_FILE}: registry.host: not HOST[:PORT] (from heps.yaml, HEPS_REGISTRY "
            "or --registry); no scheme, user or password: credentials come from "
            "HEPS_REGISTRY_USERNAME/PASSWORD or the Docker config"
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
