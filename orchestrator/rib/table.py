"""The RIB: every peer's paths per prefix (Adj-RIB-In) and the best path of each prefix (Loc-RIB).

Vocabulary as in GoBGP/BIRD/OpenBGPD: a *prefix* (a key, ``orchestrator.rib.prefix``) has a
*destination* (the entry holding its paths) with one *path* per peer. The representation is chosen
for memory (DESIGN.md "RIB memory": ≤ 100 bytes per path on a full table):

- ``Path`` objects are interned per (peer, attribute set): a full table from one peer holds about
  one ``Path`` per 7 prefixes, and a path costs a prefix one reference. A ``Path`` carries the
  precomputed decision rank (``decide.py``), so best-path selection is integer comparison.
- A destination is the ``Path`` itself when one peer has the prefix, or a tuple of ``Path`` (best
  first, then by rank) when several do.
- Destinations live in buckets, not in one dict per family: a dict entry plus its int key cost
  ~70 bytes per prefix, more than half the budget, and so does a bucket (dict entry, int key,
  list: ~150 bytes) holding one prefix. A key splits into ``hi = key >> 11`` and the 11-bit
  ``lo = key & 0x7FF`` (for a /17-/24, the last 3 bits of the second-to-last address byte and the
  last byte: a bucket spans 2,048 keys, e.g. eight /16s' worth of /24s); ``buckets[hi]`` is a list
  ``[index, dest, dest, ...]`` whose ``index`` holds each lo as two bytes, ``0x80 | lo >> 7`` then
  ``lo & 0x7F``: only an entry's first byte has the high bit set, so ``bytes.find`` of a two-byte
  entry can only match on an entry boundary and the offset halved is the position. 11 bits, not 8:
  the lab's sparse 200k table has 1.8 prefixes per 8-bit bucket but 5.3 per 11-bit one (containers
  102 -> ~45 bytes per path); not 12 or more: a two-byte ``find`` costs ~1 ns per index byte (a
  one-byte one is memchr), and on a 1M table 11 bits already put ~66 prefixes in the average
  prefix's bucket. The index is immutable ``bytes`` (replaced on insert/delete) and the two-byte
  entries are shared objects (``_LO``), so a bucket holding one prefix costs its list alone.

Interning and its cache: each peer keeps ``Attributes → Path``. Entries whose ``Path`` no table
entry references any more are dropped by ``sweep()``, run automatically when a peer's cache has
doubled since its last sweep (amortised O(1) per new attribute set) and wholesale on peer down.
The test "no longer referenced" is ``sys.getrefcount``: a ``Path`` held only by the cache is
garbage; one held by a table entry or by a caller (an unconsumed ``BestChange``) stays.

AS loops (RFC 4271 9.1.2): an attribute set whose AS_PATH holds the peer's local AS is not interned
and the UPDATE's announcements are applied as withdrawals of those prefixes from that peer (as
BIRD does), unless the peer has ``allow_own_as``. Checked once per new attribute set, at intern.

Counters: per peer and family, paths received and paths that are best, kept up to date on every
change (O(1)); family totals are their sums.

Changes: ``update`` / ``peer_down`` return ``BestChange(family, key, old, new, reason)`` only when
the best ``Path`` object of a prefix changes (a new best with the same attributes from the same
peer is the same object, so re-announcements are silent). ``reason`` is None when the prefix is
gone. The reason of a best path that did not change is recomputed on demand (``reason()``).

GC: a full table is millions of container objects; CPython's cyclic GC then spends ~40% of a
bulk load rescanning them. Wrap bulk loads in ``bulk_load()`` (or raise the thresholds in the
daemon); nothing here creates reference cycles.

Batches: ``update_many`` applies a run of UPDATEs from one peer (the daemon's RIB task hands it
the run of a speaker read) as ``update`` would one by one, with the per-call set-up once: on a
table load nearly every UPDATE carries a new attribute set and ~7 prefixes, so what is paid per
UPDATE (call, checks, intern) weighs as much as the per-prefix work. ``update`` is
``update_many`` of one.

C accelerator (optional, ``_fastrib.c``): ``update``'s announcement loop runs over an iterator
that applies, in C and in order, the announcements needing no decision (a new bucket, a prefix
new in its bucket, the same ``Path`` again, the peer's own single ``Path`` replaced) on these same
structures, and yields every other key to the Python loop body, which stays the one place where
paths of several peers are compared. The loop looks up the buckets of its next 16 keys before it
works on them and prefetches what it will touch (a table is scattered over far more memory than
the caches, and the loop waits on memory more than it computes). A new prefix in a bucket grows
the bucket's index in place when the bucket holds the only reference to it (nobody can see the
immutable ``bytes`` change; the same bytes in the same allocator size class, so the same memory as
the copy). ``_intern`` and ``_rank`` are done in C too (the same marshal bytes, written directly for the
types attribute sets hold, the same rank for the common AS path, the same sweeps; anything else
asks the Python methods); ``update_many`` makes one C call per UPDATE for both
(``_fastrib.announce``; ``_fastrib.intern`` and ``_fastrib.announcer`` are its two halves on their
own, for the tests). Without ``on_update``, ``update_many`` hands the whole run to
``_fastrib.run``, which loops over its UPDATEs in C (~0.3 µs of Python per UPDATE less: a table
load is ~7 prefixes per UPDATE) and returns to the Python loop at an UPDATE with withdrawals or
anything unusual (taken from its start) or at a key its announcer yields (taken with the rest of
that announcer). Not built, or ``PEERCTL_PURE=1``: the Python alone, the reference the C is
tested against.

No I/O and no asyncio: one task owns a ``Rib`` and calls it synchronously.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain as _chain
from marshal import dumps as _dumps
from marshal import loads as _loads
from operator import attrgetter
from typing import Any, Final, NamedTuple, Protocol, cast

from orchestrator.accelerators import load
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes, Origin
from orchestrator.rib.decide import (
    ADDR_SHIFT,
    ASPATH_SHIFT,
    EBGP_SHIFT,
    LP_SHIFT,
    MAX_PEERS,
    MED_SHIFT,
    NAS_MASK,
    ORIGIN_SHIFT,
    RID_SHIFT,
    DecisionOptions,
    Reason,
    address_sort_key,
    better2,
    local_pref_from_rank,
    order,
    reason_from_xor,
    router_id_int,
    with_peer_fields,
)
from orchestrator.rib.prefix import Family, key_from_parts

_by_rank = attrgetter("rank")

_FAMILIES = (Family.IPV4, Family.IPV6)
_FAMILY_INDEX = {Family.IPV4: 0, Family.IPV6: 1}
_IPV4: Final = Family.IPV4


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A peer as the RIB sees it."""

    name: str
    peer_as: int
    address: str
    local_as: int
    router_id: str = "0.0.0.0"
    local_pref: int = 100
    """LOCAL_PREF for paths without one; for eBGP peers for all paths (RFC 4271 5.1.5)."""
    allow_own_as: bool = False
    """Keep paths whose AS_PATH holds ``local_as`` (BIRD's ``allow local as``); by default such a
    path is an AS loop and is treated as a withdrawal (RFC 4271 9.1.2)."""

    @property
    def ebgp(self) -> bool:
        return self.peer_as != self.local_as


