"""The site policy: what the init container accepts and where it prepares files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# shadow-utils' default NAME_REGEX (Debian's adduser is stricter still), 32 characters.
NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class PolicyError(ValueError):
    """The policy file itself is wrong (a site configuration error, exit 2)."""


@dataclass(frozen=True)
class Policy:
    uid_range: tuple[int, int]
    gid_range: tuple[int, int]
    allowed_groups: frozenset[str]
    home_base: Path
    data_base: Path
    group_data: dict[str, str]
    """group name -> path below data_base prepared for that group"""
    cvmfs_repositories: tuple[str, ...]
    """linked from a new home as ~/cvmfs/<repository>"""


def _range(raw: Any, key: str, where: str) -> tuple[int, int]:
    if (
        not isinstance(raw, list)
        or len(raw) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw)
        or not 0 < raw[0] <= raw[1]
    ):
        raise PolicyError(f"{where}: {key}: expected [lowest, highest], both above 0")
    return raw[0], raw[1]


def load(path: Path) -> Policy:
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{where}: cannot read the policy: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: expected a mapping")
    known = {
        "uid_range",
        "gid_range",
        "allowed_groups",
        "home_base",
        "data_base",
        "group_data",
        "cvmfs_repositories",
    }
    missing, unknown = sorted(known - set(raw)), sorted(set(raw) - known)
    if missing or unknown:
        raise PolicyError(f"{where}: missing keys {missing}, unknown keys {unknown}")
    home, data = Path(raw["home_base"]), Path(raw["data_base"])
    if not (home.is_absolute() and data.is_absolute()):
        raise PolicyError(f"{where}: home_base and data_base must be absolute paths")
    group_data = raw["group_data"] or {}
    for group, sub in group_data.items():
        if not isinstance(sub, str) or Path(sub).is_absolute() or ".." in Path(sub).parts:
            raise PolicyError(f"{where}: group_data.{group}: a relative path below data_base")
    repositories = tuple(raw["cvmfs_repositories"] or ())
    if not all(re.fullmatch(r"[a-z0-9][a-z0-9.-]+", r) for r in repositories):
        raise PolicyError(f"{where}: cvmfs_repositories: repository names like sft.cern.ch")
    return Policy(
        uid_range=_range(raw["uid_range"], "uid_range", where),
        gid_range=_range(raw["gid_range"], "gid_range", where),
        allowed_groups=frozenset(raw["allowed_groups"] or ()),
        home_base=home,
        data_base=data,
        group_data=dict(group_data),
        cvmfs_repositories=repositories,
    )
