"""MRT file → ``speakers.events`` (the "replay speaker" of DESIGN.md), for the lab, benchmarks and
offline analysis.

Theory of operation
-------------------
*RIB dumps* (TABLE_DUMP / TABLE_DUMP_V2): for each selected peer, ``PeerUp`` when its first entry is
seen, then ``Update`` events that batch the prefixes sharing one (interned) ``Attributes`` object,
then ``EndOfRib`` per family at the end of the file. A dump is ordered by prefix, not by attributes,
so entries are grouped per (peer, family, attributes) and a group is sent when it reaches
``batch`` prefixes; everything pending is sent when ``pending_limit`` prefixes are buffered and at
the end (bounded memory for any file size).

*Update files* (BGP4MP): each UPDATE becomes one ``Update`` per family present, in file order (order
matters there), with ``attrs_for(family)`` so an IPv6 announcement carries the MP_REACH next hop.
A state change into Established (6) gives ``PeerUp``, one out of it ``PeerDown(CONNECTION_LOST)``;
a peer whose first record is an UPDATE gets a ``PeerUp`` first. An empty UPDATE (or an empty
MP_UNREACH_NLRI) is an End-of-RIB marker (RFC 4724 2) and becomes ``EndOfRib``.

``peer_filter`` selects peers: an address string, or a predicate on ``(peer_ip, peer_as)``.
MrtError propagates from the reader (``errors="raise"`` unless told otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import BinaryIO, Literal

from orchestrator.collector.mrt import (
    Bgp4mpMessage,
    Bgp4mpUpdate,
    MrtReader,
    PeerIndex,
    RibEntry,
    StateChange,
)
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family
from speakers.events import DownReason, EndOfRib, PeerDown, PeerUp, SpeakerEvent, Update

PeerFilter = str | Callable[[str, int], bool] | None

_ESTABLISHED = 6


def _selector(peer_filter: PeerFilter) -> Callable[[str, int], bool]:
    if peer_filter is None:
        return lambda ip, asn: True
    if isinstance(peer_filter, str):
        wanted = peer_filter
        return lambda ip, asn: ip == wanted
    return peer_filter


def replay_events(source: str | os.PathLike[str] | bytes | BinaryIO, peer_filter: PeerFilter = None, *,
                  batch: int = 2048, pending_limit: int = 200_000,
                  errors: Literal["raise", "count"] = "raise") -> Iterator[SpeakerEvent]:
    """Events of the selected peers of an MRT file (see the module docstring)."""
    selected = _selector(peer_filter)
    reader = MrtReader(source, errors=errors)
    # RIB state
    groups: dict[tuple[str, Family, int], tuple[Attributes, list[int]]] = {}
    pending = 0
    families_seen: dict[str, set[Family]] = {}
    bgp_ids: dict[str, str] = {}
    up: set[str] = set()
    keep: dict[tuple[str, int], bool] = {}

    def flush_all() -> Iterator[Update]:
        for (peer, family, _), (attrs, keys) in groups.items():
            yield Update(peer, family, attrs, keys, ())
        groups.clear()

    for rec in reader:
        if type(rec) is RibEntry:
            pk = (rec.peer_ip, rec.peer_as)
            ok = keep.get(pk)
            if ok is None:
                ok = keep[pk] = selected(*pk)
            if not ok:
                continue
            peer = rec.peer_ip
            if peer not in up:
                up.add(peer)
                families_seen[peer] = set()
                yield PeerUp(peer, rec.peer_as, bgp_ids.get(peer, "0.0.0.0"))
            families_seen[peer].add(rec.family)
            attrs = rec.attrs
            gk = (peer, rec.family, id(attrs))
            group = groups.get(gk)
            if group is None:
                group = groups[gk] = (attrs, [])
            group[1].append(rec.key)
            pending += 1
            if len(group[1]) >= batch:
                del groups[gk]
                yield Update(peer, rec.family, attrs, group[1], ())
            if pending >= pending_limit:
                yield from flush_all()
                pending = 0
        elif isinstance(rec, Bgp4mpUpdate):
            if not selected(rec.peer_ip, rec.peer_as):
                continue
            peer = rec.peer_ip
            if peer not in up:
                up.add(peer)
                yield PeerUp(peer, rec.peer_as, bgp_ids.get(peer, "0.0.0.0"))
            if rec.end_of_rib is not None:
                yield EndOfRib(peer, rec.end_of_rib)
                continue
            for family in (Family.IPV4, Family.IPV6):
                ann = rec.announce.get(family, ())
                wd = rec.withdraw.get(family, ())
                if ann or wd:
                    yield Update(peer, family, rec.attrs_for(family) if ann else None, ann, wd)
        elif isinstance(rec, StateChange):
            if not selected(rec.peer_ip, rec.peer_as):
                continue
            peer = rec.peer_ip
            if rec.new_state == _ESTABLISHED and peer not in up:
                up.add(peer)
                yield PeerUp(peer, rec.peer_as, bgp_ids.get(peer, "0.0.0.0"))
            elif rec.old_state == _ESTABLISHED and rec.new_state != _ESTABLISHED and peer in up:
                up.discard(peer)
                yield PeerDown(peer, DownReason.CONNECTION_LOST, f"MRT state change {rec.old_state}->"
                                                                 f"{rec.new_state}")
        elif isinstance(rec, Bgp4mpMessage):
            if rec.msg_type == 1 and len(rec.data) >= 9:  # OPEN: version, AS, hold time, BGP identifier
                bgp_ids[rec.peer_ip] = ".".join(str(b) for b in rec.data[5:9])
        elif isinstance(rec, PeerIndex):
            for p in rec.peers:
                bgp_ids[p.ip] = p.bgp_id
    yield from flush_all()
    for peer, fams in families_seen.items():
        for family in sorted(fams, key=lambda f: f.afi):
            yield EndOfRib(peer, family)
