"""KubeSpawner that writes the pod it would create and starts nothing: the login test
checks the real pod manifest without a Kubernetes API server (none can run here)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubespawner import KubeSpawner


class ManifestSpawner(KubeSpawner):  # type: ignore[misc]
    async def start(self) -> Any:
        pod = await self.get_pod_manifest()
        data = self.api.api_client.sanitize_for_serialization(pod)
        folder = Path(os.environ["HEPS_TEST_MANIFESTS"])
        (folder / f"{self.user.name}.json").write_text(json.dumps(data, indent=1))
        raise RuntimeError("test spawner: the pod manifest is written; nothing is started")
