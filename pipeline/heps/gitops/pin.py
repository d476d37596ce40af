"""Pin images in Kubernetes manifests, touching nothing but the pinned values.

libyaml (PyYAML's C composer) finds every image field with its start and end position
(multi-document files, anchors and aliases, flow style); the edit then replaces exactly
that scalar's characters in the original text. Nothing is dumped back: a YAML dumper
would normalise indentation, quoting and line wrapping of hand-written files, so every
line that is not a pinned image stays byte-identical only this way. The composer is the
C one because it is 40 times faster than a pure-Python round-trip parser, which is what
lets 1,000 manifests be pinned in well under the 2 s target. What pinning needs of a
composed file is plain data (`Field`), kept in the manifest cache by the file's exact
text (`image_fields`): a file met before is not checked and composed again.

Three kinds of place refer to an image:
- kustomize `images:` entries (name / newName / newTag / digest);
- workload containers, initContainers and ephemeralContainers;
- `image:` keys anywhere in a YAML file that is not a Kubernetes object: the hub's
  settings (the JupyterHub `profile_list`'s `kubespawner_override.image`, the user-init
  image), which reach the cluster inside a ConfigMap where kustomize cannot pin them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from functools import cache as cache_once
from io import StringIO
from typing import Any

import yaml

from heps.core import cache
from heps.core.kube_yaml import (
    Document,
    PinError,
    Place,
    Text,
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
class Field:
    """An image field of a file as plain data: what it names and where its scalars are.
    What pinning needs of a composed file, so the manifest cache can keep it by the file's
    text and a file read before is pinned without composing it again."""

    kind: str
    """kustomize, container or config"""
    line: int
    """0-based line of the field (of `name:` for a kustomize entry)."""
    value: str
    """The image as written; for a kustomize entry, newName:newTag@digest it results in."""
    names: tuple[str, ...]
    """What a pin is matched by: the image; a kustomize entry's name and newName ("" for
    none)."""
    places: tuple[Place | None, ...]
    """The image's scalar; a kustomize entry's newName, newTag and digest (None: absent)."""
    start: int = 0
    """For a kustomize entry (0 otherwise): its first line, its last line (keys it lacks
    go after it), the column of its keys, and whether it is in flow style."""
    last: int = 0
    indent: int = 0
    flow: bool = False


@dataclass(frozen=True)
class Found:
    """An image field in a file that names a pinned app."""

    app: str
    field: Field

    @property
    def kind(self) -> str:
        return self.field.kind

    @property
    def value(self) -> str:
        """The image it makes the overlay run."""
        return self.field.value

    @property
    def line(self) -> int:
        return self.field.line


def _kustomize_image(entry: Any) -> str:
    """The image a kustomize `images:` entry makes the overlay run."""
    name, new_name = text_of(get(entry, "name")) or "", text_of(get(entry, "newName"))
    image = f"{new_name or name}:{text_of(get(entry, 'newTag')) or ''}"
    digest = text_of(get(entry, "digest"))
    return image + (f"@{digest}" if digest else "")


KUSTOMIZE_KEYS = ("newName", "newTag", "digest")


def _fields(document: Document) -> list[Field]:
    """Every image field of a composed file that a pin could match, in file order."""
    found: list[Field] = []
    for doc in document.docs:
        for container in containers(doc):
            node = get(container, "image")
            if node.value:
                place = document.place(node)
                found.append(
                    Field("container", node.start_mark.line, node.value, (node.value,), (place,))
                )
        for entry in kustomize_entries(doc):
            name = get(entry, "name")
            names = (text_of(name) or "", text_of(get(entry, "newName")) or "")
            if any(names):
                keys = [get(entry, key) for key in KUSTOMIZE_KEYS]
                found.append(
                    Field(
                        "kustomize",
                        (name or entry).start_mark.line,
                        _kustomize_image(entry),
                        names,
                        tuple(None if node is None else document.place(node) for node in keys),
                        entry.start_mark.line,
                        max(value.end_mark.line for _, value in entry.value),
                        entry.value[0][0].start_mark.column,
                        bool(entry.flow_style),
                    )
                )
        if is_kustomization(doc):
            continue
        for node in config_images(doc):
            if node.value:
                found.append(
                    Field(
                        "config",
                        node.start_mark.line,
                        node.value,
                        (node.value,),
                        (document.place(node),),
                    )
                )
    return found


@cache_once
def _reader() -> str:
    """What composed a file's fields: these modules, PyYAML's version and libyaml's use."""
    modules = ("gitops/pin.py", "core/kube_yaml.py", "core/bounded.py")
    return cache.key(yaml.__version__, str(yaml.__with_libyaml__), cache.code_digest(*modules))


