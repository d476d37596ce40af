"""List, then watch from the list's resourceVersion, as client-go's reflector does.

One reflector per kind (nodes, pods) feeds (kind, change, object) into the scheduler's
queue. A list arrives as one RELIST change carrying every item: the scheduler replaces
its cache with it, so pods deleted and nodes removed while no watch was open are gone
afterwards. A watch that ends at its timeout resumes from the last resourceVersion seen
(bookmarks included); a 410 Gone (the version was compacted away) or any broken stream
lists again.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("heps_scheduler")
RELIST = "RELIST"
GONE = 410
Change = tuple[str, str, Any]
"""(kind, ADDED / MODIFIED / DELETED / RELIST, the object or, for RELIST, all items)."""


def _raw(response: Any) -> Any:
    import json

    return json.loads(response.data or b"null")


class Reflector:
    def __init__(
        self,
        list_fn: Callable[..., Any],
        kind: str,
        changes: queue.Queue[Change],
        stop: threading.Event,
        watch_seconds: int = 300,
        pause: float = 2.0,
    ) -> None:
        self.list_fn, self.kind, self.changes, self.stop = list_fn, kind, changes, stop
        self.watch_seconds, self.pause = watch_seconds, pause
        self.relists = 0
        self.version = ""
        """The last resourceVersion seen (a list's, an event's or a bookmark's)."""

    def run(self) -> None:
        """List and watch until `stop`; every failure ends in a new list after a pause."""
        while not self.stop.is_set():
            try:
                self.watch(self.relist())
            except Exception as exc:  # the API server is away: list again after a pause
                log.warning("%s list failed: %s; retrying", self.kind, exc)
            self.stop.wait(self.pause)

    def relist(self) -> str:
        body = _raw(self.list_fn(_preload_content=False))
        self.relists += 1
        self.changes.put((self.kind, RELIST, body.get("items") or []))
        self.version = str(body["metadata"]["resourceVersion"])
        return self.version

    def watch(self, version: str) -> None:
        """Watch from `version` until `stop` or until the stream breaks or expires."""
        from kubernetes import watch

        while not self.stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.list_fn,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_seconds,
                ):
                    obj = event["raw_object"]
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    self.version = version
                    if event["type"] != "BOOKMARK":
                        self.changes.put((self.kind, event["type"], obj))
                    if self.stop.is_set():
                        stream.stop()
            except Exception as exc:  # 410 Gone or a broken stream: the cache needs a list
                gone = getattr(exc, "status", None) == GONE
                log.warning(
                    "%s watch %s at %s: %s; listing again",
                    self.kind,
                    "expired" if gone else "broke",
                    version,
                    exc,
                )
                return
