"""The built heps-user-init image, run in real containers as the hub's pod spec runs it
(root with only CHOWN, DAC_OVERRIDE and FOWNER, read-only root file system, no new
privileges) against temporary volumes for /home, /data and the shared identity volume."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from heps_user_init.__main__ import main as user_init_main
from tests.conftest import REPO_ROOT, BundledBuild

POLICY = REPO_ROOT / "k8s-overlays" / "base" / "hub" / "user-init-policy.yaml"
ALICE: dict[str, Any] = {
    "name": "alice",
    "uid": 20001,
    "gid": 20001,
    "email": "alice@ihep.ac.cn",
    "groups": [{"name": "heps-users", "gid": 20001}, {"name": "b1-users", "gid": 20101}],
}


@dataclass
class Volumes:
    home: Path
    data: Path
    out: Path


@dataclass
class Run:
    code: int
    out: str


@pytest.fixture(scope="module")
def image(bundled_build: BundledBuild) -> str:
    assert bundled_build.code == 0, bundled_build.log[-3000:]
    entry = bundled_build.entries["heps-user-init"]
    assert entry["status"] == "built"
    return str(entry["references"][0])


@pytest.fixture
def volumes(tmp_path: Path) -> Volumes:
    found = Volumes(tmp_path / "home", tmp_path / "data", tmp_path / "out")
    for folder in (found.home, found.data, found.out):
        folder.mkdir()
    return found


def run(
    client: docker.DockerClient,
    image: str,
    volumes: Volumes,
    identity: str | None,
    environment: dict[str, str] | None = None,
) -> Run:
    given = {"HEPS_USER_IDENTITY": identity} if identity is not None else {}
    container = client.containers.run(
        image,
        ["heps-user-init", "--policy", "/etc/heps/user-init/policy.yaml", "--output", "/out"],
        environment={**given, **(environment or {})},
        volumes={
            str(volumes.home): {"bind": "/home", "mode": "rw"},
            str(volumes.data): {"bind": "/data", "mode": "rw"},
            str(volumes.out): {"bind": "/out", "mode": "rw"},
            str(POLICY): {"bind": "/etc/heps/user-init/policy.yaml", "mode": "ro"},
        },
        cap_drop=["ALL"],
        cap_add=["CHOWN", "DAC_OVERRIDE", "FOWNER"],
        security_opt=["no-new-privileges"],
        read_only=True,
        network_disabled=True,
        detach=True,
    )
    try:
        code = container.wait(timeout=60)["StatusCode"]
        return Run(code, container.logs().decode())
    finally:
        container.remove(force=True)


def tree(volumes: Volumes) -> dict[str, tuple[int, int, str]]:
    """Every path under the three volumes: (uid, gid, mode or link target)."""
    found = {}
    for root in (volumes.home, volumes.data, volumes.out):
        for path in [root, *sorted(root.rglob("*"))]:
            info = path.lstat()
            what = os.readlink(path) if path.is_symlink() else oct(stat.S_IMODE(info.st_mode))
            found[str(path.relative_to(root.parent))] = (info.st_uid, info.st_gid, what)
    return found


def test_prepares_the_user_and_a_second_run_changes_nothing(
    docker_client: docker.DockerClient, image: str, volumes: Volumes
) -> None:
    first = run(docker_client, image, volumes, json.dumps(ALICE))
    assert first.code == 0, first.out
    assert "ready: alice uid=20001 gid=20001" in first.out
    passwd = (volumes.out / "passwd").read_text()
    assert passwd.startswith("root:x:0:0:")  # the image's system accounts stay
    assert passwd.endswith("alice:x:20001:20001::/home/alice:/bin/bash\n")
    group = (volumes.out / "group").read_text()
    assert group.endswith("heps-users:x:20001:alice\nb1-users:x:20101:alice\n")
    assert tree(volumes) == {
        "home": (0, 0, "0o755"),
        "home/alice": (20001, 20001, "0o700"),
        "home/alice/cvmfs": (20001, 20001, "0o755"),
        "home/alice/cvmfs/heps.ihep.ac.cn": (20001, 20001, "/cvmfs/heps.ihep.ac.cn"),
        "home/alice/cvmfs/sft.cern.ch": (20001, 20001, "/cvmfs/sft.cern.ch"),
        "home/alice/data": (20001, 20001, "0o755"),
        "home/alice/data/b1-users": (20001, 20001, "/data/beamlines/b1"),
        "data": (0, 0, "0o755"),
        "data/beamlines": (0, 0, "0o755"),
        "data/beamlines/b1": (0, 20101, "0o2770"),
        "out": (0, 0, "0o755"),
        "out/group": (0, 0, "0o644"),
        "out/passwd": (0, 0, "0o644"),
    }
    before = {p: p.stat().st_mtime_ns for p in volumes.out.iterdir()}
    again = run(docker_client, image, volumes, json.dumps(ALICE))
    assert again.code == 0 and "(0 changes)" in again.out, again.out
    assert {p: p.stat().st_mtime_ns for p in volumes.out.iterdir()} == before


def claims(**change: Any) -> str:
    identity = {**ALICE, **change}
    return json.dumps({k: v for k, v in identity.items() if v is not ...})


HOSTILE = {
    "uid-zero": (claims(uid=0), "uid: 0 is outside the allowed range"),
    "uid-below-range": (claims(uid=999), "uid: 999 is outside"),
    "uid-above-range": (claims(uid=5_000_000), "uid: 5000000 is outside"),
    "uid-as-string": (claims(uid="20001"), "uid: expected an integer, got str"),
    "uid-as-bool": (claims(uid=True), "uid: expected an integer, got bool"),
    "uid-as-float": (claims(uid=20001.0), "uid: expected an integer, got float"),
    "gid-zero": (claims(gid=0), "gid: 0 is outside"),
    "name-with-colon": (claims(name="al:ice"), "name: 'al:ice' is not a valid"),
    "name-with-slash": (claims(name="../etc"), "name: '../etc' is not a valid"),
    "name-with-newline": (claims(name="alice\nroot"), "is not a valid user or group name"),
    "name-with-control": (claims(name="ali\x07ce"), "is not a valid user or group name"),
    "name-upper-case": (claims(name="Alice"), "name: 'Alice' is not a valid"),
    "name-leading-dash": (claims(name="-rf"), "name: '-rf' is not a valid"),
    "name-too-long": (claims(name="a" * 33), "is not a valid user or group name"),
    "name-empty": (claims(name=""), "name: '' is not a valid"),
    "name-system-root": (claims(name="root"), "name: 'root' is a system account"),
    "name-system-daemon": (claims(name="daemon"), "name: 'daemon' is a system account"),
    "name-not-a-string": (claims(name=["alice"]), "name: expected a string, got list"),
    "group-not-allowed": (
        claims(groups=[{"name": "docker-admins", "gid": 20500}]),
        "groups[0].name: 'docker-admins' is not a group this site allows",
    ),
    "group-gid-out-of-range": (
        claims(groups=[{"name": "heps-users", "gid": 27}]),
        "groups[0].gid: 27 is outside",
    ),
    "group-extra-field": (
        claims(groups=[{"name": "heps-users", "gid": 20001, "sudo": True}]),
        "groups[0]: expected an object with exactly name and gid",
    ),
    "groups-not-a-list": (claims(groups="heps-users"), "groups: expected a list, got str"),
    "group-two-gids": (
        claims(groups=[{"name": "heps-users", "gid": 20001}, {"name": "heps-users", "gid": 20002}]),
        "group 'heps-users' is listed with two gids",
    ),
    "unexpected-claim": (claims(sudo=True), "unexpected ['sudo']"),
    "missing-uid": (claims(uid=...), "missing ['uid']"),
    "email-with-newline": (claims(email="a@b\nroot::0:0"), "email: expected a printable"),
    "not-json": ("{name: alice}", "the identity is not valid JSON"),
    "nested-deep": ("[" * 100_000, "the identity is not valid JSON"),
    # nogroup is in the site's range: the primary gid is checked as the listed ones are
    "gid-of-a-system-group": (claims(gid=65534), "gid: 65534 belongs to a system group"),
    "json-array": ("[]", "the identity must be a JSON object, got list"),
    "no-identity": (None, "no identity: set HEPS_USER_IDENTITY"),
}


def test_python_variables_of_the_environment_are_ignored(
    docker_client: docker.DockerClient, image: str, volumes: Volumes
) -> None:
    """The launcher runs Python isolated: a PYTHONPATH given to the container cannot put
    a module of a user-writable volume in place of the standard library's."""
    shadow = volumes.data / "py"
    shadow.mkdir()
    (shadow / "argparse.py").write_text("raise SystemExit('shadowed argparse imported')\n")
    done = run(docker_client, image, volumes, json.dumps(ALICE), {"PYTHONPATH": "/data/py"})
    assert done.code == 0 and "shadowed" not in done.out, done.out
    assert "ready: alice uid=20001" in done.out


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_claims_are_refused_without_writing_anything(
    docker_client: docker.DockerClient, image: str, volumes: Volumes, case: str
) -> None:
    identity, reason = HOSTILE[case]
    result = run(docker_client, image, volumes, identity)
    assert result.code == 1
    (line,) = result.out.strip().splitlines()
    assert line.startswith("heps-user-init: refused: ") and reason in line, line
    assert tree(volumes) == {
        "home": (0, 0, "0o755"),
        "data": (0, 0, "0o755"),
        "out": (0, 0, "0o755"),
    }


