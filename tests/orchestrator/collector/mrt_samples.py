"""Synthetic tables and update streams for the MRT writer/reader tests, and a bgpdump ``-m`` formatter
of our records for comparing with the real bgpdump."""

from __future__ import annotations

import ipaddress
import random

from orchestrator.collector.mrt import Bgp4mpUpdate, PeerEntry, RibEntry
from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, Attributes, Origin, community_text
from orchestrator.rib.prefix import Family, format_prefix, key_from_parts

PEERS = (
    PeerEntry("192.0.2.1", 64500, "192.0.2.1"),
    PeerEntry("198.51.100.7", 4200000001, "198.51.100.7"),
    PeerEntry("2001:db8::1", 65001, "10.0.0.1"),
)

Path3 = tuple[int, Attributes, int]


def sample_attrs(rng: random.Random, family: Family) -> Attributes:
    path_len = rng.randint(1, 6)
    asns = tuple(rng.choice((rng.randint(1, 64511), rng.randint(131072, 4199999999)))
                 for _ in range(path_len))
    as_path: tuple[tuple[int, tuple[int, ...]], ...] = ((AS_SEQUENCE, asns),)
    if rng.random() < 0.1:
        as_path += ((AS_SET, tuple(sorted({rng.randint(1, 65000) for _ in range(3)}))),)
    if family is Family.IPV4:
        nh = f"203.0.113.{rng.randint(1, 254)}"
    else:
        nh = f"2001:db8:ffff::{rng.randint(1, 0xfffe):x}"
    return Attributes(
        next_hop=nh,
        origin=rng.choice(list(Origin)),
        as_path=as_path,
        med=rng.choice((None, rng.randint(0, 1000))),
        local_pref=rng.choice((None, 100, 200)),
        communities=tuple(sorted({rng.randint(0, 2**32 - 1) for _ in range(rng.randint(0, 4))})),
        large_communities=tuple((64500, rng.randint(0, 9), 1) for _ in range(rng.randint(0, 1))),
        atomic_aggregate=rng.random() < 0.1,
        aggregator=(64500, "192.0.2.99") if rng.random() < 0.1 else None,
    )


AnyPath = tuple[int, Attributes, int] | tuple[int, Attributes, int, int]


def sample_table(n: int, seed: int = 1, add_path: bool = False) -> list[tuple[Family, int, list[AnyPath]]]:
    """``n`` prefixes (IPv4 and IPv6), 1-3 paths each, ~7 prefixes per attribute set."""
    rng = random.Random(seed)
    pools = {f: [sample_attrs(rng, f) for _ in range(max(1, n // 7))] for f in Family}
    out: list[tuple[Family, int, list[AnyPath]]] = []
    seen: set[tuple[Family, int]] = set()
    while len(out) < n:
        family = Family.IPV4 if rng.random() < 0.8 else Family.IPV6
        if family is Family.IPV4:
            length = rng.choice((8, 16, 19, 22, 24, 24, 24, 32))
            key = key_from_parts(rng.getrandbits(32), length, family)
        else:
            length = rng.choice((0, 29, 32, 48, 48, 64, 127, 128))
            key = key_from_parts(rng.getrandbits(128), length, family)
        if (family, key) in seen:
            continue
        seen.add((family, key))
        peers = rng.sample(range(len(PEERS)), rng.randint(1, 3))
        paths: list[AnyPath] = []
        for p in sorted(peers):
            attrs = rng.choice(pools[family])
            if add_path:
                paths.append((p, attrs, 1_400_000_000 + rng.randint(0, 10**6), rng.randint(1, 2**32 - 1)))
            else:
                paths.append((p, attrs, 1_400_000_000 + rng.randint(0, 10**6)))
        out.append((family, key, paths))
    return out


def _as_path_text(attrs: Attributes) -> str:
    parts = []
    for seg_type, asns in attrs.as_path:
        if seg_type == AS_SET:
            parts.append("{" + ",".join(str(a) for a in asns) + "}")
        else:
            parts.extend(str(a) for a in asns)
    return " ".join(parts)


def bgpdump_fields(prefix: str, attrs: Attributes) -> tuple[str, str, str, str, str]:
    """(prefix, AS path, origin, next hop, communities) as ``bgpdump -m`` prints them."""
    return (prefix, _as_path_text(attrs), attrs.origin.name, attrs.next_hop,
            " ".join(community_text(c) for c in attrs.communities))


def rib_lines(entries: list[RibEntry]) -> list[tuple[str, ...]]:
    return sorted((e.peer_ip, str(e.peer_as), *bgpdump_fields(format_prefix(e.family, e.key), e.attrs))
                  for e in entries)


def update_lines(updates: list[Bgp4mpUpdate]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for u in updates:
        for fam, keys in u.announce.items():
            attrs = u.attrs_for(fam)
            assert attrs is not None
            out += [("A", u.peer_ip, *bgpdump_fields(format_prefix(fam, k), attrs)) for k in keys]
        for fam, keys in u.withdraw.items():
            out += [("W", u.peer_ip, format_prefix(fam, k)) for k in keys]
    return sorted(out)


_WELL_KNOWN = {"no-export": "65535:65281", "no-advertise": "65535:65282",
               "no-export-subconfed": "65535:65283"}


def _norm_addr(text: str) -> str:
    """bgpdump compresses a single zero group of IPv6 (``2001:668::3:...``); RFC 5952 does not."""
    return str(ipaddress.ip_address(text)) if ":" in text else text


def _norm_prefix(text: str) -> str:
    return str(ipaddress.ip_network(text)) if ":" in text else text


def parse_bgpdump_line(line: str) -> tuple[str, ...]:
    f = line.split("|")
    if f[0] == "TABLE_DUMP2_AP":  # RFC 8050: the path id follows the prefix
        del f[6]
    if f[0] == "BGP" and f[2] == "A":  # obsolete type 5: bgpdump prints no communities field
        f.insert(11, "")
    if f[2] in ("B", "A"):
        who = (f[3], f[4]) if f[2] == "B" else ("A", f[3])
        comms = " ".join(_WELL_KNOWN.get(c, c) for c in f[11].split())
        return (*who, _norm_prefix(f[5]), f[6], f[7], _norm_addr(f[8]), comms)
    if f[2] == "W":
        return ("W", f[3], _norm_prefix(f[5]))
    return tuple(f)
