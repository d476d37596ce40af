"""Golden tests: only the pinned image fields change; every other byte stays."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from heps.pin import Pin, PinError, add_kustomize_images, pin_text

GOLDEN = Path(__file__).parent / "golden" / "pin"
REGISTRY = "127.0.0.1:5000/heps"
PINS = [
    Pin(
        "jupyterlab-base",
        f"{REGISTRY}/jupyterlab-base",
        "1.1.0-gabc123abc123",
        "sha256:" + "1" * 64,
    ),
    Pin(
        "ct-reconstruction",
        f"{REGISTRY}/ct-reconstruction",
        "1.0.0-gabc123abc123",
        "sha256:" + "c" * 64,
    ),
    Pin("deep-learning", f"{REGISTRY}/deep-learning", "1.0.0-gabc123abc123", "sha256:" + "d" * 64),
    Pin("spark-driver", f"{REGISTRY}/spark-driver", "1.0.1-gabc123abc123", "sha256:" + "5" * 64),
]


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN.iterdir()))
def test_golden(case: str) -> None:
    source = (GOLDEN / case / "input.yaml").read_text()
    expected = (GOLDEN / case / "expected.yaml").read_text()
    pinned, found = pin_text(source, f"{case}/input.yaml", PINS)
    assert pinned == expected
    changed = [
        line
        for line in difflib.ndiff(source.splitlines(), pinned.splitlines())
        if line.startswith("- ")
    ]
    assert found
    image_fields = ("image:", "newName:", "newTag:", "digest:")
    assert all(any(f in line for f in image_fields) for line in changed), changed
    again, _ = pin_text(pinned, case, PINS)
    assert again == pinned  # pinning twice changes nothing


def test_kustomize_images_are_created_when_missing() -> None:
    text = "resources:\n  - ../../base\n"
    added = add_kustomize_images(text, "kustomization.yaml", PINS[:1])
    assert added == text + (
        "images:\n"
        f"  - name: {REGISTRY}/jupyterlab-base\n"
        f"    newName: {REGISTRY}/jupyterlab-base\n"
        "    newTag: 1.1.0-gabc123abc123\n"
        f"    digest: sha256:{'1' * 64}\n"
    )
    appended = add_kustomize_images(added, "kustomization.yaml", PINS[1:2])
    assert appended.startswith(added)
    assert appended.endswith(f"    digest: sha256:{'c' * 64}\n")


def test_broken_yaml_is_named() -> None:
    with pytest.raises(PinError, match=r"overlay.yaml: not valid YAML"):
        pin_text("a: [1\n", "overlay.yaml", PINS)
