"""The SSO testbed's accounts file: every mistake named by file, entry and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from heps.core.errors import ConfigError
from heps.platform import users
from tests.conftest import REPO_ROOT

GOOD: dict[str, Any] = {
    "username": "alice",
    "password": "pw",
    "uidNumber": 20001,
    "gidNumber": 20001,
    "email": "alice@ihep.ac.cn",
    "email_verified": True,
    "groups": [{"name": "heps-users", "gid": 20001}],
}


def test_the_bundled_example_has_two_scientists_and_an_outsider() -> None:
    found = users.load(REPO_ROOT / "hub" / "sso-testbed" / "users.example.yaml")
    groups = {n: {g["name"] for g in a["claims"]["groups"]} for n, a in found.items()}
    assert [n for n, g in groups.items() if "heps-users" in g] == ["alice", "bruno"]
    assert [n for n, g in groups.items() if "heps-users" not in g] == ["oscar"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ("[]", "expected a non-empty list of accounts"),
        ("- {a: [", "YAML syntax error"),
        ([{**GOOD, "uid": 1}], "entry 1: unknown keys ['uid']"),
        ([{**GOOD, "username": "a b"}], "entry 1: username:"),
        ([{**GOOD, "password": ""}], "entry 1: password: give a non-empty string"),
        ([{**GOOD, "uidNumber": "20001"}], "entry 1: uidNumber: wrong type"),
        ([{**GOOD, "email_verified": "yes"}], "entry 1: email_verified: wrong type"),
        ([{**GOOD, "groups": [{"name": "x"}]}], "entry 1: groups: wrong type"),
        ([GOOD, GOOD], "entry 2: username 'alice' given twice"),
    ],
)
def test_bad_accounts_are_refused_naming_the_entry(
    tmp_path: Path, entries: Any, message: str
) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(entries if isinstance(entries, str) else yaml.safe_dump(entries))
    with pytest.raises(ConfigError, match=rf"^{path}(:\d+)?: .*") as caught:
        users.load(path)
    assert message in str(caught.value)


def test_the_claims_reach_the_provider_file_and_the_password_stays_apart(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump([GOOD]))
    found = users.load(path)
    assert found == {
        "alice": {
            "password": "pw",
            "claims": {k: v for k, v in GOOD.items() if k not in ("username", "password")},
        }
    }


def test_platform_up_with_a_broken_accounts_file_exits_2_with_one_line(
    tmp_path: Path, heps: Any
) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump([{**GOOD, "uidNumber": "x"}]))
    result = heps(REPO_ROOT, "platform", "up", "--name", "heps-pt-never", "--users", str(path))
    assert result.code == 2
    assert (
        result.err
        == f"heps: error: {path}: entry 1: uidNumber: wrong type; see the bundled example\n"
    )
