"""PEERING announcement safety rules: checked before anything is sent.

Theory of operation
-------------------
An ``Announcement`` is what an experiment asks for (prefix, where, prepends, origin, poisoning,
communities). ``build_attributes(local_asn)`` turns it into the ``Attributes`` we send, and
``SafetyRules.check(announcement, now, history)`` checks those very attributes, so nothing that
passes can put a rule-breaking path on the wire. Rules (PEERING's defaults, each configurable):

* ``allocated``: the prefix lies within our allocation (up to /24 IPv4, /48 IPv6 by default);
* ``path-length``: at most 5 ASNs in the AS path, counted after prepending and poisoning (an AS_SET
  counts once, RFC 4271 9.1.2.2 a);
* ``as-set``: at most 5 AS_SET members;
* ``communities``: at most 5 communities, **standard and large counted together**, including the
  ones we add to select PEERING peers (``(47065, peer id)``): the limit is about what goes on the wire;
* ``poisoning``: any ASN in the path other than ours and the allowed origins needs ``allow_poisoning``;
* ``origin``: the origin must be ours or an allowed origin;
* ``rate``: at least 600 s between changes to one prefix; the refusal says how long to wait.

AS path built (PEERING client ``export_mux_pfx.jinja2``: ``prepend(origin)`` then the prepend list,
and the mux session then adds the client's AS): ``[local] * (1 + prepend) + poison + [origin]``, where
``[origin]`` is left out when the origin is our own AS and nothing is poisoned (else our AS would just
appear twice). So a poisoned path is the usual sandwich ``local P1 P2 local`` that stays RPKI-valid.
The path is the one the neighbor sees, our AS first; a speaker that prepends the local AS itself
(ExaBGP on eBGP) must be given ``as_path`` without its first ASN.
Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from orchestrator.errors import PolicyError
from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, AsPath, Attributes, Origin
from orchestrator.rib.prefix import Family, key_length, parse_prefix
from policies.prefixset import PrefixEntry, PrefixList

PEERING_ASN: Final = 47065


@dataclass(frozen=True, slots=True)
class Announcement:
    prefix: str
    muxes: tuple[str, ...] = ()  # where (mux / peer-group names); empty = all
    peers: tuple[int, ...] = ()  # PEERING peer ids → communities (peer_community_asn, id)
    prepend: int = 0
    origin: int | None = None  # None = our own AS
    poison: tuple[int, ...] = ()
    as_set: tuple[int, ...] = ()
    communities: tuple[int, ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    next_hop: str = ""

    def as_path(self, local_asn: int) -> AsPath:
        origin = self.origin if self.origin is not None else local_asn
        seq = [local_asn] * (1 + self.prepend) + list(self.poison)
        if origin != local_asn or self.poison:
            seq.append(origin)
        path: list[tuple[int, tuple[int, ...]]] = [(AS_SEQUENCE, tuple(seq))]
        if self.as_set:
            path.append((AS_SET, tuple(sorted(set(self.as_set)))))
        return tuple(path)

    def build_attributes(self, local_asn: int, peer_community_asn: int = PEERING_ASN) -> Attributes:
        comms = set(self.communities) | {(peer_community_asn << 16) | p for p in self.peers}
        return Attributes(next_hop=self.next_hop, origin=Origin.IGP, as_path=self.as_path(local_asn),
                          communities=tuple(sorted(comms)),
                          large_communities=tuple(sorted(set(self.large_communities))))


class History:
    """When each prefix last changed (announce or withdraw)."""

    def __init__(self) -> None:
        self._last: dict[tuple[Family, int], float] = {}

    def last_change(self, prefix: str) -> float | None:
        return self._last.get(parse_prefix(prefix))

    def record(self, prefix: str, now: float) -> None:
        self._last[parse_prefix(prefix)] = now


@dataclass(frozen=True, slots=True)
class SafetyRules:
    local_asn: int
    allocated: tuple[PrefixEntry, ...] = ()
    max_path_length: int = 5
    max_as_set: int = 5
    max_communities: int = 5
    min_interval: float = 600.0
    allow_poisoning: bool = False
    origins: tuple[int, ...] = ()  # origins allowed besides local_asn
    peer_community_asn: int = PEERING_ASN
    _allocated: PrefixList = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allocated", PrefixList(self.allocated))

    @staticmethod
    def allocation(prefixes: Iterable[str], max4: int = 24, max6: int = 48) -> tuple[PrefixEntry, ...]:
        """Allocated prefixes → entries allowing any more-specific down to /max4 or /max6."""
        out = []
        for text in prefixes:
            family, key = parse_prefix(text)
            length = key_length(key)
            cap = max4 if family is Family.IPV4 else max6
            out.append(PrefixEntry(family, key, length, max(cap, length)))
        return tuple(out)

    def check(self, ann: Announcement, now: float, history: History | None = None) -> Attributes:
        """Raise PolicyError(rule, message) on the first broken rule; else return the attributes to send."""
        try:
            family, key = parse_prefix(ann.prefix)
        except ValueError as exc:
            raise PolicyError("prefix", str(exc)) from None
        if not self._allocated.matches(family, key):
            raise PolicyError("allocated", f"{ann.prefix} is not within the allocated prefixes "
                              f"({', '.join(str(e) for e in self.allocated) or 'none configured'})")
        attrs = ann.build_attributes(self.local_asn, self.peer_community_asn)
        self.check_attributes(attrs, ann.origin if ann.origin is not None else self.local_asn)
        if history is not None:
            last = history.last_change(ann.prefix)
            if last is not None and now - last < self.min_interval:
                wait = math.ceil(self.min_interval - (now - last))
                raise PolicyError("rate", f"{ann.prefix} changed {now - last:.0f} s ago; at least "
                                  f"{self.min_interval:g} s between changes: wait {wait} s")
        return attrs

    def check_attributes(self, attrs: Attributes, origin: int | None = None) -> None:
        """The rules on what goes on the wire (path length, AS_SET, communities, the requested
        ``origin`` when given, poisoning); also run on each peer's attributes after its export policy
        (prepends, added communities). Raises PolicyError(rule, message)."""
        if attrs.as_path_length > self.max_path_length:
            raise PolicyError("path-length", f"AS path {attrs.as_path_flat()} has {attrs.as_path_length} "
                              f"hops after prepending/poisoning; at most {self.max_path_length}")
        set_members = sum(len(a) for t, a in attrs.as_path if t == AS_SET)
        if set_members > self.max_as_set:
            raise PolicyError("as-set", f"{set_members} AS_SET members; at most {self.max_as_set}")
        n_comms = len(attrs.communities) + len(attrs.large_communities)
        if n_comms > self.max_communities:
            raise PolicyError("communities", f"{n_comms} communities (standard + large, including peer "
                              f"selections); at most {self.max_communities}")
        if origin is not None and origin != self.local_asn and origin not in self.origins:
            raise PolicyError("origin", f"origin AS{origin} is not ours (AS{self.local_asn}) nor allowed")
        own = {self.local_asn, *self.origins}
        foreign = sorted({a for _, asns in attrs.as_path for a in asns} - own)
        if foreign and not self.allow_poisoning:
            raise PolicyError("poisoning", f"path holds foreign ASNs {foreign}: poisoning is not allowed")


# ---------------------------------------------------------------------------------------------------
# PEERING client announcement JSON (configs/announcement_schema.json)


@dataclass(frozen=True, slots=True)
class PeeringRequest:
    announcements: tuple[Announcement, ...]
    withdrawals: tuple[tuple[str, str], ...]  # (prefix, mux)


def schema_muxes(schema: Mapping[str, Any]) -> frozenset[str]:
    """The mux enum of the PEERING announcement schema."""
    try:
        return frozenset(schema["definitions"]["peeringMux"]["enum"])
    except (KeyError, TypeError):
        raise PolicyError("peering-json", "schema has no definitions.peeringMux.enum") from None


def parse_peering(doc: Any, muxes: frozenset[str] | None = None) -> PeeringRequest:
    """A PEERING announcement document → announcements + withdrawals.

    ``muxes`` (e.g. ``schema_muxes(schema)``) restricts mux names; ``"all"`` is always accepted.
    PEERING's ``prepend`` list (ASNs put between our AS and the origin) becomes ``poison``; whether
    that counts as poisoning is decided by ``SafetyRules.check`` from the ASNs themselves.
    Raises PolicyError("peering-json", "<json path>: <problem>").
    """
    def fail(path: str, msg: str) -> PolicyError:
        return PolicyError("peering-json", f"{path}: {msg}")

    def mux_list(value: Any, path: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            raise fail(path, "expected a list of mux names")
        for i, m in enumerate(value):
            if muxes is not None and m != "all" and m not in muxes:
                raise fail(f"{path}[{i}]", f"unknown mux {m!r} (not in the schema's mux list)")
        return tuple(value)

    def ints(value: Any, path: str) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value):
            raise fail(path, "expected a list of integers")
        return tuple(value)

    if not isinstance(doc, dict) or not doc:
        raise fail("$", "expected an object of prefix → {announce, withdraw}")
    anns: list[Announcement] = []
    withdrawals: list[tuple[str, str]] = []
    for prefix, spec in doc.items():
        base = f"$[{prefix!r}]"
        try:
            parse_prefix(prefix)
        except ValueError as exc:
            raise fail(base, str(exc)) from None
        if not isinstance(spec, dict):
            raise fail(base, "expected an object")
        for mux in mux_list(spec.get("withdraw", []), f"{base}.withdraw"):
            withdrawals.append((prefix, mux))
        announce = spec.get("announce", [])
        if not isinstance(announce, list):
            raise fail(f"{base}.announce", "expected a list")
        for i, item in enumerate(announce):
            path = f"{base}.announce[{i}]"
            if not isinstance(item, dict) or "muxes" not in item:
                raise fail(path, "expected an object with 'muxes'")
            comms: list[int] = []
            large: list[tuple[int, int, int]] = []
            for j, c in enumerate(item.get("communities", [])):
                if not isinstance(c, list) or len(c) not in (2, 3) or not all(isinstance(v, int) for v in c):
                    raise fail(f"{path}.communities[{j}]", "expected [a, b] or [a, b, c]")
                if len(c) == 2:
                    comms.append((c[0] << 16) | c[1])
                else:
                    large.append((c[0], c[1], c[2]))
            origin = item.get("origin")
            if origin is not None and (not isinstance(origin, int) or isinstance(origin, bool)):
                raise fail(f"{path}.origin", "expected an ASN")
            anns.append(Announcement(
                prefix=prefix, muxes=mux_list(item["muxes"], f"{path}.muxes"),
                peers=ints(item.get("peers", []), f"{path}.peers"), origin=origin,
                poison=ints(item.get("prepend", []), f"{path}.prepend"),
                communities=tuple(comms), large_communities=tuple(large)))
    return PeeringRequest(tuple(anns), tuple(withdrawals))
