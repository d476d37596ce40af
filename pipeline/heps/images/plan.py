"""Decide what to build, in which order, and say why.

Reasons, in the words `heps plan` prints:
- ``not in registry``: no image under the recipe's version tag;
- ``changed``: the version tag holds an image built from other inputs;
- ``base changed``: the recipe's own inputs are the same, a base's are not;
- ``unchanged``: the version tag holds an image with this exact fingerprint: skipped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

from heps.core.errors import with_retries
from heps.images.fingerprint import LABEL_FULL, LABEL_INPUTS, Fingerprint
from heps.images.graph import Graph
from heps.systems.registry import Registry, RemoteImage

NOT_IN_REGISTRY = "not in registry"
CHANGED = "changed"
BASE_CHANGED = "base changed"
UNCHANGED = "unchanged"


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

    @property
    def version_taken(self) -> bool:
        """The version tag holds another image: pushing would need a version bump."""
        return self.build and self.remote_digest is not None


@dataclass(frozen=True)
class Plan:
    entries: tuple[PlanEntry, ...]
    """In build order."""

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
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        remote = dict(
            zip(
                considered,
                pool.map(
                    lambda n: with_retries(
                        partial(registry.image, n, graph.nodes[n].recipe.version)
                    ),
                    considered,
                ),
                strict=True,
            )
        )
    entries: dict[str, PlanEntry] = {}
    for name in reversed(considered):  # children first, so needed bases can be kept
        recipe = graph.nodes[name].recipe
        reason = _reason(fingerprints[name], remote[name])  # full fingerprints ripple down
        needed = name in wanted or any(
            name in graph.base_names(child) and entry.build for child, entry in entries.items()
        )
        if not needed or (name not in wanted and reason == UNCHANGED):
            continue
        image = remote[name]
        entries[name] = PlanEntry(
            name=name,
            version=recipe.version,
            reason=reason,
            build=reason != UNCHANGED,
            fingerprint=fingerprints[name].full,
            bases=tuple(graph.base_names(name)),
            image=f"{registry.settings.repository(name)}:{recipe.version}",
            remote_digest=image.digest if image else None,
        )
    return Plan(tuple(entries[n] for n in considered if n in entries))


def _reason(fp: Fingerprint, image: RemoteImage | None) -> str:
    if image is None:
        return NOT_IN_REGISTRY
    if image.labels.get(LABEL_FULL) == fp.full:
        return UNCHANGED
    if image.labels.get(LABEL_INPUTS) == fp.inputs:
        return BASE_CHANGED
    return CHANGED