class _Peer:
    __slots__ = (
        "addr_ord", "best", "cache", "ebgp", "index", "info", "loop_as", "lp_rank", "rank_base", "received",
        "rid", "sweep_at",
    )  # fmt: skip

    def __init__(self, info: PeerInfo, index: int) -> None:
        self.info = info
        self.index = index
        self.ebgp = info.ebgp
        self.loop_as = -1 if info.allow_own_as else info.local_as  # an AS_PATH holding it: a loop
        self.rid = router_id_int(info.router_id)
        self.addr_ord = 0
        self.cache: dict[bytes, Path] = {}  # encode_attrs(attrs) -> Path
        self.sweep_at = _SWEEP_MIN
        self.received = [0, 0]  # per family index
        self.best = [0, 0]
        self.rank_base = 0
        self.lp_rank = 0
        self.refresh_rank()

    def refresh_rank(self) -> None:
        """Recompute the rank bits that depend only on the peer (after ``rid`` or ``addr_ord``
        changed): eBGP/iBGP, router id, address ordinal; and the LOCAL_PREF bits its paths get
        when LOCAL_PREF is the peer's (eBGP, or none received)."""
        self.rank_base = (
            ((0 if self.ebgp else 1) << EBGP_SHIFT)
            | ((self.rid & _U32) << RID_SHIFT)
            | ((self.addr_ord & (MAX_PEERS - 1)) << ADDR_SHIFT)
        )
        self.lp_rank = (_U32 - (self.info.local_pref & _U32)) << LP_SHIFT


_SWEEP_MIN = 4096
LO_BITS: Final = 11  # see "Destinations live in buckets" above
_LO_MASK: Final = (1 << LO_BITS) - 1
_LO: Final = tuple(bytes((0x80 | lo >> 7, lo & 0x7F)) for lo in range(1 << LO_BITS))  # index entries, shared


def _lo_at(index: bytes, j: int) -> int:
    """The lo of the ``j``-th destination of a bucket (1-based, as its list position)."""
    return ((index[2 * j - 2] & 0x7F) << 7) | index[2 * j - 1]


