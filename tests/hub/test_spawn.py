"""The hub side of the identity: claims to identity, identity to the user pod's parts,
checked as whole objects (kubespawner-style builders, secure defaults inside them)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from heps_hub.identity import Group, Identity, IdentityError, from_claims
from heps_hub.spawn import identity_settings
from heps_hub.values import Spawner, Storage, UserInit

CLAIMS: dict[str, Any] = {
    "uidNumber": 20001,
    "gidNumber": 20001,
    "groups": [{"name": "heps-users", "gid": 20001}],
    "email": "alice@ihep.ac.cn",
    "email_verified": True,
}
IDENTITY_FILE = {"name": "heps-identity", "readOnly": True}
ALICE = Identity("alice", 20001, 20001, (Group("heps-users", 20001),), "alice@ihep.ac.cn")


def test_claims_make_an_identity() -> None:
    assert from_claims("alice", CLAIMS) == ALICE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"email_verified": False}, "email address is not verified"),
        ({"email_verified": "true"}, "email address is not verified"),
        ({"uidNumber": None}, "no numeric 'uidNumber'"),
        ({"uidNumber": "20001"}, "no numeric 'uidNumber'"),
        ({"gidNumber": True}, "no numeric 'gidNumber'"),
        ({"email": None}, "sent no 'email'"),
        ({"groups": "heps-users"}, "'groups' claim is not a list"),
        ({"groups": [{"gid": 1}]}, "holds an entry without a name"),
        ({"groups": [{"name": "x", "gid": "1"}]}, "no numeric 'gid'"),
    ],
)
def test_incomplete_claims_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        from_claims("alice", {**CLAIMS, **change})


def test_identity_settings_are_the_whole_pod_wiring() -> None:
    spawner = Spawner("heps", "heps-scheduler", UserInit("reg/heps/heps-user-init:1@sha256:ab"))
    assert spawner.storage == Storage()
    settings = identity_settings(ALICE, spawner)
    identity = json.dumps(
        {
            "email": "alice@ihep.ac.cn",
            "gid": 20001,
            "groups": [{"gid": 20001, "name": "heps-users"}],
            "name": "alice",
            "uid": 20001,
        },
        sort_keys=True,
    )
    assert settings == {
        "uid": 20001,
        "gid": 20001,
        "supplemental_gids": [20001],
        "init_containers": [
            {
                "name": "user-init",
                "image": "reg/heps/heps-user-init:1@sha256:ab",
                "command": ["heps-user-init"],
                "args": [
                    "--policy",
                    "/etc/heps/user-init/policy.yaml",
                    "--output",
                    "/heps-identity",
                ],
                "env": [
                    {
                        "name": "HEPS_USER_IDENTITY",
                        "value": identity.replace("{", "{{").replace("}", "}}"),
                    }
                ],
                "volumeMounts": [
                    {"name": "heps-identity", "mountPath": "/heps-identity"},
                    {
                        "name": "heps-user-init-policy",
                        "mountPath": "/etc/heps/user-init",
                        "readOnly": True,
                    },
                    {"name": "lustre", "mountPath": "/home", "subPath": "home"},
                    {"name": "lustre", "mountPath": "/data", "subPath": "data"},
                ],
                "securityContext": {
                    "runAsUser": 0,
                    "runAsNonRoot": False,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "resources": {
                    "requests": {"cpu": "50m", "memory": "64Mi"},
                    "limits": {"cpu": "1", "memory": "128Mi"},
                },
            }
        ],
        "volumes": [
            {"name": "heps-identity", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {"name": "heps-user-init-policy", "configMap": {"name": "user-init-policy"}},
            {"name": "cvmfs", "persistentVolumeClaim": {"claimName": "cvmfs"}},
            {"name": "lustre", "persistentVolumeClaim": {"claimName": "lustre"}},
        ],
        "volume_mounts": [
            {
                "name": "heps-identity",
                "mountPath": "/etc/passwd",
                "subPath": "passwd",
                "readOnly": True,
            },
            {
                "name": "heps-identity",
                "mountPath": "/etc/group",
                "subPath": "group",
                "readOnly": True,
            },
            {"name": "lustre", "mountPath": "/home/alice", "subPath": "home/alice"},
            {"name": "lustre", "mountPath": "/data", "subPath": "data"},
            {"name": "cvmfs", "mountPath": "/cvmfs", "readOnly": True},
        ],
        "working_dir": "/home/alice",
        "environment": {"HOME": "/home/alice", "USER": "alice", "NB_USER": "alice"},
        "allow_privilege_escalation": False,
        "container_security_context": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        # as the user, once started: `data` in her home leads to the data folders
        "lifecycle_hooks": {
            "postStart": {
                "exec": {"command": ["sh", "-c", '[ -e "$HOME/data" ] || ln -s /data "$HOME/data"']}
            }
        },
    }
