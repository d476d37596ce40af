"""Pushes recorded before they start, so no image is pushed that no report names.

Before pushing, a run writes the push's intent (recipe, fingerprint, image ID, tags) to
`STATE/journal/RUN/RECIPE.json`, atomically; it cannot push what it could not record
(a full disk fails the push in one line, before anything leaves the host). After the
registry confirmed the push, the entry gets the digest. The entries go once the run's
report is written. Entries of a run that is gone (SIGKILL, a full disk at report time)
are what the next run (and `heps status`) reports: the image under its tags, promotable.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from heps.core.boundary import environment_line
from heps.core.bounded import read_text
from heps.core.errors import ConfigError, StageError
from heps.core.paths import write_atomic
from heps.core.stages import Stage
from heps.systems.engine import owner, owner_gone

FOLDER = "journal"
HOLD = "HEPS_TEST_HOLD_AFTER_PUSH"
"""Fault injection for tests: a path; once a push is recorded as done, the run creates
that file and waits while it exists (a test kills it there, between push and report)."""


@dataclass(frozen=True)
class Entry:
    run: str
    owner: str
    """HOST/PID/START of the process that pushed (see `heps.systems.engine.owner`)."""
    name: str
    version: str
    fingerprint: str
    image_id: str
    references: tuple[str, ...]
    digest: str | None = None
    """Set once the registry confirmed the push."""


class Journal:
    def __init__(self, state_dir: Path, run_id: str | None) -> None:
        """The journal of run `run_id`; None reads the others' only (`heps status`)."""
        self.root = state_dir / FOLDER
        self.folder = self.root / (run_id or "-")
        self.run_id = run_id or "-"

    def intend(
        self,
        name: str,
        version: str,
        fingerprint: str,
        image_id: str,
        references: tuple[str, ...],
    ) -> Entry:
        """Record a push before it starts; StageError (push) when that cannot be written."""
        entry = Entry(self.run_id, owner(), name, version, fingerprint, image_id, references)
        self._write(entry)
        return entry

    def pushed(self, entry: Entry, digest: str) -> None:
        done = Entry(**(asdict(entry) | {"digest": digest}))
        self._write(done)
        hold = os.environ.get(HOLD)
        if hold:
            Path(hold).touch()
            while Path(hold).exists():
                time.sleep(0.05)

    def _write(self, entry: Entry) -> None:
        try:
            write_atomic(self.folder / f"{entry.name}.json", json.dumps(asdict(entry)) + "\n")
        except OSError as exc:
            raise StageError(
                Stage.PUSH, f"not pushed: cannot record the push: {environment_line(exc)}"
            ) from None

    def close(self) -> None:
        """The run's report is written: its pushes are named there."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def leftovers(self) -> list[Entry]:
        """Pushes of runs that are gone without a report, the confirmed ones only."""
        if not self.root.is_dir():
            return []
        found = []
        for path in sorted(self.root.glob("*/*.json")):
            if path.parent == self.folder:
                continue
            entry = _read(path)
            if entry is not None and entry.digest and owner_gone(entry.owner):
                found.append(entry)
        return found

    def forget(self, entries: list[Entry]) -> None:
        """Entries now named in a report of this run."""
        for entry in entries:
            folder = self.root / entry.run
            (folder / f"{entry.name}.json").unlink(missing_ok=True)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _read(path: Path) -> Entry | None:
    try:
        data = json.loads(read_text(path, str(path)))
        refs = data.pop("references")
        entry = Entry(**data, references=tuple(refs))
    except (ConfigError, ValueError, TypeError, KeyError, AttributeError):
        return None  # not written by this version of heps, or cut short: not ours to read
    ok = all(isinstance(v, str) for v in (entry.run, entry.name, entry.owner)) and all(
        isinstance(r, str) for r in entry.references
    )
    return entry if ok else None
