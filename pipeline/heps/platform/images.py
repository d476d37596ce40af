"""Every image an overlay pins, present on this machine's engine under its pinned name.

In order: already here; pulled, when the pin names the configured registry (what
`heps promote` writes: tag and digest of a pushed image); otherwise built here by the
pipeline (`heps run --no-push` of that recipe) and tagged with the pinned name, for a
pin that names a registry this machine cannot reach (the site registry of a testbed
overlay never promoted from here). A pin by digest is never satisfied by a local build:
a digest names exactly one image.
"""

from __future__ import annotations

from dataclasses import dataclass

from heps import log, settings
from heps.dockerfile import split_reference
from heps.errors import ConfigError, HepsError
from heps.platform.containers import Engine
from heps.report import FAILED
from heps.run import Runner, Selection, prepare


@dataclass(frozen=True)
class Present:
    role: str
    pinned: str
    how: str
    """"here", "pulled" or "built here"."""


def _local_name(cfg: settings.Settings, pinned: str) -> tuple[str, str]:
    """(recipe name, the pipeline's local tag for this pin's version)."""
    repo, tag, _ = split_reference(pinned)
    name = repo.rsplit("/", 1)[-1]
    return name, f"{cfg.registry.repository(name)}:{tag or 'latest'}"


def _build(cfg: settings.Settings, docker: Engine, names: list[str]) -> None:
    log.phase("platform", None, f"building {', '.join(names)} here (pins name no pushed image)")
    prepared = prepare(cfg, Selection(tuple(names)))
    results = Runner(prepared, docker.client, do_push=False).run()
    failed = [r.name for r in results if r.status == FAILED]
    if failed:
        raise HepsError(f"building {', '.join(failed)} failed; see the log above")


def ensure(cfg: settings.Settings, docker: Engine, pinned: dict[str, str]) -> list[Present]:
    """Make each pinned image present; raise naming the pin that cannot be."""
    credentials = settings.credentials(cfg)
    done: dict[str, Present] = {}
    to_build: dict[str, str] = {}
    for role, ref in pinned.items():
        repo, _, digest = split_reference(ref)
        if docker.image_id(ref):
            done[role] = Present(role, ref, "here")
        elif repo.split("/", 1)[0] == cfg.registry.host and docker.pull(ref, credentials):
            done[role] = Present(role, ref, "pulled")
        elif digest:
            raise ConfigError(
                f"{role}: {ref}: pinned by digest, but neither on this machine nor in "
                f"{cfg.registry.host}; promote an image pushed there"
            )
        else:
            to_build[role] = ref
    wanted = dict(_local_name(cfg, ref) for ref in to_build.values())
    missing = sorted(name for name, tag in wanted.items() if not docker.image_id(tag))
    if missing:
        _build(cfg, docker, missing)
    for role, ref in to_build.items():
        local = _local_name(cfg, ref)[1]
        if not docker.image_id(local) and not docker.pull(local, credentials):
            raise ConfigError(
                f"{role}: {ref}: no such version here and none built; the recipe "
                f"{_local_name(cfg, ref)[0]} must be at version {split_reference(ref)[1]}"
            )
        docker.tag(local, ref)
        done[role] = Present(role, ref, "built here")
    return [done[role] for role in pinned]
