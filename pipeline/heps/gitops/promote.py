"""`heps promote`: pin pushed images in an overlay and commit that, the GitOps way.

Order of events, so a failure anywhere leaves the overlay untouched: every digest is
read back from the registry, every file's new text is computed, and only then are the
files replaced (each through a temporary file and a rename) and committed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heps.core import log
from heps.core.bounded import read_text
from heps.core.errors import ConfigError, StageError
from heps.core.kube_yaml import Document, PinError, get, profiles, text_of
from heps.core.paths import inside, overlay_dir
from heps.core.references import DIGEST, is_valid, split_reference, version_of
from heps.core.settings import Identity, Settings
from heps.core.stages import Stage
from heps.gitops.pin import (
    PROFILE_FILE,
    Pin,
    add_kustomize_images,
    pin_text,
    profile_entry,
    scan,
)
from heps.images.recipes import Recipe
from heps.images.report import FAILED, RecipeReport
from heps.systems.git import Repository, backoff
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


def _yaml_files(root: Path, folder: Path) -> list[Path]:
    """The overlay's YAML files, resolved: one that is a symlink leaving the repository
    is refused before anything is read or written."""
    found = sorted(p for p in folder.rglob("*.y*ml") if p.is_file())
    return [inside(root, p, str(p.relative_to(root))) for p in found]


def _read(root: Path, path: Path) -> str:
    return read_text(path, str(path.relative_to(root)))


def edit_overlay(
    root: Path, settings: Settings, overlay: str, pins: list[Pin], recipes: dict[str, Recipe]
) -> OverlayEdit:
    """What pinning `pins` into the overlay changes, computed without writing anything."""
    root = root.resolve()
    folder = overlay_dir(root, settings, overlay)
    edit = OverlayEdit()
    in_kustomization: set[str] = set()
    for path in _yaml_files(root, folder):
        text = _read(root, path)
        shown = str(path.relative_to(root))
        try:
            new, found = pin_text(text, shown, pins)
        except PinError as exc:
            raise StageError(Stage.PROMOTE, str(exc)) from None
        for item in found:
            edit.used.setdefault(item.app, []).append(f"{shown}:{item.line + 1}")
            edit.before.setdefault(item.app, item.value)
            if item.kind == "kustomize" and path == folder / KUSTOMIZATION:
                in_kustomization.add(item.app)
        if new != text:
            edit.files[path] = new
    via_bases = _used_by_bases(root, root / settings.gitops.overlays_dir / "base", pins)
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
        kustomization = inside(root, kustomization, str(kustomization.relative_to(root)))
        current_text = edit.files.get(kustomization, _read(root, kustomization))
        edit.files[kustomization] = add_kustomize_images(
            current_text, str(kustomization), missing, names
        )
        for pin in missing:
            edit.used.setdefault(pin.app, []).append(f"{kustomization.relative_to(root)} (added)")
    _add_missing_profiles(root, folder, pins, recipes, edit)
    edit.unused = sorted(p.app for p in pins if p.app not in edit.used)
    return edit


def _used_by_bases(root: Path, base: Path, pins: list[Pin]) -> dict[str, str]:
    """App -> the image name the bases write (what a kustomize `images:` entry must match)."""
    used: dict[str, str] = {}
    for path in _yaml_files(root, base) if base.is_dir() else []:
        try:
            found = scan(Document(_read(root, path), str(path.relative_to(root))), pins)
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
    path = inside(root, path, str(path.relative_to(root)))
    text = edit.files.get(path, _read(root, path))
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
    """Never pin what the registry does not hold, nor a tag that names another image than
    the digest beside it: one HEAD per pin, the tag must answer with the pin's digest."""
    bad = [p.reference for p in pins if not is_valid(p.reference)]
    if bad:
        raise ConfigError(f"promote: not image references: {', '.join(map(repr, bad))}")
    held = {p.app: registry.digest(p.app, p.tag) for p in pins}
    wrong = [p for p in pins if held[p.app] != p.digest]
    missing = [p for p in wrong if registry.manifest(p.app, p.digest) is None]
    if missing:
        names = ", ".join(f"{p.app}@{p.digest}" for p in missing)
        raise StageError(
            Stage.PROMOTE, f"not in registry {registry.settings.host}: {names}; nothing was changed"
        )
    for pin in wrong:
        raise StageError(
            Stage.PROMOTE,
            f"{pin.repository}:{pin.tag} holds {held[pin.app] or 'nothing'}, not {pin.digest}; "
            "nothing was changed",
        )