_U32 = 0xFFFFFFFF
_ASPATH_MAX = 0xFFFF


def encode_attrs(attrs: Attributes) -> bytes:
    """Compact, deterministic bytes of an attribute set (marshal version 2 has no back-references,
    so equal sets give equal bytes whatever objects they share)."""
    return _dumps(
        (
            attrs.next_hop,
            int(attrs.origin),
            attrs.as_path,
            attrs.med,
            attrs.local_pref,
            attrs.communities,
            attrs.large_communities,
            attrs.atomic_aggregate,
            attrs.aggregator,
            attrs.other,
        ),
        2,
    )


def decode_attrs(blob: bytes) -> Attributes:
    nh, origin, as_path, med, lp, comms, lcomms, atomic, aggregator, other = _loads(blob)
    return Attributes(nh, Origin(origin), as_path, med, lp, comms, lcomms, atomic, aggregator, other)


class Path:
    """One peer's path for a prefix: an interned (peer, attribute set) with its decision rank.

    Shared by every prefix the peer announced with the same attributes; never mutated by callers.
    The attribute set is kept as compact bytes (``encode_attrs``) and decoded on each ``.attrs``
    access (a few µs): consumers that read attributes of many prefixes should memoise per ``Path``
    (``id`` or the object itself), as ~7 prefixes share one.
    """

    __slots__ = ("_peer", "blob", "rank")

    def __init__(self, peer: _Peer, blob: bytes, rank: int) -> None:
        self._peer = peer
        self.blob = blob
        self.rank = rank

    @property
    def attrs(self) -> Attributes:
        return decode_attrs(self.blob)

    @property
    def nas(self) -> int:
        """Neighbor AS (first AS of the path; 0 when none), the MED comparison group."""
        return self.rank & NAS_MASK

    @property
    def peer(self) -> str:
        return self._peer.info.name

    @property
    def peer_index(self) -> int:
        return self._peer.index

    @property
    def peer_info(self) -> PeerInfo:
        return self._peer.info

    @property
    def next_hop(self) -> str:
        nh: str = _loads(self.blob)[0]
        return nh

    @property
    def local_pref(self) -> int:
        """Effective LOCAL_PREF used by the decision process."""
        return local_pref_from_rank(self.rank)

    def __repr__(self) -> str:
        return f"Path(peer={self.peer!r}, next_hop={self.next_hop!r}, as_path={self.attrs.as_path_flat()})"


class BestChange(NamedTuple):
    """The best path of ``key`` went from ``old`` to ``new`` (either may be None)."""

    family: Family
    key: int
    old: Path | None
    new: Path | None
    reason: Reason | None


class _Discard(list[BestChange]):
    """A ``changes`` list that keeps nothing (see ``DISCARD``)."""

    __slots__ = ()

    def append(self, item: BestChange) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass

    def __iadd__(self, items: Any) -> _Discard:  # type: ignore[override, misc]
        return self


DISCARD: Final[list[BestChange]] = _Discard()
"""Pass as ``changes`` when nobody consumes best-path changes (no FIB, no subscribers): ``update``
then does not build a ``BestChange`` per prefix, and anything appended to it is dropped."""


