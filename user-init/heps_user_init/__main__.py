"""heps-user-init [--identity FILE] --policy FILE --output DIR

Reads the identity (JSON) from HEPS_USER_IDENTITY or --identity, checks it against the
site policy, then writes passwd and group into DIR, creates the home directory and the
group data paths. Exit 0 done, 1 refused (one line why; nothing written), 2 bad usage,
policy file or mounts. Whatever goes wrong, one line: a bug's traceback goes to a file
in the temporary folder, which the line names, never to the spawn page.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from pathlib import Path

from heps_user_init import __version__, files
from heps_user_init.identity import Refused, System, parse
from heps_user_init.policy import PolicyError, load


def main(argv: list[str] | None = None) -> int:
    """The boundary: every failure is one line on stderr and an exit code."""
    try:
        return _main(argv)
    except SystemExit:
        raise  # --help, --version, and argparse's own usage errors (exit 2)
    except (OSError, UnicodeDecodeError) as exc:  # the mounts and files it was given
        where = getattr(exc, "filename", None) or "an input file"
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        print(f"heps-user-init: error: {where}: {why}; check the mounts", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line, the traceback kept in a file
        fd, kept = tempfile.mkstemp(prefix="heps-user-init-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as handle:
            handle.write("".join(traceback.format_exception(exc)))
        print(
            f"heps-user-init: error: unexpected {type(exc).__name__}; a bug, traceback in {kept}",
            file=sys.stderr,
        )
        return 1


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="heps-user-init", description=__doc__)
    parser.add_argument("--version", action="version", version=f"heps-user-init {__version__}")
    parser.add_argument("--identity", type=Path, help="JSON file (default: $HEPS_USER_IDENTITY)")
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True, help="shared volume for passwd")
    parser.add_argument("--base-passwd", type=Path, default=Path("/etc/passwd"))
    parser.add_argument("--base-group", type=Path, default=Path("/etc/group"))
    args = parser.parse_args(argv)
    try:
        policy = load(args.policy)
    except PolicyError as exc:
        print(f"heps-user-init: error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.identity is not None:
            text = args.identity.read_text()
        elif "HEPS_USER_IDENTITY" in os.environ:
            text = os.environ["HEPS_USER_IDENTITY"]
        else:
            raise Refused("no identity: set HEPS_USER_IDENTITY or pass --identity FILE")
        passwd, group = args.base_passwd.read_text(), args.base_group.read_text()
        identity = parse(text, policy, System.parse(passwd, group))
        if not args.output.is_dir():
            raise Refused(f"output {args.output} is not a directory; mount the shared volume")
        todo = files.plan(identity, policy, passwd, group)
        done = files.apply(todo, identity, args.output)
    except Refused as exc:
        print(f"heps-user-init: refused: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    print(f"ready: {identity.name} uid={identity.uid} gid={identity.gid} ({len(done)} changes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
