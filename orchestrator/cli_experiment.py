"""CLI for scheduled experiments: ``peerctl experiment start|list|show|cancel|forget``.

``start FILE`` reads a TOML experiment (see ``examples/experiment.toml``) or a PEERING client
experiment JSON (rounds; ``--round-interval``, ``--bind A=PREFIX`` for its placeholder prefixes),
checks it locally for syntax (errors name the file and the place), then posts it; the daemon checks
every step against the safety rules and the rate rule over the whole timeline before scheduling
anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

import orjson

import orchestrator.api.experiments  # noqa: F401  (registers /api/v1/experiments in the daemon)
from orchestrator.cli import EXTENSIONS, CliError, _print_json, _table, api_call
from orchestrator.errors import ApiError
from orchestrator.experiments import from_peering_experiment


def _bindings(bind: list[str] | None) -> dict[str, str]:
    """``--bind A=PREFIX`` options → ``{"A": PREFIX}`` (PEERING's placeholder prefixes)."""
    out: dict[str, str] = {}
    for item in bind or []:
        key, sep, prefix = item.partition("=")
        if not sep:
            raise CliError(f"--bind {item}: expected NAME=PREFIX", 2)
        out[key] = prefix
    return out


def read_experiment(
    path: str, round_interval: float = 600.0, bind: list[str] | None = None
) -> dict[str, Any]:
    """A TOML experiment file, or PEERING's experiment JSON, → the body of ``POST /api/v1/experiments``."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}", 2) from None
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"{path}: not JSON: {exc}", 2) from None
        try:
            return from_peering_experiment(doc, round_interval, _bindings(bind), Path(path).stem)
        except ApiError as exc:
            raise CliError(f"{path}: {exc}", 2) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: TOML syntax error: {exc}", 2) from None
    start = doc.get("start")
    if isinstance(start, dt.datetime):
        if start.tzinfo is None:
            raise CliError(f"{path}: start: {start} has no time zone (add Z for UTC)", 2)
        doc["start"] = start.isoformat()
    doc.setdefault("name", Path(path).stem)
    return doc


def _print_experiment(exp: dict[str, Any]) -> None:
    print(f"experiment {exp['name']}: {exp['state']}, start {exp['start']}, end {exp['end']}"
          + (f" — {exp['description']}" if exp.get("description") else ""))  # fmt: skip
    rows = [(s["index"], f"+{s['at']:g}s", s["time"], s["action"], s["prefix"],
             ",".join(s["peers"]) or "(all)", s["state"], s["outcome"]) for s in exp["steps"]]  # fmt: skip
    print(_table(("Step", "At", "Time", "Action", "Prefix", "Peers", "State", "Outcome"), rows))


def cmd_experiment(args: argparse.Namespace) -> int:
    action = args.action
    if action == "list":
        data = api_call(args, "GET", "/api/v1/experiments")
        if args.json:
            _print_json(data)
        elif not data:
            print("no experiments")
        else:
            rows = [(e["name"], e["state"], e["start"], e["end"], len(e["steps"]),
                     e["next_time"] or "") for e in data]  # fmt: skip
            print(_table(("Name", "State", "Start", "End", "Steps", "Next step"), rows))
        return 0
    if not args.target:
        raise CliError(f"experiment {action}: give {'a FILE' if action == 'start' else 'a NAME'}", 2)
    if action == "start":
        body = read_experiment(args.target, args.round_interval, args.bind)
        if args.name:
            body["name"] = args.name
        if args.delay is not None:
            body.pop("start", None)
            body["delay"] = args.delay
        if args.at:
            body.pop("delay", None)
            body["start"] = args.at
        path = "/api/v1/experiments" + ("?dry_run=1" if args.dry_run else "")
        data = api_call(args, "POST", path, body)
    else:
        name = urllib.parse.quote(args.target, safe="")
        if action == "show":
            data = api_call(args, "GET", f"/api/v1/experiments/{name}")
        elif action == "cancel":
            data = api_call(
                args, "DELETE", f"/api/v1/experiments/{name}" + ("?withdraw=1" if args.withdraw else "")
            )
        else:
            data = api_call(args, "DELETE", f"/api/v1/experiments/{name}?forget=1")
            if not args.json:
                print(f"forgot {args.target}")
                return 0
    if args.json:
        _print_json(data)
        return 0
    if action == "start" and args.dry_run:
        print("dry run: every step passes the safety and rate rules; nothing scheduled")
        data = {**data, "state": "not scheduled (dry run)"}
    _print_experiment(data)
    for problem in data.get("problems", []):
        print(f"not withdrawn: {problem}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """A PEERING client announcement JSON (``{prefix: {"announce": [...], "withdraw": [mux, ...]}}``,
    the client's configs/announcement_schema.json) applied now, one request per prefix, each
    checked by the daemon's safety rules: what is refused is said and the rest still applies."""
    try:
        doc = orjson.loads(Path(args.file).read_bytes())
    except OSError as exc:
        raise CliError(f"{args.file}: cannot read: {exc.strerror or exc}", 2) from None
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{args.file}: not JSON: {exc}", 2) from None
    try:
        body = from_peering_experiment({"rounds": [doc]}, 0, _bindings(args.bind), Path(args.file).stem)
    except ApiError as exc:
        raise CliError(f"{args.file}: {str(exc).replace('rounds[0]', '$')}", 2) from None
    failed = 0
    results = []
    for step in body["steps"]:
        request = {k: v for k, v in step.items() if k not in ("at", "action")}
        method = "POST" if step["action"] == "announce" else "DELETE"
        try:
            data = api_call(args, method, "/api/v1/announcements", request)
            results.append({"prefix": step["prefix"], "action": step["action"], "ok": True, "result": data})
            if not args.json:
                where = data.get("peers") or data.get("withdrawn_from") or []
                print(f"{step['action']:8} {step['prefix']}: {', '.join(where)}")
        except CliError as exc:
            if str(exc).startswith("cannot reach the daemon"):
                raise
            failed += 1
            results.append({"prefix": step["prefix"], "action": step["action"], "ok": False,
                            "error": str(exc)})
            if not args.json:
                print(f"{step['action']:8} {step['prefix']}: refused: {exc}")
    if args.json:
        _print_json(results)
    return 1 if failed else 0


def _add(sub: Any) -> None:
    p = sub.add_parser("apply", help="apply a PEERING client announcement JSON (announce/withdraw per mux)")
    p.set_defaults(handler=cmd_apply)
    p.add_argument("file")
    p.add_argument("--bind", action="append", metavar="NAME=PREFIX",
                   help="a placeholder prefix → one of ours")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("experiment", help="scheduled announce/withdraw experiments (start FILE, list, show, "
                       "cancel, forget)")  # fmt: skip
    p.set_defaults(handler=cmd_experiment)
    p.add_argument("action", choices=["start", "list", "show", "cancel", "forget"])
    p.add_argument("target", nargs="?", help="the TOML file (start) or the experiment's name")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--name", help="start: override the file's name")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--in", dest="delay", type=float, metavar="SECONDS", help="start: begin in SECONDS")
    when.add_argument(
        "--at", metavar="TIME", help="start: begin at an ISO 8601 time (e.g. 2026-11-27T13:00Z)"
    )
    p.add_argument("--dry-run", action="store_true", help="start: check every step, schedule nothing")
    p.add_argument("--withdraw", action="store_true", help="cancel: also withdraw what it announced")
    p.add_argument(
        "--round-interval",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="start, PEERING experiment JSON: seconds between rounds (default 600, PEERING's "
        "minimum between changes)",
    )
    p.add_argument(
        "--bind",
        action="append",
        metavar="NAME=PREFIX",
        help="start, PEERING experiment JSON: a placeholder prefix (A, B, ...) → one of ours",
    )


EXTENSIONS.append(_add)
