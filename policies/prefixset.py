"""Prefix lists (``prefix [ge N] [le M]``) with one bisect per lookup.

Theory of operation
-------------------
Prefixes nest: two prefixes are either disjoint or one contains the other. So a list of entries can
be *flattened* into sorted, disjoint address ranges, each carrying a value computed from every entry
containing that range (``flatten``). For a prefix list the value is a bitmask of the allowed lengths
(bit ``n`` set: a route of length ``n`` inside this range matches some entry). An entry only ever sets
bits ``>= its own length`` (``ge >= length``), so bit ``L`` set in the range containing a route's
network means an entry of length ``<= L`` contains the network, hence contains the whole route. One
``bisect`` on the range starts plus one shift-and-mask answers "does any entry match?", whatever the
mix of lengths (per-length dicts need one probe per distinct entry length, ~17 for IRR lists).

Entry syntax accepted (``parse_entry``): ``10.0.0.0/8``, ``10.0.0.0/8 le 24``, ``10.0.0.0/8 ge 16 le 24``
(Cisco/bgpq4 text), ``10.0.0.0/8{16,24}`` and ``10.0.0.0/8+`` (BIRD / Pathvector), and bgpq4's JSON
objects ``{"prefix": ..., "exact": bool, "less-equal": n, "greater-equal": n}`` (``parse_bgpq4_json``).
Pure.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from orchestrator.rib.prefix import Family, format_prefix, key_length, key_network, parse_prefix

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PrefixEntry:
    """``key`` of ``family`` matching routes of length ``ge``..``le`` inside it."""

    family: Family
    key: int
    ge: int
    le: int

    @property
    def length(self) -> int:
        return key_length(self.key)

    def __str__(self) -> str:
        text = format_prefix(self.family, self.key)
        if self.ge == self.le == self.length:
            return text
        return f"{text} ge {self.ge} le {self.le}"


_TEXT = re.compile(
    r"^\s*(?P<prefix>[0-9a-fA-F.:]+(?:/\d+)?)\s*"
    r"(?:(?P<plus>\+)|(?P<minus>-)|\{\s*(?P<lo>\d+)\s*,\s*(?P<hi>\d+)\s*\}|"
    r"(?:ge\s+(?P<ge>\d+))?\s*(?:le\s+(?P<le>\d+))?)\s*$"
)


def make_entry(prefix: str, ge: int | None = None, le: int | None = None) -> PrefixEntry:
    """Entry from a prefix and optional bounds; ValueError when inconsistent.

    Cisco semantics: ``le`` alone means ``length..le``; ``ge`` alone means ``ge..max``.
    """
    family, key = parse_prefix(prefix)
    length = key_length(key)
    lo = length if ge is None else ge
    hi = (family.max_length if ge is not None else length) if le is None else le
    if not length <= lo <= hi <= family.max_length:
        raise ValueError(f"need {length} <= ge <= le <= {family.max_length}: {prefix} ge {lo} le {hi}")
    return PrefixEntry(family, key, lo, hi)


def parse_entry(text: str) -> PrefixEntry:
    """One entry in any of the text forms in the module docstring; ValueError otherwise."""
    m = _TEXT.match(text)
    if m is None:
        raise ValueError(f"not a prefix-list entry: {text!r}")
    prefix = m["prefix"]
    if m["plus"]:
        family, _ = parse_prefix(prefix)
        return make_entry(prefix, None, family.max_length)
    if m["minus"]:
        raise ValueError(f"BIRD 'prefix-' (shorter prefixes) is not supported in prefix lists: {text!r}")
    if m["lo"] is not None:
        return make_entry(prefix, int(m["lo"]), int(m["hi"]))
    ge = int(m["ge"]) if m["ge"] is not None else None
    le = int(m["le"]) if m["le"] is not None else None
    return make_entry(prefix, ge, le)


def parse_lines(lines: Iterable[str]) -> list[PrefixEntry]:
    """A plain file: one entry per line; ``#`` comments and blank lines ignored. ValueError names the line."""
    out: list[PrefixEntry] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            out.append(parse_entry(line))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return out