def image_fields(text: str, name: str, store: cache.Store | None = None) -> list[Field]:
    """The file's image fields: from `store` when this exact text was composed before
    (the entries hold no file name: an error names `name`), else composed, and kept.
    A file that does not compose raises PinError, and nothing is kept for it."""
    entry = cache.key("manifest", _reader(), text) if store is not None else ""
    if store is not None and (known := _decoded(store.get(entry))) is not None:
        return known
    found = _fields(Document(text, name))
    if store is not None:
        store.put(entry, [_encoded(f) for f in found])
    return found


def _encoded(f: Field) -> list[Any]:
    places = [None if p is None else [p.line, p.col, p.end, p.problem] for p in f.places]
    return [f.kind, f.line, f.value, list(f.names), places, f.start, f.last, f.indent, f.flow]


def _decoded(raw: Any) -> list[Field] | None:
    """Fields from a cache entry; None for anything `_encoded` does not write."""
    if not isinstance(raw, list):
        return None
    try:
        found = [
            Field(k, n, v, tuple(names), tuple(map(_place, at)), *r)
            for k, n, v, names, at, *r in raw
            if len(r) == 4  # start, last, indent, flow
        ]
    except (TypeError, ValueError):
        return None
    return found if len(found) == len(raw) and all(map(_well_typed, found)) else None


def _place(raw: Any) -> Place | None:
    if raw is None:
        return None
    line, col, end, problem = raw
    return Place(line, col, end, problem)


def _well_typed(f: Field) -> bool:
    size = 3 if f.kind == "kustomize" else 1
    places = [p for p in f.places if p is not None]
    numbers = [
        f.line,
        f.start,
        f.last,
        f.indent,
        *(n for p in places for n in (p.line, p.col, p.end)),
    ]
    texts = [f.value, *f.names, *(p.problem for p in places)]
    return (
        f.kind in ("container", "config", "kustomize")
        and len(f.places) == size
        and len(f.names) == (2 if size == 3 else 1)
        and all(type(n) is int for n in numbers)
        and all(type(t) is str for t in texts)
        and type(f.flow) is bool
    )


class Pins:
    """Pins indexed once for all the files of an overlay: the first that `Pin.matches` an
    image, found by two look-ups instead of a walk over every pin for every image field
    (100 pins, 1,000 files: 150,000 calls), and the pin written for each app."""

    def __init__(self, pins: Iterable[Pin]) -> None:
        self.pins = list(pins)
        self.by_app = {p.app: p for p in self.pins}
        self.index: dict[tuple[bool, str], int] = {}
        for i, pin in enumerate(self.pins):
            self.index.setdefault((True, pin.app), i)
            self.index.setdefault((False, pin.repository.partition("/")[2]), i)

    def first(self, images: tuple[str, ...]) -> Pin | None:
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


def _indexed(pins: Pins | list[Pin]) -> Pins:
    return pins if isinstance(pins, Pins) else Pins(pins)


def scan(fields: list[Field], pins: Pins | list[Pin]) -> list[Found]:
    """Every image field of a file that names one of the pinned apps."""
    index = _indexed(pins)
    return [Found(pin.app, f) for f in fields if (pin := index.first(f.names))]


def pin_text(
    text: str, name: str, pins: Pins | list[Pin], store: cache.Store | None = None
) -> tuple[str, list[Found]]:
    """The file with every image of a pinned app pinned; and what was found. With
    `store`, a text composed before is not composed again (`image_fields`)."""
    pins = _indexed(pins)
    fields = image_fields(text, name, store)
    found = scan(fields, pins)
    if not found:
        return text, found
    edit = Text(text, name)
    for item in found:
        pin = pins.by_app[item.app]
        if item.kind == "kustomize":
            _pin_kustomize(edit, item.field, pin)
        else:
            edit.replace_at(item.field.places[0], pin.reference)  # type: ignore[arg-type]
    _refuse_shared(edit, fields, found, pins)
    new = edit.rendered()
    if store is not None and (after := _fields_after(edit, new, fields, found, pins.by_app)):
        store.put(cache.key("manifest", _reader(), new), [_encoded(f) for f in after])
    return new, found


