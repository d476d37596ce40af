"""Pin images in Kubernetes manifests, touching nothing but the pinned values.

ruamel.yaml's round-trip parser finds every image field with its line and column
(multi-document files, anchors, flow style); the edit then replaces exactly that
scalar's characters in the original text. Dumping the tree back would normalise
indentation and re-wrap long lines of hand-written files, so every line that is not a
pinned image stays byte-identical only this way.

Three kinds of place refer to an image:
- kustomize `images:` entries (name / newName / newTag / digest);
- workload containers, initContainers and ephemeralContainers;
- the JupyterHub profile list (KubeSpawner `profile_list`, `kubespawner_override.image`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from heps.dockerfile import split_reference

POD_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
PROFILE_FILE = "profile-list.yaml"


@dataclass(frozen=True)
class Pin:
    """Where an application's image must point."""

    app: str
    repository: str
    """REGISTRY/NAMESPACE/NAME, no tag."""
    tag: str
    """The immutable tag (VERSION-g<commit>)."""
    digest: str
    version: str = ""
    reason: str = ""

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}@{self.digest}"

    def matches(self, image: str) -> bool:
        """Does an image field (any tag or digest) name this app's repository?"""
        repo = split_reference(image)[0]
        return repo == self.repository or repo == self.app


@dataclass(frozen=True)
class Found:
    """An image field in a file: where it is, and what it says now."""

    app: str
    kind: str
    """kustomize, container or profile"""
    value: str
    line: int
    """0-based line of the scalar."""
    col: int


class PinError(Exception):
    """A file that cannot be pinned safely (unreadable YAML, unpinnable field)."""


