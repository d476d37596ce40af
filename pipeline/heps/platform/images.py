"""Every image an overlay pins, present on this machine's engine under its pinned name.

A pin by digest, or one naming the configured registry (what `heps promote` writes),
is used as it is: here already, or pulled. A pin naming another registry (the site
registry of a testbed overlay never promoted from here) is satisfied by the pipeline's
own image of that version on this machine, pulled from the configured registry or
built here (`heps run --no-push` of that recipe) when absent, and tagged with the
pinned name, so a newer build of that version replaces an older one at the next `up`.
A digest is never satisfied by a local build: it names exactly one image.
"""

from __future__ import annotations

from dataclasses import dataclass

from heps.core import log, settings
from heps.core.credentials import credentials
from heps.core.errors import ConfigError, HepsError
from heps.core.references import split_reference
from heps.core.stages import Stage
from heps.images.report import FAILED
from heps.images.run import Runner, Selection, prepare
from heps.systems.engine import PlatformEngine, config_auth


@dataclass(frozen=True)
class Present:
    role: str
    pinned: str
    how: str
    """"here", "pulled" or which of the pipeline's local images it is."""


def _local_name(cfg: settings.Settings, pinned: str) -> tuple[str, str]:
    """(recipe name, the pipeline's local tag for this pin's version)."""
    repo, tag, _ = split_reference(pinned)
    name = repo.rsplit("/", 1)[-1]
    return name, f"{cfg.registry.repository(name)}:{tag or 'latest'}"


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
    builds = dict(_local_name(cfg, ref) for ref in local.values())
    by_hand = {_local_name(cfg, ref)[0] for ref in local.values() if docker.image_id(ref)}
    missing = sorted(
        name
        for name, tag in builds.items()
        if not docker.image_id(tag) and name not in by_hand and not docker.pull(tag, creds)
    )
    if missing:
        _build(cfg, docker, missing)
    for role, ref in local.items():
        name, tag = _local_name(cfg, ref)
        if docker.image_id(tag):  # this machine's build of that version, the newest
            docker.tag(tag, ref)
            done[role] = Present(role, ref, f"the pipeline's {tag}")
        elif docker.image_id(ref):  # put here by hand (docker load) under the pinned name
            done[role] = Present(role, ref, "here")
        else:
            raise ConfigError(
                f"{role}: {ref}: no such version here and none built; the recipe "
                f"{name} must be at version {split_reference(ref)[1]}"
            )
    return [done[role] for role in pinned]
