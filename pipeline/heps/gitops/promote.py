"""`heps promote`: pin pushed images in an overlay and commit that, the GitOps way.

Order of events, so a failure anywhere leaves the overlay untouched: every digest is
read back from the registry, every file's new text is computed, and only then are the
files replaced (each through a temporary file and a rename) and committed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heps.core import log
from heps.core.errors import ConfigError, StageError
from heps.core.kube_yaml import Document, PinError, get, profiles, text_of
from heps.core.paths import overlay_dir
from heps.core.references import split_reference, version_of
from heps.core.settings import Settings
from heps.gitops.pin import (
    PROFILE_FILE,
    Pin,
    add_kustomize_images,
    pin_text,
    profile_entry,
    scan,
)
from heps.images.recipes import Recipe
from heps.systems import git
from heps.systems.registry import Registry

KUSTOMIZATION = "kustomization.yaml"


@dataclass
class OverlayEdit:
    files: dict[Path, str] = field(default_factory=dict)
    """New text of every file that changes."""
    used: dict[str, list[str]] = field(default_factory=dict)
    """App -> where the overlay refers to it (file:line)."""
    unused: list[str] = field(default_factory=list)
    """Apps pinned by nobody: the overlay and its bases do not use them."""
    before: dict[str, str] = field(default_factory=dict)
    """App -> the image its first pinned field named before this edit."""


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.y*ml") if p.is_file())


def edit_overlay(
    root: Path, settings: Settings, overlay: str, pins: list[Pin], recipes: dict[str, Recipe]
) -> OverlayEdit:
    """What pinning `pins` into the overlay changes, computed without writing anything."""
    folder = overlay_dir(root, settings, overlay)
    edit = OverlayEdit()
    in_kustomization: set[str] = set()
    for path in _yaml_files(folder):
        text = path.read_text(encoding="utf-8")
        shown = str(path.relative_to(root))
        try:
            new, found = pin_text(text, shown, pins)
        except PinError as exc:
            raise StageError("promote", str(exc)) from None
        for item in found:
            edit.used.setdefault(item.app, []).append(f"{shown}:{item.line + 1}")
            edit.before.setdefault(item.app, item.value)
            if item.kind == "kustomize" and path == folder / KUSTOMIZATION:
                in_kustomization.add(item.app)
        if new != text:
            edit.files[path] = new
    via_bases = _used_by_bases(root / settings.gitops.overlays_dir / "base", pins)
    missing = [p for p in pins if p.app in via_bases and p.app not in in_kustomization]
    names = {p.app: via_bases[p.app] for p in missing}
    if missing:
        kustomization = folder / KUSTOMIZATION
        if not kustomization.exists():
            raise StageError(
                "promote",
                f"{kustomization.relative_to(root)}: missing; "
                "an overlay needs a kustomization.yaml to pin images of its bases",
            )
        current_text = edit.files.get(kustomization, kustomization.read_text(encoding="utf-8"))
        edit.files[kustomization] = add_kustomize_images(
            current_text, str(kustomization), missing, names
        )
        for pin in missing:
            edit.used.setdefault(pin.app, []).append(f"{kustomization.relative_to(root)} (added)")
    _add_missing_profiles(root, folder, pins, recipes, edit)
    edit.unused = sorted(p.app for p in pins if p.app not in edit.used)
    return edit


def _used_by_bases(base: Path, pins: list[Pin]) -> dict[str, str]:
    """App -> the image name the bases write (what a kustomize `images:` entry must match)."""
    used: dict[str, str] = {}
    for path in _yaml_files(base) if base.is_dir() else []:
        try:
            found = scan(Document(path.read_text(encoding="utf-8"), str(path)), pins)
        except PinError as exc:
            raise StageError("promote", str(exc)) from None
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
    text = edit.files.get(path, path.read_text(encoding="utf-8"))
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
        edit.files[path] = text + ("" if text.endswith("\n") else "\n") + added


def write_all(files: dict[Path, str]) -> None:
    """Replace every file or none: all temporary files are written before any rename."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
            staged.append((tmp, path))
    except BaseException:
        for tmp, _ in staged:
            os.unlink(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


def verify_in_registry(registry: Registry, pins: list[Pin]) -> None:
    """Read every manifest back: never pin what the registry does not hold."""
    missing = [p for p in pins if registry.manifest(p.app, p.digest) is None]
    if missing:
        names = ", ".join(f"{p.app}@{p.digest}" for p in missing)
        raise StageError(
            "promote", f"not in registry {registry.settings.host}: {names}; nothing was changed"
        )


def pins_from_report(path: Path) -> list[Pin]:
    """Pins for every image a `heps run --report` file says was pushed or found unchanged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--report {path}: not a readable heps report ({exc})") from None
    return pins_from_results(data.get("recipes", []), f"--report {path}")


def pins_from_results(entries: list[dict[str, Any]], where: str) -> list[Pin]:
    """Pins for every report entry with a digest that did not fail, by its immutable tag."""
    pins = []
    for entry in entries:
        if not entry.get("digest") or entry.get("status") == "failed":
            continue
        ref = entry["references"][1] if len(entry.get("references", [])) > 1 else entry["image"]
        repo, tag, _ = split_reference(ref)
        pins.append(
            Pin(
                entry["name"],
                repo,
                tag or entry["version"],
                entry["digest"],
                entry["version"],
                entry.get("detail") or entry.get("reason", ""),
            )
        )
    if not pins:
        raise ConfigError(f"{where}: no pushed image to promote")
    return pins


def pins_from_overlay(
    root: Path, settings: Settings, overlay: str, apps: dict[str, str]
) -> list[Pin]:
    """What an overlay runs now, as pins (for promotion to the next environment)."""
    pins: dict[str, Pin] = {}
    for found in current(root, settings, overlay, apps):
        repo, tag, digest = split_reference(found["image"])
        if digest and found["app"] not in pins:
            version = version_of(tag or "")
            pins[found["app"]] = Pin(
                found["app"], repo, tag or version, digest, version, "promoted"
            )
    return list(pins.values())


def current(
    root: Path, settings: Settings, overlay: str, apps: dict[str, str]
) -> list[dict[str, Any]]:
    """Every pinned image field of an overlay: app, image, file, line."""
    folder = overlay_dir(root, settings, overlay)
    texts = {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in _yaml_files(folder)}
    return pinned_in(texts, apps)


def pinned_in(texts: dict[str, str], apps: dict[str, str]) -> list[dict[str, Any]]:
    probes = [Pin(app, repo, "", "") for app, repo in apps.items()]
    result = []
    for name, text in sorted(texts.items()):
        for found in scan(Document(text, name), probes):
            result.append(
                {"app": found.app, "image": found.value, "where": f"{name}:{found.line + 1}"}
            )
    return result


def previous_pin(root: Path, settings: Settings, overlay: str, app: str, repository: str) -> Pin:
    """The last pin of `app` in the overlay's git history that differs from today's."""
    folder = overlay_dir(root, settings, overlay).relative_to(root)
    apps = {app: repository}
    now = {i["image"] for i in current(root, settings, overlay, apps)}
    commits = git.git(root, "log", "--format=%H", "--", str(folder)).stdout.split()
    for sha in commits:
        names = git.git(root, "ls-tree", "-r", "--name-only", sha, "--", str(folder)).stdout.split()
        texts = {
            n: git.git(root, "show", f"{sha}:{n}").stdout
            for n in names
            if n.endswith((".yaml", ".yml"))
        }
        try:
            images = {i["image"] for i in pinned_in(texts, apps)}
        except PinError:
            continue  # a commit with a broken file is no rollback target
        for image in sorted(images - now):
            repo, tag, digest = split_reference(image)
            if digest:
                version = version_of(tag or "")
                return Pin(app, repo, tag or version, digest, version, f"rollback from {sha[:12]}")
    raise ConfigError(
        f"rollback {app}: no earlier pin in the history of {folder}; name one with --to VERSION"
    )


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


@dataclass
class Promoted:
    commit: str | None
    """None when nothing changed (no commit)."""
    branch: str
    edit: OverlayEdit
    attempts: int = 1


def _target(settings: Settings, remote: str | None) -> str:
    if remote:
        return remote
    done = subprocess.run(
        ["git", "-C", str(settings.repo), "remote", "get-url", "origin"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ConfigError(
            "promote --push: this repository has no `origin` remote; add one or "
            "pass --gitops-repo URL"
        )
    return done.stdout.strip()


def promote(
    settings: Settings,
    registry: Registry,
    recipes: dict[str, Recipe],
    overlay: str,
    pins: list[Pin],
    push: bool,
    remote: str | None = None,
    branch: str | None = None,
    new_branch: str | None = None,
) -> Promoted:
    verify_in_registry(registry, pins)
    author, committer = settings.gitops.author, settings.gitops.committer or settings.gitops.author
    if not push:  # this working tree, this branch, no remote
        edit = edit_overlay(settings.repo, settings, overlay, pins, recipes)
        if not edit.files:
            return Promoted(None, "", edit)
        write_all(edit.files)
        sha = git.commit(
            settings.repo, list(edit.files), message(overlay, pins, edit), author, committer
        )
        return Promoted(sha, "", edit)
    url = _target(settings, remote)
    with tempfile.TemporaryDirectory(prefix="heps-promote-") as tmp:
        work = Path(tmp) / "repo"
        start = branch or settings.gitops.branch
        clone = subprocess.run(
            ["git", "clone", "-q", "--branch", start, "--single-branch", url, str(work)],
            capture_output=True,
            text=True,
        )
        if clone.returncode != 0:
            raise StageError(
                "promote", git.scrub(f"cannot clone {url} ({start}): {clone.stderr.strip()}")
            )
        target = new_branch or start
        apps = {p.app: p.repository for p in pins}
        before = _pinned_images(work, settings, overlay, apps)
        for attempt in range(1, settings.gitops.attempts + 1):
            if attempt > 1:
                _refuse_conflicts(before, _pinned_images(work, settings, overlay, apps), pins)
            edit = edit_overlay(work, settings, overlay, pins, recipes)
            if not edit.files:
                return Promoted(None, target, edit, attempt)
            write_all(edit.files)
            sha = git.commit(
                work, list(edit.files), message(overlay, pins, edit), author, committer
            )
            pushed, why = git.push(work, target)
            if pushed:
                return Promoted(sha, target, edit, attempt)
            log.phase(
                "promote",
                None,
                f"push to {target} lost a race (attempt {attempt}); re-pinning on the new head",
            )
            if new_branch:
                raise StageError("promote", f"branch {target} already exists on the remote: {why}")
            git.refresh(work, target)
            git.backoff(attempt)
        raise StageError(
            "promote",
            f"gave up after {settings.gitops.attempts} attempts: other "
            f"writers kept moving {target}; run the promotion again",
        )


def _pinned_images(
    root: Path, settings: Settings, overlay: str, apps: dict[str, str]
) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for item in current(root, settings, overlay, apps):
        found.setdefault(item["app"], set()).add(item["image"])
    return found


def _refuse_conflicts(
    before: dict[str, set[str]], now: dict[str, set[str]], pins: list[Pin]
) -> None:
    """Another writer re-pinned one of our apps meanwhile: neither pin may silently win."""
    for pin in pins:
        theirs = now.get(pin.app, set()) - before.get(pin.app, set())
        if theirs and theirs != {pin.reference}:
            raise StageError(
                "promote",
                f"conflicting pins for {pin.app}: the remote now has "
                f"{', '.join(sorted(theirs))}, this promotion wants {pin.reference}; "
                "decide which one to run and promote again",
            )


def production_branch(apps: list[str], now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
    slug = re.sub(r"[^a-z0-9-]+", "-", "-".join(sorted(apps)))[:80].strip("-")
    return f"promote/production-{stamp}-{slug}"
