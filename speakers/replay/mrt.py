"""One peer's view of an MRT RIB dump as the feeder's table: ``table_groups`` for ``feeder --mrt``.

Theory of operation
-------------------
``orchestrator.collector.mrt.MrtReader`` streams ``RibEntry`` records (TABLE_DUMP v1/v2, ADD-PATH).
A RIB dump holds every collector peer's paths; a feeder serves one peer's view, as that peer would
announce it to us: the peer with the most entries unless ``peer`` names one (a first pass counts
entries per peer; naming the peer skips it). Each path is rewritten for an eBGP session from the
feeder: the next hop becomes the feeder's (``next_hop4`` / ``next_hop6``), ``peer_as`` (the feeder's
ASN) is prepended unless the path already starts with it, and LOCAL_PREF is dropped (RFC 4271 5.1.5).
Prefixes are grouped by the rewritten attribute set (equal sets share one group), the first path per
prefix wins (ADD-PATH dumps carry several). Memory: one key per prefix plus one group per set.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterator

from orchestrator.collector.mrt import MrtReader, RibEntry
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family

Group = tuple[Family, Attributes, list[int]]


def peer_counts(path: str | os.PathLike[str]) -> Counter[tuple[str, int]]:
    """RIB entries per ``(peer_ip, peer_as)``. Raises MrtError for an unreadable file."""
    counts: Counter[tuple[str, int]] = Counter()
    for rec in MrtReader(path, errors="count"):
        if type(rec) is RibEntry:
            counts[(rec.peer_ip, rec.peer_as)] += 1
    return counts


def _rewrite(attrs: Attributes, next_hop: str, peer_as: int) -> Attributes:
    as_path = attrs.as_path
    if peer_as and not (as_path and as_path[0][0] == AS_SEQUENCE and as_path[0][1][:1] == (peer_as,)):
        if as_path and as_path[0][0] == AS_SEQUENCE:
            as_path = ((AS_SEQUENCE, (peer_as, *as_path[0][1])), *as_path[1:])
        else:
            as_path = ((AS_SEQUENCE, (peer_as,)), *as_path)
    return dataclasses.replace(attrs, next_hop=next_hop, as_path=as_path, local_pref=None)


def table_groups(
    path: str | os.PathLike[str],
    *,
    next_hop4: str,
    next_hop6: str,
    peer_as: int,
    peer: str | None = None,
    damage: list[str] | None = None,
) -> Iterator[Group]:
    """Groups ``(family, attrs, keys)`` of one peer's view of the RIB dump at ``path``.

    ``peer``: the collector peer's address; default the peer with the most entries. Raises MrtError
    for an unreadable file and ValueError when the file has no RIB entries (or none of ``peer``).
    Damaged records (a truncated file) are skipped; ``damage``, when given, gets a line saying so.
    """
    if peer is None:
        counts = peer_counts(path)
        if not counts:
            raise ValueError(f"{path}: no RIB entries (not a TABLE_DUMP file?)")
        peer = counts.most_common(1)[0][0][0]
    seen: dict[Family, set[int]] = {Family.IPV4: set(), Family.IPV6: set()}
    rewritten: dict[int, Attributes] = {}  # id(original, interned by the reader) → rewritten
    groups: dict[tuple[Family, Attributes], list[int]] = {}
    keep: list[Attributes] = []  # keeps the originals alive so their ids stay unique
    reader = MrtReader(path, errors="count")
    for rec in reader:
        if type(rec) is not RibEntry or rec.peer_ip != peer:
            continue
        fam_seen = seen[rec.family]
        if rec.key in fam_seen:
            continue
        fam_seen.add(rec.key)
        attrs = rewritten.get(id(rec.attrs))
        if attrs is None:
            keep.append(rec.attrs)
            nh = next_hop4 if rec.family is Family.IPV4 else next_hop6
            attrs = rewritten[id(rec.attrs)] = _rewrite(rec.attrs, nh, peer_as)
        groups.setdefault((rec.family, attrs), []).append(rec.key)
    if not groups:
        raise ValueError(f"{path}: no RIB entries of peer {peer}")
    if damage is not None and reader.stats.errors:
        errors = reader.stats.errors
        damage.append(f"{path}: {len(errors)} damaged record(s) skipped, the first: {errors[0]}")
    for (family, attrs), keys in groups.items():
        yield family, attrs, keys


__all__ = ["Group", "peer_counts", "table_groups"]
