"""The overlay edit, pure: every file of an overlay with the pins applied, computed from
what is on disk; nothing is written here (argocd-image-updater's edit apart from its
git write-back). `promote` writes and commits the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from heps.core.bounded import read_text
from heps.core.cache import Store
from heps.core.errors import StageError
from heps.core.kube_yaml import Document, PinError, get, profiles, text_of
from heps.core.paths import confine, overlay_dir
from heps.core.references import split_reference
from heps.core.settings import Settings
from heps.core.stages import Stage
from heps.gitops.pin import (
    PROFILE_FILE,
    Pin,
    Pins,
    add_kustomize_images,
    image_fields,
    pin_text,
    profile_entry,
    scan,
)
from heps.images.recipes import Recipe

KUSTOMIZATION = "kustomization.yaml"


@dataclass
class OverlayEdit:
    files: dict[Path, str] = field(default_factory=dict)
    """New text of every file that changes."""
    old: dict[Path, str] = field(default_factory=dict)
    """The text each of them had when read (what a failed write puts back)."""
    used: dict[str, list[str]] = field(default_factory=dict)
    """App -> where the overlay refers to it (file:line)."""
    unused: list[str] = field(default_factory=list)
    """Apps pinned by nobody: the overlay and its bases do not use them."""
    before: dict[str, str] = field(default_factory=dict)
    """App -> the image its first pinned field named before this edit."""


def yaml_files(root: Path, folder: Path) -> list[Path]:
    """The overlay's YAML files, resolved: each must resolve inside the overlay's own
    folder, so a symlink to another overlay's file (testbed's kustomization.yaml to
    production's) or out of the repository is refused before anything is read or written."""
    folder = folder.resolve()
    cut = len(str(folder)) + 1
    return [
        _own(root, folder, p) if link or ".git" in str(p)[cut:].split("/") else p
        for p, link in sorted(_found(folder))
    ]


def _found(folder: Path) -> Iterator[tuple[Path, bool]]:
    """(file, is a symlink) for what `folder.rglob("*.y*ml")` finds that is a file, from
    the directory entries: a plain file under a resolved folder, reached through no
    symlinked folder (none is entered, as rglob), is resolved already and needs no `confine`."""
    try:
        entries = list(os.scandir(folder))
    except PermissionError:  # as rglob: an unreadable folder holds nothing
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _found(Path(entry.path))
        elif fnmatchcase(entry.name, "*.y*ml") and entry.is_file():
            yield Path(entry.path), entry.is_symlink()


def _own(root: Path, folder: Path, path: Path) -> Path:
    """`path` resolved inside `folder`; both are under `root`, so names are slices."""
    cut = len(str(root)) + 1
    return confine(folder, path, file=str(path)[cut:], field=f"file of {str(folder)[cut:]}")


def read_file(root: Path, path: Path) -> str:
    return read_text(path, str(path.relative_to(root)))


