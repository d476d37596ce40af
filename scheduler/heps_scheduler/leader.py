"""Leader election through a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Only the holder schedules. A holder renews every `renew` seconds; another replica takes
over once `renewTime + leaseDurationSeconds` has passed. Every write carries the
resourceVersion it read, so two replicas racing for an expired lease cannot both win:
the API server answers the loser with 409 Conflict.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from heps_scheduler.kube import raw


def _micro(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> float:
    if not value:
        return 0.0
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class LeaseElector:
    def __init__(
        self,
        coordination: Any,
        namespace: str,
        name: str,
        identity: str,
        lease_seconds: int = 15,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = coordination
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds = lease_seconds
        self.clock = clock

    def _spec(self, now: float, acquired: float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": _micro(acquired),
            "renewTime": _micro(now),
            "leaseTransitions": transitions,
        }

    def try_acquire_or_renew(self) -> bool:
        """True while this replica holds the lease."""
        now = self.clock()
        try:
            lease = raw(
                self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False)
            )
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, now, 0),
            }
            return self._write(
                lambda: self.api.create_namespaced_lease(
                    self.namespace, body, _preload_content=False
                )
            )
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        expires = _parse(spec.get("renewTime")) + float(spec.get("leaseDurationSeconds") or 0)
        if holder not in (None, "", self.identity) and now < expires:
            return False
        mine = holder == self.identity
        acquired = _parse(spec.get("acquireTime")) if mine else now
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if mine else 1)
        lease["spec"] = self._spec(now, acquired, transitions)  # metadata keeps resourceVersion
        return self._write(
            lambda: self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _preload_content=False
            )
        )

    @staticmethod
    def _write(action: Callable[[], Any]) -> bool:
        try:
            action()
        except Exception as exc:
            if getattr(exc, "status", None) == 409:
                return False  # another replica wrote first: it leads
            raise
        return True
