"""``peerctl irr refresh [PEER ...]``: fetch IRR prefix lists with bgpq4, then tell the daemon.

For each peer (all by default) whose policy has ``irr.as_set``, run bgpq4 under ``--timeout`` and
write the list atomically where the import chain reads it (``policies.irr.list_path``). A failure
keeps the last good list and prints the peer and the cause; the exit status is 1 when any peer
failed. Then ``POST /api/v1/irr/reload`` makes a running daemon rebuild those peers' chains (the
lists are read at the next start when no daemon runs). Loaded by ``orchestrator.cli._load_extensions``;
importing it registers the API route (``orchestrator.api.irr``) for ``peerctl run``.
"""

from __future__ import annotations

import argparse
import shutil
from typing import Any

import orchestrator.api.irr  # noqa: F401  (registers /api/v1/irr/reload in the daemon)
from orchestrator.cli import EXTENSIONS, CliError, _print_json, api_call
from orchestrator.config import load_config
from policies.irr import RefreshResult, list_path, refresh_file


def cmd_irr_refresh(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    peers = [p for p in cfg.peers if p.policy is not None and p.policy.irr is not None
             and p.policy.irr.as_set is not None]  # fmt: skip
    if args.peer:
        by_name = {p.name: p for p in peers}
        missing = [n for n in args.peer if n not in by_name]
        if missing:
            raise CliError(f"no peer with irr.as_set named {', '.join(missing)}")
        peers = [by_name[n] for n in args.peer]
    if not peers:
        raise CliError("no peer has irr.as_set in its policy: nothing to refresh")
    bgpq4 = args.bgpq4 or shutil.which("bgpq4")
    if bgpq4 is None:
        raise CliError("bgpq4 is not installed (or give --bgpq4 PATH); the lists in use are unchanged")
    extra = ("-h", args.host) if args.host else ()
    results: list[RefreshResult] = []
    for peer in peers:
        assert peer.policy is not None and peer.policy.irr is not None and peer.policy.irr.as_set
        path = list_path(peer.name, peer.policy.irr.file, cfg.runtime.dir / "irr")
        assert path is not None
        res = refresh_file(peer.name, peer.policy.irr.as_set, path, bgpq4_path=bgpq4,
                           timeout=args.timeout, extra=extra)
        results.append(res)
        if not args.json:
            if res.ok:
                print(f"{peer.name}: {res.entries} prefixes from {peer.policy.irr.as_set} -> {path}")
            else:
                kept = (f"kept the last good list ({res.entries} prefixes)" if path.exists()
                        else "no list yet (its routes are not IRR-filtered until one is fetched)")
                print(f"{peer.name}: {kept}: {res.error}")
    reloaded: Any = None
    done = [r.peer for r in results if r.ok]
    if done and not args.no_reload:
        try:
            reloaded = api_call(args, "POST", "/api/v1/irr/reload", {"peers": done})["reloaded"]
        except CliError as exc:
            reloaded = None
            if not args.json:
                print(f"daemon not told ({exc}); the new lists are read when it starts")
        else:
            if not args.json:
                print(f"daemon: import chains rebuilt for {', '.join(sorted(reloaded))}")
    if args.json:
        _print_json({"results": [{"peer": r.peer, "ok": r.ok, "entries": r.entries, "error": r.error}
                                 for r in results], "reloaded": reloaded})  # fmt: skip
    return 0 if all(r.ok for r in results) else 1


def add_commands(sub: Any) -> None:
    irr = sub.add_parser("irr", help="IRR prefix lists (bgpq4)")
    irr_sub = irr.add_subparsers(dest="irr_command", required=True, metavar="COMMAND")
    p = irr_sub.add_parser("refresh", help="fetch the peers' IRR lists with bgpq4, reload them in the daemon")
    p.set_defaults(handler=cmd_irr_refresh)
    p.add_argument("peer", nargs="*", help="peers to refresh (default: every peer with irr.as_set)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per bgpq4 run (default 60)")
    p.add_argument("--bgpq4", metavar="PATH", help="the bgpq4 binary (default: from PATH)")
    p.add_argument("--host", metavar="HOST[:PORT]", help="IRR server (bgpq4 -h; default bgpq4's own)")
    p.add_argument("--no-reload", action="store_true", help="only write the lists; do not tell the daemon")
    p.add_argument("--json", action="store_true")


EXTENSIONS.append(add_commands)
