"""``peerctl mrt info``: what is in an MRT file (counts, peers, prefixes, time range, errors).

``summarize(path)`` reads the whole file once with ``errors="count"`` and returns a JSON-ready dict;
``format_summary`` renders it for people; ``main_mrt_info(argv)`` is the CLI entry (the ``peerctl``
dispatcher passes the arguments after ``mrt info``).

"Attr sets" per peer follow the convention of ``shared/data/real/README.md``: distinct
(AS_PATH, COMMUNITIES, NEXT_HOP) tuples, as ``bgpdump -m`` shows them; ``attr_sets`` at the top level
counts distinct full attribute sets (every attribute) over the whole file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from orchestrator.collector.mrt import (
    Bgp4mpMessage,
    Bgp4mpUpdate,
    MrtError,
    MrtReader,
    PeerIndex,
    RibEntry,
    StateChange,
    subtype_name,
)
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family


class _Peer:
    __slots__ = ("announced", "asn", "attrs", "entries", "ip", "states", "updates", "withdrawn")

    def __init__(self, ip: str, asn: int) -> None:
        self.ip = ip
        self.asn = asn
        self.entries = 0
        self.updates = 0
        self.announced = 0
        self.withdrawn = 0
        self.states = 0
        self.attrs: dict[int, Attributes] = {}  # id → object: interned, and kept alive so ids stay unique


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summarize(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``path`` once and describe it. Raises ``MrtError`` only when the file cannot be opened;
    truncated or corrupt records are listed under ``"errors"``."""
    reader = MrtReader(path, errors="count")
    peers: dict[tuple[str, int], _Peer] = {}
    prefixes: dict[Family, set[int]] = {Family.IPV4: set(), Family.IPV6: set()}
    peer_index: PeerIndex | None = None
    rib_peers: list[_Peer] = []
    p4, p6 = prefixes[Family.IPV4], prefixes[Family.IPV6]
    ipv4 = Family.IPV4
    bgp_messages = 0

    def peer_of(ip: str, asn: int) -> _Peer:
        peer = peers.get((ip, asn))
        if peer is None:
            peer = peers[(ip, asn)] = _Peer(ip, asn)
        return peer

    for rec in reader:
        if type(rec) is RibEntry:
            if rec.peer_index < len(rib_peers):
                peer = rib_peers[rec.peer_index]
            else:
                peer = peer_of(rec.peer_ip, rec.peer_as)
            peer.entries += 1
            attrs = rec.attrs
            peer.attrs[id(attrs)] = attrs
            (p4 if rec.family is ipv4 else p6).add(rec.key)
        elif isinstance(rec, Bgp4mpUpdate):
            peer = peer_of(rec.peer_ip, rec.peer_as)
            peer.updates += 1
            for fam, keys in rec.announce.items():
                peer.announced += len(keys)
                prefixes[fam].update(keys)
            for fam, keys in rec.withdraw.items():
                peer.withdrawn += len(keys)
                prefixes[fam].update(keys)
            if rec.attrs is not None and rec.announce:
                peer.attrs[id(rec.attrs)] = rec.attrs
        elif isinstance(rec, StateChange):
            peer_of(rec.peer_ip, rec.peer_as).states += 1
        elif isinstance(rec, Bgp4mpMessage):
            bgp_messages += 1
        elif isinstance(rec, PeerIndex):
            peer_index = rec
            rib_peers = [peer_of(p.ip, p.asn) for p in rec.peers]
    stats = reader.stats
    all_attrs: dict[int, Attributes] = {}
    peer_rows = []
    for peer in peers.values():
        all_attrs.update(peer.attrs)
        shown = {(a.as_path, a.communities, a.next_hop) for a in peer.attrs.values()}
        row: dict[str, Any] = {"ip": peer.ip, "as": peer.asn}
        if peer.entries or not peer.updates:
            row["entries"] = peer.entries
        if peer.updates or peer.states:
            row.update(updates=peer.updates, announced=peer.announced, withdrawn=peer.withdrawn,
                       state_changes=peer.states)
        row["attr_sets"] = len(shown)
        peer_rows.append(row)
    peer_rows.sort(key=lambda r: (-(r.get("entries", 0) + r.get("announced", 0)), r["ip"]))
    out: dict[str, Any] = {
        "file": os.fspath(path),
        "bytes": stats.bytes_read,
        "records": stats.record_count,
        "record_types": {subtype_name(t, s): n for (t, s), n in sorted(stats.records.items())},
        "skipped": dict(stats.skipped),
        "rib_entries": stats.rib_entries,
        "updates": stats.updates,
        "announced": stats.announced,
        "withdrawn": stats.withdrawn,
        "other_bgp_messages": bgp_messages,
        "prefixes": {"ipv4": len(p4), "ipv6": len(p6)},
        "attr_sets": len({a for a in all_attrs.values()}),
        "peers_seen": len(peer_rows),
        "peers_with_updates": sum(1 for r in peer_rows if r.get("updates")),
        "peers": peer_rows,
        "time": {
            "first": _iso(stats.min_timestamp),
            "last": _iso(stats.max_timestamp),
            "first_unix": stats.min_timestamp,
            "last_unix": stats.max_timestamp,
        },
        "errors": [str(e) for e in stats.errors],
    }
    if peer_index is not None:
        out["peer_index"] = {"collector_id": peer_index.collector_id, "view_name": peer_index.view_name,
                             "peers": len(peer_index.peers),
                             "peers_with_entries": sum(1 for p in rib_peers if p.entries)}
    return out


