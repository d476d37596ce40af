"""Decide what to build, in which order, and say why.

Reasons, in the words `heps plan` prints:
- ``not in registry``: no image under the recipe's version tag;
- ``changed``: the version tag holds an image built from other own sources: the
  owner must bump `version` (refused before anything is built);
- ``base changed``: the recipe's own sources are those of the version tag's image,
  what it is built on (a base, the site CA bundle) is not: rebuilt and pushed under
  its rebuild tag VERSION-fp<fingerprint>, the version tag stays where it is;
- ``unchanged``: the version tag, or the rebuild tag, holds an image with this exact
  fingerprint: skipped, and that image is the one later steps use and pin.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from heps.core.errors import with_retries
from heps.core.references import rebuild_tag
from heps.images.fingerprint import LABEL_FULL, LABEL_INPUTS, LABEL_PARTS, Fingerprint
from heps.images.graph import Graph
from heps.systems.registry import Registry, RemoteImage

NOT_IN_REGISTRY = "not in registry"
CHANGED = "changed"
BASE_CHANGED = "base changed"
UNCHANGED = "unchanged"
REVISION_LABEL = "org.opencontainers.image.revision"


@dataclass(frozen=True)
class PlanEntry:
    name: str
    version: str
    reason: str
    build: bool
    fingerprint: str
    bases: tuple[str, ...]
    image: str
    """REGISTRY/NAMESPACE/NAME:VERSION"""
    remote_digest: str | None
    """Digest now behind the version tag, if any."""
    reference: str = ""
    """REPO:TAG that holds (skip) or will hold (build) this exact fingerprint: the
    version tag, or the rebuild tag when the version tag names an older image."""
    digest: str | None = None
    """Digest behind `reference` when the image exists (skipped entries)."""
    detail: str = ""
    """For `base changed`: what changed, e.g. "base debian-base changed"."""
    built_from: str = ""
    """The commit the version tag's image was built from (its revision label)."""

    @property
    def version_taken(self) -> bool:
        """Own sources changed while the version tag holds another image: bump it."""
        return self.build and self.reason == CHANGED and self.remote_digest is not None

    @property
    def rebuild(self) -> bool:
        """Built only because what it is built on changed: never moves the version tag."""
        return self.build and self.reason == BASE_CHANGED


@dataclass(frozen=True)
class Plan:
    entries: tuple[PlanEntry, ...]
    """In build order."""
    looked_up: dict[str, PlanEntry]
    """Every recipe looked up, the plan's and the bases it builds on: where a base
    that is not rebuilt is found (`reference`, `digest`)."""

    @property
    def to_build(self) -> list[PlanEntry]:
        return [e for e in self.entries if e.build]

    def as_json(self) -> list[dict[str, object]]:
        return [
            {
                "name": e.name,
                "version": e.version,
                "reason": e.reason,
                "action": "build" if e.build else "skip",
                "bases": list(e.bases),
                "image": e.image,
                "reference": e.reference,
                "digest": e.digest,
                "detail": e.detail,
                "fingerprint": e.fingerprint,
                "version_taken": e.version_taken,
            }
            for e in self.entries
        ]


def make(
    graph: Graph,
    fingerprints: dict[str, Fingerprint],
    registry: Registry,
    selected: set[str] | None = None,
    with_dependents: bool = False,
    parallel: int = 8,
) -> Plan:
    """The plan for `selected` recipes (default: all), and with `with_dependents` every
    recipe built on them.

    Bases outside the selection whose exact fingerprint the registry lacks join the
    plan too: a child is only ever built on a base built or found by fingerprint.
    """
    if selected is None:
        wanted = set(graph.order)
    else:
        wanted = graph.dependents(selected) if with_dependents else set(selected)
    consider = set(wanted)
    for name in reversed(graph.order):  # bases (and theirs) of wanted recipes are looked up too
        if name in consider:
            consider.update(graph.base_names(name))
    considered = [n for n in graph.order if n in consider]
    found = _lookup(graph, fingerprints, registry, considered, parallel)
    entries: dict[str, PlanEntry] = {}
    for name in reversed(considered):  # children first, so needed bases can be kept
        entry = found[name]
        needed = name in wanted or any(
            name in graph.base_names(child) and e.build for child, e in entries.items()
        )
        if needed and (name in wanted or entry.build):
            entries[name] = entry
    return Plan(tuple(entries[n] for n in considered if n in entries), found)


def _lookup(
    graph: Graph,
    fingerprints: dict[str, Fingerprint],
    registry: Registry,
    names: list[str],
    parallel: int,
) -> dict[str, PlanEntry]:
    """One entry per name from the registry: the version tag first, and the rebuild tag
    only for those whose version tag holds the same own sources on other parts."""
    version = {n: graph.nodes[n].recipe.version for n in names}

    def image(name: str, tag: str) -> RemoteImage | None:
        return with_retries(partial(registry.image, name, tag))

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        at_version = dict(zip(names, pool.map(lambda n: image(n, version[n]), names), strict=True))
        again = [n for n in names if _reason(fingerprints[n], at_version[n]) == BASE_CHANGED]
        tags = {n: rebuild_tag(version[n], fingerprints[n].full) for n in again}
        rebuilt = dict(zip(again, pool.map(lambda n: image(n, tags[n]), again), strict=True))
    result = {}
    for name in names:
        fp, current = fingerprints[name], at_version[name]
        repo = registry.settings.repository(name)
        reason = _reason(fp, current)
        reference, digest = f"{repo}:{version[name]}", current.digest if current else None
        detail = ""
        if reason == BASE_CHANGED:
            reference, digest = f"{repo}:{tags[name]}", None
            held = rebuilt[name]
            if held is not None and held.labels.get(LABEL_FULL) == fp.full:
                reason, digest = UNCHANGED, held.digest
            else:
                assert current is not None
                detail = describe(fp.changed_parts(current.labels))
        result[name] = PlanEntry(
            name=name,
            version=version[name],
            reason=reason,
            build=reason != UNCHANGED,
            fingerprint=fp.full,
            bases=tuple(graph.base_names(name)),
            image=f"{repo}:{version[name]}",
            remote_digest=current.digest if current else None,
            reference=reference,
            digest=digest if reason == UNCHANGED else None,
            detail=detail,
            built_from=current.labels.get(REVISION_LABEL, "") if current else "",
        )
    return result


def describe(parts: list[str]) -> str:
    """["base debian-base", "site CA bundle"] -> "base debian-base, site CA bundle changed"."""
    if parts == ["parts"]:
        return "built by an earlier heps without a parts label"
    return f"{', '.join(parts)} changed" if parts else "base changed"


def _reason(fp: Fingerprint, image: RemoteImage | None) -> str:
    if image is None:
        return NOT_IN_REGISTRY
    if image.labels.get(LABEL_FULL) == fp.full:
        return UNCHANGED
    if image.labels.get(LABEL_INPUTS) == fp.inputs or LABEL_PARTS not in image.labels:
        return BASE_CHANGED
    return CHANGED