def parse_bgpq4_json(text: str | bytes) -> list[PrefixEntry]:
    """Output of ``bgpq4 -j [-l NAME] ...``: ``{"NAME": [{"prefix": ..., "exact": ..., ...}, ...]}``."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"bgpq4 output is not JSON: {exc}") from None
    if not isinstance(doc, dict) or len(doc) != 1:
        raise ValueError("bgpq4 JSON must be an object with one list")
    (items,) = doc.values()
    if not isinstance(items, list):
        raise ValueError("bgpq4 JSON: the list name must map to an array")
    return [bgpq4_item(item, i) for i, item in enumerate(items)]


def bgpq4_item(item: Any, index: int = 0) -> PrefixEntry:
    if not isinstance(item, Mapping) or not isinstance(item.get("prefix"), str):
        raise ValueError(f"bgpq4 JSON [{index}]: expected an object with a 'prefix' string")
    prefix = item["prefix"]
    if item.get("exact", True) and "less-equal" not in item and "greater-equal" not in item:
        return make_entry(prefix)
    ge, le = item.get("greater-equal"), item.get("less-equal")
    for name, value in (("greater-equal", ge), ("less-equal", le)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"bgpq4 JSON [{index}].{name}: expected an integer")
    try:
        return make_entry(prefix, ge, le)
    except ValueError as exc:
        raise ValueError(f"bgpq4 JSON [{index}]: {exc}") from None


# ---------------------------------------------------------------------------------------------------


def flatten(items: Iterable[tuple[int, int, T]], combine: Callable[[Sequence[T]], Any],
            empty: Any, width: int) -> tuple[list[int], list[Any]]:
    """Nested ranges ``(network, length, payload)`` → (starts, values) over disjoint ranges.

    ``values[i]`` is ``combine(payloads of every item containing [starts[i], starts[i+1]))`` and
    ``empty`` where none does; ``starts[0] == 0``. Adjacent equal values are merged.
    """
    spans = sorted(((net, net + (1 << (width - length)), length, p) for net, length, p in items),
                   key=lambda s: (s[0], s[2]))
    starts: list[int] = [0]
    values: list[Any] = [empty]
    stack: list[tuple[int, T]] = []  # (end, payload), outermost first

    def emit(at: int) -> None:
        value = combine([p for _, p in stack]) if stack else empty
        if at == starts[-1]:
            values[-1] = value
        else:
            starts.append(at)
            values.append(value)
        if len(values) >= 2 and values[-1] == values[-2]:
            starts.pop()
            values.pop()

    for start, end, _length, payload in spans:
        while stack and stack[-1][0] <= start:
            closed = stack.pop()[0]
            while stack and stack[-1][0] <= closed:  # several ending together
                stack.pop()
            emit(closed)
        stack.append((end, payload))
        emit(start)
    while stack:
        closed = stack.pop()[0]
        while stack and stack[-1][0] <= closed:
            stack.pop()
        emit(closed)
    return starts, values


def _or_masks(masks: Sequence[int]) -> int:
    out = 0
    for m in masks:
        out |= m
    return out


class PrefixList:
    """Fast ``matches(family, key)``; see the module docstring."""

    __slots__ = ("_idx", "_matchers", "entries")

    def __init__(self, entries: Iterable[PrefixEntry]) -> None:
        self.entries: tuple[PrefixEntry, ...] = tuple(entries)
        self._idx: dict[Family, tuple[list[int], list[int]]] = {}
        for family in Family:
            width = family.max_length
            items = [(key_network(e.key, family), e.length, ((1 << (e.le + 1)) - 1) ^ ((1 << e.ge) - 1))
                     for e in self.entries if e.family is family]
            self._idx[family] = flatten(items, _or_masks, 0, width)
        self._matchers = (self._make_matcher(Family.IPV4), self._make_matcher(Family.IPV6))

    def __len__(self) -> int:
        return len(self.entries)

    def matcher(self, family: Family) -> Callable[[int, int], bool]:
        """``(network, length) -> bool`` for the hot path (no per-call dict lookups)."""
        return self._matchers[0 if family is Family.IPV4 else 1]

    def _make_matcher(self, family: Family) -> Callable[[int, int], bool]:
        starts, masks = self._idx[family]
        bisect = bisect_right

        def match(network: int, length: int) -> bool:
            return bool(masks[bisect(starts, network) - 1] >> length & 1)

        return match

    def key_predicate(self, family: Family, negate: bool = False) -> Callable[[int, int, int], bool]:
        """``(key, network, length) -> bool`` for ``ImportChain`` (one Python call per prefix)."""
        starts, masks = self._idx[family]
        bisect = bisect_right
        if negate:
            def outside(key: int, network: int, length: int) -> bool:
                return not masks[bisect(starts, network) - 1] >> length & 1
            return outside

        def inside(key: int, network: int, length: int) -> bool:
            return bool(masks[bisect(starts, network) - 1] >> length & 1)

        return inside

    def matches(self, family: Family, key: int) -> bool:
        starts, masks = self._idx[family]
        length = key_length(key)
        network = key_network(key, family)
        return bool(masks[bisect_right(starts, network) - 1] >> length & 1)


def naive_matches(entries: Iterable[PrefixEntry], family: Family, key: int) -> bool:
    """Reference: scan every entry."""
    length = key_length(key)
    network = key_network(key, family)
    width = family.max_length
    for e in entries:
        if e.family is not family or not e.ge <= length <= e.le:
            continue
        elen = e.length
        if network >> (width - elen) == key_network(e.key, family) >> (width - elen):
            return True
    return False