@pytest.mark.parametrize("case", ["home-is-a-symlink", "home-of-someone-else", "data-via-symlink"])
def test_hostile_file_systems_are_refused_without_writing_anything(
    docker_client: docker.DockerClient, image: str, volumes: Volumes, case: str
) -> None:
    if case == "home-is-a-symlink":
        (volumes.home / "alice").symlink_to("/etc")
        reason = "home /home/alice goes through the symbolic link /home/alice"
    elif case == "home-of-someone-else":
        (volumes.home / "alice").mkdir()
        os.chown(volumes.home / "alice", 20002, 20002)
        reason = "home /home/alice belongs to uid 20002, not 20001"
    else:
        (volumes.data / "beamlines").symlink_to("/etc")
        reason = "data path of b1-users /data/beamlines/b1 goes through the symbolic link"
    before = tree(volumes)
    result = run(docker_client, image, volumes, json.dumps(ALICE))
    assert result.code == 1 and reason in result.out, result.out
    assert tree(volumes) == before


@pytest.mark.parametrize(
    ("identity", "code", "line"),
    [
        (b'{"name": "\xff"}', 2, "not UTF-8; check the mounts"),
        (None, 2, "No such file or directory; check the mounts"),
    ],
)
def test_unreadable_input_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    identity: bytes | None,
    code: int,
    line: str,
) -> None:
    path = tmp_path / "identity.json"
    if identity is not None:
        path.write_bytes(identity)
    argv = ["--identity", str(path), "--policy", str(POLICY), "--output", str(tmp_path)]
    assert user_init_main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("heps-user-init: error: ") and line in err
