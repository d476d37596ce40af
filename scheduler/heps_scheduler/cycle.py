"""What plugins exchange within one scheduling cycle: kube-scheduler's Status and CycleState.

Lower than the plugins and the framework, so both can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUCCESS = "Success"
ERROR = "Error"
UNSCHEDULABLE = "Unschedulable"
UNRESOLVABLE = "UnschedulableAndUnresolvable"
WAIT = "Wait"
SKIP = "Skip"
"""kube-scheduler's status codes (framework/interface.go); SKIP from PreFilter or PreScore
makes the framework skip that plugin's Filter or Score for the rest of the cycle."""


@dataclass(frozen=True)
class Status:
    code: str = SUCCESS
    message: str = ""
    plugin: str = ""
    """The plugin that returned it (the framework fills it in)."""
    cause: object = None
    """The error behind an ERROR status (a binding's API exception, for one)."""

    @property
    def ok(self) -> bool:
        return self.code == SUCCESS


OK = Status()


@dataclass
class CycleState:
    """Data one plugin leaves for later points (or other plugins) of the same cycle."""

    data: dict[str, object] = field(default_factory=dict)
    skip_filter: set[str] = field(default_factory=set)
    skip_score: set[str] = field(default_factory=set)
    rejected: Status | None = None
    """The PreFilter status that made the pod unschedulable, if one did."""
    seen: dict[str, object] = field(default_factory=dict)
    """The nodes (an index array) each Filter plugin was given in this cycle: those that
    passed every filter before it (for PostFilter, as kube-scheduler's filter statuses)."""
