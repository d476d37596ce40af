"""The `heps platform` command group: its arguments and what each verb prints."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `heps --help` builds this parser: settings load only when a verb runs
    from heps.core.settings import Settings

VERBS = {
    "up": "start (or update) the platform of an overlay on this machine",
    "down": "stop it and remove everything it made",
    "status": "what runs, with URLs",
}


def add_parser(verb: Callable[..., argparse.ArgumentParser], common: Any) -> None:
    """`heps platform up|down|status`; `common` carries the global options, so they are
    taken after the verbs too."""
    p = verb("platform", help="the platform on this machine: hub, proxy, SSO testbed")
    verbs = p.add_subparsers(dest="platform_command", required=True, parser_class=type(p))
    for name, text in VERBS.items():
        v = verbs.add_parser(name, help=text, parents=[common])
        v.add_argument("--name", default="heps-platform", help="prefix and label of its objects")
        if name == "up":
            v.add_argument("--overlay", default="testbed", metavar="ENV")
            v.add_argument("--users", type=Path, metavar="FILE", help="SSO accounts (YAML)")
            v.add_argument("--port", type=int, default=8000, help="the hub's port on 127.0.0.1")
            v.add_argument("--sso-port", type=int, default=8010, help="the SSO testbed's port")
            v.add_argument(
                "--apps",
                metavar="SLUG,...",
                help="build only these profiles' images when missing (default: all)",
            )


def run(cfg: Settings, args: argparse.Namespace) -> int:
    from heps.platform import stack  # imports the hub's modules: only when used

    if args.platform_command == "up":
        apps = tuple(a for a in args.apps.split(",") if a) if args.apps else None
        opts = stack.Options(args.name, args.overlay, args.users, args.port, args.sso_port, apps)
        lines = stack.up(cfg, opts)
    else:
        action = stack.down if args.platform_command == "down" else stack.status
        lines = action(cfg, stack.Options(args.name))
    print("\n".join(lines))
    return 0