def _refuse_shared(edit: Text, fields: list[Field], found: list[Found], pins: Pins) -> None:
    """An edited scalar that several image fields share (an anchor and its aliases) is
    refused unless every one of them is pinned to the same value there: otherwise pinning
    one app would change another app's image, or one that no pin names."""
    wanted: dict[int, dict[tuple[int, int], str]] = {}
    for item in found:
        pin = pins.by_app[item.app]
        wanted[id(item.field)] = {
            (p.line, p.col): v
            for p, v in zip(item.field.places, _written(item.kind, pin), strict=True)
            if p is not None
        }
    sharing: dict[tuple[int, int], set[str | None]] = {}
    for f in fields:
        for p in f.places:
            if p is not None and not p.problem:
                value = wanted.get(id(f), {}).get((p.line, p.col))
                sharing.setdefault((p.line, p.col), set()).add(value)
    for line, col in sorted(edit.edits):
        if len(sharing.get((line, col), ())) > 1:
            raise PinError(
                f"{edit.name}:{line + 1}: this value is shared through a YAML anchor and "
                "alias by image fields that would be pinned differently; write each "
                "field's value on its own"
            )


def _fields_after(
    edit: Text, new: str, fields: list[Field], found: list[Found], pins: dict[str, Pin]
) -> list[Field] | None:
    """The pinned text's fields, from the fields before and the edits: so the next
    promotion finds the text this one wrote composed already. None when lines were
    inserted, or when a scalar is not where the edits put it (never kept then)."""
    if edit.inserts:
        return None
    apps = {id(item.field): item.app for item in found}
    lines = new.splitlines(keepends=True)
    after = []
    for f in fields:
        places = tuple(None if p is None else edit.moved(p) for p in f.places)
        for old, moved in zip(f.places, places, strict=True):
            if old is None or moved is None or old.problem:
                continue
            was = edit.edits.get((old.line, old.col))
            expected = was[1].lstrip(" ") if was else edit.lines[old.line][old.col : old.end]
            if lines[moved.line][moved.col : moved.end] != expected:
                return None
        app = apps.get(id(f))
        if app is None:
            after.append(
                Field(f.kind, f.line, f.value, f.names, places, f.start, f.last, f.indent, f.flow)
            )
            continue
        pin = pins[app]
        names = (f.names[0], pin.repository) if f.kind == "kustomize" else (pin.reference,)
        after.append(
            Field(f.kind, f.line, pin.reference, names, places, f.start, f.last, f.indent, f.flow)
        )
    return after


def _written(kind: str, pin: Pin) -> tuple[str, ...]:
    """What pinning writes at a field's places, in their order."""
    return (pin.repository, pin.tag, pin.digest) if kind == "kustomize" else (pin.reference,)


def _pin_kustomize(edit: Text, entry: Field, pin: Pin) -> None:
    wanted = _written("kustomize", pin)
    missing = [
        key for key, place in zip(KUSTOMIZE_KEYS, entry.places, strict=True) if place is None
    ]
    if missing and entry.flow:
        raise PinError(
            f"{edit.name}:{entry.start + 1}: the images: entry for {pin.app} "
            f"is in flow style and lacks {', '.join(missing)}; write it as a block mapping"
        )
    for key, place, value in zip(KUSTOMIZE_KEYS, entry.places, wanted, strict=True):
        if place is not None:
            edit.replace_at(place, value)
        else:
            edit.insert_after(entry.last, " " * entry.indent + f"{key}: {value}\n")


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
    from ruamel.yaml import YAML  # a round-trip dumper, only for the rare added profile

    stream = StringIO()
    writer = YAML()
    writer.indent(mapping=2, sequence=4, offset=2)
    writer.width = 4096  # an image reference must stay on its line
    writer.dump([entry], stream)
    return stream.getvalue()
