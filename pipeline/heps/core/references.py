"""Image references: their grammar, their parts, and the immutable tag's format.

The grammar is the distribution project's (`reference/regexp.go`): a reference that does
not match is refused before it reaches an engine, a registry or an overlay, so a report
or a recipe can never smuggle a newline or a YAML fragment into a manifest.
"""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
TAG = r"[\w][\w.-]{0,127}"
DIGEST = r"sha256:[0-9a-f]{64}"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::(?P<tag>{TAG}))?(?:@(?P<digest>{DIGEST}))?")
_IMMUTABLE = re.compile(
    r"(?P<version>.+)-(?:g(?P<commit>[0-9a-f]{12})(?:\.dirty\.(?P<dirty>[0-9a-f]{8}))?"
    r"|fp(?P<fingerprint>[0-9a-f]{12}))"
)


def split_reference(image: str) -> tuple[str, str | None, str | None]:
    """`reg:5000/ns/app:1.0@sha256:..` -> ("reg:5000/ns/app", "1.0", "sha256:..")."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1 :]
    return image, tag, digest


def is_repository_path(text: str) -> bool:
    """Is `text` a valid path inside a registry (a namespace such as `heps` or `a/b`)?"""
    return re.fullmatch(rf"{_COMPONENT}(?:/{_COMPONENT})*", text) is not None


def is_valid(reference: str) -> bool:
    """Does `reference` match the distribution reference grammar (255 characters at most)?"""
    return len(reference) <= 255 and _REFERENCE.fullmatch(reference) is not None


def immutable_tag(version: str, commit: str, dirty: bool, fingerprint: str) -> str:
    """The tag pushed beside the version tag when a version's own sources are built:
    VERSION-g<commit12> (VERSION-g<commit12>.dirty.<fp8> for uncommitted sources), or
    `rebuild_tag` outside a git checkout."""
    if commit == "unknown":
        return rebuild_tag(version, fingerprint)
    tag = f"{version}-g{commit[:12]}"
    return f"{tag}.dirty.{fingerprint[:8]}" if dirty else tag


def rebuild_tag(version: str, fingerprint: str) -> str:
    """VERSION-fp<fp12>: the only tag of an image rebuilt because something it is built
    on changed (a base, the site CA bundle). Derived from the full fingerprint alone, so
    the next run finds it again without a cache, and two builds of one version from
    different inputs never share it; the version tag keeps naming the first image."""
    return f"{version}-fp{fingerprint[:12]}"


def version_of(tag: str) -> str:
    """The recipe version an immutable tag was made from; a version tag is its own."""
    match = _IMMUTABLE.fullmatch(tag)
    return match.group("version") if match else tag