@contextmanager
def bulk_load() -> Iterator[None]:
    """Disable the cyclic GC for the duration (full-table loads); restores the previous state."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class UpdateLike(Protocol):
    """What ``Rib.update_many`` reads of an UPDATE (``speakers.events.Update`` is one)."""

    @property
    def family(self) -> Family: ...

    @property
    def attrs(self) -> Attributes | None: ...

    @property
    def announce(self) -> Sequence[int]: ...

    @property
    def withdraw(self) -> Sequence[int]: ...


class _One(NamedTuple):
    family: Family
    attrs: Attributes | None
    announce: Sequence[int]
    withdraw: Sequence[int]


_new_tuple: Final = tuple.__new__


def _entries(dest: Path | tuple[Path, ...]) -> tuple[Path, ...]:
    return (dest,) if type(dest) is Path else dest  # type: ignore[return-value]


AdjRibInListener = Callable[[str, Family, Attributes | None, Sequence[int], Sequence[int]], None]


class Rib:
    """All peers' paths and the best path per prefix, for IPv4 and IPv6 unicast."""

    def __init__(self, options: DecisionOptions) -> None:
        self.options = options
        self._acm = options.always_compare_med
        self._missing_med_rank = ((_U32 if options.missing_med_worst else 0) & _U32) << MED_SHIFT
        self._peers: dict[str, _Peer] = {}
        self._next_index = 0
        # per family: hi -> [bytes(lo...), dest, dest, ...]
        self._buckets: tuple[dict[int, list[Any]], dict[int, list[Any]]] = ({}, {})
        self.on_update: AdjRibInListener | None = None
        """Called at the start of every ``update`` with its arguments (peer, family, attrs, announce,
        withdraw): a peer's Adj-RIB-In changes as accepted by import policy (per-upstream FIB tables)."""

    # -- peers ---------------------------------------------------------------------------------

    def add_peer(self, info: PeerInfo) -> None:
        """Register a peer. ValueError when the name or address is already in use."""
        if info.name in self._peers:
            raise ValueError(f"peer {info.name!r} already exists")
        key = address_sort_key(info.address)
        if any(address_sort_key(p.info.address) == key for p in self._peers.values()):
            raise ValueError(f"peer address {info.address} already used by another peer")
        if len(self._peers) >= MAX_PEERS:
            raise ValueError(f"more than {MAX_PEERS} peers")
        self._peers[info.name] = _Peer(info, self._next_index)
        self._next_index += 1
        self._renumber_addresses()

    def remove_peer(self, name: str) -> list[BestChange]:
        """Purge the peer's paths and forget it. KeyError when unknown."""
        changes = self.peer_down(name)
        del self._peers[name]
        return changes

    def peer_up(self, name: str, router_id: str) -> list[BestChange]:
        """The session came up with the peer's BGP identifier. A changed router id re-ranks its
        paths; if it still holds paths (no peer_down in between) their prefixes are re-decided
        and the changes returned. KeyError when unknown, ValueError for a bad router id."""
        peer = self._peers[name]
        rid = router_id_int(router_id)
        if rid == peer.rid:
            return []
        peer.rid = rid
        peer.info = PeerInfo(
            name=peer.info.name,
            peer_as=peer.info.peer_as,
            address=peer.info.address,
            local_as=peer.info.local_as,
            router_id=router_id,
            local_pref=peer.info.local_pref,
            allow_own_as=peer.info.allow_own_as,
        )
        peer.refresh_rank()
        for path in peer.cache.values():
            path.rank = with_peer_fields(path.rank, router_id=rid, address_ordinal=peer.addr_ord)
        if not any(peer.received):
            return []
        return self._redecide(peer)

    def peer_down(self, name: str) -> list[BestChange]:
        """Adj-RIB-In flush: remove every path of the peer, return the best-path changes.
        KeyError when unknown."""
        peer = self._peers[name]
        changes: list[BestChange] = []
        for fi, family in enumerate(_FAMILIES):
            if not peer.received[fi]:
                continue
            buckets = self._buckets[fi]
            empty: list[int] = []
            for hi, bucket in buckets.items():
                los: bytes = bucket[0]
                kept: bytearray | None = None  # los minus removed entries, built on the first removal
                j = len(bucket) - 1  # descending: the indices still to visit are the same in los
                while j:
                    dest = bucket[j]
                    if type(dest) is Path:
                        if dest._peer is peer:
                            del bucket[j]
                            if kept is None:
                                kept = bytearray(los)
                            del kept[2 * j - 2 : 2 * j]
                            changes.append(
                                BestChange(family, (hi << LO_BITS) | _lo_at(los, j), dest, None, None)
                            )
                    else:
                        key = (hi << LO_BITS) | _lo_at(los, j)
                        self._drop_from(dest, peer, bucket, j, changes, family, key, fi)
                    j -= 1
                if len(bucket) == 1:
                    empty.append(hi)
                elif kept is not None:
                    bucket[0] = bytes(kept)
            for hi in empty:
                del buckets[hi]
            peer.received[fi] = 0
            peer.best[fi] = 0
        peer.cache.clear()
        peer.sweep_at = _SWEEP_MIN
        return changes

    def _drop_from(
        self,
        dest: tuple[Path, ...],
        peer: _Peer,
        bucket: list[Any],
        j: int,
        changes: list[BestChange],
        family: Family,
        key: int,
        fi: int,
    ) -> None:
        """Remove ``peer``'s path from the multi-path destination ``dest`` at ``bucket[j]``."""
        for mine in dest:
            if mine._peer is peer:
                break
        else:
            return
        peer.received[fi] -= 1
        old = dest[0]
        if mine is not old:
            if len(dest) == 2:
                bucket[j] = old
            elif self._acm or (mine.rank ^ old.rank) >> ORIGIN_SHIFT:
                # A path eliminated at steps 1-3 (or a total order): the best cannot change.
                bucket[j] = tuple(p for p in dest if p is not mine)
            else:
                self._reorder(bucket, j, [p for p in dest if p is not mine], old, changes, family, key, fi)
            return
        peer.best[fi] -= 1
        if len(dest) == 2:
            new = bucket[j] = dest[1]
            changes.append(BestChange(family, key, old, new, Reason.ONLY_PATH))
            new._peer.best[fi] += 1
            return
        rest = dest[1:]  # sorted by rank
        diff = rest[0].rank ^ rest[1].rank
        if self._acm or diff >> ORIGIN_SHIFT:
            bucket[j] = rest
            new = rest[0]
            new._peer.best[fi] += 1
            changes.append(BestChange(family, key, old, new, reason_from_xor(diff)))
            return
        old._peer.best[fi] += 1  # _reorder moves the count from old to new
        self._reorder(bucket, j, list(rest), old, changes, family, key, fi)

    def _reorder(
        self,
        bucket: list[Any],
        j: int,
        paths: list[Path],
        old: Path,
        changes: list[BestChange],
        family: Family,
        key: int,
        fi: int,
    ) -> None:
        ordered, reason = order(paths, self._acm)
        bucket[j] = ordered
        new = ordered[0]
        if new is not old:
            old._peer.best[fi] -= 1
            new._peer.best[fi] += 1
            changes.append(BestChange(family, key, old, new, reason))

    def _renumber_addresses(self) -> None:
        peers = sorted(self._peers.values(), key=lambda p: address_sort_key(p.info.address))
        for ordinal, peer in enumerate(peers):
            if peer.addr_ord != ordinal:
                peer.addr_ord = ordinal  # relative order of the others is unchanged: no re-sort
                peer.refresh_rank()
                for path in peer.cache.values():
                    path.rank = with_peer_fields(path.rank, router_id=peer.rid, address_ordinal=ordinal)

    def _redecide(self, peer: _Peer) -> list[BestChange]:
        changes: list[BestChange] = []
        for fi, family in enumerate(_FAMILIES):
            for hi, bucket in self._buckets[fi].items():
                los = bucket[0]
                for j in range(1, len(bucket)):
                    dest = bucket[j]
                    if type(dest) is Path or not any(p._peer is peer for p in dest):
                        continue
                    ordered, reason = order(list(dest), self._acm)
                    bucket[j] = ordered
                    if ordered[0] is not dest[0]:
                        dest[0]._peer.best[fi] -= 1
                        ordered[0]._peer.best[fi] += 1
                        changes.append(
                            BestChange(family, (hi << LO_BITS) | _lo_at(los, j), dest[0], ordered[0], reason)
                        )
        return changes

    # -- interning -----------------------------------------------------------------------------

    def _intern(self, peer: _Peer, attrs: Attributes) -> Path | None:
        """The peer's ``Path`` for ``attrs`` (one per attribute set); None when the AS_PATH holds
        the peer's ``loop_as``: an AS loop, never interned (the caller withdraws its prefixes)."""
        blob = encode_attrs(attrs)
        path = peer.cache.get(blob)
        if path is None:
            if peer.loop_as >= 0 and self._looped(peer, attrs):
                return None
            path = peer.cache[blob] = Path(peer, blob, self._rank(peer, attrs))
            if len(peer.cache) >= peer.sweep_at:
                self._sweep_peer(peer)
        return path

    @staticmethod
    def _looped(peer: _Peer, attrs: Attributes) -> bool:
        """RFC 4271 9.1.2: a path whose AS_PATH (any segment) holds our AS is a loop."""
        loop_as = peer.loop_as
        return any(loop_as in asns for _, asns in attrs.as_path)

    def _rank(self, peer: _Peer, attrs: Attributes) -> int:
        """``rank_of`` inlined (once per new attribute set, so per UPDATE on a table load); the
        common AS path (one non-empty AS_SEQUENCE) without the segment walks, the peer's own bits
        precomputed (``_Peer.refresh_rank``). Same integer."""
        as_path = attrs.as_path
        if len(as_path) == 1 and as_path[0][0] == AS_SEQUENCE and as_path[0][1]:
            asns = as_path[0][1]
            as_len = len(asns)
            nas = asns[0]
        else:
            as_len = attrs.as_path_length
            nas = attrs.neighbor_as or 0
        local_pref = attrs.local_pref
        med = attrs.med
        return (
            (peer.lp_rank if peer.ebgp or local_pref is None else (_U32 - (local_pref & _U32)) << LP_SHIFT)
            | ((as_len if as_len < _ASPATH_MAX else _ASPATH_MAX) << ASPATH_SHIFT)
            | ((attrs.origin & 3) << ORIGIN_SHIFT)
            | (self._missing_med_rank if med is None else (med & _U32) << MED_SHIFT)
            | peer.rank_base
            | (nas & NAS_MASK)
        )

    def _sweep_peer(self, peer: _Peer) -> int:
        cache = peer.cache
        getrefcount = sys.getrefcount
        dead = [a for a in list(cache) if getrefcount(cache[a]) <= 2]  # the cache + the argument
        for a in dead:
            del cache[a]
        peer.sweep_at = max(_SWEEP_MIN, 2 * len(cache))
        return len(dead)

    def sweep(self) -> int:
        """Drop interned paths that no destination (nor caller) references; return how many."""
        return sum(self._sweep_peer(peer) for peer in self._peers.values())

    def interned(self, peer: str) -> int:
        """Number of interned (peer, attribute set) paths of ``peer``."""
        return len(self._peers[peer].cache)

    # -- updates -------------------------------------------------------------------------------

    def update(
        self,
        peer: str,
        family: Family,
        attrs: Attributes | None,
        announce: Sequence[int],
        withdraw: Sequence[int],
        changes: list[BestChange] | None = None,
    ) -> list[BestChange]:
        """Apply one UPDATE: withdrawals first, then announcements with ``attrs``.

        An announcement replaces the peer's previous path for the prefix (implicit withdraw,
        RFC 4271 3.1); withdrawing a prefix the peer does not have is a no-op. Best-path changes
        are appended to ``changes`` (a new list when None), which is returned; with ``DISCARD``
        none are built. Raises KeyError for an unknown peer, ValueError for announcements without attributes.
        """
        return self.update_many(peer, (_new_tuple(_One, (family, attrs, announce, withdraw)),), changes)

    def update_many(
        self, peer: str, updates: Iterable[UpdateLike], changes: list[BestChange] | None = None
    ) -> list[BestChange]:
        """``update`` of each of ``updates`` (anything with ``family``, ``attrs``, ``announce`` and
        ``withdraw``, as ``speakers.events.Update``) in order, from one peer: the same RIB, counters,
        changes and ``on_update`` calls as one ``update`` per item, without a call per UPDATE (a
        table load brings ~7 prefixes per UPDATE). Raises as ``update``; the items before the one
        that raised are applied."""
        if changes is None:
            changes = []
        ps = self._peers[peer]
        on_update = self.on_update
        acm = self._acm
        append = changes.append
        new_change = _new_tuple  # BestChange without the namedtuple's Python-level __new__
        only = Reason.ONLY_PATH
        record = changes is not DISCARD  # (other branches append to DISCARD: a no-op, and rare)
        rec = changes if record else None
        announce_c = _c_announce  # intern + the C announcement loop, one call per UPDATE (None: Python)
        # With the C accelerator and no on_update, ``run_c`` goes through the run itself and stops
        # at an UPDATE for this loop (withdrawals, anything unusual: from its start) or at a key
        # its announcer yielded (the body below takes it and the rest of that announcer).
        run_c = _c_run if on_update is None else None
        if type(updates) is not list and type(updates) is not tuple:
            updates = list(updates)
        n = len(updates)
        i = 0
        while i < n:
            run = None
            if run_c is not None:
                i, run, first = run_c(self, ps, updates, i, rec, _FAMILIES, self._buckets)
                if i >= n:
                    break
            u = updates[i]
            i += 1
            family = u.family
            fi = 0 if family is _IPV4 else _FAMILY_INDEX[family]  # Enum.__hash__ is a Python call
            buckets = self._buckets[fi]
            if run is not None:  # run_c's announcer stopped at ``first``
                path = run.path
                keys: Iterable[int] = _chain((first,), run)
            else:
                attrs = u.attrs
                announce = u.announce
                withdraw = u.withdraw
                interned = None
                if announce and attrs is not None:
                    # With the C accelerator, ``run`` applies the announcements that need no decision
                    # (see _fastrib.c) as it goes, once iterated, and yields the others, in order, to
                    # the loop body. None (either way): the attribute set is an AS loop.
                    if announce_c is not None:
                        run = announce_c(self, ps, attrs, buckets, family, rec, announce)
                        looped = run is None
                    else:
                        interned = self._intern(ps, attrs)
                        looped = interned is None
                    if looped:  # RFC 4271 9.1.2: withdrawals of these prefixes from this peer
                        withdraw = [*withdraw, *announce]
                        announce = ()
                if on_update is not None:  # (an AS loop reaches it as the withdrawals it is)
                    on_update(peer, family, attrs, announce, withdraw)
                if withdraw:
                    self._withdraw(ps, fi, family, buckets, withdraw, changes)
                if not announce:
                    continue
                if attrs is None:
                    raise ValueError("announcements need attributes")
                if run is not None:
                    path = run.path
                    keys = run
                else:
                    path = cast(Path, interned)
                    keys = announce
            rank = path.rank
            get = buckets.get
            received = 0
            best = 0
            try:  # the counters follow what was applied, also when a bad key raises half-way
                for key in keys:
                    hi = key >> LO_BITS
                    bucket = get(hi)
                    if bucket is None:
                        buckets[hi] = [_LO[key & _LO_MASK], path]
                        received += 1
                        best += 1
                        if record:
                            append(new_change(BestChange, (family, key, None, path, only)))
                        continue
                    lo = _LO[key & _LO_MASK]
                    los = bucket[0]
                    j = (los.find(lo) >> 1) + 1  # -1 (absent) -> 0
                    if not j:
                        bucket[0] = los + lo
                        bucket.append(path)
                        received += 1
                        best += 1
                        if record:
                            append(new_change(BestChange, (family, key, None, path, only)))
                        continue
                    dest = bucket[j]
                    if dest is path:
                        continue
                    if type(dest) is Path:
                        if dest._peer is ps:  # implicit withdraw of our own single path
                            bucket[j] = path
                            append(new_change(BestChange, (family, key, dest, path, only)))
                            continue
                        received += 1
                        other = dest.rank
                        if acm or (other ^ rank) >> ORIGIN_SHIFT or not (other ^ rank) & NAS_MASK:
                            if rank < other:  # steps 1-7 are a plain rank comparison
                                bucket[j] = (path, dest)
                                dest._peer.best[fi] -= 1
                                best += 1
                                reason = reason_from_xor(other ^ rank)
                                append(new_change(BestChange, (family, key, dest, path, reason)))
                            else:
                                bucket[j] = (dest, path)
                            continue
                        wins, reason = better2(path, dest, acm)
                        if wins:
                            bucket[j] = (path, dest)
                            dest._peer.best[fi] -= 1
                            best += 1
                            append(BestChange(family, key, dest, path, reason))
                        else:
                            bucket[j] = (dest, path)
                        continue
                    # several peers: dest is (best, *others by rank)
                    old = dest[0]
                    mine = None
                    for p in dest:
                        if p._peer is ps:
                            mine = p
                            break
                    if mine is path:
                        continue
                    if mine is None:
                        received += 1
                    orank = old.rank
                    if (
                        mine is not old
                        and (rank > orank if acm else rank >> ORIGIN_SHIFT > orank >> ORIGIN_SHIFT)
                        and (mine is None or acm or (mine.rank ^ orank) >> ORIGIN_SHIFT)
                    ):
                        # Neither the new path nor the one it replaces reaches step 4 against the best
                        # (or the order is total): the best stays, only the others change.
                        others = [p for p in dest if p is not mine and p is not old]
                        others.append(path)
                        others.sort(key=_by_rank)
                        bucket[j] = (old, *others)
                        continue
                    rest = [p for p in dest if p is not mine]
                    rest.append(path)
                    ordered, reason_n = order(rest, acm)
                    bucket[j] = ordered
                    new = ordered[0]
                    if new is not old:
                        if old._peer is ps:
                            best -= 1
                        else:
                            old._peer.best[fi] -= 1
                        if new._peer is ps:
                            best += 1
                        else:
                            new._peer.best[fi] += 1
                        append(new_change(BestChange, (family, key, old, new, reason_n)))
            finally:
                if run is not None:
                    received += run.received
                    best += run.received  # each a new prefix's only path, so its best
                ps.received[fi] += received
                ps.best[fi] += best
        return changes

    def _withdraw(
        self,
        ps: _Peer,
        fi: int,
        family: Family,
        buckets: dict[int, list[Any]],
        withdraw: Sequence[int],
        changes: list[BestChange],
    ) -> None:
        get = buckets.get
        for key in withdraw:
            hi = key >> LO_BITS
            bucket = get(hi)
            if bucket is None:
                continue
            los: bytes = bucket[0]
            j = (los.find(_LO[key & _LO_MASK]) >> 1) + 1
            if not j:
                continue
            dest = bucket[j]
            if type(dest) is Path:
                if dest._peer is ps:
                    if len(bucket) == 2:
                        del buckets[hi]
                    else:
                        del bucket[j]
                        bucket[0] = los[: 2 * j - 2] + los[2 * j :]
                    ps.received[fi] -= 1
                    ps.best[fi] -= 1
                    changes.append(BestChange(family, key, dest, None, None))
                continue
            self._drop_from(dest, ps, bucket, j, changes, family, key, fi)

    # -- queries -------------------------------------------------------------------------------

    def _dest(self, family: Family, key: int) -> Path | tuple[Path, ...] | None:
        bucket = self._buckets[_FAMILY_INDEX[family]].get(key >> LO_BITS)
        if bucket is None:
            return None
        j = (bucket[0].find(_LO[key & _LO_MASK]) >> 1) + 1
        if not j:
            return None
        dest: Path | tuple[Path, ...] = bucket[j]
        return dest

    def paths(self, family: Family, key: int) -> list[Path]:
        """All paths of the prefix, best first (empty when absent)."""
        dest = self._dest(family, key)
        return [] if dest is None else list(_entries(dest))

    def best(self, family: Family, key: int) -> Path | None:
        dest = self._dest(family, key)
        if dest is None:
            return None
        return dest if type(dest) is Path else dest[0]  # type: ignore[index]

    def reason(self, family: Family, key: int) -> Reason | None:
        """Why the best path of the prefix won (recomputed, deterministic); None when absent."""
        dest = self._dest(family, key)
        if dest is None:
            return None
        entries = _entries(dest)
        if len(entries) == 1:
            return Reason.ONLY_PATH
        return order(list(entries), self._acm)[1]

    def __contains__(self, item: tuple[Family, int]) -> bool:
        return self._dest(*item) is not None

    def longest_match(self, family: Family, address: int) -> int | None:
        """Key of the longest prefix present that covers ``address`` (an int), or None."""
        buckets = self._buckets[_FAMILY_INDEX[family]]
        for length in range(family.max_length, -1, -1):
            key = key_from_parts(address, length, family)
            bucket = buckets.get(key >> LO_BITS)
            if bucket is not None and bucket[0].find(_LO[key & _LO_MASK]) >= 0:
                return key
        return None

    def iter_paths(self, family: Family) -> Iterator[tuple[int, tuple[Path, ...]]]:
        """Every prefix with all its paths, best first (unordered prefixes; for MRT dumps)."""
        for hi, bucket in self._buckets[_FAMILY_INDEX[family]].items():
            los = bucket[0]
            for j in range(1, len(bucket)):
                yield (hi << LO_BITS) | _lo_at(los, j), _entries(bucket[j])

    def iter_best(self, family: Family, peer: str | None = None) -> Iterator[tuple[int, Path]]:
        """Every prefix with its best path; only those whose best comes from ``peer`` if given."""
        want = None if peer is None else self._peers[peer]
        for hi, bucket in self._buckets[_FAMILY_INDEX[family]].items():
            los = bucket[0]
            for j in range(1, len(bucket)):
                dest = bucket[j]
                best = dest if type(dest) is Path else dest[0]
                if want is None or best._peer is want:
                    yield (hi << LO_BITS) | _lo_at(los, j), best

    def adj_rib_in(self, peer: str, family: Family) -> Iterator[tuple[int, Path]]:
        """The paths received from ``peer`` (post-import-policy Adj-RIB-In). KeyError if unknown."""
        ps = self._peers[peer]
        for hi, bucket in self._buckets[_FAMILY_INDEX[family]].items():
            los = bucket[0]
            for j in range(1, len(bucket)):
                for p in _entries(bucket[j]):
                    if p._peer is ps:
                        yield (hi << LO_BITS) | _lo_at(los, j), p
                        break

    def counts(self) -> dict[str, Any]:
        """``{"families": {"ipv4": {"prefixes", "paths"}, ...}, "peers": {name: {"ipv4":
        {"received", "best"}, ...}}}``, from counters kept up to date on every change."""
        families: dict[str, dict[str, int]] = {}
        peers: dict[str, dict[str, dict[str, int]]] = {}
        for fi, family in enumerate(_FAMILIES):
            families[family.short] = {
                "prefixes": sum(p.best[fi] for p in self._peers.values()),
                "paths": sum(p.received[fi] for p in self._peers.values()),
            }
        for name, p in self._peers.items():
            peers[name] = {
                family.short: {"received": p.received[fi], "best": p.best[fi]}
                for fi, family in enumerate(_FAMILIES)
            }
        return {"families": families, "peers": peers}

    def peer_counts(self, peer: str, family: Family) -> tuple[int, int]:
        """(received, best) of ``peer`` in ``family``."""
        ps = self._peers[peer]
        fi = _FAMILY_INDEX[family]
        return ps.received[fi], ps.best[fi]


# --- C accelerator ------------------------------------------------------------------------------

def _load_accelerator() -> Any:
    """``_fastrib`` bound to this module's types, or None (not built, or ``PEERCTL_PURE=1``:
    the Python loop alone, the reference the C one is tested against)."""
    _fastrib = load("orchestrator.rib._fastrib")
    if _fastrib is None:
        return None
    _fastrib.setup(Path, BestChange, Reason.ONLY_PATH, _LO, LO_BITS)
    _fastrib.setup_intern(Path, _Peer, Attributes, _SWEEP_MIN)
    return _fastrib


_fastrib_module = _load_accelerator()
_c_announce: Callable[..., Any] | None = None if _fastrib_module is None else _fastrib_module.announce
_c_run: Callable[..., Any] | None = None if _fastrib_module is None else _fastrib_module.run