def format_summary(info: dict[str, Any], max_peers: int = 20) -> str:
    """Text for people."""
    lines = [f"file        {info['file']} ({info['bytes']:,} bytes decompressed)",
             f"records     {info['records']:,}"]
    for name, count in info["record_types"].items():
        lines.append(f"  {name:<40} {count:>12,}")
    for name, count in info["skipped"].items():
        lines.append(f"  skipped {name:<32} {count:>12,}")
    if "peer_index" in info:
        pi = info["peer_index"]
        lines.append(f"peer index  collector {pi['collector_id']} view {pi['view_name']!r}: "
                     f"{pi['peers']} peers, {pi['peers_with_entries']} with entries")
    if info["rib_entries"]:
        lines.append(f"rib entries {info['rib_entries']:,}")
    if info["updates"]:
        lines.append(f"updates     {info['updates']:,} ({info['announced']:,} announced, "
                     f"{info['withdrawn']:,} withdrawn)")
    pfx = info["prefixes"]
    lines.append(f"prefixes    {pfx['ipv4']:,} IPv4, {pfx['ipv6']:,} IPv6 (distinct)")
    lines.append(f"attr sets   {info['attr_sets']:,}")
    t = info["time"]
    lines.append(f"time        {t['first']} .. {t['last']}")
    lines.append(f"peers       {info['peers_seen']} ({info['peers_with_updates']} sent UPDATEs)"
                 if info["updates"] else f"peers       {info['peers_seen']}")
    for row in info["peers"][:max_peers]:
        parts = [f"  {row['ip']:<40} AS{row['as']:<10}"]
        if "entries" in row:
            parts.append(f"entries {row['entries']:>9,}")
        if "updates" in row:
            parts.append(f"updates {row['updates']:>8,} ann {row['announced']:>8,} wd {row['withdrawn']:>7,}")
        parts.append(f"attr sets {row['attr_sets']:>7,}")
        lines.append(" ".join(parts))
    if len(info["peers"]) > max_peers:
        lines.append(f"  ... {len(info['peers']) - max_peers} more (--json for all)")
    lines.append(f"errors      {len(info['errors'])}")
    lines.extend(f"  {e}" for e in info["errors"][:10])
    return "\n".join(lines)


def main_mrt_info(argv: Sequence[str]) -> int:
    """``peerctl mrt info FILE [--json]``. Exit 0; 2 with a one-line error on stderr when the file
    cannot be read or has truncated/corrupt records (the summary of what was read is still printed)."""
    parser = argparse.ArgumentParser(prog="peerctl mrt info", description="Summarize an MRT file.")
    parser.add_argument("file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse already printed its usage line
        return 0 if exc.code == 0 else 2
    try:
        info = summarize(args.file)
    except MrtError as exc:
        print(f"peerctl mrt info: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # never a traceback on the command line
        print(f"peerctl mrt info: {args.file}: cannot read: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_summary(info))
    if info["errors"]:
        more = f" (and {len(info['errors']) - 1} more)" if len(info["errors"]) > 1 else ""
        print(f"peerctl mrt info: {info['errors'][0]}{more}", file=sys.stderr)
        return 2
    if info["records"] == 0:
        print(f"peerctl mrt info: {args.file}: no MRT records", file=sys.stderr)
        return 2
    return 0
