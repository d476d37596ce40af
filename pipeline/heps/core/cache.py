"""Content-keyed caches in the operator's state folder: parsed recipes and Dockerfiles by
their text, file digests by the file's identity.

A `Store` is one file of entries, each under a key that hashes exactly what the value
was computed from (the input's bytes, the code that read them): an entry can only
ever be found again for the same input, so it cannot go stale and a merge request's
files cannot stand in for another's. The file is replaced whole (a temporary file, then
`os.replace`), so a run killed while saving leaves the previous file or the new one;
it carries a digest of its body, so a file damaged any other way is noticed, reported
in one warning line and rebuilt. Entries unused for the longest are dropped past a
bound.

`FileDigests` skips re-hashing a file whose identity is unchanged, as git's index does:
device, inode, size, mode, mtime and ctime. The kernel sets ctime to the current time
on every write, rename or chmod and no call sets it back, so a file changed after its
entry was taken has another ctime; an entry is only taken for a file whose ctime is
older than `RACY_NS` when it was hashed (git's racy-timestamp rule): a write in
the same clock tick as the hash, which the timestamps could not tell apart, is hashed
again next time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import heps
from heps.core import log
from heps.core.paths import write_atomic
from heps.core.stages import Stage

FORMAT = b"heps-cache-1"
MAX_FILE = 64 << 20
"""A cache file larger than this is not read (64 MiB): the bound on what a run loads."""
RACY_NS = 2_000_000_000
"""How old a file's ctime must be before its digest is kept: 2 s, far above any
timestamp granularity a filesystem or clock has."""
PARSED_LIMIT = 40_000
FILES_LIMIT = 100_000
"""Entries kept: four times what the 5,000 recipes of the scale benchmark need."""
MANIFESTS_LIMIT = 10_000
"""Overlay files' image fields kept: five times the promotion benchmark's 1,000 files in
both their states. Every promotion loads the whole file (about 6 µs an entry, 60 ms at
the bound, against 180 µs to compose a file), so the bound stays near what is used."""


def code_digest(*modules: str) -> str:
    """A digest of heps's version and the named files of the package (modules, schemas):
    what keys entries to the code that computed them, so an upgrade never reads them."""
    h = hashlib.sha256(heps.__version__.encode())
    package = resources.files("heps")
    for name in modules:
        h.update(b"\0" + name.encode() + b"\0" + package.joinpath(name).read_bytes())
    return h.hexdigest()


def key(*parts: str | bytes) -> str:
    """An entry's key: the digest of its parts, each length-prefixed (no two part lists
    hash alike by moving a boundary)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()


class Store:
    """Entries of one kind, loaded on first use, saved by `save()` when one was added."""

    def __init__(self, path: Path, limit: int, stage: Stage = Stage.PLAN) -> None:
        self.path = path
        self.limit = limit
        self.stage = stage
        """The stage whose warning names a damaged file."""
        self._old: dict[str, Any] | None = None
        self._used: dict[str, Any] = {}
        self._added = False

    def _load(self) -> dict[str, Any]:
        if self._old is None:
            self._old = self._read()
        return self._old

    def _read(self) -> dict[str, Any]:
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_FILE + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            return self._corrupt(exc.strerror or "unreadable")
        head, _, body = data.partition(b"\n")
        if len(data) > MAX_FILE:
            return self._corrupt(f"larger than {MAX_FILE >> 20} MiB")
        if head != FORMAT + b" " + hashlib.sha256(body).hexdigest().encode():
            return self._corrupt("its digest does not match its content")
        try:
            entries = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser
            entries = None
        if not isinstance(entries, dict):
            return self._corrupt("not a cache file")
        return entries

    def _corrupt(self, why: str) -> dict[str, Any]:
        log.phase(
            self.stage,
            None,
            f"cache {self.path}: {why}; ignored, reading the files afresh",
            logging.WARNING,
        )
        self._added = True  # rewritten whole on save
        return {}

    def get(self, entry: str) -> Any | None:
        if entry in self._used:
            return self._used[entry]
        value = self._load().get(entry)
        if value is not None:
            self._used[entry] = value
        return value

    def put(self, entry: str, value: Any) -> None:
        if self.get(entry) == value:  # known already: no reason to write the file again
            return
        self._used[entry] = value
        self._added = True

    def save(self) -> None:
        """Write the entries used or added this run, then the others most recently used
        first, up to `limit`; nothing when nothing was added. A cache that cannot be
        written (a read-only state folder) costs speed, never the run."""
        if not self._added:
            return
        kept = dict(list(self._used.items())[: self.limit])
        for entry, value in self._load().items():
            if len(kept) >= self.limit:
                break
            kept.setdefault(entry, value)
        body = json.dumps(kept, separators=(",", ":")).encode()
        digest = hashlib.sha256(body).hexdigest().encode()
        try:
            self._drop_leftovers()
            write_atomic(self.path, FORMAT + b" " + digest + b"\n" + body)
        except OSError:
            return
        self._added = False

    def _drop_leftovers(self) -> None:
        """Temporary files of runs killed while saving, an hour old (a live writer's
        is seconds old): never read, removed so kills cannot fill the disk."""
        for leftover in self.path.parent.glob(f".{self.path.name}.*"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < time.time() - 3600:
                    leftover.unlink()


class FileDigests:
    """`digest(path)`: "-:SHA256" or "x:SHA256" (executable) of a file, "link:TARGET" of a
    symlink; hashed with hashlib unless the file's identity is the one recorded."""

    def __init__(self, store: Store | None) -> None:
        self.store = store

    def digest(self, path: Path) -> str:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return "link:" + os.readlink(path)
        identity = [st.st_dev, st.st_ino, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns]
        entry = str(path)
        if self.store is not None:
            known = self.store.get(entry)
            if isinstance(known, list) and known[:-1] == identity:
                return str(known[-1])
        started = time.time_ns()
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        value = f"{'x' if st.st_mode & 0o111 else '-'}:{digest}"
        if self.store is not None and st.st_ctime_ns < started - RACY_NS:
            self.store.put(entry, [*identity, value])
        return value


@dataclass(frozen=True)
class Caches:
    """What a plan keeps under the state folder's `cache/` (never in the repository,
    which a merge request writes)."""

    parsed: Store
    """Validated recipe data and Dockerfile instructions, by the digest of the file's
    text and of the code that read it."""
    files: FileDigests
    manifests: Store
    """Overlay files' image fields (`heps.gitops.pin.image_fields`), by the digest of the
    file's text and of the code that composed it."""

    @classmethod
    def under(cls, state_dir: Path) -> Caches:
        folder = state_dir / "cache"
        files = Store(folder / "files", FILES_LIMIT)
        manifests = Store(folder / "manifests", MANIFESTS_LIMIT, Stage.PROMOTE)
        return cls(Store(folder / "parsed", PARSED_LIMIT), FileDigests(files), manifests)

    def save(self) -> None:
        self.parsed.save()
        self.manifests.save()
        if self.files.store is not None:
            self.files.store.save()
