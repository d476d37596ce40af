"""Golden tests: only the pinned image fields change; every other byte stays."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from heps.gitops.pin import Pin, PinError, add_kustomize_images, pin_text

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
    Pin(
        "heps-user-init",
        f"{REGISTRY}/heps-user-init",
        "0.1.0-gabc123abc123",
        "sha256:" + "e" * 64,
    ),
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
    with pytest.raises(PinError, match=r"overlay.yaml:2: YAML syntax error"):
        pin_text("a: [1\n", "overlay.yaml", PINS)


def test_tagged_and_double_quoted_values_keep_their_style() -> None:
    text = (
        "kind: Pod\nspec:\n  containers:\n"
        '    - {name: a, image: !!str "127.0.0.1:5000/heps/deep-learning:0.1"}  # x\n'
    )
    pinned, _ = pin_text(text, "pod.yaml", PINS)
    assert pinned == text.replace(
        '"127.0.0.1:5000/heps/deep-learning:0.1"', f'"{PINS[2].reference}"'
    )


POD = "kind: Pod\nspec:\n  containers:\n    - name: a\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            POD + "      image: >-\n        deep-learning\n",
            r"pod.yaml:5: an image must be a one-line string",
        ),
        (
            POD + '      image: "deep-\\\n        learning"\n',
            r"pod.yaml:5: write the image on one line",
        ),
        (
            "resources: [a]\nimages:\n  - {name: deep-learning, newTag: '1'}\n",
            r"pod.yaml:3: the images: entry for deep-learning is in flow style and lacks newName",
        ),
    ],
)
def test_unpinnable_fields_are_refused_with_file_and_line(text: str, message: str) -> None:
    with pytest.raises(PinError, match=message):
        pin_text(text, "pod.yaml", PINS)


@pytest.mark.parametrize("images", ["images: []\n", "images:\n"])
def test_adding_to_an_empty_images_field_is_refused(images: str) -> None:
    with pytest.raises(PinError, match=r"k.yaml: images: is empty or in flow style"):
        add_kustomize_images("resources: [a]\n" + images, "k.yaml", PINS[:1])


KUSTOMIZATION = (
    "resources: [a]\nimages:\n"
    "  - name: deep-learning\n    newName: 127.0.0.1:5000/heps/deep-learning\n"
    "    newTag: &t 0.9.0\n"
    "  - name: {other}\n    newName: 127.0.0.1:5000/heps/{other}\n"
    "    newTag: *t\n"
)


@pytest.mark.parametrize(
    "other",
    [
        "spark-driver",  # pinned too, to another tag: one would get the other's tag
        "not-pinned-here",  # named by no pin: it would change with deep-learning's
    ],
)
def test_a_value_aliased_by_fields_pinned_differently_is_refused(other: str) -> None:
    """An anchor and its alias are one scalar: pinning it for one app would write the same
    value into every field that shares it, so it is refused with file and line."""
    with pytest.raises(PinError, match=r"^k\.yaml:5: this value is shared through a YAML"):
        pin_text(KUSTOMIZATION.format(other=other), "k.yaml", PINS)
