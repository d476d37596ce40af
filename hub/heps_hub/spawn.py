"""Turn an identity and the hub's values into the user pod's parts, kubespawner-style:
pure functions from data to manifest fragments, secure defaults inside the builders.

The user-init init container writes passwd/group entries to a shared emptyDir, creates
the home directory on Lustre and prepares the group data paths; the notebook container
then runs as the user's uid, gid and supplementary groups, never as root, with no
privilege escalation, and sees those files as its /etc/passwd and /etc/group.
"""

from __future__ import annotations

import shlex
from typing import Any

from heps_hub.identity import Identity
from heps_hub.values import Spawner

IDENTITY_VOLUME = "heps-identity"
POLICY_VOLUME = "heps-user-init-policy"
IDENTITY_DIR = "/heps-identity"
POLICY_DIR = "/etc/heps/user-init"

# User-init's resources, the cluster's init container and the single machine's container
# alike (heps_hub.docker_spawner). Its Python takes about 0.1 CPU-seconds in the path of
# every spawn: a 500m limit stretched that over two or three of CFS's 100 ms periods. A
# one-core limit leaves every profile's pod limits as they were (a pod's is the larger
# of its init container's and the sum of its containers'; every profile has two cores
# or more) and its request too.
USER_INIT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "128Mi"},
}

NOTEBOOK_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def volumes(spawner: Spawner) -> list[dict[str, Any]]:
    storage = spawner.storage
    return [
        {"name": IDENTITY_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": POLICY_VOLUME, "configMap": {"name": spawner.user_init.policy_config_map}},
        {"name": "cvmfs", "persistentVolumeClaim": {"claimName": storage.cvmfs_claim}},
        {"name": "lustre", "persistentVolumeClaim": {"claimName": storage.lustre_claim}},
    ]


def notebook_mounts(identity: Identity, spawner: Spawner) -> list[dict[str, Any]]:
    """What the notebook container sees: its identity files, home, group data, software."""
    storage = spawner.storage
    return [
        {
            "name": IDENTITY_VOLUME,
            "mountPath": "/etc/passwd",
            "subPath": "passwd",
            "readOnly": True,
        },
        {"name": IDENTITY_VOLUME, "mountPath": "/etc/group", "subPath": "group", "readOnly": True},
        {
            "name": "lustre",
            "mountPath": f"{storage.home_base}/{identity.name}",
            "subPath": f"home/{identity.name}",
        },
        {"name": "lustre", "mountPath": storage.data_base, "subPath": "data"},
        {"name": "cvmfs", "mountPath": "/cvmfs", "readOnly": True},
    ]


def _literal(text: str) -> str:
    """KubeSpawner formats every string of init_containers, volumes and mounts with the
    user's properties ({username}, ...); doubled braces come out as the JSON's own."""
    return text.replace("{", "{{").replace("}", "}}")


def user_init_container(identity: Identity, spawner: Spawner) -> dict[str, Any]:
    """The init container: root, but only to chown what it creates; nothing else."""
    storage = spawner.storage
    return {
        "name": "user-init",
        "image": spawner.user_init.image,
        "command": ["heps-user-init"],
        "args": ["--policy", f"{POLICY_DIR}/policy.yaml", "--output", IDENTITY_DIR],
        "env": [{"name": "HEPS_USER_IDENTITY", "value": _literal(identity.as_json())}],
        "volumeMounts": [
            {"name": IDENTITY_VOLUME, "mountPath": IDENTITY_DIR},
            {"name": POLICY_VOLUME, "mountPath": POLICY_DIR, "readOnly": True},
            {"name": "lustre", "mountPath": storage.home_base, "subPath": "home"},
            {"name": "lustre", "mountPath": storage.data_base, "subPath": "data"},
        ],
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {part: dict(amounts) for part, amounts in USER_INIT_RESOURCES.items()},
    }


def data_link(data_base: str) -> list[str]:
    """Run as the user once her server starts: `data` in her home leads to the data
    folders, so JupyterLab, which opens in her home, shows them (z2jh's postStart way)."""
    return ["sh", "-c", f'[ -e "$HOME/data" ] || ln -s {shlex.quote(data_base)} "$HOME/data"']


def identity_settings(identity: Identity, spawner: Spawner) -> dict[str, Any]:
    """KubeSpawner trait values for this user's pod (applied by the authenticator)."""
    home = f"{spawner.storage.home_base}/{identity.name}"
    return {
        "uid": identity.uid,
        "gid": identity.gid,
        "supplemental_gids": [g.gid for g in identity.groups],
        "init_containers": [user_init_container(identity, spawner)],
        "volumes": volumes(spawner),
        "volume_mounts": notebook_mounts(identity, spawner),
        "working_dir": home,
        "environment": {"HOME": home, "USER": identity.name, "NB_USER": identity.name},
        "allow_privilege_escalation": False,
        "container_security_context": NOTEBOOK_SECURITY_CONTEXT,
        "lifecycle_hooks": {
            "postStart": {"exec": {"command": data_link(spawner.storage.data_base)}}
        },
    }
