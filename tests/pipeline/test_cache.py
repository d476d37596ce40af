"""The plan's caches: a killed writer leaves no torn entry, the size stays bounded, a file
is hashed again whenever its identity changes or was taken inside the racy window.
(That a change to each input changes the plan with the caches warm, that a damaged
cache is one warning, and that bad input is refused the same way: test_plan_same.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heps.core import cache

WRITER = """
import os, sys, time
from pathlib import Path
from heps.core import cache
store = cache.Store(Path(sys.argv[1]), 1_000_000)
hold = sys.argv[2] == "hold"
def held(tmp, path):  # the new file is written whole; killed before it takes the name
    print("replacing", flush=True)
    time.sleep(60)
if hold:
    cache.os.replace = held
round = 0
print("writing", flush=True)
while True:  # every entry's value is derived from its key and the round: checkable
    round += 1
    for i in range(20_000):
        store.put(f"k{i}", [f"k{i}", round, "x" * 40])
    store.save()
"""


def killed_writer(path: Path, hold: bool, delay: float = 0.0) -> None:
    """A real writer process, SIGKILLed after `delay` or, with `hold`, with its first
    save's temporary file written in full and not yet renamed."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "hold" if hold else "run"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    if hold:
        assert writer.stdout.readline() == "replacing\n"
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait()


def rounds(path: Path) -> set[int]:
    """The rounds the store's entries come from, checking each entry is its key's."""
    store = cache.Store(path, 1_000_000)
    found = [store.get(f"k{i}") for i in range(20_000)]
    if found == [None] * 20_000:
        return set()
    assert all(value[0] == f"k{i}" for i, value in enumerate(found))
    return {value[1] for value in found}


def test_a_writer_killed_mid_save_leaves_the_previous_file_or_a_whole_new_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    killed_writer(path, hold=True)
    assert not path.exists()  # killed before its first file took the name: no cache
    (leftover,) = tmp_path.glob(".store.*")  # the whole new file, never read
    for delay in (0.05, 0.2, 0.45):  # anywhere in later rounds: one whole round or none
        killed_writer(path, hold=False, delay=delay)
        assert len(rounds(path)) <= 1
    seed = cache.Store(path, 1_000_000)
    for i in range(20_000):
        seed.put(f"k{i}", [f"k{i}", 0, "seed"])
    seed.save()
    killed_writer(path, hold=True)  # its new file written whole, killed before the rename
    assert rounds(path) == {0}
    hour_ago = time.time() - 7200
    for left in tmp_path.glob(".store.*"):  # what killed writers left is cleared
        os.utime(left, (hour_ago, hour_ago))
    store = cache.Store(path, 10)
    store.put("new", 1)
    store.save()
    assert list(tmp_path.glob(".store.*")) == [] and not leftover.exists()


def test_the_store_is_bounded_and_keeps_what_was_used_last(tmp_path: Path) -> None:
    path = tmp_path / "store"
    old = cache.Store(path, 10)
    for i in range(10):
        old.put(f"old{i}", i)
    old.save()
    store = cache.Store(path, 10)
    assert store.get("old3") == 3
    for i in range(7):
        store.put(f"new{i}", i)
    store.save()
    kept = cache.Store(path, 10)._load()
    assert len(kept) == 10
    assert {"old3", *(f"new{i}" for i in range(7))} <= set(kept)  # used this run: kept first


def test_a_file_is_hashed_again_when_its_identity_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed: list[object] = []
    digest = cache.hashlib.file_digest
    monkeypatch.setattr(cache.hashlib, "file_digest", lambda f, h: hashed.append(f) or digest(f, h))
    file = tmp_path / "f"
    file.write_text("one\n")
    digests = cache.FileDigests(cache.Store(tmp_path / "files", 100))
    first = digests.digest(file)
    digests.digest(file)
    assert len(hashed) == 2  # written just now, inside the racy window: never recorded
    later = time.time_ns() + 2 * cache.RACY_NS  # as if the file were older
    monkeypatch.setattr(cache.time, "time_ns", lambda: later)
    assert digests.digest(file) == first
    assert digests.digest(file) == first and len(hashed) == 3  # recorded, then served
    file.write_text("two\n")  # same size: ctime (and mtime) tell
    assert digests.digest(file) != first and len(hashed) == 4
    file.chmod(0o755)
    assert digests.digest(file).startswith("x:") and len(hashed) == 5


def test_a_cache_nested_past_the_parser_is_ignored_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A body with its digest right (not damage: written by whoever can write the state
    folder) but nested deeper than the JSON parser goes: one warning, no cache."""
    path = tmp_path / "store"
    body = b"[" * 200_000 + b"]" * 200_000
    path.write_bytes(
        cache.FORMAT + b" " + cache.hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    )
    assert cache.Store(path, 10).get("x") is None
    assert "not a cache file; ignored" in caplog.text


@pytest.mark.parametrize("attribute", ["__version__", "__with_libyaml__"])
@pytest.mark.parametrize(
    ("module", "reader"), [("heps.images.recipes", "_readers"), ("heps.gitops.pin", "_reader")]
)
def test_what_another_yaml_library_read_is_read_afresh(
    attribute: str, module: str, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PyYAML upgraded, or installed without libyaml (yaml12 then reads with the Python
    parser, which differs on a few scalars): the recipe data and the overlay files'
    image fields kept are not served."""
    import importlib

    import yaml

    readers = getattr(importlib.import_module(module), reader)
    readers.cache_clear()
    before = readers()
    monkeypatch.setattr(yaml, attribute, "other")
    readers.cache_clear()
    try:
        assert readers() != before
    finally:
        readers.cache_clear()


def test_putting_what_is_kept_already_does_not_write_the_file_again(tmp_path: Path) -> None:
    store = cache.Store(tmp_path / "c", 10)
    store.put("k", ["v", 1])
    store.save()
    before = (tmp_path / "c").stat()
    again = cache.Store(tmp_path / "c", 10)
    again.put("k", ["v", 1])  # a promotion meeting a text it wrote before
    again.save()
    assert (tmp_path / "c").stat().st_ino == before.st_ino  # not replaced
    again.put("k", ["v", 2])
    again.save()
    assert cache.Store(tmp_path / "c", 10).get("k") == ["v", 2]
