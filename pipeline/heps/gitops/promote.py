"""`heps promote`: the transaction around the overlay edit, the GitOps way.

Order of events, so a failure anywhere leaves the overlay untouched: every digest is
read back from the registry (`sources`), every file's new text is computed
(`overlay`), and only then are the files replaced (each through a temporary file and a
rename) and committed, locally under a checkout lock or in a fresh clone pushed with
retries on a lost race.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from heps.core import log
from heps.core.cache import Caches, Store
from heps.core.errors import ConfigError, StageError
from heps.core.paths import locked, overlay_dir
from heps.core.settings import Identity, Settings
from heps.core.stages import Stage
from heps.gitops.overlay import OverlayEdit, edit_overlay, message
from heps.gitops.pin import Pin
from heps.gitops.sources import current, verify_in_registry
from heps.images.recipes import Recipe
from heps.systems.git import Repository, backoff
from heps.systems.registry import Registry


class Staging:
    """Every file of `files` written to a temporary file beside its target, in the
    background from the moment the edit is known, while the caller checks what it must
    (the registry's answer, uncommitted edits). No target changes before `replace`, which
    renames only when every file is written: all or none. Leaving the block without
    `replace` removes the temporary files.

    One writer: the kernel creates and renames the files of a folder one at a time under
    the folder's lock, so eight writers only spun on it (0.25 s more system CPU, no less
    wall). Nothing is staged while the edit is computed: beside the parser, the writer's
    system calls waited for the GIL, and the edit took two to three times as long."""

    def __init__(self, files: dict[Path, str]) -> None:
        self.files = files
        self._writer = ThreadPoolExecutor(1)
        self._staged = [self._writer.submit(_stage, path, text) for path, text in files.items()]

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *_: object) -> None:
        for future in self._staged:
            future.cancel()
        self._writer.shutdown()
        _remove(self._staged)

    def replace(self) -> None:
        """Rename every temporary file over its target, once all are written."""
        staged = [future.result() for future in self._staged]
        self._staged = []
        for done, (tmp, path) in enumerate(zip(staged, self.files, strict=True)):
            try:
                os.replace(tmp, path)
            except BaseException:  # leave no temporary file behind
                for left in staged[done:]:
                    os.unlink(left)
                raise


def write_all(files: dict[Path, str]) -> None:
    """Replace every file or none."""
    with Staging(files) as staging:
        staging.replace()


def _remove(staged: list[Future[str]]) -> None:
    for future in staged:  # a failed one removed its own file
        if not future.cancelled() and future.exception() is None:
            os.unlink(future.result())


def _stage(path: Path, text: str) -> str:
    """A temporary file beside `path` with `text` and `path`'s permissions (0644 when new),
    written with bare system calls: a file object would add five calls (and GIL hand-overs)
    per file."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        data = memoryview(text.encode())
        while data:
            data = data[os.write(fd, data) :]
        os.fchmod(fd, mode)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    return tmp


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


@dataclass(frozen=True)
class Request:
    """One promotion: which pins go into which overlay, and where the commit goes."""

    overlay: str
    pins: list[Pin]
    recipes: dict[str, Recipe]
    """The repository's recipes (for profiles an overlay lacks)."""
    push: bool = False
    """Commit in a fresh clone and push with retries, not in this checkout."""
    remote: str | None = None
    """The GitOps repository to push to (default: this checkout's origin)."""
    branch: str | None = None
    """The branch to start from and push to (default: gitops.branch)."""
    new_branch: str | None = None
    """Commit on a new branch of this name (promotion to production, for review)."""


def promote(settings: Settings, registry: Registry, request: Request) -> Promoted:
    """The registry is asked while the overlay is read and edited (its answers are network
    waits, the edit is CPU); no file is replaced before it has answered (a refusal removes
    what was staged meanwhile), and its error wins over any later one, as when it ran
    first."""
    store = Caches.under(settings.state_dir).manifests
    with ThreadPoolExecutor(1) as background:
        verified = background.submit(verify_in_registry, registry, request.pins)
        try:
            return _promote(settings, request, verified.result, store)
        finally:
            store.save()
            verified.result()


def _promote(
    settings: Settings, request: Request, verified: Callable[[], None], store: Store
) -> Promoted:
    overlay, pins, recipes = request.overlay, request.pins, request.recipes
    author, committer = settings.gitops.author, settings.gitops.committer or settings.gitops.author
    if not request.push:  # this working tree, no remote: one promotion at a time per checkout
        with _checkout_lock(settings.repo), ThreadPoolExecutor(1) as side:
            target = ""
            if request.new_branch:  # a branch is a write: only once the registry agreed
                verified()
                target = fresh_branch(settings.repo, request.new_branch)
                Repository(settings.repo).switch_new(target)
            # git reads the overlay for uncommitted edits while the edit is computed
            folder = overlay_dir(settings.repo, settings, overlay)
            uncommitted = side.submit(Repository(settings.repo).uncommitted, folder)
            edit = edit_overlay(settings.repo, settings, overlay, pins, recipes, store=store)
            with Staging(edit.files) as staging:
                verified()
                if not edit.files:
                    return Promoted(None, target, edit)
                text = message(overlay, pins, edit)
                sha = _commit_here(
                    settings.repo, staging, uncommitted.result(), text, author, committer
                )
            return Promoted(sha, target, edit)
    url = _target(settings, request.remote)
    with tempfile.TemporaryDirectory(prefix="heps-promote-") as tmp:
        work = Path(tmp) / "repo"
        start = request.branch or settings.gitops.branch
        clone = Repository.clone(url, work, branch=start)
        target = fresh_branch(work, request.new_branch, url) if request.new_branch else start
        apps = {p.app: p.repository for p in pins}
        before = _pinned_images(work, settings, overlay, apps)
        verified()
        for attempt in range(1, settings.gitops.attempts + 1):
            if attempt > 1:
                _refuse_conflicts(before, _pinned_images(work, settings, overlay, apps), pins)
            edit = edit_overlay(work, settings, overlay, pins, recipes, store=store)
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
            if request.new_branch:
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
    with locked(Repository(root).common_dir / "heps-promote.lock"):
        yield


def _commit_here(
    root: Path,
    staging: Staging,
    uncommitted: set[str],
    text: str,
    author: Identity,
    committer: Identity,
) -> str:
    """Write and commit the staged files in the checkout; when the commit fails, every file
    and the index are as before. Files among `uncommitted` (repository-relative names of
    files with uncommitted edits) are refused, not swept in."""
    git = Repository(root)
    files = staging.files
    top = git.toplevel
    dirty = sorted(name for name in (str(p.relative_to(top)) for p in files) if name in uncommitted)
    if dirty:
        names = ", ".join(dirty)
        raise ConfigError(
            f"{names}: uncommitted changes; commit or discard them first "
            "(a promotion commits its own pins only)"
        )
    created = [p for p in files if not p.exists()]
    existed = [p for p in files if p not in created]
    staging.replace()
    try:
        return git.commit(list(files), text, author, committer, created)
    except BaseException:  # clean before (checked above): HEAD's version is the old text
        git.unstage(list(files))
        if existed:
            git.restore(existed)
        for path in created:
            path.unlink(missing_ok=True)
        raise
