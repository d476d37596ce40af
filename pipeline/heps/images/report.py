"""What a run did, as JSON for tools and JUnit XML for Jenkins. Written atomically.

Status per recipe: ``built`` (built, smoke-tested and, unless --no-push, pushed),
``skipped`` (fingerprint already in the registry) or ``failed`` (with the stage).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from heps.core.bounded import read_text
from heps.core.errors import ConfigError
from heps.core.log import Masker, xml_text
from heps.core.stages import Stage


class Status(StrEnum):
    BUILT = "built"
    SKIPPED = "skipped"
    FAILED = "failed"


BUILT, SKIPPED, FAILED = Status.BUILT, Status.SKIPPED, Status.FAILED


@dataclass(frozen=True)
class Finding:
    """One lint finding (hadolint's or heps's own rules). The results' plain types live
    here, not in the stages that make them, so reading a report imports no stage."""

    file: str
    line: int
    code: str
    level: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.code} {self.level}: {self.message}"


class SmokeKind(StrEnum):
    STRUCTURE = "structure"
    COMMAND = "command"
    HTTP = "http"


@dataclass(frozen=True)
class SmokeResult:
    """One smoke check's outcome."""

    name: str
    kind: SmokeKind
    passed: bool
    seconds: float
    detail: str = ""


@dataclass
class RecipeReport:
    name: str
    version: str
    reason: str
    """Why it was considered: changed, base changed, not in registry, unchanged."""
    detail: str = ""
    """For `base changed`: what changed ("base debian-base changed")."""
    status: Status = SKIPPED
    image: str = ""
    """REGISTRY/NAMESPACE/NAME:TAG of this fingerprint: the version tag, or the rebuild
    tag VERSION-fp<fingerprint> when the version tag names an older image."""
    references: list[str] = field(default_factory=list)
    digest: str | None = None
    pin: str = ""
    """REPO:TAG promotion pins with `digest`: the immutable tag of this run's push
    (`Pushed.immutable`), or the image found unchanged."""
    pushed: bool = False
    fingerprint: str = ""
    failed_stage: Stage | None = None
    error: str | None = None
    lint: list[Finding] = field(default_factory=list)
    smoke: list[SmokeResult] = field(default_factory=list)
    seconds: dict[Stage, float] = field(default_factory=dict)


IDENTIFIERS = ("name", "version", "image", "references", "digest", "pin", "fingerprint")
"""Fields that name an image: public by construction (recipe.yaml, settings, the registry)
and what promotion looks up, so never masked. Every other value (errors, smoke output) is
shown to people and masked before encoding."""


def as_json(reports: list[RecipeReport], meta: dict[str, Any], masker: Masker) -> str:
    entries = []
    for report in reports:
        entry = asdict(report)
        kept = {key: entry.pop(key) for key in IDENTIFIERS}
        entries.append({**kept, **masker.mask(entry)})
    body = {**masker.mask(meta), "recipes": entries}
    return json.dumps(body, indent=2, default=str) + "\n"


