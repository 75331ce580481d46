"""RPKI route origin validation (RFC 6811) against a VRP set.

Theory of operation
-------------------
A VRP is (prefix, maxLength, ASN). A route is *covered* by a VRP whose prefix contains it; it is
VALID if some covering VRP has the route's origin AS and ``length <= maxLength``, INVALID if covered
but none matches, NOT_FOUND if nothing covers it (RFC 6811 2). A route whose origin is not a single
AS (the path ends in an AS_SET, or is empty) matches no VRP (RFC 6811 2: "NONE").

Lookups use the same flattening as ``prefixset``: VRP prefixes nest, so the address space splits into
disjoint ranges, each holding the tuple of VRPs that contain it; one ``bisect`` finds the candidates
(usually one or two), then a filter on ``prefix length <= route length``. ``naive_validate`` is the
scan-everything reference for the property tests.

For the C import loop (``policies.accel``) the IPv4 candidates are also kept flat (``VrpTable.flat``:
one 64-bit word per VRP, ``asn << 16 | prefix length << 8 | maxLength``, and per range an offset into
them), built once per table on first use.

``parse_vrp_json`` reads the rpki-client / Routinator JSON export ``{"roas": [{"asn": "AS13335" | 13335,
"prefix": "1.0.0.0/24", "maxLength": 24, "ta": "..."}]}``. ``load_vrps`` reads a file (blocking; call it
from a thread or at startup).
"""

from __future__ import annotations

import enum
import json
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.rib.prefix import Family, format_prefix, key_length, key_network, parse_prefix
from policies.prefixset import RangeIndex, flatten


class Validity(enum.Enum):
    VALID = "valid"
    INVALID = "invalid"
    NOT_FOUND = "not-found"


@dataclass(frozen=True, slots=True)
class Vrp:
    family: Family
    key: int
    max_length: int
    asn: int

    def __str__(self) -> str:
        return f"{format_prefix(self.family, self.key)}-{self.max_length} AS{self.asn}"


def parse_asn(value: Any) -> int:
    """``13335`` or ``"AS13335"`` / ``"as13335"`` / ``"13335"`` → int; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"not an ASN: {value!r}")
    if isinstance(value, int):
        asn = value
    elif isinstance(value, str):
        text = value[2:] if value[:2].upper() == "AS" else value
        if not text.isdigit():
            raise ValueError(f"not an ASN: {value!r}")
        asn = int(text)
    else:
        raise ValueError(f"not an ASN: {value!r}")
    if not 0 <= asn <= 0xFFFFFFFF:
        raise ValueError(f"ASN out of range: {value!r}")
    return asn


def parse_vrp_json(text: str | bytes) -> list[Vrp]:
    """VRPs from an rpki-client / Routinator JSON export; ValueError naming the bad item."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"VRP file is not JSON: {exc}") from None
    roas = doc.get("roas") if isinstance(doc, dict) else None
    if not isinstance(roas, list):
        raise ValueError("VRP JSON: expected an object with a 'roas' array")
    out: list[Vrp] = []
    for i, roa in enumerate(roas):
        try:
            if not isinstance(roa, dict):
                raise ValueError("expected an object")
            family, key = parse_prefix(str(roa["prefix"]))
            max_length = roa.get("maxLength", key_length(key))
            if not isinstance(max_length, int) or not key_length(key) <= max_length <= family.max_length:
                raise ValueError(f"bad maxLength {max_length!r}")
            out.append(Vrp(family, key, max_length, parse_asn(roa["asn"])))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"VRP JSON roas[{i}]: {exc}") from None
    return out


def load_vrps(path: str | Path) -> list[Vrp]:
    """Read a VRP JSON file. Raises OSError or ValueError."""
    return parse_vrp_json(Path(path).read_bytes())


_Cand = tuple[int, int, int]  # (prefix length, max length, asn)


