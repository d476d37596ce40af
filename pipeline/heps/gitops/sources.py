"""Which pins to write: from a run's own results, a report file, the overlay promoted from,
or the overlay's history; each one built from settings, recipe name, tag and digest
(never copied from the input) and confirmed by the registry before anything is edited.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from heps.core.errors import ConfigError, StageError
from heps.core.kube_yaml import PinError
from heps.core.paths import overlay_dir
from heps.core.references import DIGEST, is_valid, split_reference, version_of
from heps.core.settings import Settings
from heps.core.stages import Stage
from heps.gitops.overlay import read_file, yaml_files
from heps.gitops.pin import Pin, Pins, image_fields, scan
from heps.images import report
from heps.images.recipes import Recipe
from heps.images.report import FAILED, RecipeReport
from heps.systems.git import Repository
from heps.systems.registry import Registry


def verify_in_registry(registry: Registry, pins: list[Pin]) -> None:
    """Never pin what the registry does not hold, nor a tag that names another image than
    the digest beside it: one HEAD per pin, the tag must answer with the pin's digest."""
    bad = [p.reference for p in pins if not is_valid(p.reference)]
    if bad:
        raise ConfigError(f"promote: not image references: {', '.join(map(repr, bad))}")
    with ThreadPoolExecutor(8) as pool:  # the registry answers several at once
        held = dict(zip([p.app for p in pins], pool.map(_digest(registry), pins), strict=True))
    wrong = [p for p in pins if held[p.app] != p.digest]
    missing = [p for p in wrong if registry.manifest(p.app, p.digest) is None]
    if missing:
        names = ", ".join(f"{p.app}@{p.digest}" for p in missing)
        raise StageError(
            Stage.PROMOTE, f"not in registry {registry.settings.host}: {names}; nothing was changed"
        )
    for pin in wrong:
        raise StageError(
            Stage.PROMOTE,
            f"{pin.repository}:{pin.tag} holds {held[pin.app] or 'nothing'}, not {pin.digest}; "
            "nothing was changed",
        )


def _digest(registry: Registry) -> Callable[[Pin], str | None]:
    return lambda pin: registry.digest(pin.app, pin.tag)


def pins_from_report(path: Path, settings: Settings, recipes: dict[str, Recipe]) -> list[Pin]:
    """Pins for every image a `heps run --report` file says was pushed or found unchanged."""
    where = f"--report {path}"
    return pins_from_results(report.read(path, where), where, settings, recipes)


_REASON = re.compile(r"[A-Za-z0-9 ,.:()/_-]{0,80}")


def pins_from_results(
    results: list[RecipeReport], where: str, settings: Settings, recipes: dict[str, Recipe]
) -> list[Pin]:
    """Pins for every result with a digest that did not fail, by its immutable tag.

    A result is looked up, never copied: the pinned reference is built from the settings'
    registry and namespace, the recipe's name, the result's tag and digest, each checked
    against the reference grammar; the registry then confirms the tag holds the digest.
    A run reports each recipe once: a second result for one app (a tag beside another
    entry's digest) is refused, so the registry check and the edit see one pin per app."""
    first: dict[str, int] = {}
    for index, result in enumerate(results):
        seen = first.setdefault(result.name, index)
        if seen != index:
            raise ConfigError(
                f"{where}: recipes[{index}].name: {result.name!r} again (first at "
                f"recipes[{seen}]); a report lists each recipe once; nothing was changed"
            )
    pins = [
        _pin_of(result, f"{where}: recipes[{index}]", settings, recipes)
        for index, result in enumerate(results)
        if result.digest and result.status != FAILED
    ]
    if not pins:
        raise ConfigError(f"{where}: no pushed image to promote")
    return pins


def _pin_of(
    result: RecipeReport, where: str, settings: Settings, recipes: dict[str, Recipe]
) -> Pin:
    def refuse(field_name: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}.{field_name}: {problem}; nothing was changed")

    app, digest = result.name, result.digest
    if app not in recipes:
        raise refuse("name", f"{app!r} is not a recipe of this repository")
    if digest is None or not re.fullmatch(DIGEST, digest):
        raise refuse("digest", f"{digest!r} is not a sha256 digest")
    reference, field_name = (result.pin, "pin") if result.pin else (result.image, "image")
    if not is_valid(reference):
        raise refuse(field_name, f"{reference!r} is not an image reference")
    repository = settings.registry.repository(app)
    named, tag, _ = split_reference(reference)
    if named != repository or not tag:
        raise refuse(field_name, f"{reference!r} is not a tag of {repository}")
    reason = result.detail or result.reason
    if not _REASON.fullmatch(reason):
        raise refuse("reason", "not a short line of plain text")
    return Pin(app, repository, tag, digest, version_of(tag), reason)


def pins_from_overlay(
    root: Path, settings: Settings, overlay: str, apps: dict[str, str]
) -> list[Pin]:
    """What an overlay runs now, as pins (for promotion to the next environment)."""
    pins: dict[str, Pin] = {}
    for found in current(root, settings, overlay, apps):
        _, tag, digest = split_reference(found["image"])
        if digest and tag and found["app"] not in pins:  # the repository is ours, not copied
            app = found["app"]
            pins[app] = Pin(app, apps[app], tag, digest, version_of(tag), "promoted")
    return list(pins.values())


def current(
    root: Path, settings: Settings, overlay: str, apps: dict[str, str]
) -> list[dict[str, Any]]:
    """Every pinned image field of an overlay: app, image, file, line."""
    root = root.resolve()
    folder = overlay_dir(root, settings, overlay)
    texts = {str(p.relative_to(root)): read_file(root, p) for p in yaml_files(root, folder)}
    return pinned_in(texts, apps)


def pinned_in(texts: dict[str, str], apps: dict[str, str]) -> list[dict[str, Any]]:
    probes = Pins(Pin(app, repo, "", "") for app, repo in apps.items())
    result = []
    for name, text in sorted(texts.items()):
        for found in scan(image_fields(text, name), probes):
            result.append(
                {"app": found.app, "image": found.value, "where": f"{name}:{found.line + 1}"}
            )
    return result


def previous_pin(root: Path, settings: Settings, overlay: str, app: str, repository: str) -> Pin:
    """The last pin of `app` in the overlay's git history that differs from today's."""
    folder = overlay_dir(root, settings, overlay).relative_to(root)
    apps = {app: repository}
    now = {i["image"] for i in current(root, settings, overlay, apps)}
    git = Repository(root)
    for sha in git.history(str(folder)):
        texts = {
            n: (git.show(sha, n) or b"").decode("utf-8", "replace")
            for n in git.files_at(sha, str(folder))
            if n.endswith((".yaml", ".yml"))
        }
        try:
            images = {i["image"] for i in pinned_in(texts, apps)}
        except PinError:
            continue  # a commit with a broken file is no rollback target
        for image in sorted(images - now):
            _, tag, digest = split_reference(image)
            if digest and tag:  # the repository is ours, the registry confirms tag and digest
                why = f"rollback from {sha[:12]}"
                return Pin(app, repository, tag, digest, version_of(tag), why)
    raise ConfigError(
        f"rollback {app}: no earlier pin in the history of {folder}; name one with --to VERSION"
    )