def edit_overlay(
    root: Path,
    settings: Settings,
    overlay: str,
    pins: list[Pin],
    recipes: dict[str, Recipe],
    store: Store | None = None,
) -> OverlayEdit:
    """What pinning `pins` into the overlay changes, computed without writing anything.
    `store` keeps the files' image fields by their text (`image_fields`)."""
    root = root.resolve()
    folder = overlay_dir(root, settings, overlay)
    edit = OverlayEdit()
    in_kustomization: set[str] = set()
    texts = [(path, read_file(root, path)) for path in yaml_files(root, folder)]
    indexed = Pins(pins)
    for path, text in texts:
        shown = str(path.relative_to(root))
        try:
            new, found = pin_text(text, shown, indexed, store)
        except PinError as exc:
            raise StageError(Stage.PROMOTE, str(exc)) from None
        for item in found:
            edit.used.setdefault(item.app, []).append(f"{shown}:{item.line + 1}")
            edit.before.setdefault(item.app, item.value)
            if item.kind == "kustomize" and path == folder / KUSTOMIZATION:
                in_kustomization.add(item.app)
        if new != text:
            edit.files[path], edit.old[path] = new, text
    via_bases = _used_by_bases(root, root / settings.gitops.overlays_dir / "base", pins, store)
    missing = [p for p in pins if p.app in via_bases and p.app not in in_kustomization]
    names = {p.app: via_bases[p.app] for p in missing}
    if missing:
        kustomization = folder / KUSTOMIZATION
        if not kustomization.exists():
            raise StageError(
                Stage.PROMOTE,
                f"{kustomization.relative_to(root)}: missing; "
                "an overlay needs a kustomization.yaml to pin images of its bases",
            )
        kustomization = _own(root, folder, kustomization)
        if kustomization not in edit.old:
            edit.old[kustomization] = read_file(root, kustomization)
        current_text = edit.files.get(kustomization, edit.old[kustomization])
        edit.files[kustomization] = add_kustomize_images(
            current_text, str(kustomization), missing, names
        )
        for pin in missing:
            edit.used.setdefault(pin.app, []).append(f"{kustomization.relative_to(root)} (added)")
    _add_missing_profiles(root, folder, pins, recipes, edit)
    edit.unused = sorted(p.app for p in pins if p.app not in edit.used)
    return edit


def _used_by_bases(
    root: Path, base: Path, pins: list[Pin], store: Store | None = None
) -> dict[str, str]:
    """App -> the image name the bases write (what a kustomize `images:` entry must match)."""
    used: dict[str, str] = {}
    indexed = Pins(pins)
    for path in yaml_files(root, base) if base.is_dir() else []:
        try:
            text, shown = read_file(root, path), str(path.relative_to(root))
            found = scan(image_fields(text, shown, store), indexed)
        except PinError as exc:
            raise StageError(Stage.PROMOTE, str(exc)) from None
        for item in found:
            if item.kind == "container":
                used.setdefault(item.app, split_reference(item.value)[0])
    return used


def _add_missing_profiles(
    root: Path, folder: Path, pins: list[Pin], recipes: dict[str, Recipe], edit: OverlayEdit
) -> None:
    """User-facing apps without a profile_list entry get one, generated from the recipe."""
    path = folder / PROFILE_FILE
    if not path.exists():
        return
    path = _own(root, folder, path)
    old = edit.old[path] if path in edit.old else read_file(root, path)
    text = edit.files.get(path, old)
    listed = {
        text_of(get(entry, "slug"))
        for doc in Document(text, str(path)).docs
        for entry in profiles(doc)
    }
    added = ""
    for pin in pins:
        recipe = recipes.get(pin.app)
        if recipe is None or recipe.profile is None or pin.app in listed:
            continue
        p = recipe.profile
        entry = profile_entry(
            pin.app,
            p.display_name,
            p.description,
            pin.reference,
            p.cpu,
            p.memory,
            p.gpu,
            p.default,
            p.node_selector,
        )
        added += entry
        edit.used.setdefault(pin.app, []).append(f"{path.relative_to(root)} (added)")
    if added:
        edit.files[path], edit.old[path] = text + ("" if text.endswith("\n") else "\n") + added, old


def message(overlay: str, pins: list[Pin], edit: OverlayEdit) -> str:
    changed = [p for p in pins if p.app in edit.used]
    title = f"promote {overlay}: " + ", ".join(f"{p.app} {p.version or p.tag}" for p in changed)
    lines = []
    for p in changed:
        old = split_reference(edit.before.get(p.app, ""))[2]
        notes = [p.reason] if p.reason else []
        notes += [f"was {old}"] if old and old != p.digest else []
        note = f" ({'; '.join(notes)})" if notes else ""
        lines.append(f"- {p.app} {p.version or p.tag} {p.digest}{note}")
    return f"{title[:200]}\n\n" + "\n".join(lines) + f"\n\nHeps-Promotion: {overlay}\n"
