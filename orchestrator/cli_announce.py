"""CLI commands of issue 4: ``announce``, ``withdraw``, ``announcements``, ``adv``, ``lab received``.

Loaded by ``orchestrator.cli._load_extensions``. Importing this module also registers the API routes
(``orchestrator.api.announce``) for ``peerctl run``, which loads the same extensions.
"""

from __future__ import annotations

import argparse
import urllib.parse
from typing import Any

import orchestrator.api.announce  # noqa: F401  (registers /api/v1/announcements etc. in the daemon)
from orchestrator.cli import EXTENSIONS, _print_json, _table, api_call


def _targets(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.peer:
        out["peers"] = args.peer
    if args.all:
        out["all"] = True
    if args.kind:
        out["kind"] = args.kind
    return out


def cmd_announce(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"prefix": args.prefix, **_targets(args)}
    if args.prepend:
        body["prepend"] = args.prepend
    if args.origin is not None:
        body["origin"] = args.origin
    if args.poison:
        body["poison"] = args.poison
    if args.community:
        body["communities"] = args.community
    if args.large_community:
        body["large_communities"] = args.large_community
    if args.next_hop:
        body["next_hop"] = args.next_hop
    data = api_call(args, "POST", "/api/v1/announcements", body)
    if args.json:
        _print_json(data)
    else:
        path = " ".join(str(a) for a in data["as_path"])
        print(f"announced {data['prefix']} to {', '.join(data['peers'])}: as-path [{path}]"
              f" next-hop {data['next_hop']}"
              + (f" communities {' '.join(data['communities'])}" if data["communities"] else "")
              + (f" large-communities {' '.join(data['large_communities'])}"
                 if data["large_communities"] else ""))  # fmt: skip
        for name, rule in sorted(data.get("refused", {}).items()):
            print(f"  not to {name}: its export policy refuses it (rule {rule})")
        says = {"error": "its speaker refused the command (the daemon log says why)",
                "pending": "session down: sent when it comes up"}
        for name, state in data.get("states", {}).items():
            if state in says:
                print(f"  {name}: {says[state]}")
    return 1 if "error" in data.get("states", {}).values() else 0


def cmd_withdraw(args: argparse.Namespace) -> int:
    data = api_call(args, "DELETE", "/api/v1/announcements", {"prefix": args.prefix, **_targets(args)})
    if args.json:
        _print_json(data)
    else:
        print(f"withdrew {data['prefix']} from {', '.join(data['withdrawn_from'])}")
    return 0


def cmd_announcements(args: argparse.Namespace) -> int:
    if args.allowed:
        data = api_call(args, "GET", "/api/v1/announcements/allowed")
        if args.json:
            _print_json(data)
        else:
            print("\n".join(data["prefixes"]))
        return 0
    data = api_call(args, "GET", "/api/v1/announcements")
    if args.json:
        _print_json(data)
    else:
        rows = []
        for a in data:  # the prefix's common set, then one row per peer with a set of its own
            own = a.get("per_peer", {})
            rows.append([a["prefix"], ",".join(p for p in a["peers"] if p not in own),
                         " ".join(map(str, a["as_path"])), a["next_hop"],
                         " ".join(a["communities"] + a["large_communities"])])  # fmt: skip
            rows += [["", name, " ".join(map(str, v["as_path"])), v["next_hop"] or a["next_hop"],
                      " ".join(v["communities"] + v["large_communities"])] for name, v in own.items()]
        print(_table(["Prefix", "Peers", "AS path", "Next hop", "Communities"], rows))
    return 0


def cmd_adv(args: argparse.Namespace) -> int:
    data = api_call(args, "GET", f"/api/v1/peers/{urllib.parse.quote(args.peer)}/adv")
    if args.json:
        _print_json(data)
    else:
        rows = [[a["prefix"], a["state"] + (" (on wire)" if a["on_wire"] else "")
                 + (f" ({a['rule']})" if a.get("rule") else ""),
                 " ".join(map(str, a["as_path"])), a["next_hop"],
                 " ".join(a["communities"] + a["large_communities"])] for a in data]  # fmt: skip
        print(_table(["Prefix", "State", "AS path", "Next hop", "Communities"], rows))
    return 0


def cmd_lab_received(args: argparse.Namespace) -> int:
    data = api_call(args, "GET", "/api/v1/lab/received?" + urllib.parse.urlencode({"peer": args.peer}))
    _print_json(data)
    return 0


def _add_targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peer", action="append", metavar="NAME", help="a target peer (repeatable)")
    p.add_argument("--all", action="store_true", help="every peer")
    p.add_argument("--kind", choices=["mux", "upstream", "route-server", "ixp-peer", "collector"],
                   help="every peer of this kind (e.g. all muxes, an IXP's route servers)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_commands(sub: Any) -> None:
    p = sub.add_parser("announce", help="announce one of our prefixes (safety rules checked first)")
    p.set_defaults(handler=cmd_announce)
    p.add_argument("prefix")
    _add_targets(p)
    p.add_argument("--prepend", type=int, default=0, help="extra copies of our AS")
    p.add_argument("--origin", type=int, help="origin AS (default ours)")
    p.add_argument("--poison", type=int, nargs="+", default=[], metavar="ASN", help="ASNs to poison")
    p.add_argument("--community", nargs="+", default=[], metavar="A:B")
    p.add_argument("--large-community", nargs="+", default=[], metavar="A:B:C")
    p.add_argument("--next-hop", metavar="IP")
    p = sub.add_parser("withdraw", help="withdraw an announced prefix (default: from every peer)")
    p.set_defaults(handler=cmd_withdraw)
    p.add_argument("prefix")
    _add_targets(p)
    p = sub.add_parser("announcements", help="our current announcements, or --allowed prefixes")
    p.set_defaults(handler=cmd_announcements)
    p.add_argument("--allowed", action="store_true")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("adv", help="what a peer was sent (command and its state)")
    p.set_defaults(handler=cmd_adv)
    p.add_argument("peer")
    p.add_argument("--json", action="store_true")
    lab = sub.add_parser("lab", help="the built-in lab")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")
    p = lab_sub.add_parser("received", help="routes a lab feeder received from us, as seen on the wire")
    p.set_defaults(handler=cmd_lab_received)
    p.add_argument("peer")


EXTENSIONS.append(add_commands)