class VrpTable:
    """Origin validation with one bisect per lookup."""

    __slots__ = ("_flat", "_idx", "_lookups", "size")

    def __init__(self, vrps: Iterable[Vrp], bucket_min: int | None = None) -> None:
        per: dict[Family, list[tuple[int, int, _Cand]]] = {f: [] for f in Family}
        self.size = 0
        for v in vrps:
            plen = key_length(v.key)
            per[v.family].append((key_network(v.key, v.family), plen, (plen, v.max_length, v.asn)))
            self.size += 1
        self._idx: dict[Family, RangeIndex] = {
            f: RangeIndex(*flatten(items, tuple, (), f.max_length), f.max_length, bucket_min)
            for f, items in per.items()
        }
        self._lookups = (self._make_lookup(Family.IPV4), self._make_lookup(Family.IPV6))
        self._flat: dict[Family, tuple[array[int], array[int]] | None] = {}

    def __len__(self) -> int:
        return self.size

    def index(self, family: Family) -> RangeIndex:
        """The flattened ranges (values: tuples of the VRPs containing each), for inlined lookups."""
        return self._idx[family]

    def flat(self, family: Family) -> tuple[array[int], array[int]] | None:
        """The ranges' VRPs as flat arrays for the C loop (``accel``): ``(offsets, cands)``, range
        ``i`` holding ``cands[offsets[i]:offsets[i + 1]]``, each ``asn << 16 | prefix length << 8 |
        max length``. IPv4 only (None for IPv6, or when a value does not fit). Built on first use,
        once per table (the table never changes)."""
        if family in self._flat:
            return self._flat[family]
        flat: tuple[array[int], array[int]] | None = None
        if family is Family.IPV4:
            offsets, cands = array("I", [0]), array("Q")
            add, end = cands.extend, offsets.append
            try:
                for vrps in self._idx[family].values:
                    if vrps:
                        add([asn << 16 | plen << 8 | maxlen if 0 <= maxlen <= 255 and 0 <= asn <= 0xFFFFFFFF
                             else -1 for plen, maxlen, asn in vrps])  # -1: OverflowError below
                    end(len(cands))
                flat = offsets, cands
            except OverflowError:
                flat = None
        self._flat[family] = flat
        return flat

    def candidates(self, family: Family) -> Callable[[int], Sequence[_Cand]]:
        """``network -> VRPs containing it`` (possibly longer than a given route: filter by length)."""
        return self._lookups[0 if family is Family.IPV4 else 1]

    def _make_lookup(self, family: Family) -> Callable[[int], Sequence[_Cand]]:
        idx = self._idx[family]
        values, find = idx.values, idx.index

        def lookup(network: int) -> Sequence[_Cand]:
            cands: Sequence[_Cand] = values[find(network)]
            return cands

        return lookup

    def validate(self, family: Family, key: int, origin: int | None) -> Validity:
        idx = self._idx[family]
        return classify(idx.values[idx.index(key_network(key, family))], key_length(key), origin)


def classify(cands: Sequence[_Cand], length: int, origin: int | None) -> Validity:
    covered = False
    for plen, max_length, asn in cands:
        if plen <= length:
            if asn == origin and asn and length <= max_length:  # AS0 VRPs never match (RFC 6483 4)
                return Validity.VALID
            covered = True
    return Validity.INVALID if covered else Validity.NOT_FOUND


def naive_validate(vrps: Iterable[Vrp], family: Family, key: int, origin: int | None) -> Validity:
    """Reference: scan every VRP."""
    length = key_length(key)
    network = key_network(key, family)
    width = family.max_length
    covered = False
    for v in vrps:
        if v.family is not family:
            continue
        vlen = key_length(v.key)
        if vlen > length or network >> (width - vlen) != key_network(v.key, family) >> (width - vlen):
            continue
        covered = True
        if origin is not None and v.asn == origin and v.asn != 0 and length <= v.max_length:
            return Validity.VALID
    return Validity.INVALID if covered else Validity.NOT_FOUND
