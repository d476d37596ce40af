"""Every image an overlay pins, present on this machine's engine under its pinned name.

A pin by digest, or one naming the configured registry (what `heps promote` writes),
is used as it is: here already, or pulled. A pin naming another registry (the site
registry of a testbed overlay never promoted from here) is satisfied by the pipeline's
own image and tagged with the pinned name. For the version the tree's recipe is at,
that is the image of the current tree: the plan's reference, as `heps run` tags it (the
version tag, or VERSION-fp... once a base changed), carrying the tree's fingerprint;
here already, pulled from the configured registry, or built here (`heps run --no-push`
of that recipe). An image the operator put under the pinned name (docker load: no
pipeline fingerprint) is used when the pipeline has none. A digest is never satisfied
by a local build: it names exactly one image.
"""

from __future__ import annotations

from dataclasses import dataclass

from heps.core import log, settings
from heps.core.credentials import credentials
from heps.core.errors import ConfigError, HepsError
from heps.core.references import split_reference
from heps.core.stages import Stage
from heps.images import recipes
from heps.images.fingerprint import LABEL_FULL
from heps.images.report import FAILED
from heps.images.run import Runner, Selection, prepare
from heps.systems.engine import PlatformEngine, config_auth


@dataclass(frozen=True)
class Present:
    role: str
    pinned: str
    how: str
    """"here", "pulled" or which of the pipeline's local images it is."""


@dataclass(frozen=True)
class _Source:
    """Where the pipeline keeps the image that satisfies a pin naming another registry."""

    name: str
    """The recipe."""
    tag: str
    """The pipeline's local REPO:TAG for it."""
    fingerprint: str
    """What that image's fingerprint label must say (empty: any image under `tag`)."""


def _sources(cfg: settings.Settings, pins: list[str]) -> dict[str, _Source]:
    """pin -> its source. A pin of the version the tree's recipe is at follows the
    tree: the plan's reference, as `heps run` tags it (the version tag, or the rebuild
    tag VERSION-fp... after a base changed), holding exactly the tree's fingerprint.
    Another version or an immutable tag names the pipeline's image under that tag."""
    names = {split_reference(ref)[0].rsplit("/", 1)[-1] for ref in pins}
    known = sorted(names & {r.name for r in recipes.discover(cfg)})
    tree = prepare(cfg, Selection(tuple(known))).plan.looked_up if known else {}
    found = {}
    for ref in pins:
        repo, tag, _ = split_reference(ref)
        name = repo.rsplit("/", 1)[-1]
        entry = tree.get(name)
        if entry is not None and tag == entry.version:
            found[ref] = _Source(name, entry.reference, entry.fingerprint)
        else:
            found[ref] = _Source(name, f"{cfg.registry.repository(name)}:{tag or 'latest'}", "")
    return found


def _build(cfg: settings.Settings, docker: PlatformEngine, names: list[str]) -> None:
    log.phase(Stage.PLATFORM, None, f"building {', '.join(names)} here (pins name no pushed image)")
    prepared = prepare(cfg, Selection(tuple(names)))
    results = Runner(prepared, docker.engine, do_push=False).run()
    failed = [r.name for r in results if r.status == FAILED]
    if failed:
        raise HepsError(f"building {', '.join(failed)} failed; see the log above")


def ensure(cfg: settings.Settings, docker: PlatformEngine, pinned: dict[str, str]) -> list[Present]:
    """Make each pinned image present; raise naming the pin that cannot be."""
    creds = credentials(cfg, config_auth)
    done: dict[str, Present] = {}
    local: dict[str, str] = {}
    """role -> pin to be satisfied by this machine's build of that version."""
    for role, ref in pinned.items():
        repo, _, digest = split_reference(ref)
        ours = repo.split("/", 1)[0] == cfg.registry.host
        if (digest or ours) and docker.image_id(ref):
            done[role] = Present(role, ref, "here")
        elif (digest or ours) and docker.pull(ref, creds):
            done[role] = Present(role, ref, "pulled")
        elif digest or ours:
            raise ConfigError(
                f"{role}: {ref}: neither on this machine nor in {cfg.registry.host}; "
                "pin an image pushed there (heps promote)"
            )
        else:
            local[role] = ref
    sources = _sources(cfg, list(local.values()))

    def fits(image: str, source: _Source) -> bool:
        labels = docker.image_labels(image)
        return labels is not None and source.fingerprint in ("", labels.get(LABEL_FULL))

    def by_hand(ref: str) -> bool:  # under the pinned name, built by no pipeline (docker load)
        labels = docker.image_labels(ref)
        return labels is not None and LABEL_FULL not in labels

    operators = {ref for ref in local.values() if by_hand(ref)}
    missing = sorted(
        {
            source.name
            for ref, source in sources.items()
            if ref not in operators
            and not fits(source.tag, source)
            and not (docker.pull(source.tag, creds) and fits(source.tag, source))
        }
    )
    if missing:
        _build(cfg, docker, missing)
    for role, ref in local.items():
        source = sources[ref]
        if fits(source.tag, source):  # the pipeline's image of the tree (or of that tag)
            docker.tag(source.tag, ref)
            done[role] = Present(role, ref, f"the pipeline's {source.tag}")
        elif ref in operators:
            done[role] = Present(role, ref, "here")
        else:
            raise ConfigError(
                f"{role}: {ref}: no such version here and none built; the recipe "
                f"{source.name} must be at version {split_reference(ref)[1]}"
            )
    return [done[role] for role in pinned]
