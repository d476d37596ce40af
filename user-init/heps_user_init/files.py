"""What the identity becomes on disk: passwd and group files for the notebook container,
the home directory and the group data paths. Everything is checked first (`plan`), then
done (`apply`); a second run finds everything in place and changes nothing."""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from heps_user_init.identity import Identity, Refused
from heps_user_init.policy import Policy

HOME_MODE, GROUP_DATA_MODE = 0o700, 0o2770


@dataclass(frozen=True)
class Plan:
    passwd: str
    group: str
    home: Path
    create_home: bool
    data_dirs: list[tuple[Path, int]] = field(default_factory=list)
    """Group data paths to create, with the group that owns each."""
    links: list[tuple[str, str]] = field(default_factory=list)
    """Symbolic links to put in a new home: (name in the home, target)."""


def _real_dir(path: Path, what: str) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise Refused(f"{what} {path} does not exist; is the volume mounted?") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise Refused(f"{what} {path} is not a directory (or is a symbolic link)")


def _inside(base: Path, relative: Path, what: str) -> list[Path]:
    """The path's components below `base`; Refused when one is a symbolic link or the
    path leaves `base`."""
    components, current = [], base
    for part in relative.parts:
        if part in ("", ".", ".."):
            raise Refused(f"{what} {base / relative} leaves {base}")
        current = current / part
        if current.is_symlink():
            raise Refused(f"{what} {base / relative} goes through the symbolic link {current}")
        components.append(current)
    if os.path.commonpath([current.resolve(), base.resolve()]) != str(base.resolve()):
        raise Refused(f"{what} {current} resolves outside {base}")
    return components


def accounts(identity: Identity, passwd: str, group: str, home: Path) -> tuple[str, str]:
    """The image's own entries plus the user's."""
    user = f"{identity.name}:x:{identity.uid}:{identity.gid}::{home}:/bin/bash\n"
    groups = [f"{g.name}:x:{g.gid}:{identity.name}\n" for g in identity.groups]
    if identity.primary_group == identity.name:
        groups.insert(0, f"{identity.name}:x:{identity.gid}:\n")
    return _lines(passwd) + user, _lines(group) + "".join(groups)


def _lines(text: str) -> str:
    return text if text.endswith("\n") or not text else text + "\n"


def plan(identity: Identity, policy: Policy, passwd: str, group: str) -> Plan:
    _real_dir(policy.home_base, "home base")
    (home,) = _inside(policy.home_base, Path(identity.name), "home")
    create_home = not home.exists()
    if not create_home:
        _real_dir(home, "home")
        if home.stat().st_uid != identity.uid:
            raise Refused(f"home {home} belongs to uid {home.stat().st_uid}, not {identity.uid}")
    data_dirs = []
    names = {g.name: g.gid for g in identity.groups}
    for name, sub in sorted(policy.group_data.items()):
        if name not in names:
            continue
        _real_dir(policy.data_base, "data base")
        components = _inside(policy.data_base, Path(sub), f"data path of {name}")
        for path in components:
            if path.exists():
                _real_dir(path, f"data path of {name}")
            else:  # parents stay root's; the group owns its own directory
                data_dirs.append((path, names[name] if path == components[-1] else 0))
    links = [(f"cvmfs/{r}", f"/cvmfs/{r}") for r in policy.cvmfs_repositories]
    links += [
        (f"data/{g}", str(policy.data_base / policy.group_data[g]))
        for g in sorted(names)
        if g in policy.group_data
    ]
    passwd_text, group_text = accounts(identity, passwd, group, home)
    return Plan(passwd_text, group_text, home, create_home, data_dirs, links if create_home else [])


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def apply(todo: Plan, identity: Identity, output: Path) -> list[str]:
    """Carry out a plan; what changed, one line each."""
    done = []
    for name, text in (("passwd", todo.passwd), ("group", todo.group)):
        if _write_if_changed(output / name, text):
            done.append(f"wrote {output / name}")
    for path, gid in todo.data_dirs:
        path.mkdir(mode=0o755)
        if gid:  # setgid while root's group owns it: later, that would take CAP_FSETID
            os.chmod(path, GROUP_DATA_MODE)
            os.chown(path, 0, gid)
        done.append(f"created {path}")
    if todo.create_home:
        todo.home.mkdir(mode=HOME_MODE)
        os.chown(todo.home, identity.uid, identity.gid)
        os.chmod(todo.home, HOME_MODE)
        done.append(f"created {todo.home}")
        for name, target in todo.links:
            link = todo.home / name
            if not link.parent.exists():
                link.parent.mkdir(mode=0o755)
                os.chown(link.parent, identity.uid, identity.gid)
            link.symlink_to(target)
            os.lchown(link, identity.uid, identity.gid)
    return done
