"""What a run did, as JSON for tools and JUnit XML for Jenkins. Written atomically.

Status per recipe: ``built`` (built, smoke-tested and, unless --no-push, pushed),
``skipped`` (fingerprint already in the registry) or ``failed`` (with the stage).
"""

from __future__ import annotations

import json
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heps.core.log import Masker, xml_text
from heps.core.stages import Stage
from heps.images.lint import Finding
from heps.images.smoke import SmokeResult

BUILT, SKIPPED, FAILED = "built", "skipped", "failed"


@dataclass
class RecipeReport:
    name: str
    version: str
    reason: str
    """Why it was considered: changed, base changed, not in registry, unchanged."""
    detail: str = ""
    """For `base changed`: what changed ("base debian-base changed")."""
    status: str = SKIPPED
    image: str = ""
    """REGISTRY/NAMESPACE/NAME:TAG of this fingerprint: the version tag, or the rebuild
    tag VERSION-fp<fingerprint> when the version tag names an older image."""
    references: list[str] = field(default_factory=list)
    digest: str | None = None
    pushed: bool = False
    fingerprint: str = ""
    failed_stage: Stage | None = None
    error: str | None = None
    lint: list[Finding] = field(default_factory=list)
    smoke: list[SmokeResult] = field(default_factory=list)
    seconds: dict[Stage, float] = field(default_factory=dict)


IDENTIFIERS = ("name", "version", "image", "references", "digest", "fingerprint")
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


def as_junit(reports: list[RecipeReport], masker: Masker) -> str:
    """One testcase per recipe and stage, as Jenkins' JUnit plugin shows them to people:
    masked, and every string as XML 1.0 can hold it."""

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
    suite.set("tests", str(cases))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: readers never see half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