def pins_from_report(path: Path, settings: Settings, recipes: dict[str, Recipe]) -> list[Pin]:
    """Pins for every image a `heps run --report` file says was pushed or found unchanged."""
    where = f"--report {path}"
    try:
        data = json.loads(read_text(path, where))
    except ValueError as exc:
        raise ConfigError(f"{where}: not a heps run report: not JSON ({exc})") from None
    entries = data.get("recipes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: recipes: not a list of entries; pass a heps run report")
    return pins_from_results([_as_report(e) for e in entries], where, settings, recipes)


def _as_report(entry: dict[str, Any]) -> RecipeReport:
    """A report file's entry as the run's own record: the same checks then apply to both.
    Values keep whatever type the file gave them; `_pin_of` checks each one it uses."""
    known = {f.name for f in fields(RecipeReport)} - {"lint", "smoke", "seconds"}
    values = {k: v for k, v in entry.items() if k in known}
    return RecipeReport(**{"name": "", "version": "", "reason": ""} | values)


_REASON = re.compile(r"[A-Za-z0-9 ,.:()/_-]{0,80}")


def pins_from_results(
    results: list[RecipeReport], where: str, settings: Settings, recipes: dict[str, Recipe]
) -> list[Pin]:
    """Pins for every result with a digest that did not fail, by its immutable tag.

    A result is looked up, never copied: the pinned reference is built from the settings'
    registry and namespace, the recipe's name, the result's tag and digest, each checked
    against the reference grammar; the registry then confirms the tag holds the digest."""
    pins = [
        _pin_of(result, f"{where}: recipes[{index}]", settings, recipes)
        for index, result in enumerate(results)
        if result.digest and result.status != FAILED
    ]
    if not pins:
        raise ConfigError(f"{where}: no pushed image to promote")
    return pins


def _pin_of(
    result: RecipeReport, where: str, settings: Settings, recipes: dict[str, Recipe]
) -> Pin:
    def refuse(field_name: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}.{field_name}: {problem}; nothing was changed")

    app, digest = result.name, result.digest
    if not isinstance(app, str) or app not in recipes:
        raise refuse("name", f"{app!r} is not a recipe of this repository")
    if not isinstance(digest, str) or not re.fullmatch(DIGEST, digest):
        raise refuse("digest", f"{digest!r} is not a sha256 digest")
    refs = result.references or [result.image]
    immutable = isinstance(refs, list) and len(refs) > 1
    reference, field_name = (refs[1], "references[1]") if immutable else (refs[0], "image")
    if not isinstance(reference, str) or not is_valid(reference):
        raise refuse(field_name, f"{reference!r} is not an image reference")
    repository = settings.registry.repository(app)
    named, tag, _ = split_reference(reference)
    if named != repository or not tag:
        raise refuse(field_name, f"{reference!r} is not a tag of {repository}")
    reason = result.detail or result.reason
    if not isinstance(reason, str) or not _REASON.fullmatch(reason):
        raise refuse("reason", "not a short line of plain text")
    return Pin(app, repository, tag, digest, version_of(tag), reason)


def pins_from_overlay(
    root: Path, settings: Settings, overlay: str, apps: dict[str, str]
) -> list[Pin]:
    """What an overlay runs now, as pins (for promotion to the next environment)."""
    pins: dict[str, Pin] = {}
    for found in current(root, settings, overlay, apps):
        _, tag, digest = split_reference(found["image"])
        if digest and tag and found["app"] not in pins:  # the repository is ours, not copied
            app = found["app"]
            pins[app] = Pin(app, apps[app], tag, digest, version_of(tag), "promoted")
    return list(pins.values())