def _scalar_end(line: str, col: int) -> int:
    """End column of the YAML scalar starting at `col` (quoted or plain)."""
    quote = line[col] if col < len(line) else ""
    if quote in ("'", '"'):
        i = col + 1
        while i < len(line):
            if line[i] == quote:
                if quote == "'" and line[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                if quote == '"' and line[i - 1] == "\\":
                    i += 1
                    continue
                return i + 1
            i += 1
        raise PinError(f"unterminated quoted scalar at column {col + 1}")
    match = re.compile(r"[^\s,\]}#]+").match(line, col)
    return match.end() if match else col


def _quoted(old: str, new: str) -> str:
    """The new value written the way the old one was: same quote style."""
    if old.startswith("'"):
        return "'" + new.replace("'", "''") + "'"
    if old.startswith('"'):
        return json.dumps(new)
    return new


class Document:
    """One YAML file: its text, its parsed documents, and pending edits."""

    def __init__(self, text: str, name: str):
        self.text, self.name = text, name
        self.lines = text.splitlines(keepends=True)
        try:
            self.docs = [d for d in YAML(typ="rt").load_all(text) if d is not None]
        except YAMLError as exc:
            raise PinError(f"{name}: not valid YAML: {str(exc).splitlines()[0]}") from None
        self.edits: dict[tuple[int, int], tuple[int, str]] = {}
        self.inserts: list[tuple[int, str]] = []

    def locate(self, parent: Any, key: Any) -> tuple[int, int]:
        """(line, col) of the scalar value `parent[key]`, following an alias to its anchor."""
        line, col = parent.lc.value(key) if isinstance(key, str) else parent.lc.item(key)
        text = self.lines[line]
        if text.startswith("*", col):  # an alias: the value lives at its anchor
            name = re.match(r"\*([^\s,\]}]+)", text[col:])
            anchor = f"&{name.group(1)}" if name else ""
            for number, candidate in enumerate(self.lines):
                at = candidate.find(anchor + " ")
                if anchor and at >= 0:
                    line, col, text = number, at, candidate
                    break
        if text.startswith("&", col):
            col = re.compile(r"&\S+\s+").match(text, col).end()  # type: ignore[union-attr]
        return line, col

    def current(self, line: int, col: int) -> str:
        text = self.lines[line].rstrip("\n")
        return text[col : _scalar_end(text, col)]

    def replace(self, line: int, col: int, value: str) -> None:
        text = self.lines[line].rstrip("\n")
        end = _scalar_end(text, col)
        self.edits[(line, col)] = (end, _quoted(text[col:end], value))

    def insert_after(self, line: int, text: str) -> None:
        self.inserts.append((line, text))

    def rendered(self) -> str:
        lines = list(self.lines)
        for (line, col), (end, value) in sorted(self.edits.items(), reverse=True):
            lines[line] = lines[line][:col] + value + lines[line][end:]
        after: dict[int, str] = {}
        for line, text in self.inserts:  # several after one line keep their order
            after[line] = after.get(line, "") + text
        for line, text in sorted(after.items(), reverse=True):
            if line >= 0 and not lines[line].endswith("\n"):
                lines[line] += "\n"
            lines.insert(line + 1, text)
        return "".join(lines)


def _get(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not hasattr(node, "get"):
            return None
        node = node.get(key)
    return node


def containers(doc: Any) -> Iterator[Any]:
    """Every container mapping of a workload document (or of the items of a List)."""
    if not hasattr(doc, "get"):
        return
    if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
        for item in doc.get("items") or []:
            yield from containers(item)
        return
    path = POD_PATHS.get(doc.get("kind"))
    spec = _get(doc, path) if path else None
    for field in CONTAINER_LISTS:
        for container in (spec or {}).get(field) or []:
            if hasattr(container, "get") and isinstance(container.get("image"), str):
                yield container


def scan(document: Document, pins: list[Pin]) -> list[Found]:
    """Every image field in the file that names one of the pinned apps."""
    found: list[Found] = []

    def match(value: str) -> Pin | None:
        return next((p for p in pins if p.matches(value)), None)

    for doc in document.docs:
        if not hasattr(doc, "get"):
            continue
        for container in containers(doc):
            pin = match(container["image"])
            if pin:
                line, col = document.locate(container, "image")
                found.append(Found(pin.app, "container", container["image"], line, col))
        for entry in doc.get("images") or [] if _is_kustomization(doc) else []:
            pin = match(str(entry.get("name", ""))) or match(str(entry.get("newName", "")))
            if pin:
                line, col = document.locate(entry, "name")
                found.append(Found(pin.app, "kustomize", str(entry.get("name")), line, col))
        for profile in doc.get("profile_list") or [] if "profile_list" in doc else []:
            override = profile.get("kubespawner_override") or {}
            image = override.get("image")
            pin = match(image) if isinstance(image, str) else None
            if pin:
                line, col = document.locate(override, "image")
                found.append(Found(pin.app, "profile", str(image), line, col))
    return found


def _is_kustomization(doc: Any) -> bool:
    return doc.get("kind") == "Kustomization" or "resources" in doc or "images" in doc


def pin_text(text: str, name: str, pins: list[Pin]) -> tuple[str, list[Found]]:
    """The file with every image of a pinned app pinned; and what was found."""
    document = Document(text, name)
    found = scan(document, pins)
    by_app = {p.app: p for p in pins}
    for doc in document.docs:
        if hasattr(doc, "get") and _is_kustomization(doc):
            _pin_kustomize(document, doc, by_app)
    for item in found:
        if item.kind in ("container", "profile"):
            document.replace(item.line, item.col, by_app[item.app].reference)
    return document.rendered(), found


def _pin_kustomize(document: Document, doc: Any, pins: dict[str, Pin]) -> None:
    for entry in doc.get("images") or []:
        pin = next(
            (
                p
                for p in pins.values()
                if p.matches(str(entry.get("name", ""))) or p.matches(str(entry.get("newName", "")))
            ),
            None,
        )
        if pin is None:
            continue
        wanted = {"newName": pin.repository, "newTag": pin.tag, "digest": pin.digest}
        last_line = max(entry.lc.value(k)[0] for k in entry)
        name_col = entry.lc.key("name")[1]
        for key, value in wanted.items():
            if key in entry:
                line, col = document.locate(entry, key)
                document.replace(line, col, value)
            else:
                document.insert_after(last_line, " " * name_col + f"{key}: {value}\n")


def add_kustomize_images(
    text: str, name: str, pins: list[Pin], names: dict[str, str] | None = None
) -> str:
    """Add `images:` entries for apps the overlay uses through its bases but does not pin.

    `names` gives, per app, the image name as the bases write it, which the entry's `name`
    must equal for kustomize to replace it (default: the full repository)."""
    if not pins:
        return text
    document = Document(text, name)
    doc = document.docs[0]
    names = names or {}
    entry_lines = [
        line
        for p in pins
        for line in (
            f"- name: {names.get(p.app, p.repository)}",
            f"  newName: {p.repository}",
            f"  newTag: {p.tag}",
            f"  digest: {p.digest}",
        )
    ]
    images = doc.get("images")
    if images:
        last = images[-1]
        last_line = max(last.lc.value(k)[0] for k in last)
        indent = " " * (last.lc.key("name")[1] - 2)  # where the existing entries' "-" stands
        document.insert_after(last_line, "".join(indent + line + "\n" for line in entry_lines))
        return document.rendered()
    if images is not None:  # `images: []` or `images:` with nothing
        raise PinError(f"{name}: images: is empty in flow style; write it as a block list")
    entries = "".join("  " + line + "\n" for line in entry_lines)
    suffix = "" if text.endswith("\n") or not text else "\n"
    return text + suffix + "images:\n" + entries


def profile_entry(
    app: str,
    display_name: str,
    description: str,
    image: str,
    cpu: float | None,
    memory: str | None,
    gpu: int,
    default: bool,
    node_selector: dict[str, str],
) -> str:
    """One KubeSpawner profile_list entry for a recipe's `profile:` block, as YAML text."""
    override: dict[str, Any] = {"image": image}
    if cpu:
        override["cpu_guarantee"] = cpu
        override["cpu_limit"] = cpu
    if memory:
        override["mem_guarantee"] = memory
        override["mem_limit"] = memory
    if gpu:
        override["extra_resource_limits"] = {"nvidia.com/gpu": str(gpu)}
    if node_selector:
        override["node_selector"] = dict(node_selector)
    entry: dict[str, Any] = {"slug": app, "display_name": display_name}
    if description:
        entry["description"] = description
    if default:
        entry["default"] = True
    entry["kubespawner_override"] = override
    stream = StringIO()
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096  # an image reference must stay on its line
    yaml.dump([entry], stream)
    return stream.getvalue()
