"""The manifest cache: an overlay file's image fields kept by its exact text, so a file
read before is pinned without composing it again. Pinning with it warm, cold or damaged
writes the same bytes and refuses the same files with the same line; the fields kept for
a text a promotion wrote are the ones composing that text gives. (Killed writers, the
size bound and the PyYAML version in the key are the store's and tested with the plan's
caches: test_cache.py.)"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from heps.core import cache
from heps.core.cache import Store
from heps.core.stages import Stage
from heps.gitops import pin
from heps.gitops.pin import PinError, image_fields, pin_text

from .test_pin import GOLDEN, PINS, POD

CASES = sorted(p.name for p in GOLDEN.iterdir())


def memory() -> Store:
    """A store held in memory: nothing is read or written until `save`."""
    return Store(Path("/nonexistent/manifests"), 1_000)


@pytest.mark.parametrize("case", CASES)
def test_pinning_cold_and_warm_writes_what_composing_writes(case: str) -> None:
    source = (GOLDEN / case / "input.yaml").read_text()
    name = f"{case}/input.yaml"
    expected = pin_text(source, name, PINS)
    store = memory()
    assert pin_text(source, name, PINS, store) == expected  # cold: composed, then kept
    assert pin_text(source, name, PINS, store) == expected  # warm: from the store
    pinned = expected[0]
    # the text the promotion wrote is known already, with the fields composing gives
    assert image_fields(pinned, name, store) == image_fields(pinned, name)
    assert pin_text(pinned, name, PINS, store) == pin_text(pinned, name, PINS)


def test_the_text_a_promotion_wrote_is_found_without_composing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = (GOLDEN / CASES[0] / "input.yaml").read_text()
    store = memory()
    pinned, _ = pin_text(source, "a.yaml", PINS, store)
    expected = pin_text(pinned, "a.yaml", PINS)
    monkeypatch.setattr(pin, "Document", None)  # composing now would fail the test
    assert pin_text(pinned, "a.yaml", PINS, store) == expected


def test_a_changed_text_is_composed_afresh() -> None:
    text = POD + "      image: '127.0.0.1:5000/heps/deep-learning:0.1'\n"
    store = memory()
    pin_text(text, "pod.yaml", PINS, store)
    for changed in (
        text.replace("deep-learning", "spark-driver"),
        text.replace("'", '"'),
        text + "    - name: b\n      image: ct-reconstruction\n",
        text.replace("containers", "initContainers"),
    ):
        assert pin_text(changed, "pod.yaml", PINS, store) == pin_text(changed, "pod.yaml", PINS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (POD + "      image: >-\n        deep-learning\n", r"an image must be a one-line string"),
        (POD + '      image: "deep-\\\n        learning"\n', r"write the image on one line"),
        ("resources: [a]\nimages:\n  - {name: deep-learning, newTag: '1'}\n", r"in flow style"),
        ("a: [1\n", r"YAML syntax error"),
        ("a: " + "[" * 100 + "]" * 100 + "\n", r"nests deeper than 64 levels"),
    ],
)
def test_a_hostile_file_gets_its_line_warm_and_cold_under_its_own_name(
    text: str, message: str, tmp_path: Path
) -> None:
    store = Store(tmp_path / "manifests", 1_000)
    for name in ("one.yaml", "two.yaml", "one.yaml"):  # entries hold no file name
        with pytest.raises(PinError, match=rf"^{name}:\d+: .*{message}") as refused:
            pin_text(text, name, PINS, store)
        assert len(str(refused.value).splitlines()) == 1
    store.save()
    kept = Store(tmp_path / "manifests", 1_000).get(cache.key("manifest", pin._reader(), text))
    if "YAML" in message or "nests" in message:  # a file that does not compose: nothing kept
        assert kept is None
    else:  # its fields are kept, the refusal is made again from them
        assert kept


def test_a_damaged_cache_is_one_warning_then_the_same_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "manifests"
    sources = [(GOLDEN / case / "input.yaml").read_text() for case in CASES]
    store = Store(path, 1_000)
    expected = [pin_text(text, f"{i}.yaml", PINS, store) for i, text in enumerate(sources)]
    store.save()
    data = bytearray(path.read_bytes())
    data[-10] ^= 1  # one bit flipped in the body: the header's digest no longer matches
    path.write_bytes(data)
    caplog.set_level(logging.WARNING)
    damaged = Store(path, 1_000, Stage.PROMOTE)
    again = [pin_text(text, f"{i}.yaml", PINS, damaged) for i, text in enumerate(sources)]
    assert again == expected
    (record,) = caplog.records
    assert record.getMessage() == (
        f"[promote] cache {path}: its digest does not match its content; ignored, "
        "reading the files afresh"
    )
    damaged.save()  # rewritten whole: read back without a warning
    caplog.clear()
    assert [
        pin_text(text, f"{i}.yaml", PINS, Store(path, 1_000)) for i, text in enumerate(sources)
    ] == expected
    assert not caplog.records


def test_entries_of_another_shape_are_composed_afresh(tmp_path: Path) -> None:
    """An entry `_encoded` did not write (another heps, a hand-edited file with its digest
    recomputed) is not served: the text is composed again."""
    text = POD + "      image: deep-learning\n"
    entry = cache.key("manifest", pin._reader(), text)
    store = memory()
    pin_text(text, "pod.yaml", PINS, store)
    store.put(entry, {"a": 1})
    assert pin_text(text, "pod.yaml", PINS, store) == pin_text(text, "pod.yaml", PINS)
    good = store.get(entry)
    image = [[4, 13, 26, ""]]  # line 5, columns 14-26: `deep-learning`
    assert good[0] == ["container", 4, "deep-learning", ["deep-learning"], image, 0, 0, 0, False]
    first, rest = good[0], good[1:]
    for wrong in (
        ["container", "4", *first[2:]],
        [*first[:3], [], *first[4:]],
        first[:8],
        [*first, 1],
        [*first[:4], [[4, 13, 26]], *first[5:]],
        [*first[:4], [[4, 13, 26, None]], *first[5:]],
        [*first[:4], [], *first[5:]],
        [*first[:8], 0],
        ["other", *first[1:]],
        [1, 2],
        None,
    ):
        store.put(entry, [wrong, *rest])
        assert pin_text(text, "pod.yaml", PINS, store) == pin_text(text, "pod.yaml", PINS)