def as_junit(reports: list[RecipeReport], masker: Masker, ended: str | None = None) -> str:
    """One testcase per recipe and stage, as Jenkins' JUnit plugin shows them to people:
    masked, and every string as XML 1.0 can hold it; `ended`, the error that ended the run, is
    one more failed testcase (`heps` `run`)."""

    def xml_safe(text: str) -> str:
        return xml_text(masker.redact(text))

    suite = ET.Element("testsuite", name="heps")
    cases = failures = skipped = 0
    for report in reports:
        stages: list[tuple[str, float, str | None]] = []
        for stage in (Stage.LINT, Stage.BUILD):
            if stage in report.seconds or report.failed_stage == stage:
                error = report.error if report.failed_stage == stage else None
                stages.append((stage, report.seconds.get(stage, 0.0), error))
        for result in report.smoke:
            stages.append(
                (
                    f"smoke {result.kind} {result.name}",
                    result.seconds,
                    None if result.passed else result.detail,
                )
            )
        pushing = (Stage.PUSH, Stage.VERSION)
        if Stage.PUSH in report.seconds or report.failed_stage in pushing:
            error = report.error if report.failed_stage in pushing else None
            stages.append((Stage.PUSH, report.seconds.get(Stage.PUSH, 0.0), error))
        if not stages:
            stages.append((Stage.PLAN, 0.0, report.error if report.status == FAILED else None))
        for name, seconds, error in stages:
            cases += 1
            case = ET.SubElement(
                suite,
                "testcase",
                classname=xml_safe(f"heps.{report.name}"),
                name=xml_safe(name),
                time=f"{seconds:.3f}",
            )
            if report.status == SKIPPED:
                skipped += 1
                ET.SubElement(case, "skipped", message=xml_safe(f"unchanged: {report.image}"))
            elif error is not None:
                failures += 1
                first = (error.splitlines() or [""])[0][:200]
                ET.SubElement(case, "failure", message=xml_safe(first)).text = xml_safe(error)
    if ended is not None:
        cases += 1
        failures += 1
        case = ET.SubElement(suite, "testcase", classname="heps", name="run", time="0.000")
        ET.SubElement(case, "failure", message=xml_safe(ended[:200])).text = xml_safe(ended)
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def read(path: Path, where: str) -> list[RecipeReport]:
    """A `heps run --report` file, the one reader of it (promote, review): size-capped,
    UTF-8, and checked field by field; ConfigError naming the entry, field and fix.
    Lint findings and timings are not read back: nothing downstream uses them."""
    try:
        data = json.loads(read_text(path, where))
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{where}: not a heps run report: not JSON ({exc})") from None
    entries = data.get("recipes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: recipes: not a list of entries; pass a heps run report")
    return [_entry(entry, f"{where}: recipes[{i}]") for i, entry in enumerate(entries)]


def _entry(raw: object, where: str) -> RecipeReport:
    def refuse(name: str, want: str) -> ConfigError:
        return ConfigError(f"{where}.{name}: not {want}; pass a heps run report")

    if not isinstance(raw, dict):
        raise refuse("", "an object")

    def text(name: str, default: str | None = "") -> Any:
        value = raw.get(name, default)
        if not (isinstance(value, str) or (value is None and default is None)):
            raise refuse(name, "a string")
        return value

    def choice(name: str, kind: type[StrEnum], default: str | None) -> Any:
        value = text(name, default)
        try:
            return None if value is None else kind(value)
        except ValueError:
            raise refuse(name, f"one of {', '.join(kind)}") from None

    refs = raw.get("references", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise refuse("references", "a list of strings")
    smoke = raw.get("smoke", [])
    if not isinstance(smoke, list):
        raise refuse("smoke", "a list")
    pushed = raw.get("pushed", False)
    if not isinstance(pushed, bool):
        raise refuse("pushed", "true or false")
    return RecipeReport(
        name=text("name"),
        version=text("version"),
        reason=text("reason"),
        detail=text("detail"),
        status=choice("status", Status, SKIPPED),
        image=text("image"),
        references=list(refs),
        digest=text("digest", None),
        pin=text("pin"),
        pushed=pushed,
        fingerprint=text("fingerprint"),
        failed_stage=choice("failed_stage", Stage, None),
        error=text("error", None),
        smoke=[_smoke(s, f"{where}.smoke[{i}]") for i, s in enumerate(smoke)],
    )


def _smoke(raw: object, where: str) -> SmokeResult:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: not an object; pass a heps run report")
    try:
        kind = SmokeKind(str(raw.get("kind")))
    except ValueError:
        raise ConfigError(f"{where}.kind: not one of {', '.join(SmokeKind)}") from None
    name, passed, seconds, detail = (raw.get(k) for k in ("name", "passed", "seconds", "detail"))
    if not (
        isinstance(name, str)
        and isinstance(passed, bool)
        and isinstance(seconds, int | float)
        and isinstance(detail, str)
    ):
        raise ConfigError(
            f"{where}: needs name (string), passed (bool), seconds (number) and detail "
            "(string); pass a heps run report"
        )
    return SmokeResult(name, kind, passed, float(seconds), detail)
