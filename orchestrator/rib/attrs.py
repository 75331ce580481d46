"""Path attributes as one immutable, hashable value.

Speakers build an ``Attributes`` per UPDATE (not per prefix) and the RIB interns it, so a full table
shares one object per distinct attribute set. Everything here is plain data; no I/O.

AS_PATH is kept as segments ``((segment_type, (asn, ...)), ...)`` with the RFC 4271 4.3 / RFC 5065
type codes below, so AS_SET and confederation segments survive a round trip. Communities are 32-bit
ints (``asn << 16 | value``); large communities are ``(global, local1, local2)`` triples.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

AS_SET: Final = 1
AS_SEQUENCE: Final = 2
AS_CONFED_SEQUENCE: Final = 3
AS_CONFED_SET: Final = 4

AsPath = tuple[tuple[int, tuple[int, ...]], ...]


class Origin(enum.IntEnum):
    """ORIGIN attribute (RFC 4271 5.1.1); lower is preferred."""

    IGP = 0
    EGP = 1
    INCOMPLETE = 2


@dataclass(frozen=True, slots=True)
class Attributes:
    """One attribute set as received (or as we send it). Hashable; never mutated."""

    next_hop: str = ""
    origin: Origin = Origin.IGP
    as_path: AsPath = ()
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[int, ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    atomic_aggregate: bool = False
    aggregator: tuple[int, str] | None = None
    # Unknown optional-transitive attributes kept as (flags, type, value) for re-export.
    other: tuple[tuple[int, int, bytes], ...] = field(default=())
    # The path attribute block this set was decoded from, as received, when it is valid as is in a
    # BGP4MP_MESSAGE_AS4 record: 4-byte AS numbers, no MP_REACH/MP_UNREACH (only the native codec's
    # fast path fills it; b"" otherwise). Not part of the value: equality, hash and repr ignore it,
    # an interned set keeps the bytes of whichever encoding reached it first, and ``__init__`` /
    # ``dataclasses.replace`` leave it empty (a changed set is not what was received). The route
    # collector writes it instead of re-encoding the set.
    raw4: bytes = field(default=b"", init=False, compare=False, hash=False, repr=False)

    @classmethod
    def fast(
        cls,
        next_hop: str,
        origin: Origin,
        as_path: AsPath,
        med: int | None,
        local_pref: int | None,
        communities: tuple[int, ...],
        large_communities: tuple[tuple[int, int, int], ...],
        atomic_aggregate: bool,
        aggregator: tuple[int, str] | None,
        other: tuple[tuple[int, int, bytes], ...] = (),
        raw4: bytes = b"",
    ) -> Attributes:
        """``Attributes(...)`` with every field given positionally, about twice as fast: the slots
        are filled directly instead of through the frozen dataclass ``__init__`` (one
        ``object.__setattr__`` per field). Same object, equal and hashing alike; like ``__init__``
        it neither checks nor converts. For speakers building one per UPDATE (bind it once:
        ``make = Attributes.fast``)."""
        self = _new(cls)
        _set_next_hop(self, next_hop)
        _set_origin(self, origin)
        _set_as_path(self, as_path)
        _set_med(self, med)
        _set_local_pref(self, local_pref)
        _set_communities(self, communities)
        _set_large_communities(self, large_communities)
        _set_atomic_aggregate(self, atomic_aggregate)
        _set_aggregator(self, aggregator)
        _set_other(self, other)
        _set_raw4(self, raw4)
        return self

    @property
    def as_path_length(self) -> int:
        """RFC 4271 9.1.2.2 a): an AS_SET counts as one, confederation segments as zero."""
        total = 0
        for seg_type, asns in self.as_path:
            if seg_type == AS_SEQUENCE:
                total += len(asns)
            elif seg_type == AS_SET:
                total += 1
        return total

    @property
    def neighbor_as(self) -> int | None:
        """First AS of the first AS_SEQUENCE (RFC 4271 9.1.2.2 c), None for an empty path."""
        for seg_type, asns in self.as_path:
            if seg_type == AS_SEQUENCE and asns:
                return asns[0]
            if seg_type in (AS_SET, AS_CONFED_SET, AS_CONFED_SEQUENCE):
                continue
        return None

    @property
    def origin_as(self) -> int | None:
        """Last AS of the path when it ends in a sequence; None when empty or ending in an AS_SET."""
        if not self.as_path:
            return None
        seg_type, asns = self.as_path[-1]
        if seg_type == AS_SEQUENCE and asns:
            return asns[-1]
        return None

    def as_path_flat(self) -> list[int | list[int]]:
        """AS path for people and JSON: sequences flattened, each AS_SET as a sorted list."""
        out: list[int | list[int]] = []
        for seg_type, asns in self.as_path:
            if seg_type in (AS_SEQUENCE, AS_CONFED_SEQUENCE):
                out.extend(asns)
            else:
                out.append(sorted(asns))
        return out


_new = object.__new__


def _setter(name: str) -> Callable[[Any, Any], None]:
    """The slot's own ``__set__`` (bypasses the frozen ``__setattr__``, as ``__init__`` does)."""
    setter: Callable[[Any, Any], None] = vars(Attributes)[name].__set__
    return setter


_set_next_hop = _setter("next_hop")
_set_origin = _setter("origin")
_set_as_path = _setter("as_path")
_set_med = _setter("med")
_set_local_pref = _setter("local_pref")
_set_communities = _setter("communities")
_set_large_communities = _setter("large_communities")
_set_atomic_aggregate = _setter("atomic_aggregate")
_set_aggregator = _setter("aggregator")
_set_other = _setter("other")
_set_raw4 = _setter("raw4")
if vars(Attributes)["__slots__"] != (
    "next_hop", "origin", "as_path", "med", "local_pref", "communities", "large_communities",
    "atomic_aggregate", "aggregator", "other", "raw4",
):  # fmt: skip
    raise AssertionError("Attributes.fast fills every slot: keep it in step with the fields")


def community_text(value: int) -> str:
    return f"{value >> 16}:{value & 0xFFFF}"


def parse_community(text: str) -> int:
    """``"65000:1"`` → int; ValueError naming the text otherwise."""
    high, sep, low = text.partition(":")
    try:
        a, b = int(high), int(low)
    except ValueError:
        raise ValueError(f"not a community (expected ASN:VALUE): {text!r}") from None
    if not sep or not (0 <= a <= 0xFFFF and 0 <= b <= 0xFFFF):
        raise ValueError(f"not a community (expected ASN:VALUE, each 0-65535): {text!r}")
    return (a << 16) | b


def parse_large_community(text: str) -> tuple[int, int, int]:
    """``"65000:1:2"`` → triple; ValueError naming the text otherwise."""
    parts = text.split(":")
    try:
        a, b, c = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"not a large community (expected A:B:C): {text!r}") from None
    if not all(0 <= v <= 0xFFFFFFFF for v in (a, b, c)):
        raise ValueError(f"large community parts must be 0-4294967295: {text!r}")
    return a, b, c
