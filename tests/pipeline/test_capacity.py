"""The overlays' capacity objects (k8s-overlays/base/hub/capacity.yaml), as z2jh has
them: the image pre-puller carries exactly the images users' pods run, pinned as the
profile list pins them, and it and the user placeholders pass Pod Security "restricted"
(the rules of Kubernetes 1.31's restricted profile, checked field by field)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from heps.cluster import manifests
from heps.core.paths import overlay_dir
from heps.core.settings import load
from tests.conftest import REPO_ROOT

OVERLAYS = sorted(p.name for p in (REPO_ROOT / "k8s-overlays" / "overlays").iterdir())
VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral"}
VOLUMES |= {"persistentVolumeClaim", "projected", "secret"}


def restricted_problems(pod: dict[str, Any]) -> list[str]:
    """What Pod Security "restricted" refuses in a pod spec (baseline's rules included)."""
    problems = [f"spec.{k}" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    pod_context = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or []:
        kind = next(k for k in volume if k != "name")
        if kind not in VOLUMES:
            problems.append(f"volume {volume['name']}: {kind}")
    for container in (pod.get("initContainers") or []) + pod["containers"]:
        name, ctx = container["name"], container.get("securityContext") or {}
        merged = {**pod_context, **ctx}
        if ctx.get("privileged"):
            problems.append(f"{name}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if merged.get("runAsNonRoot") is not True or merged.get("runAsUser") == 0:
            problems.append(f"{name}: must run as non-root")
        if (merged.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile RuntimeDefault or Localhost")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if any(p.get("hostPort") for p in container.get("ports") or []):
            problems.append(f"{name}: hostPort")
    return problems


def test_the_checker_refuses_what_restricted_refuses() -> None:
    root = {
        "name": "c",
        "securityContext": {"runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}},
    }
    pod = {"hostNetwork": True, "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    found = restricted_problems({**pod, "containers": [root]})
    assert found == [
        "spec.hostNetwork",
        "volume h: hostPath",
        "c: allowPrivilegeEscalation must be false",
        "c: must run as non-root",
        "c: seccompProfile RuntimeDefault or Localhost",
        "c: capabilities must drop ALL",
        "c: adds capabilities",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pre_puller_pulls_what_users_run_and_both_pass_restricted(overlay: str) -> None:
    cfg = load(REPO_ROOT, env={"HEPS_CA_BUNDLE": ""})
    rendered = manifests.render(REPO_ROOT, overlay_dir(REPO_ROOT, cfg, overlay))
    assert manifests.schema_problems(rendered, cfg.reconcile.kubernetes_version) == []
    by_ref = {m.ref: m for m in rendered}
    puller = by_ref["DaemonSet heps/user-image-puller"].obj["spec"]["template"]["spec"]
    holder = by_ref["Deployment heps/user-placeholder"].obj["spec"]["template"]["spec"]
    assert restricted_problems(puller) == [] and restricted_problems(holder) == []

    config = next(m for m in rendered if m.kind == "ConfigMap" and "hub-config" in m.name)
    profiles = yaml.safe_load(config.obj["data"]["profile-list.yaml"])["profile_list"]
    hub_values = yaml.safe_load(config.obj["data"]["overlay.yaml"])
    users_run = {p["kubespawner_override"]["image"] for p in profiles}
    users_run.add(hub_values["spawner"]["user_init"]["image"])
    assert {c["image"] for c in puller["initContainers"]} == users_run
    assert holder["containers"][0]["image"] in users_run  # already on the node
    assert holder["priorityClassName"] == "heps-user-placeholder"
    priority = by_ref["PriorityClass heps-user-placeholder"].obj
    assert priority["value"] < 0 and priority["preemptionPolicy"] == "Never"
