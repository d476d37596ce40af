"""The stages a run goes through: the tag on every log line, the stage of every failure,
the key of every timing in a report (repo2docker tags its log lines by phase the same way).
A `StrEnum`, so reports and logs read "build", "push", ... as before."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    PLAN = "plan"
    VERSION = "version"
    """The recipe's version tag already names another image."""
    LINT = "lint"
    BUILD = "build"
    SMOKE = "smoke"
    PUSH = "push"
    RUN = "run"
    PROMOTE = "promote"
    RECONCILE = "reconcile"
    JENKINS = "jenkins"
    GIT = "git"
    SERVICES = "services"
    PLATFORM = "platform"
