"""Git, through GitPython: the one module that runs git.

Every call goes through `Repository`, which sets `GIT_TERMINAL_PROMPT=0` (a missing
credential fails instead of waiting for a terminal), refuses revisions and names that
git could read as options (`--output=FILE` as a revision would make git write a file),
and scrubs `user:password@` from every message that leaves this module. A checkout handed
over with `distrust` (a merge request's) is read with no hook, filter, fsmonitor,
textconv, external diff, credential helper or protocol of its own: only git's built-in
code runs on it. Pushes report
GitPython's structured flags: a lost race (`REJECTED`, the remote moved) is retried by
the caller, anything else (a hook, a protected branch) fails with the remote's words.
"""

from __future__ import annotations

import functools
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import git
from git import PushInfo, RemoteProgress

from heps.core.errors import ConfigError, StageError
from heps.core.settings import Identity
from heps.core.stages import Stage

_CREDENTIALS = re.compile(r"(\w+://)[^/\s]*@")
_ENV = {"GIT_TERMINAL_PROMPT": "0"}
_LOCK_RACE = re.compile(r"cannot lock ref|but expected|stale info|failed to update ref")
_UNTRUSTED: set[Path] = set()
"""Roots of checkouts whose git configuration and attributes may be hostile."""
_NEUTRAL = {
    "core.hooksPath": "/dev/null",
    "core.fsmonitor": "false",
    "core.sshCommand": "false",
    "core.pager": "cat",
    "credential.helper": "",  # an empty value empties the list of helpers
    "diff.external": "",
    "log.showSignature": "false",
    "protocol.allow": "never",
    "submodule.recurse": "false",
    "diff.ignoreSubmodules": "all",
    "status.submoduleSummary": "false",
}
"""Settings of an untrusted checkout that would run a program, each put back to none."""
_DRIVER = re.compile(
    r"(filter\..+\.(clean|smudge|process)|diff\..+\.(textconv|command)|merge\..+\.driver)"
)
"""Per-name drivers a checkout's config may define for its .gitattributes to call."""


def scrub(text: str) -> str:
    """Remove user:password@ from every URL in `text` (an `@` in the password too)."""
    return _CREDENTIALS.sub(r"\1***@", text)


def checked(value: str, what: str) -> str:
    """`value` if git cannot take it for an option; a ConfigError naming `what` otherwise."""
    if not value or value.startswith("-") or any(c in value for c in "\0\n\r"):
        raise ConfigError(f"{what} {value!r}: not a git revision or name; name a commit or branch")
    return value


def distrust(root: Path) -> None:
    """From now on, read every repository at or under `root` as untrusted data."""
    _UNTRUSTED.add(root.resolve())


@functools.cache  # one `git config --list` per checkout and process
def _hardened(path: Path) -> dict[str, str]:
    """Environment for git on an untrusted checkout: no system or global config, no
    replace refs, no optional index writes, and every key of `_NEUTRAL` plus each driver
    its own config defines overridden on the command line's level (which wins)."""
    env = {
        **_ENV,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_CONFIG_COUNT": "0",
    }
    try:  # `git config --list` reads files and runs nothing
        listed = git.Git(path).execute(
            ["git", "config", "--list", "--name-only"], env=env, with_extended_output=False
        )
    except git.GitCommandError:
        listed = ""
    overrides = dict(_NEUTRAL)
    for key in str(listed).splitlines():
        if _DRIVER.fullmatch(key):
            overrides[key] = ""
            if key.startswith("filter."):
                overrides[key.rsplit(".", 1)[0] + ".required"] = "false"
    for index, (key, value) in enumerate(overrides.items()):
        env[f"GIT_CONFIG_KEY_{index}"], env[f"GIT_CONFIG_VALUE_{index}"] = key, value
    env["GIT_CONFIG_COUNT"] = str(len(overrides))
    return env


@dataclass(frozen=True)
class PushResult:
    pushed: bool
    """False when the remote moved on (a lost race): refresh and try again."""
    detail: str


class _Lines(RemoteProgress):
    """Keeps the `remote:` lines a hook prints, which GitPython does not parse."""

    def __init__(self) -> None:
        super().__init__()
        self.remote: list[str] = []

    def line_dropped(self, line: str) -> None:
        text = line.removeprefix("remote:").strip()
        if line.startswith("remote:") and text:
            self.remote.append(text)


