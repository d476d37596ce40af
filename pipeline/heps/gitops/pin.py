"""Pin images in Kubernetes manifests, touching nothing but the pinned values.

libyaml (PyYAML's C composer) finds every image field with its start and end position
(multi-document files, anchors and aliases, flow style); the edit then replaces exactly
that scalar's characters in the original text. Nothing is dumped back: a YAML dumper
would normalise indentation, quoting and line wrapping of hand-written files, so every
line that is not a pinned image stays byte-identical only this way. The composer is the
C one because it is 40 times faster than a pure-Python round-trip parser, which is what
lets 1,000 manifests be pinned in well under the 2 s target.

Three kinds of place refer to an image:
- kustomize `images:` entries (name / newName / newTag / digest);
- workload containers, initContainers and ephemeralContainers;
- `image:` keys anywhere in a YAML file that is not a Kubernetes object: the hub's
  settings (the JupyterHub `profile_list`'s `kubespawner_override.image`, the user-init
  image), which reach the cluster inside a ConfigMap where kustomize cannot pin them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from io import StringIO
from typing import Any

from ruamel.yaml import YAML

from heps.core.kube_yaml import (
    Document,
    PinError,
    config_images,
    containers,
    get,
    is_kustomization,
    items,
    kustomize_entries,
    text_of,
)
from heps.core.references import split_reference

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
        """Does an image field (any tag or digest) name this app: by recipe name, or as
        NAMESPACE/NAME on any registry (overlays may name the site registry while the
        image was pushed to another; the pin writes the pushed repository)?"""
        repo = split_reference(image)[0]
        return repo == self.app or repo.partition("/")[2] == self.repository.partition("/")[2]


@dataclass(frozen=True)
class Found:
    """An image field in a file: where it is, and the image it makes the overlay run."""

    app: str
    kind: str
    """kustomize, container or config"""
    value: str
    """The image as written; for a kustomize entry, newName:newTag@digest it results in."""
    line: int
    """0-based line of the field (of `name:` for a kustomize entry)."""
    node: Any = field(default=None, compare=False, repr=False)
    """The image scalar, or the kustomize entry's mapping."""


def _kustomize_image(entry: Any) -> str:
    """The image a kustomize `images:` entry makes the overlay run."""
    name, new_name = text_of(get(entry, "name")) or "", text_of(get(entry, "newName"))
    image = f"{new_name or name}:{text_of(get(entry, 'newTag')) or ''}"
    digest = text_of(get(entry, "digest"))
    return image + (f"@{digest}" if digest else "")


class _Pins:
    """The first pin that `Pin.matches` an image, found by two look-ups instead of a walk
    over every pin for every image field (100 pins, 1,000 files: 150,000 calls)."""

    def __init__(self, pins: list[Pin]) -> None:
        self.pins = pins
        self.index: dict[tuple[bool, str], int] = {}
        for i, pin in enumerate(pins):
            self.index.setdefault((True, pin.app), i)
            self.index.setdefault((False, pin.repository.partition("/")[2]), i)

    def first(self, *images: str | None) -> Pin | None:
        """As `next(p for p in pins for image in images if image and p.matches(image))`."""
        hits = [
            i
            for image in images
            if image
            for repo in [split_reference(image)[0]]
            for i in (self.index.get((True, repo)), self.index.get((False, repo.partition("/")[2])))
            if i is not None
        ]
        return self.pins[min(hits)] if hits else None


@lru_cache(maxsize=4)
def _index(pins: tuple[Pin, ...]) -> _Pins:
    """One index for all the files of an overlay pinned with the same pins."""
    return _Pins(list(pins))


def scan(document: Document, pins: list[Pin]) -> list[Found]:
    """Every image field in the file that names one of the pinned apps."""
    found: list[Found] = []
    index = _index(tuple(pins))
    for doc in document.docs:
        for container in containers(doc):
            node = get(container, "image")
            pin = index.first(node.value)
            if pin:
                found.append(Found(pin.app, "container", node.value, node.start_mark.line, node))
        for entry in kustomize_entries(doc):
            name = get(entry, "name")
            pin = index.first(text_of(name), text_of(get(entry, "newName")))
            if pin:
                line = (name or entry).start_mark.line
                found.append(Found(pin.app, "kustomize", _kustomize_image(entry), line, entry))
        if is_kustomization(doc):
            continue
        for node in config_images(doc):
            pin = index.first(node.value)
            if pin:
                found.append(Found(pin.app, "config", node.value, node.start_mark.line, node))
    return found


def pin_text(text: str, name: str, pins: list[Pin]) -> tuple[str, list[Found]]:
    """The file with every image of a pinned app pinned; and what was found."""
    document = Document(text, name)
    found = scan(document, pins)
    by_app = {p.app: p for p in pins}
    for item in found:
        if item.kind == "kustomize":
            _pin_kustomize(document, item.node, by_app[item.app])
        else:
            document.replace(item.node, by_app[item.app].reference)
    return document.rendered(), found


def _pin_kustomize(document: Document, entry: Any, pin: Pin) -> None:
    wanted = {"newName": pin.repository, "newTag": pin.tag, "digest": pin.digest}
    missing = [key for key in wanted if get(entry, key) is None]
    if missing and entry.flow_style:
        raise PinError(
            f"{document.name}:{entry.start_mark.line + 1}: the images: entry for {pin.app} "
            f"is in flow style and lacks {', '.join(missing)}; write it as a block mapping"
        )
    last_line = max(value.end_mark.line for _, value in entry.value)
    name_col = entry.value[0][0].start_mark.column
    for key, value in wanted.items():
        node = get(entry, key)
        if node is not None:
            document.replace(node, value)
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
    images: Any = get(document.docs[0], "images") if document.docs else None
    if items(images) and not images.flow_style:
        last = images.value[-1]
        last_line = max(value.end_mark.line for _, value in last.value)
        indent = " " * (last.start_mark.column - 2)  # where the existing entries' "-" stands
        document.insert_after(last_line, "".join(indent + line + "\n" for line in entry_lines))
        return document.rendered()
    if images is not None:  # `images: []`, `images:` alone, or entries in flow style
        raise PinError(f"{name}: images: is empty or in flow style; write it as a block list")
    entries = "".join("  " + line + "\n" for line in entry_lines)
    suffix = "" if text.endswith("\n") or not text else "\n"
    return text + suffix + "images:\n" + entries


def profile_entry(
    app: str,
    display_name: str,
    description: str,
    image: str,
    cpu: Decimal | None,
    memory: str | None,
    gpu: int,
    default: bool,
    node_selector: dict[str, str],
) -> str:
    """One KubeSpawner profile_list entry for a recipe's `profile:` block, as YAML text."""
    override: dict[str, Any] = {"image": image}
    if cpu:
        # KubeSpawner's cpu_* are floats: an integer or a short decimal (whole
        # millicores: never an exponent such as 1e-05, which the hub could not parse)
        cores = int(cpu) if cpu == cpu.to_integral_value() else float(cpu)
        override["cpu_guarantee"] = cores
        override["cpu_limit"] = cores
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
