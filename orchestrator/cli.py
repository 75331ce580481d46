"""``peerctl``: run the daemon, or talk to a running one over its HTTP API (birdc-style tables, ``--json``).

Exit codes: 0 success, 1 the daemon answered with an error or is unreachable, 2 bad input (config,
arguments, files).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from orchestrator.errors import ConfigError

DEFAULT_CONFIG = "config.toml"


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- talking to the daemon -----------------------------------------------------------------------


def _api_base(args: argparse.Namespace) -> str:
    if args.api:
        return str(args.api).rstrip("/")
    host, port = "127.0.0.1", 8179
    try:
        from orchestrator.config import load_config

        cfg = load_config(args.config)
        host, port = cfg.api.host, cfg.api.port
    except (ConfigError, OSError):
        pass  # fall back to the default address; `peerctl check` explains config problems
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def api_call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, timeout: float = 30.0
) -> Any:
    url = _api_base(args) + path
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = orjson.loads(exc.read()).get("error", exc.reason)
        except (orjson.JSONDecodeError, AttributeError):
            message = exc.reason
        raise CliError(f"{message}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(
            f"cannot reach the daemon at {_api_base(args)} ({reason}); is `peerctl run` running?"
        ) from None


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cols = [[str(h) for h in headers], *[[("" if v is None else str(v)) for v in r] for r in rows]]
    widths = [max(len(c[i]) for c in cols) for i in range(len(headers))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip() for c in cols)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s == 0:
        return "-"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}"


# -- commands ------------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from orchestrator.config import config_warnings, load_config

    cfg = load_config(args.config)
    print(
        f"{args.config}: ok ({len(cfg.peers)} peers, fib {cfg.fib.mode.value}, "
        f"lab {'on' if cfg.lab.enabled else 'off'})"
    )
    for warning in config_warnings(cfg):
        print(f"{args.config}: warning: {warning}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from orchestrator.config import config_warnings, load_config
    from orchestrator.daemon import run_daemon
    from orchestrator.log import configure_logging, get_logger

    cfg = load_config(args.config)
    configure_logging(args.log_level or cfg.runtime.log_level, json=True if args.json_logs else None)
    for warning in config_warnings(cfg):
        get_logger().warning("config_warning", detail=warning)
    progress = sys.stderr.isatty() and not args.no_progress
    return run_daemon(cfg, progress=progress)


def cmd_reload(args: argparse.Namespace) -> int:
    result = api_call(args, "POST", "/api/v1/reload")
    if args.json:
        _print_json(result)
    else:
        for k in ("added", "removed", "changed", "policy_changed", "unchanged"):
            print(f"{k.replace('_', ' '):14} {', '.join(result.get(k, [])) or '-'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    summary = api_call(args, "GET", "/api/v1/summary")
    peers = api_call(args, "GET", "/api/v1/peers")
    if args.json:
        _print_json({"summary": summary, "peers": peers})
        return 0
    local = summary["local"]
    rib = summary["rib"]
    print(
        f"peerctl AS{local['asn']} router-id {local['router_id']}, up {_duration(summary.get('uptime_s', 0))}"
        f"{', loading' if summary.get('loading') else ''}"
    )
    print(
        f"RIB: ipv4 {rib['ipv4']['prefixes']:,} prefixes / {rib['ipv4']['paths']:,} paths, "
        f"ipv6 {rib['ipv6']['prefixes']:,} prefixes / {rib['ipv6']['paths']:,} paths"
    )
    print(f"peers: {summary['peers']['established']}/{summary['peers']['total']} established\n")
    print(_peer_table(peers))
    return 0


def _peer_table(peers: list[dict[str, Any]]) -> str:
    rows = []
    for p in peers:
        fams = p["families"]
        rx = "/".join(f"{fams[f]['received']:,}" for f in ("ipv4", "ipv6") if f in fams)
        best = "/".join(f"{fams[f]['best']:,}" for f in ("ipv4", "ipv6") if f in fams)
        rows.append(
            [
                p["name"],
                p["kind"],
                p["address"],
                p["peer_as"],
                p["state"],
                _duration(p["uptime_s"]),
                rx,
                best,
                p["last_error"] if p["state"] != "established" else "",  # GET .../peers keeps it
            ]
        )
    return _table(
        ["Name", "Kind", "Neighbor", "AS", "State", "Uptime", "Recv v4/v6", "Best v4/v6", "Info"], rows
    )


def cmd_peers(args: argparse.Namespace) -> int:
    if args.name:
        data = api_call(args, "GET", f"/api/v1/peers/{urllib.parse.quote(args.name)}")
        if args.json:
            _print_json(data)
        else:
            for k, v in data.items():
                if isinstance(v, dict):  # families: one line each, e.g. "ipv4  received 1,234  best 1,200"
                    print(k)
                    for sub, value in v.items():
                        print(f"  {sub:16} " + (_fields(value) if isinstance(value, dict) else str(value)))
                else:
                    print(f"{k:18} {v}")
        return 0
    peers = api_call(args, "GET", "/api/v1/peers")
    if args.json:
        _print_json(peers)
    else:
        print(_peer_table(peers))
    return 0


def _fields(d: dict[str, Any]) -> str:
    return "  ".join(f"{k} {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k} {v}"
                     for k, v in d.items())


def _route_lines(route: dict[str, Any]) -> list[str]:
    lines = []
    for path in route["paths"]:
        star = "*" if path["best"] else " "
        aspath = " ".join(
            str(a) if isinstance(a, int) else "{" + ",".join(map(str, a)) + "}" for a in path["as_path"]
        )
        extras = []
        if path.get("med") is not None:
            extras.append(f"med {path['med']}")
        if path.get("communities"):
            extras.append("comm " + " ".join(path["communities"]))
        if path.get("large_communities"):
            extras.append("lcomm " + " ".join(path["large_communities"]))
        if path.get("filtered"):
            star = "x"
            extras.append(f"filtered [{path['rule']}]")
        if path["best"]:
            why = f" [{path['reason']}]" if path.get("reason") else ""
            fib = " (installed)" if path.get("installed") else ""
            extras.append(f"best{why}{fib}")
        lines.append(
            f"{star} {route['prefix']:<20} via {path['next_hop']:<16} {path['peer']:<12} "
            f"lp {'-' if path['local_pref'] is None else path['local_pref']} {path['origin']} [{aspath}] "
            + ", ".join(extras)
        )
    return lines


def cmd_routes(args: argparse.Namespace) -> int:
    if args.prefix:
        path = "/api/v1/routes/" + urllib.parse.quote(args.prefix, safe="/:")
        data = api_call(args, "GET", path + ("?filtered=1" if args.filtered else ""))
        if args.json:
            _print_json(data)
        else:
            print("\n".join(_route_lines(data)))
        return 0
    query = {
        k: v
        for k, v in (("peer", args.peer), ("family", args.family), ("limit", args.limit))
        if v is not None
    }
    data = api_call(args, "GET", "/api/v1/routes?" + urllib.parse.urlencode(query))
    if args.json:
        _print_json(data)
    else:
        for route in data:
            print("\n".join(_route_lines(route)))
    return 0


def cmd_fib(args: argparse.Namespace) -> int:
    data = api_call(args, "GET", "/api/v1/fib")
    if args.json:
        _print_json(data)
    else:
        print(
            f"mode {data['mode']}, table {data['table']}, protocol {data['protocol']}"
            f"{', netns ' + data['netns'] if data.get('netns') else ''}"
        )
        print(
            f"installed: ipv4 {data['installed']['ipv4']:,}, ipv6 {data['installed']['ipv6']:,}; "
            f"pending {data['pending']:,}; errors {data['errors']:,}"
        )
        if data.get("stale"):
            print(f"stale: {data['stale']:,} routes kept from before the restart, deleted when every peer "
                  f"has sent End-of-RIB or after {data['stale_timeout']:g} s")
        if data.get("last_error"):
            print(f"last error: {data['last_error']}")
    return 0


def cmd_collector(args: argparse.Namespace) -> int:
    if args.action == "dump":
        data = api_call(args, "POST", "/api/v1/collector/dump", {}, timeout=600.0)
        if args.json:
            _print_json(data)
        else:
            print("\n".join(data.get("rib_files") or [data["rib_file"]]))
        return 0
    data = api_call(args, "GET", "/api/v1/collector")
    if args.json:
        _print_json(data)
        return 0
    if not data["enabled"]:
        print(f"collector disabled (set [collector] enabled = true; files would go to {data['dir']})")
        return 0
    rib_every = f"{data['rib_interval']} s" if data["rib_interval"] else "request"
    print(
        f"collector: {data['dir']}, updates every {data['updates_interval']} s, RIB every {rib_every} "
        f"({data['rib_policy']}-policy), compression {data['compression']}"
    )
    print(f"updates file: {data['updates_file'] or '-'}")
    print(f"last RIB dump: {data['last_rib_file'] or '-'}")
    print(f"records: {data['records']:,} ({data['bytes']:,} bytes), written {data['records_written']:,}; "
          f"errors {data['errors']:,}")
    if data.get("last_error"):
        print(f"last error: {data['last_error']}")
    return 0


def cmd_mrt_info(args: argparse.Namespace) -> int:
    from orchestrator.collector.mrtinfo import main_mrt_info

    argv = [args.file] + (["--json"] if args.json else [])
    return main_mrt_info(argv)


# -- argument parsing ----------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peerctl", description="asyncio BGP orchestrator")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default ./config.toml)")
    parser.add_argument(
        "--api", help="daemon API base URL (default: from the config, else http://127.0.0.1:8179)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Handler, help_text: str, *, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(handler=handler)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = add("run", cmd_run, "run the daemon in the foreground", json_flag=False)
    p.add_argument("--no-progress", action="store_true", help="no progress bar on the terminal")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--json-logs", action="store_true", help="JSON logs even on a terminal")
    add("check", cmd_check, "validate the config and exit 0 (ok) or 2", json_flag=False)
    add("reload", cmd_reload, "re-read the config in the running daemon (like SIGHUP)")
    add("status", cmd_status, "summary and peers")
    p = add("peers", cmd_peers, "peers, or one peer in detail")
    p.add_argument("name", nargs="?")
    p = add("routes", cmd_routes, "paths of a prefix (or longest match of an address), or best routes")
    p.add_argument("prefix", nargs="?", help="prefix or address")
    p.add_argument("--peer")
    p.add_argument("--family", choices=["ipv4", "ipv6"])
    p.add_argument("--limit", type=int)
    p.add_argument("--filtered", action="store_true", help="also paths refused by import policies")
    add("fib", cmd_fib, "kernel FIB status")
    p = add("collector", cmd_collector, "MRT route collection status; `dump`: write a RIB dump now")
    p.add_argument("action", nargs="?", choices=["status", "dump"], default="status")
    mrt = sub.add_parser("mrt", help="MRT files")
    mrt_sub = mrt.add_subparsers(dest="mrt_command", required=True, metavar="COMMAND")
    p = mrt_sub.add_parser("info", help="summarise an MRT file (peers, prefixes, time range)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_mrt_info)
    for extension in EXTENSIONS:
        extension(sub)
    return parser


# Feature modules add subcommands here (announce, withdraw, adv, lab, irr).
EXTENSIONS: list[Callable[[Any], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"peerctl: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"peerctl: {exc}", file=sys.stderr)
        return exc.code
    except FileNotFoundError as exc:
        print(f"peerctl: {exc.filename}: no such file", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `peerctl routes | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _load_extensions() -> None:
    """Import optional command modules; they append to EXTENSIONS."""
    for module in ("orchestrator.cli_announce", "orchestrator.cli_experiment", "orchestrator.cli_irr"):
        try:
            __import__(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    if __name__ != "orchestrator.cli":  # `python -m orchestrator.cli`: extensions registered with the
        imported = sys.modules.get("orchestrator.cli")  # importable module, not with __main__
        for extension in getattr(imported, "EXTENSIONS", []):
            if extension not in EXTENSIONS:
                EXTENSIONS.append(extension)


if __name__ == "__main__":
    sys.exit(main())
