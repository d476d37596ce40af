"""Image references: grammar, parts, and the immutable tag made and parsed in one place."""

from __future__ import annotations

import pytest

from heps.core.references import (
    immutable_tag,
    is_valid,
    rebuild_tag,
    split_reference,
    version_of,
)

DIGEST = "sha256:" + "a" * 64


def test_split_reference() -> None:
    assert split_reference("reg:5000/ns/app:1.0@sha256:ab") == (
        "reg:5000/ns/app",
        "1.0",
        "sha256:ab",
    )
    assert split_reference("reg:5000/ns/app") == ("reg:5000/ns/app", None, None)
    assert split_reference("debian") == ("debian", None, None)


@pytest.mark.parametrize("version", ["1.0.0", "1.0.0-gpu", "2.1-g1", "0.1.0-rc.1"])
def test_immutable_tag_round_trips_every_version(version: str) -> None:
    commit = "0123456789abcdef0123"
    assert version_of(immutable_tag(version, commit, False, "f" * 64)) == version
    assert version_of(immutable_tag(version, commit, True, "f" * 64)) == version
    assert version_of(immutable_tag(version, "unknown", True, "f" * 64)) == version
    assert version_of(rebuild_tag(version, "e" * 64)) == version


def test_rebuild_tags_differ_exactly_when_the_full_fingerprint_does() -> None:
    assert rebuild_tag("1.0.0", "ab" * 32) == "1.0.0-fp" + "ab" * 6
    assert rebuild_tag("1.0.0", "ab" * 32) != rebuild_tag("1.0.0", "ac" * 32)
    assert is_valid(f"reg:5000/ns/app:{rebuild_tag('1.0.0-rc.1', 'ab' * 32)}")


def test_a_version_tag_is_its_own_version() -> None:
    assert version_of("1.0.0-gpu") == "1.0.0-gpu"


@pytest.mark.parametrize(
    "reference",
    ["debian", "127.0.0.1:5000/heps/app:1.0.0-g0123456789ab", f"reg.example/ns/app:1@{DIGEST}"],
)
def test_valid_references(reference: str) -> None:
    assert is_valid(reference)


@pytest.mark.parametrize(
    "reference",
    [
        "reg/ns/app:1.0\nimage: evil.example.com",
        "reg/ns/app:1.0\n",
        "reg/NS/app:1",
        "reg/ns/app:" + "x" * 129,
        f"reg/ns/app@{DIGEST}x",
        "reg/ns/app@sha256:abc",
        "",
    ],
)
def test_invalid_references(reference: str) -> None:
    assert not is_valid(reference)
