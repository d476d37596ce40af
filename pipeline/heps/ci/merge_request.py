"""`heps ci merge-request`: the trusted pipeline on a merge request, read as data.

This installation of heps (main's, never the merge request's) lints, builds and
smoke-tests what the checkout changed since `--base`, pushes nothing, and writes under
`--out`: `run.json`, `junit.xml`, `review.md` and `review.json`.

What comes from where:
- host-side settings (registry, namespace, CA bundle, Debian mirror, parallelism, the
  state folder, credentials): the operator's, from the environment, the flags and the
  trusted repository's `heps.yaml` (`--repo`), never from the checkout;
- recipes, overlays, lint and smoke settings: the checkout's, as data.

Nothing of the checkout runs on the host: git reads it with its hooks, filters,
fsmonitor and drivers switched off (`systems.git.distrust`); its job templates render in
a sandbox; debootstrap takes packages from the operator's mirror only. Only Dockerfile
`RUN` steps run, in build containers, whose build arguments carry no credential.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from heps.ci import review
from heps.core import log, paths, settings
from heps.core.errors import ConfigError
from heps.core.settings import Settings
from heps.images import report
from heps.images.run import Prepared, ReportFiles, Selection, prepare, run_reported
from heps.systems import engine
from heps.systems.git import Repository, distrust

OUTPUTS = ("run.json", "junit.xml", "review.md", "review.json")


@dataclass(frozen=True)
class Outcome:
    results: list[report.RecipeReport]
    review: review.Review
    written: list[Path]
    interrupted: int | None = None
    """The signal that stopped the run (SIGINT, SIGTERM), if one did: the review still
    says what was done."""

    @property
    def failed(self) -> bool:
        return bool(self.review.problems) or any(r.status == report.FAILED for r in self.results)


def checkout_settings(trusted: Settings, checkout: Path) -> Settings:
    """The checkout's recipe-level settings under the operator's host-side ones."""
    mine = settings.load(checkout, registry=trusted.registry.host)
    return replace(
        mine,
        registry=trusted.registry,
        build=trusted.build,
        state_dir=trusted.state_dir,
        jenkins=trusted.jenkins,
    )


def _outputs(out: Path) -> dict[str, Path]:
    """Each file under --out, checked before anything runs."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: not a folder; name a folder for the reports")
    return {name: paths.output_file(out / name, "--out") for name in OUTPUTS}


@dataclass
class Reports:
    """The four files under --out, checked before anything runs: the run's report
    (`ReportFiles`) and the review, all written naming the error that ended the job once
    it started on the merge request (a bad --checkout or --base writes nothing)."""

    run: ReportFiles
    review_md: Path
    review_json: Path
    base: str
    started: bool = False

    @classmethod
    def under(cls, out: Path, base: str) -> Reports:
        targets = _outputs(out)
        run = ReportFiles(targets["run.json"], targets["junit.xml"])
        return cls(run, targets["review.md"], targets["review.json"], base)

    @property
    def written(self) -> list[Path]:
        return [p for p in (self.run.report, self.run.junit, self.review_md, self.review_json) if p]

    def review(self, done: review.Review, masker: log.Masker) -> None:
        paths.write_atomic(self.review_json, done.as_json(masker))
        paths.write_atomic(self.review_md, done.markdown(masker))

    def failed(self, lines: list[str], mask: log.Masker) -> None:
        """Every report, naming what stopped the job: the reviewer reads it there."""
        if not self.started:
            return
        self.run.failed(lines, mask)
        stopped = review.Review(self.base, "unknown", isolated=True)
        stopped.problems = [f"heps ci merge-request stopped: {line}" for line in lines]
        self.review(stopped, mask)


def run(
    trusted: Settings, checkout: Path, base: str, files: Reports, masker: log.Masker
) -> Outcome:
    root = checkout.resolve()
    if not root.is_dir():
        raise ConfigError(f"--checkout {checkout}: not a folder; check the merge request out there")
    for owned in (root, root / ".git"):
        if owned.exists() and owned.stat().st_uid != os.geteuid():
            raise ConfigError(
                f"--checkout {checkout}: {owned} belongs to uid {owned.stat().st_uid}, not to "
                "this user; check the merge request out as this user (git, too, refuses "
                "another user's repository: safe.directory)"
            )
    distrust(root)
    git = Repository(root)
    if git.toplevel.resolve() != root:
        raise ConfigError(
            f"--checkout {checkout}: not the top of a git checkout ({git.toplevel} is); "
            "pass the folder the merge request is checked out in"
        )
    if git.commit_of(base, "--base") is None:
        raise ConfigError(
            f"--base {base}: not a revision of the checkout {checkout}; "
            "fetch the target branch into it or name a commit it has"
        )
    files.started = True  # the merge request's own content is read from here on
    cfg = checkout_settings(trusted, root)
    prepared = prepare(cfg, Selection(since=base))
    _refuse_own_mirrors(prepared)
    client = engine.connect() if prepared.plan.to_build else None
    runner, results = run_reported(prepared, client, False, files.run, masker)
    done = review.make(cfg, base, files.run.report, masker)
    done.isolated = True  # only this job can say so: it ran the checkout as data
    files.review(done, masker)
    return Outcome(results, done, files.written, runner.interrupted)


def _refuse_own_mirrors(prepared: Prepared) -> None:
    """debootstrap runs package scripts on the host (in a chroot): a merge request may
    choose packages, never the mirror they come from."""
    operator = prepared.settings.build.debian_mirror
    for entry in prepared.plan.to_build:
        spec = prepared.graph.nodes[entry.name].recipe.bootstrap
        if spec is not None and spec.mirror not in (None, operator):
            raise ConfigError(
                f"{prepared.graph.nodes[entry.name].recipe.display}: bootstrap.mirror: "
                f"{spec.mirror} is not the operator's mirror; a merge request builds from "
                "build.debian_mirror of the trusted settings (drop the field)"
            )