class Repository:
    """A working tree (or, with `bare=True`, a bare repository) at `path`."""

    def __init__(self, path: Path, *, bare: bool = False) -> None:
        self.path = path
        try:
            self._repo = git.Repo(path, search_parent_directories=not bare)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ConfigError(f"{path}: not a git repository; run from a git checkout") from None
        top = self.toplevel.resolve() if _UNTRUSTED else self.toplevel
        if any(top == root or root in top.parents for root in _UNTRUSTED):
            self._repo.git.update_environment(**_hardened(top))
        else:
            self._repo.git.update_environment(**_ENV)

    @classmethod
    def clone(cls, url: str, into: Path, branch: str | None = None) -> Repository:
        """A fresh clone of `url` (only `branch`, checked out; else nothing checked out)."""
        options = ["-q", "--no-checkout"]
        if branch:
            options = ["-q", "--single-branch", f"--branch={checked(branch, 'branch')}"]
        try:
            git.Repo.clone_from(url, into, env=_ENV, multi_options=options)
        except git.GitCommandError as exc:
            where = f" ({branch})" if branch else ""
            raise StageError(Stage.GIT, f"cannot clone {scrub(url)}{where}: {_why(exc)}") from None
        return cls(into)

    def checkout(self, rev: str) -> None:
        self.run("checkout", "-q", checked(rev, "revision"))

    @property
    def toplevel(self) -> Path:
        return Path(self._repo.working_tree_dir or self._repo.git_dir)

    def run(self, *args: str) -> str:
        """`git ARGS` in this repository; its output. Callers pass no user text as options."""
        try:
            return str(self._repo.git.execute(["git", *args], strip_newline_in_stdout=False))
        except git.GitCommandError as exc:
            raise StageError(Stage.GIT, f"git {args[0]} failed: {_why(exc)}") from None

    def commit_of(self, rev: str, what: str = "revision") -> str | None:
        """The full commit id `rev` names, or None when git does not know it."""
        try:
            return self._repo.commit(checked(rev, what)).hexsha
        except (git.BadName, ValueError):
            return None
        except NotImplementedError:  # GitPython parses only some @{...} forms: ask git
            try:
                found = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
            except StageError:
                return None
            return found.strip() or None

    def head(self) -> str | None:
        return None if not self._repo.head.is_valid() else self._repo.head.commit.hexsha

    def is_dirty(self, paths: list[Path] | None = None) -> bool:
        """Tracked changes or untracked files (not ignored) under `paths`, or anywhere."""
        rel = [str(p) for p in paths] if paths is not None else []
        return bool(self.run("status", "--porcelain", "--", *rel).strip())

    def changed_since(self, rev: str) -> list[Path]:
        """Absolute paths changed between `rev` and the working tree, untracked ones too."""
        commit = self.commit_of(rev, "--since")
        if commit is None:
            raise ConfigError(
                f"--since {rev}: git does not know this revision; "
                "name a commit, branch or tag of this repository"
            )
        names = self.diff_names(commit, []) + self.untracked()
        return [self.toplevel / n for n in names]

    def uncommitted(self, folder: Path) -> set[str]:
        """Files under `folder` with uncommitted changes (staged, unstaged or untracked),
        by their names relative to the top of the working tree."""
        out = self.run(
            "status",
            "--porcelain",
            "-z",
            "--no-renames",
            "--untracked-files=all",
            "--",
            str(folder),
        )
        return {entry[3:] for entry in out.split("\0") if entry}

    def branches(self) -> set[str]:
        return {head.name for head in self._repo.heads}

    def remote_branches(self, url: str) -> set[str]:
        """Branch names on the repository at `url`."""
        out = self.run("ls-remote", "--heads", "--", url)
        return {line.partition("refs/heads/")[2] for line in out.splitlines()}

    @property
    def common_dir(self) -> Path:
        """The git directory shared by every worktree of this repository."""
        return Path(self._repo.common_dir)

    def untracked(self, paths: list[Path] | None = None, ignored: bool = False) -> list[str]:
        """Untracked files (repository-relative) under `paths` or anywhere; ignored ones
        too with `ignored` (a build context sends them unless .dockerignore drops them)."""
        rel = [str(p) for p in paths] if paths is not None else []
        standard = [] if ignored else ["--exclude-standard"]
        out = self.run("ls-files", "--others", *standard, "--full-name", "--", *rel)
        return [n for n in out.splitlines() if n]

    def diff_names(self, rev: str, paths: list[Path]) -> list[str]:
        """Tracked files under `paths` that differ between `rev` and the working tree."""
        rel = [str(p) for p in paths]
        out = self.run(
            "diff",
            "--name-only",
            "--no-ext-diff",
            "--no-textconv",
            "--end-of-options",
            checked(rev, "revision"),
            "--",
            *rel,
        )
        return [n for n in out.splitlines() if n]

    def names_changed(self, old: str | None, new: str) -> list[str]:
        """Files that differ between two commits (all of `new` when `old` is None)."""
        if old is None:
            return self.files_at(new)
        return self.run(
            "diff",
            "--name-only",
            "--no-ext-diff",
            "--no-textconv",
            "--end-of-options",
            checked(old, "old"),
            checked(new, "new"),
        ).splitlines()

    def files_at(self, rev: str, folder: str | None = None) -> list[str]:
        """Every file path in `rev`'s tree (under `folder`)."""
        tree = self._repo.commit(checked(rev, "revision")).tree
        root = tree / folder if folder else tree
        return [str(b.path) for b in root.traverse() if isinstance(b, git.Blob)]

    def show(self, rev: str, path: str) -> bytes | None:
        """The content of `path` at `rev`, or None when it is not a file there."""
        try:
            blob = self._repo.commit(checked(rev, "revision")).tree / path
        except (KeyError, git.BadName, ValueError):
            return None
        return bytes(blob.data_stream.read()) if isinstance(blob, git.Blob) else None

    def export(self, rev: str, paths: list[str], into: Path) -> bool:
        """Write the regular files under `paths` at `rev` into `into`; False if none exist.

        Symlinks and submodules are skipped: nothing written can point outside `into`."""
        tree = self._repo.commit(checked(rev, "revision")).tree
        found = False
        for path in paths:
            try:
                top = tree / path
            except KeyError:
                continue
            found = True
            blobs = [top] if isinstance(top, git.Blob) else top.traverse()
            for blob in blobs:
                if not isinstance(blob, git.Blob) or blob.mode & 0o170000 != 0o100000:
                    continue
                target = into / blob.path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(blob.data_stream.read())
                target.chmod(0o755 if blob.mode & 0o111 else 0o644)
        return found

    def history(self, folder: str) -> list[str]:
        """Commits that touched `folder`, newest first."""
        return self.run("log", "--format=%H", "--", folder).split()

    def config(self, key: str) -> str:
        try:
            return str(self._repo.git.config("--get", key))
        except git.GitCommandError:
            return ""

    def switch_new(self, branch: str) -> None:
        self.run("switch", "-q", "-c", checked(branch, "branch"))

    def commit(
        self,
        paths: list[Path],
        message: str,
        author: Identity,
        committer: Identity,
        new: list[Path] | None = None,
    ) -> str:
        """Commit exactly `paths` (nothing else staged sneaks in); the new commit id.
        `new`: which of them are untracked, when the caller knows (else git is asked)."""
        top = self.toplevel
        rel = [str(p.relative_to(top)) for p in paths]
        env = {
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": committer.name,
            "GIT_COMMITTER_EMAIL": committer.email,
        }
        try:  # `commit -- paths` takes tracked files as they are: only new ones are added
            untracked = (
                [str(p.relative_to(top)) for p in new]
                if new is not None
                else self._repo.git.ls_files("--others", "--", *rel).splitlines()
            )
            if untracked:
                self._repo.git.add("--", *untracked)
            self._repo.git.commit("-q", "-m", message, "--", *rel, env=env)
        except git.GitCommandError as exc:
            raise StageError(Stage.PROMOTE, f"git commit failed: {_why(exc)}") from None
        return self._repo.head.commit.hexsha

    def unstage(self, paths: list[Path]) -> None:
        rel = [str(p.relative_to(self.toplevel)) for p in paths]
        self.run("reset", "-q", "--", *rel)

    def restore(self, paths: list[Path]) -> None:
        """Put `paths` back as HEAD has them (index and working tree)."""
        rel = [str(p.relative_to(self.toplevel)) for p in paths]
        self.run("checkout", "HEAD", "--", *rel)

    def push(self, branch: str) -> PushResult:
        """Push HEAD to `branch` of origin; a lost race comes back as pushed=False.

        A race is REJECTED (the branch moved on) or, when two pushes meet at the remote's
        ref lock, a remote rejection naming the lock; git then may print no status line."""
        lines = _Lines()
        refspec = f"HEAD:refs/heads/{checked(branch, 'branch')}"
        try:
            infos = self._repo.remote("origin").push(refspec, progress=lines)
        except git.GitCommandError as exc:
            if _LOCK_RACE.search(_why(exc)):
                return PushResult(False, _why(exc))
            raise StageError(Stage.PROMOTE, f"push to {branch} failed: {_why(exc)}") from None
        info = infos[0] if infos else None
        failed = PushInfo.ERROR | PushInfo.REJECTED | PushInfo.REMOTE_REJECTED
        if info is not None and not info.flags & (failed | PushInfo.REMOTE_FAILURE):
            return PushResult(True, "")
        summary = scrub(info.summary.strip()) if info else ""
        if info is not None and (info.flags & PushInfo.REJECTED or _LOCK_RACE.search(summary)):
            return PushResult(False, summary)
        detail = "; ".join(lines.remote) or summary or "no answer"
        raise StageError(Stage.PROMOTE, f"the remote refused the push to {branch}: {detail}")

    def refresh(self, branch: str) -> None:
        """Move to the remote's newest head of `branch`, dropping our unpushed commit."""
        self.run("fetch", "-q", "origin", checked(branch, "branch"))
        self.run("reset", "-q", "--hard", "FETCH_HEAD")


def _why(exc: git.GitCommandError) -> str:
    text = exc.stderr.strip() if isinstance(exc.stderr, str) else str(exc)
    return scrub(text.removeprefix("stderr:").strip().strip("'").strip())


def backoff(attempt: int) -> None:
    """Exponential with full jitter, capped at 4 s, so racing writers spread out."""
    time.sleep(random.uniform(0, min(4.0, 0.2 * 2**attempt)))  # noqa: S311 - jitter, not crypto
