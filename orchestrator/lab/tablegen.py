"""Seeded routing-table generator with a real table's shape (lab mode, benchmarks). Pure.

Theory of operation
-------------------
Prefixes come from one candidate stream that depends on the seed alone: a ``random.Random(seed)``
draws prefix lengths from a real-table mix (IPv4 ~60% /24, then /22, /23, /20, /21, /19, /16 ...,
nothing longer than /24; IPv6 mostly /48, /32, /40, /44, /36) and networks from globally routable
looking space (no 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12, 192.168/16, documentation
ranges, 224/3; IPv6 from 2000::/3 registry blocks, never 2001:db8::/32 or 2002::/16), dropping
duplicates. Feeder ``index`` takes the first ``overlap * n`` candidates (shared by every feeder with
the same seed) followed by its own disjoint slice of the stream, so feeders 0 and 1 overlap by
exactly that fraction. Attributes come from a second stream seeded by ``(seed, index)``: the shared
prefixes get different AS-path lengths, MEDs and origins on each feeder, so best-path selection
decides between them. Prefixes are grouped ~7 per attribute set, as in a real dump.

Speed: one ``getrandbits(64)`` and a few table lookups per prefix; 1M prefixes in ~2 s.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from orchestrator.rib.attrs import AS_SEQUENCE, Attributes, Origin
from orchestrator.rib.prefix import Family

# Share per 1000 of each prefix length, after the routing tables of 2024 (approximate).
_V4_MIX: Final = {24: 600, 22: 120, 23: 100, 20: 45, 21: 45, 19: 25, 16: 14, 18: 14, 17: 9,
                  15: 2, 14: 2, 13: 1, 12: 1, 11: 1, 10: 1}  # fmt: skip
_V6_MIX: Final = {48: 520, 32: 130, 40: 70, 44: 70, 36: 35, 29: 30, 47: 30, 46: 30, 42: 20,
                  45: 20, 34: 15, 33: 10, 30: 10, 38: 10}  # fmt: skip
# AS-path length (before prepending) 1..10, mode 4.
_PATH_LEN: Final = (1,) * 3 + (2,) * 12 + (3,) * 24 + (4,) * 28 + (5,) * 16 + (6,) * 9 + (7,) * 4 + (8,) * 2 \
    + (9,) + (10,)  # fmt: skip

_V4_BAD_FIRST: Final = frozenset({0, 10, 100, 127, 169, 172, 192, 198, 203})
_V4_FIRST: Final = tuple(o for o in range(1, 224) if o not in _V4_BAD_FIRST)
_V6_FIRST16: Final = (
    (0x2001,) * 4
    + tuple(range(0x2400, 0x2410))
    + tuple(range(0x2600, 0x2610))
    + tuple(range(0x2800, 0x2804))
    + tuple(range(0x2A00, 0x2A10))
    + (0x2C0F,)
)


def _table(mix: dict[int, int]) -> tuple[int, ...]:
    out: list[int] = []
    for length, share in mix.items():
        out += [length] * share
    return tuple(out)


_V4_LENGTHS: Final = _table(_V4_MIX)
_V6_LENGTHS: Final = _table(_V6_MIX)


@dataclass(frozen=True, slots=True)
class GeneratedTable:
    """Attribute-set groups ``(family, attrs, keys)``; iterate to get them in sending order."""

    groups: tuple[tuple[Family, Attributes, list[int]], ...]

    def __iter__(self) -> Iterator[tuple[Family, Attributes, list[int]]]:
        return iter(self.groups)

    def count(self, family: Family) -> int:
        return sum(len(keys) for fam, _, keys in self.groups if fam is family)

    def keys(self, family: Family) -> set[int]:
        return {k for fam, _, keys in self.groups if fam is family for k in keys}


def _v4_candidates(rng: random.Random, count: int) -> list[int]:
    lengths, firsts = _V4_LENGTHS, _V4_FIRST
    nl, nf = len(lengths), len(firsts)
    seen: set[int] = set()
    out: list[int] = []
    bits = rng.getrandbits
    while len(out) < count:
        r = bits(64)
        length = lengths[(r & 0xFFFF) % nl]
        first = firsts[((r >> 16) & 0xFFFF) % nf]
        addr = (first << 24) | ((r >> 32) & 0xFFFFFF)
        nbytes = (length + 7) >> 3
        addr >>= 32 - length  # clear host bits
        addr <<= nbytes * 8 - length
        key = (length << (8 * nbytes)) | addr
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _v6_candidates(rng: random.Random, count: int) -> list[int]:
    lengths, firsts = _V6_LENGTHS, _V6_FIRST16
    nl, nf = len(lengths), len(firsts)
    seen: set[int] = set()
    out: list[int] = []
    bits = rng.getrandbits
    while len(out) < count:
        r = bits(64)
        length = lengths[(r & 0xFFFF) % nl]
        first = firsts[((r >> 16) & 0xFFFF) % nf]
        rest = (r >> 32) & 0xFFFFFFFF
        if first == 0x2001:  # 2001:400::/22 .. 2001:3fff: skip 2001::/23 (IETF) and 2001:db8::/32
            rest = ((0x0400 + (rest >> 16) % 0x3C00) << 16) | (rest & 0xFFFF)
            if rest >> 16 == 0x0DB8:
                continue
        addr = (first << 32) | rest  # top 48 bits of the address
        nbytes = (length + 7) >> 3
        addr >>= 48 - length
        addr <<= nbytes * 8 - length
        key = (length << (8 * nbytes)) | addr
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _prefixes(candidates: list[int], n: int, index: int, overlap: float) -> list[int]:
    shared = round(n * overlap)
    own = n - shared
    start = shared + index * own
    return candidates[:shared] + candidates[start : start + own]


def _random_asn(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.75:  # 16-bit public ASNs (no 0, AS_TRANS, documentation or private ranges)
        asn = 1 + int(r / 0.75 * 64495)
        return asn if asn != 23456 else 23457
    return 131072 + int((r - 0.75) * 4 * 270236)


class _AttrGen:
    def __init__(self, rng: random.Random, peer_as: int) -> None:
        self.rng = rng
        self.peer_as = peer_as
        self.comm_as = peer_as if peer_as <= 0xFFFF else 65535
        self.transit = [_random_asn(rng) for _ in range(40)]  # a few big transits behind the peer

    def make(self, next_hop: str) -> Attributes:
        rng = self.rng
        hops = _PATH_LEN[int(rng.random() * len(_PATH_LEN))]
        path = [self.peer_as]
        if hops > 1:
            path.append(self.transit[int(rng.random() * len(self.transit))])
        path += [_random_asn(rng) for _ in range(hops - 2)]
        if rng.random() < 0.12:  # origin prepending
            path += [path[-1]] * rng.randint(1, 3)
        communities: tuple[int, ...] = ()
        if rng.random() < 0.5:
            communities = tuple(
                sorted(
                    {
                        (self.comm_as << 16) | (1 + int(rng.random() * 4999))
                        for _ in range(int(rng.random() * 5))
                    }
                )
            )
        large: tuple[tuple[int, int, int], ...] = ()
        if rng.random() < 0.1:
            large = tuple(
                (self.peer_as, rng.randrange(1, 100), rng.randrange(1, 1000))
                for _ in range(rng.randint(1, 2))
            )
        med = rng.choice((0, 10, 50, 100, 200, 1000)) if rng.random() < 0.3 else None
        r = rng.random()
        origin = Origin.IGP if r < 0.85 else Origin.INCOMPLETE if r < 0.98 else Origin.EGP
        return Attributes(
            next_hop=next_hop,
            origin=origin,
            as_path=((AS_SEQUENCE, tuple(path)),),
            med=med,
            communities=communities,
            large_communities=large,
        )


def _group(
    family: Family, keys: list[int], gen: _AttrGen, next_hop: str
) -> list[tuple[Family, Attributes, list[int]]]:
    rng = gen.rng
    out: list[tuple[Family, Attributes, list[int]]] = []
    i = 0
    n = len(keys)
    while i < n:
        # Heavy-tailed set sizes, mean ~7: many singletons, a few big sets.
        size = 1 + int(rng.expovariate(1 / 5.0)) if rng.random() < 0.97 else rng.randint(10, 60)
        out.append((family, gen.make(next_hop), keys[i : i + size]))
        i += size
    return out


def generate_table(
    seed: int,
    index: int,
    ipv4: int,
    ipv6: int,
    overlap: float,
    peer_as: int,
    next_hop4: str,
    next_hop6: str,
) -> GeneratedTable:
    """The table of feeder ``index`` for ``seed``: ``ipv4`` + ``ipv6`` distinct prefixes.

    Deterministic for ``(seed, index)`` (and the sizes). Feeders sharing a seed and sizes share
    ``overlap`` of their prefixes (with different attributes) and are disjoint otherwise.
    Raises ValueError on negative sizes or an overlap outside [0, 1].
    """
    if ipv4 < 0 or ipv6 < 0 or index < 0 or not 0.0 <= overlap <= 1.0:
        raise ValueError("sizes and index must be >= 0 and overlap within [0, 1]")
    shared4, shared6 = round(ipv4 * overlap), round(ipv6 * overlap)
    cand4 = _v4_candidates(random.Random(f"{seed}/v4"), shared4 + (index + 1) * (ipv4 - shared4))
    cand6 = _v6_candidates(random.Random(f"{seed}/v6"), shared6 + (index + 1) * (ipv6 - shared6))
    gen = _AttrGen(random.Random(f"{seed}/{index}/attrs"), peer_as)
    groups = _group(Family.IPV4, _prefixes(cand4, ipv4, index, overlap), gen, next_hop4)
    groups += _group(Family.IPV6, _prefixes(cand6, ipv6, index, overlap), gen, next_hop6)
    return GeneratedTable(tuple(groups))