def current(
    root: Path, settings: Settings, overlay: str, apps: dict[str, str]
) -> list[dict[str, Any]]:
    """Every pinned image field of an overlay: app, image, file, line."""
    root = root.resolve()
    folder = overlay_dir(root, settings, overlay)
    texts = {str(p.relative_to(root)): _read(root, p) for p in _yaml_files(root, folder)}
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
    git = Repository(root)
    for sha in git.history(str(folder)):
        texts = {
            n: (git.show(sha, n) or b"").decode("utf-8", "replace")
            for n in git.files_at(sha, str(folder))
            if n.endswith((".yaml", ".yml"))
        }
        try:
            images = {i["image"] for i in pinned_in(texts, apps)}
        except PinError:
            continue  # a commit with a broken file is no rollback target
        for image in sorted(images - now):
            _, tag, digest = split_reference(image)
            if digest and tag:  # the repository is ours, the registry confirms tag and digest
                why = f"rollback from {sha[:12]}"
                return Pin(app, repository, tag, digest, version_of(tag), why)
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
    url = Repository(settings.repo).config("remote.origin.url")
    if not url:
        raise ConfigError(
            "promote --push: this repository has no `origin` remote; add one or "
            "pass --gitops-repo URL"
        )
    return url


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
    if not push:  # this working tree, no remote: one promotion at a time per checkout
        with _checkout_lock(settings.repo):
            target = ""
            if new_branch:
                target = fresh_branch(settings.repo, new_branch)
                Repository(settings.repo).switch_new(target)
            edit = edit_overlay(settings.repo, settings, overlay, pins, recipes)
            if not edit.files:
                return Promoted(None, target, edit)
            message_text = message(overlay, pins, edit)
            sha = _commit_here(settings.repo, edit.files, message_text, author, committer)
            return Promoted(sha, target, edit)
    url = _target(settings, remote)
    with tempfile.TemporaryDirectory(prefix="heps-promote-") as tmp:
        work = Path(tmp) / "repo"
        start = branch or settings.gitops.branch
        clone = Repository.clone(url, work, branch=start)
        target = fresh_branch(work, new_branch, url) if new_branch else start
        apps = {p.app: p.repository for p in pins}
        before = _pinned_images(work, settings, overlay, apps)
        for attempt in range(1, settings.gitops.attempts + 1):
            if attempt > 1:
                _refuse_conflicts(before, _pinned_images(work, settings, overlay, apps), pins)
            edit = edit_overlay(work, settings, overlay, pins, recipes)
            if not edit.files:
                return Promoted(None, target, edit, attempt)
            write_all(edit.files)
            sha = clone.commit(list(edit.files), message(overlay, pins, edit), author, committer)
            pushed = clone.push(target)
            if pushed.pushed:
                return Promoted(sha, target, edit, attempt)
            log.phase(
                Stage.PROMOTE,
                None,
                f"push to {target} lost a race (attempt {attempt}); re-pinning on the new head",
            )
            if new_branch:
                raise StageError(
                    Stage.PROMOTE, f"branch {target} already exists on the remote: {pushed.detail}"
                )
            clone.refresh(target)
            backoff(attempt)
        raise StageError(
            Stage.PROMOTE,
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
                Stage.PROMOTE,
                f"conflicting pins for {pin.app}: the remote now has "
                f"{', '.join(sorted(theirs))}, this promotion wants {pin.reference}; "
                "decide which one to run and promote again",
            )


def production_branch(apps: list[str], now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
    slug = re.sub(r"[^a-z0-9-]+", "-", "-".join(sorted(apps)))[:80].strip("-")
    return f"promote/production-{stamp}-{slug}"


def fresh_branch(root: Path, name: str, url: str | None = None) -> str:
    """`name`, or `name-2`, `name-3`...: the first that no local (and, with `url`, no
    remote) branch has yet, so a second promotion on one day opens its own branch."""
    git = Repository(root)
    taken = git.branches() | (git.remote_branches(url) if url else set())
    candidates = (name if n == 1 else f"{name}-{n}" for n in range(1, len(taken) + 2))
    return next(c for c in candidates if c not in taken)


@contextmanager
def _checkout_lock(root: Path) -> Iterator[None]:
    """An exclusive lock on the checkout for the whole read-edit-commit, so two local
    promotions cannot interleave (nor commit each other's pins): the second waits."""
    path = Repository(root).common_dir / "heps-promote.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _commit_here(
    root: Path, files: dict[Path, str], text: str, author: Identity, committer: Identity
) -> str:
    """Write and commit `files` in the checkout; when the commit fails, every file and the
    index are as before. Files with uncommitted edits are refused, not swept in."""
    git = Repository(root)
    dirty = git.dirty_files(list(files))
    if dirty:
        names = ", ".join(dirty)
        raise ConfigError(
            f"{names}: uncommitted changes; commit or discard them first "
            "(a promotion commits its own pins only)"
        )
    created = [p for p in files if not p.exists()]
    existed = [p for p in files if p not in created]
    write_all(files)
    try:
        return git.commit(list(files), text, author, committer)
    except BaseException:  # clean before (checked above): HEAD's version is the old text
        git.unstage(list(files))
        if existed:
            git.restore(existed)
        for path in created:
            path.unlink(missing_ok=True)
        raise
