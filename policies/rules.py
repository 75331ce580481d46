"""Import rules and their defaults per peer kind, after Pathvector.

Theory of operation
-------------------
``ImportRules`` is the frozen description of one peer's import filter (what ``policies.config``
parses); ``build_import_chain(rules, ctx, irr=..., vrps=...)`` turns it into an ``ImportChain`` of
statements, in Pathvector's order. Each reject statement is named, and that name is the reason logged
and shown by the API:

=====================  =====================================================  =====================
rule                   rejects                                                default
=====================  =====================================================  =====================
``bogon-prefix``       a prefix inside Pathvector's bogons4/bogons6 (+ ::/0,  on (filter-bogon-routes)
                       0.0.0.0/0 unless ``accept_default``)
``prefix-length``      IPv4 outside /8../24, IPv6 outside /12../48            on (filter-prefix-length)
``bogon-asn``          a path holding a bogon ASN (RFC 7607, 6793, 5398,       on (filter-bogon-asns)
                       6996, 7300, IANA reserved)
``local-as``           a path holding our own ASN (ExaBGP does no loop check)  on (allow-local-as off)
``as-path-length``     more than ``max_path_length`` ASNs (AS_SET = 1)         100
``first-as``           first AS is not the peer's (eBGP, not route servers)   on, off for route servers
``transit-asn``        a tier-1/transit ASN anywhere past the peer's own AS    on for route servers and
                       (Peerlock lite, Pathvector's transit-asns list)        IXP peers
``next-hop``           next hop != neighbor address (eBGP, not route servers,  on, off for route servers
                       only when both are the same address family)
``rpki-invalid``       RFC 6811 INVALID, when a VRP set is loaded              reject (filter-rpki)
``rpki-not-found``     NOT_FOUND (strict-rpki)                                 off
``irr``                not in the peer's IRR prefix list, when one is given    on when a list is given
``accept``             everything else, setting local-pref and communities
=====================  =====================================================  =====================

``import = "none"`` is ``ImportRules.none()``: one statement-less policy whose default rejects, with
the rule name ``import-none``. Max-prefix (import-limit4/6: 1,000,000 / 300,000, action "disable" =
teardown) rides on the chain (``ImportChain.max_prefix``). Pure.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Final

from orchestrator.config import DEFAULT_LOCAL_PREF, PeerKind
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, key_length
from policies import accel
from policies.model import (
    Action,
    Condition,
    Direction,
    ImportChain,
    Inline,
    KeyPredicate,
    LimitAction,
    MaxPrefix,
    PeerContext,
    Policy,
    Route,
    Scope,
    Statement,
    Verdict,
    inline_predicate,
    make_route,
    native_gate,
    with_attrs,
)
from policies.prefixset import PrefixEntry, PrefixList, parse_entry
from policies.rpki import Validity, VrpTable, classify

# Pathvector pkg/config/config.go defaults (BIRD {lo,hi} length ranges).
BOGONS4: Final = (
    "0.0.0.0/8{8,32}", "10.0.0.0/8{8,32}", "100.64.0.0/10{10,32}", "127.0.0.0/8{8,32}",
    "169.254.0.0/16{16,32}", "172.16.0.0/12{12,32}", "192.0.2.0/24{24,32}", "192.88.99.0/24{24,32}",
    "192.168.0.0/16{16,32}", "198.18.0.0/15{15,32}", "198.51.100.0/24{24,32}", "203.0.113.0/24{24,32}",
    "224.0.0.0/3{3,32}",
)
BOGONS6: Final = (
    "::/8{8,128}", "64:ff9b::/96{96,128}", "100::/8{8,128}", "200::/7{7,128}", "400::/6{6,128}",
    "800::/5{5,128}", "1000::/4{4,128}", "2001::/33{33,128}", "2001:0:8000::/33{33,128}",
    "2001:2::/48{48,128}", "2001:3::/32{32,128}", "2001:10::/28{28,128}", "2001:20::/28{28,128}",
    "2001:db8::/32{32,128}", "2002::/16{16,128}", "3ffe::/16{16,128}", "4000::/3{3,128}",
    "5f00::/8{8,128}", "6000::/3{3,128}", "8000::/3{3,128}", "a000::/3{3,128}", "c000::/3{3,128}",
    "e000::/4{4,128}", "f000::/5{5,128}", "f800::/6{6,128}", "fc00::/7{7,128}", "fe80::/10{10,128}",
    "fec0::/10{10,128}", "ff00::/8{8,128}",
)
DEFAULT_ROUTES: Final = ("0.0.0.0/0", "::/0")
BOGON_ASNS: Final = (
    (0, 0), (23456, 23456), (64496, 64511), (64512, 65534), (65535, 65535), (65536, 65551),
    (65552, 131071), (4200000000, 4294967294), (4294967295, 4294967295),
)
TRANSIT_ASNS: Final = (174, 701, 702, 1239, 1299, 2914, 3257, 3320, 3356, 3491, 3549, 3561, 4134,
                       5511, 6453, 6461, 6762, 6830, 7018)

# Large community (local AS, KIND_TAG, code) marking where a route was learned.
KIND_TAG: Final = 1
KIND_CODES: Final = {PeerKind.UPSTREAM: 1, PeerKind.ROUTE_SERVER: 2, PeerKind.IXP_PEER: 3,
                     PeerKind.MUX: 4, PeerKind.COLLECTOR: 5}


_KIND_BY_VALUE: Final = {k._value_: code for k, code in KIND_CODES.items()}


def _kind_code(kind: PeerKind) -> int:
    return _KIND_BY_VALUE[kind._value_]  # by value: Enum.__hash__ is slow Python code


def bogon_list(accept_default: bool = False, extra: Iterable[str] = ()) -> PrefixList:
    entries = [parse_entry(t) for t in (*BOGONS4, *BOGONS6, *extra)]
    if not accept_default:
        entries += [parse_entry(t) for t in DEFAULT_ROUTES]
    return PrefixList(entries)


# ---------------------------------------------------------------------------------------------------
# Conditions


def _list_predicate(prefixes: PrefixList, family: Family, negate: bool) -> KeyPredicate:
    idx = prefixes.index(family)
    test = "not " if negate else ""
    tables = idx.native()
    native = None if tables is None else (accel.OP_LIST, negate, *tables, idx.values)
    inline = Inline((f"{{hit}} = {test}{{values}}[{idx.lookup_source()}] >> length & 1",), idx.namespace(),
                    native)
    return inline_predicate(prefixes.key_predicate(family, negate=negate), inline)


@dataclass(frozen=True, slots=True)
class InPrefixList(Condition):
    prefixes: PrefixList
    scope = Scope.PREFIX
    uses_attrs = False

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        return self.prefixes.matches(route.family, route.key)

    def compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> bool | KeyPredicate:
        return _list_predicate(self.prefixes, family, negate=False)


@dataclass(frozen=True, slots=True)
class NotInPrefixList(Condition):
    prefixes: PrefixList
    scope = Scope.PREFIX
    uses_attrs = False

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        return not self.prefixes.matches(route.family, route.key)

    def compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> bool | KeyPredicate:
        return _list_predicate(self.prefixes, family, negate=True)


@dataclass(frozen=True, slots=True)
class LengthOutside(Condition):
    """Prefix length outside [min, max] for its family."""

    min4: int = 8
    max4: int = 24
    min6: int = 12
    max6: int = 48
    scope = Scope.PREFIX
    uses_attrs = False

    def bounds(self, family: Family) -> tuple[int, int]:
        return (self.min4, self.max4) if family is Family.IPV4 else (self.min6, self.max6)

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        lo, hi = self.bounds(route.family)
        return not lo <= key_length(route.key) <= hi

    def compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> bool | KeyPredicate:
        lo, hi = self.bounds(family)

        def pred(key: int, network: int, length: int) -> bool:
            return length < lo or length > hi

        native = (accel.OP_LENGTH, False, lo, hi)
        return inline_predicate(pred, Inline((f"{{hit}} = length < {lo} or length > {hi}",), {}, native))


def _path_asns(attrs: Attributes) -> Iterable[int]:
    for _, asns in attrs.as_path:
        yield from asns


class PathHasAsnIn(Condition):
    """Some ASN of the path lies in one of the inclusive ``ranges`` (bisect per ASN)."""

    __slots__ = ("_ends", "_starts", "ranges")

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        self.ranges = tuple(sorted(ranges))
        self._starts = [lo for lo, _ in self.ranges]
        self._ends = [hi for _, hi in self.ranges]

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        starts, ends = self._starts, self._ends
        for _, asns in route.attrs.as_path:
            for asn in asns:
                i = bisect_right(starts, asn) - 1
                if i >= 0 and asn <= ends[i]:
                    return True
        return False

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], bool]:
        """One C-level ``issuperset`` per segment against the ASNs already seen outside the ranges
        (a table holds ~70k ASNs, repeated across paths); the bisect only for new ones."""
        starts, ends = self._starts, self._ends
        good: set[int] = set()

        def test(a: Attributes) -> bool:
            for _, asns in a.as_path:
                if good.issuperset(asns):
                    continue
                for asn in asns:
                    i = bisect_right(starts, asn) - 1
                    if i >= 0 and asn <= ends[i]:
                        return True
                if len(good) > 1 << 20:
                    good.clear()
                good.update(asns)
            return False

        return native_gate(test, _int64s(accel.GATE_ASN_IN, starts, ends))

    def __repr__(self) -> str:
        return f"PathHasAsnIn({self.ranges!r})"


@dataclass(frozen=True, slots=True)
class PathHasLocalAs(Condition):
    def matches(self, route: Route, ctx: PeerContext) -> bool:
        local = ctx.local_as
        return any(local in asns for _, asns in route.attrs.as_path)

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], bool]:
        local = ctx.local_as

        def test(a: Attributes) -> bool:
            for _, asns in a.as_path:  # noqa: SIM110 (a loop: any() over a genexpr costs 2x)
                if local in asns:
                    return True
            return False

        return native_gate(test, _int64s(accel.GATE_HAS, local))


@dataclass(frozen=True, slots=True)
class PathLongerThan(Condition):
    limit: int

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        return route.attrs.as_path_length > self.limit

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], bool]:
        limit = self.limit

        def test(a: Attributes) -> bool:
            path = a.as_path
            if len(path) == 1 and path[0][0] == AS_SEQUENCE:  # the usual path: one sequence
                return len(path[0][1]) > limit
            return a.as_path_length > limit

        return native_gate(test, _int64s(accel.GATE_LONGER, limit))


@dataclass(frozen=True, slots=True)
class FirstAsNotPeer(Condition):
    """eBGP, not from a route server, and the first AS is not the peer's (Pathvector enforce-first-as)."""

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        if ctx.ibgp or ctx.is_route_server:
            return False
        return route.attrs.neighbor_as != ctx.peer_as

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], bool]:
        if ctx.ibgp or ctx.is_route_server:
            return _never
        peer = ctx.peer_as

        def test(a: Attributes) -> bool:
            path = a.as_path
            if path and path[0][0] == AS_SEQUENCE and path[0][1]:
                return path[0][1][0] != peer
            return a.neighbor_as != peer

        return native_gate(test, _int64s(accel.GATE_FIRST_NOT, peer))


@dataclass(frozen=True, slots=True)
class PathHasTransitAs(Condition):
    """A listed transit ASN appears in the path, other than the peer's own AS (Peerlock lite)."""

    asns: frozenset[int] = frozenset(TRANSIT_ASNS)

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        listed, peer = self.asns, ctx.peer_as
        for _, asns in route.attrs.as_path:
            for a in asns:
                if a in listed and a != peer:
                    return True
        return False

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], bool]:
        others = self.asns - {ctx.peer_as}

        def test(a: Attributes) -> bool:
            for _, asns in a.as_path:  # noqa: SIM110 (a loop: any() over a genexpr costs 2x)
                if not others.isdisjoint(asns):
                    return True
            return False

        return native_gate(test, _int64s(accel.GATE_ANY_IN, sorted(others)))


def _never(attrs: Attributes) -> bool:
    return False


native_gate(_never, (accel.GATE_NEVER,))


def _int64s(kind: int, *values: int | Iterable[int]) -> tuple[Any, ...] | None:
    """A gate's native form (``accel.gates``): ints as they are, lists as 'q' arrays; None when a
    value does not fit 64 bits or is not an int (the Python test then runs)."""
    out: list[Any] = [kind]
    try:
        for v in values:
            if isinstance(v, int) and not isinstance(v, bool):
                if not -(1 << 63) <= v < 1 << 63:
                    return None
                out.append(v)
            else:
                out.append(array("q", v))  # type: ignore[arg-type]
    except (OverflowError, TypeError):
        return None
    return tuple(out)


class NextHopNotPeer(Condition):
    """eBGP, not a route server, next hop of the neighbor's family and different from it.

    Results are memoised per (next hop, neighbor) text: a pure function, and next hops are few.
    """

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[tuple[str, str], bool] = {}

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        nh_text = route.attrs.next_hop
        if ctx.ibgp or ctx.is_route_server or not ctx.neighbor or not nh_text or nh_text == ctx.neighbor:
            return False
        memo_key = (nh_text, ctx.neighbor)
        hit = self._memo.get(memo_key)
        if hit is None:
            try:
                nh, nb = ip_address(nh_text), ip_address(ctx.neighbor)
                hit = nh.version == nb.version and nh != nb
            except ValueError:
                hit = True  # an unparseable next hop is not the peer's
            if len(self._memo) > 65536:
                self._memo.clear()
            self._memo[memo_key] = hit
        return hit

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], bool]:
        if ctx.ibgp or ctx.is_route_server or not ctx.neighbor:
            return _never
        neighbor = ctx.neighbor
        match = self.matches

        def test(a: Attributes) -> bool:
            nh = a.next_hop
            if not nh or nh == neighbor:  # the usual case: the peer's own address
                return False
            return match(make_route(Family.IPV4, 0, a), ctx)

        return test


# RFC 6811 2 over the VRPs of the range holding ``network`` (``classify``, as loop source): VALID when a
# VRP of length <= the route's has its origin (AS0 never matches, RFC 6483 4) and maxLength >= the
# route's length, else INVALID when one covers it, else NOT_FOUND.
_RPKI_LINES: Final = (
    "{hit} = {not_found}",
    "for _plen, _maxlen, _asn in {values}[%s]:",
    "    if _plen <= length:",
    "        if _asn == origin and _asn and length <= _maxlen:",
    "            {hit} = {valid}",
    "            break",
    "        {hit} = {invalid}",
)


def _rpki_inline(table: VrpTable, family: Family, state: Validity) -> Inline:
    idx = table.index(family)
    ns = {**idx.namespace(), "valid": state is Validity.VALID, "invalid": state is Validity.INVALID,
          "not_found": state is Validity.NOT_FOUND}
    tables, flat = idx.native(), table.flat(family)
    native = None
    if tables is not None and flat is not None:
        native = (accel.OP_RPKI, False, *tables, *flat, accel.RPKI_STATES.index(state.value))
    return Inline(tuple(line.replace("%s", idx.lookup_source()) for line in _RPKI_LINES), ns, native)


@dataclass(frozen=True, slots=True)
class RpkiIs(Condition):
    """RFC 6811 state of the route against a VRP table equals ``state``."""

    table: VrpTable
    state: Validity
    scope = Scope.PREFIX
    _inline: dict[Family, Inline] = field(default_factory=dict, init=False, repr=False, compare=False)

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        return self.table.validate(route.family, route.key, route.attrs.origin_as) is self.state

    def source(self, family: Family) -> Inline:
        inline = self._inline.get(family)
        if inline is None:
            inline = self._inline[family] = _rpki_inline(self.table, family, self.state)
        return inline

    def compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> bool | KeyPredicate:
        inline = self.source(family)
        lookup = self.table.candidates(family)
        origin = attrs.origin_as
        state = self.state

        def pred(key: int, network: int, length: int) -> bool:
            return classify(lookup(network), length, origin) is state

        return inline_predicate(pred, inline)


# ---------------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True, slots=True)
class SetLocalPref(Action):
    value: int

    def apply(self, route: Route, ctx: PeerContext) -> Route:
        if route.attrs.local_pref == self.value:
            return route
        return with_attrs(route, local_pref=self.value)


@dataclass(frozen=True, slots=True)
class AddCommunities(Action):
    """Add standard and large communities (kept sorted and unique)."""

    communities: tuple[int, ...] = ()
    large: tuple[tuple[int, int, int], ...] = ()

    def apply(self, route: Route, ctx: PeerContext) -> Route:
        a = route.attrs
        comms = tuple(sorted(set(a.communities) | set(self.communities)))
        large = tuple(sorted(set(a.large_communities) | set(self.large)))
        if comms == a.communities and large == a.large_communities:
            return route
        return with_attrs(route, communities=comms, large_communities=large)


@dataclass(frozen=True, slots=True)
class TagKind(Action):
    """Add the large community (local AS, KIND_TAG, kind code) telling where the route came from."""

    def apply(self, route: Route, ctx: PeerContext) -> Route:
        tag = (ctx.local_as, KIND_TAG, KIND_CODES[ctx.kind])
        return AddCommunities((), (tag,)).apply(route, ctx)


@dataclass(frozen=True, slots=True)
class ImportAttributes(Action):
    """SetLocalPref + AddCommunities + TagKind in one new Attributes (one object per attribute set:
    the import fast path runs this once per distinct set, ~every 7 prefixes, so it must be cheap)."""

    local_pref: int
    communities: tuple[int, ...] = ()
    large: tuple[tuple[int, int, int], ...] = ()
    tag_kind: bool = True

    def apply(self, route: Route, ctx: PeerContext) -> Route:
        return Route(route.family, route.key, self.apply_attrs(route.attrs, ctx))

    def apply_attrs(self, a: Attributes, ctx: PeerContext) -> Attributes:
        return self.bind(ctx)(a)

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], Attributes]:
        """The per-set work without what depends on the peer alone (the tag, the sorted additions)."""
        add = self.communities
        extra = (*self.large, (ctx.local_as, KIND_TAG, _kind_code(ctx.kind))) if self.tag_kind else self.large
        only = extra if len(extra) == 1 else None
        local_pref = self.local_pref
        make = _with_import

        def apply(a: Attributes) -> Attributes:
            comms = a.communities
            if add:
                comms = tuple(sorted(set(comms).union(add)))
            large = a.large_communities
            if extra:
                large = only if not large and only is not None else tuple(sorted(set(large).union(extra)))
            return make(a, local_pref, comms, large, b"")

        return apply


def _with_import_py(a: Attributes, local_pref: int | None, comms: tuple[int, ...],
                    large: tuple[tuple[int, int, int], ...], raw4: bytes) -> Attributes:
    """``a`` with the import action's fields; ``raw4`` empty: the new set is not what was received."""
    return Attributes.fast(a.next_hop, a.origin, a.as_path, a.med, local_pref, comms, large,
                           a.atomic_aggregate, a.aggregator, a.other, raw4)


# The same by slot copies in C (accel.copier): ~0.9 -> ~0.1 µs per attribute set.
_with_import = accel.copier(Attributes, ("local_pref", "communities", "large_communities", "raw4"),
                            _with_import_py)


# ---------------------------------------------------------------------------------------------------
# The rules of one peer


@dataclass(frozen=True, slots=True)
class ImportRules:
    """One peer's import filter. ``enabled=False`` is ``import = "none"``.

    Fields are named after Pathvector's options (``filter-bogon-routes`` → ``bogon_prefixes``...).
    """

    enabled: bool = True
    bogon_prefixes: bool = True
    accept_default: bool = False
    bogon_asns: bool = True
    prefix_length: bool = True
    min4: int = 8
    max4: int = 24
    min6: int = 12
    max6: int = 48
    local_as: bool = True  # reject paths holding our ASN (Pathvector allow-local-as = false)
    max_path_length: int | None = 100
    first_as: bool = True
    transit_asns: bool = False
    transit_asn_list: tuple[int, ...] = TRANSIT_ASNS
    next_hop: bool = True
    rpki_invalid: Verdict = Verdict.REJECT  # what to do with INVALID when VRPs are loaded
    rpki_not_found: Verdict = Verdict.ACCEPT  # REJECT = Pathvector strict-rpki
    irr: bool = True  # filter on the IRR list when one is given
    local_pref: int | None = None  # None: DEFAULT_LOCAL_PREF by kind
    communities: tuple[int, ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    tag_kind: bool = True
    max_prefix: MaxPrefix | None = field(default_factory=lambda: MaxPrefix(1_000_000, 300_000,
                                                                          LimitAction.TEARDOWN))

    @classmethod
    def none(cls) -> ImportRules:
        return cls(enabled=False, max_prefix=None)

    @classmethod
    def for_kind(cls, kind: PeerKind, **overrides: object) -> ImportRules:
        """Pathvector defaults, adjusted as its routeserver/peer templates do."""
        base: dict[str, object] = {}
        if kind is PeerKind.ROUTE_SERVER:
            base.update(first_as=False, next_hop=False, transit_asns=True)
        elif kind is PeerKind.IXP_PEER:
            base.update(transit_asns=True)
        base.update(overrides)
        return cls(**base)  # type: ignore[arg-type]


IMPORT_NONE: Final = "import-none"


def build_import_chain(rules: ImportRules, ctx: PeerContext, *, irr: PrefixList | None = None,
                       vrps: VrpTable | None = None, bogons: PrefixList | None = None) -> ImportChain:
    """The chain for one peer. ``irr``/``vrps`` are used when given (and enabled in ``rules``)."""
    if not rules.enabled:
        return ImportChain(Policy(IMPORT_NONE, Direction.IMPORT, Verdict.REJECT,
                                  (Statement(IMPORT_NONE, (), (), Verdict.REJECT),)))
    rej = Verdict.REJECT
    st: list[Statement] = []
    if rules.bogon_prefixes:
        st.append(Statement("bogon-prefix", (InPrefixList(bogons or bogon_list(rules.accept_default)),),
                            (), rej))
    if rules.prefix_length:
        st.append(Statement("prefix-length",
                            (LengthOutside(rules.min4, rules.max4, rules.min6, rules.max6),), (), rej))
    if rules.bogon_asns:
        st.append(Statement("bogon-asn", (PathHasAsnIn(BOGON_ASNS),), (), rej))
    if rules.local_as and not ctx.ibgp:
        st.append(Statement("local-as", (PathHasLocalAs(),), (), rej))
    if rules.max_path_length is not None:
        st.append(Statement("as-path-length", (PathLongerThan(rules.max_path_length),), (), rej))
    if rules.first_as:
        st.append(Statement("first-as", (FirstAsNotPeer(),), (), rej))
    if rules.transit_asns:
        st.append(Statement("transit-asn", (PathHasTransitAs(frozenset(rules.transit_asn_list)),), (), rej))
    if rules.next_hop:
        st.append(Statement("next-hop", (NextHopNotPeer(),), (), rej))
    if vrps is not None:
        if rules.rpki_invalid is rej:
            st.append(Statement("rpki-invalid", (RpkiIs(vrps, Validity.INVALID),), (), rej))
        if rules.rpki_not_found is rej:
            st.append(Statement("rpki-not-found", (RpkiIs(vrps, Validity.NOT_FOUND),), (), rej))
    if irr is not None and rules.irr:
        st.append(Statement("irr", (NotInPrefixList(irr),), (), rej))
    local_pref = rules.local_pref if rules.local_pref is not None else DEFAULT_LOCAL_PREF[ctx.kind]
    actions = (ImportAttributes(local_pref, rules.communities, rules.large_communities, rules.tag_kind),)
    st.append(Statement("accept", (), actions, Verdict.ACCEPT))
    return ImportChain(Policy(f"import-{ctx.name}", Direction.IMPORT, rej, tuple(st)), rules.max_prefix)


# ---------------------------------------------------------------------------------------------------
# Export: our own announcements towards one peer (peerctl re-exports nothing it learned)


class PathHasForeignAsn(Condition):
    """The path holds an ASN other than ours and the route's origin (poisoning; prepends are ours)."""

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        own = (ctx.local_as, route.attrs.origin_as)
        return any(a not in own for _, asns in route.attrs.as_path for a in asns)


@dataclass(frozen=True, slots=True)
class Prepend(Action):
    """Our AS ``count`` more times at the front of the path (the neighbor sees it first)."""

    count: int

    def apply(self, route: Route, ctx: PeerContext) -> Route:
        if self.count <= 0:
            return route
        path = route.attrs.as_path
        ours = (ctx.local_as,) * self.count
        if path and path[0][0] == AS_SEQUENCE:
            new = ((AS_SEQUENCE, ours + path[0][1]), *path[1:])
        else:
            new = ((AS_SEQUENCE, ours), *path)
        return with_attrs(route, as_path=new)


@dataclass(frozen=True, slots=True)
class ExportRules:
    """One peer's export filter for our announcements. ``enabled=False`` is ``export = "none"``.

    Statements, in order: ``export-prefix`` (only the listed prefixes, when a list is given),
    ``export-poisoning`` (no foreign ASN in the path, when ``allow_poisoning`` is off), the per-peer
    changes (``prepend``, ``communities``, ``large_communities``), then ``export-as-path-length``
    (counted after the prepends). The default accepts. The PEERING safety rules are checked again
    on the result (``SafetyRules.check_attributes``) by ``orchestrator.announce``.
    """

    enabled: bool = True
    prefixes: tuple[PrefixEntry, ...] | None = None
    allow_poisoning: bool = True
    prepend: int = 0
    communities: tuple[int, ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    max_path_length: int | None = None

    @classmethod
    def none(cls) -> ExportRules:
        return cls(enabled=False)


EXPORT_NONE: Final = "export-none"


def build_export_policy(rules: ExportRules, ctx: PeerContext) -> Policy:
    """The export policy of one peer (evaluated per announcement with ``Policy.evaluate``)."""
    rej = Verdict.REJECT
    if not rules.enabled:
        return Policy(EXPORT_NONE, Direction.EXPORT, rej, (Statement(EXPORT_NONE, (), (), rej),))
    st: list[Statement] = []
    if rules.prefixes is not None:
        st.append(Statement("export-prefix", (NotInPrefixList(PrefixList(rules.prefixes)),), (), rej))
    if not rules.allow_poisoning:
        st.append(Statement("export-poisoning", (PathHasForeignAsn(),), (), rej))
    actions: list[Action] = []
    if rules.prepend:
        actions.append(Prepend(rules.prepend))
    if rules.communities or rules.large_communities:
        actions.append(AddCommunities(rules.communities, rules.large_communities))
    if actions:
        st.append(Statement("export-attributes", (), tuple(actions), Verdict.NEXT))
    if rules.max_path_length is not None:
        st.append(Statement("export-as-path-length", (PathLongerThan(rules.max_path_length),), (), rej))
    return Policy(f"export-{ctx.name}", Direction.EXPORT, Verdict.ACCEPT, tuple(st))


def irr_child_prefixes(entries: Iterable[PrefixEntry]) -> list[PrefixEntry]:
    """Pathvector irr-accept-child-prefixes: let each entry match more-specifics up to /24 and /48."""
    out = []
    for e in entries:
        cap = 24 if e.family is Family.IPV4 else 48
        out.append(PrefixEntry(e.family, e.key, e.ge, max(e.le, cap)) if e.length <= cap else e)
    return out


__all__ = [
    "BOGONS4",
    "BOGONS6",
    "BOGON_ASNS",
    "TRANSIT_ASNS",
    "ExportRules",
    "ImportRules",
    "bogon_list",
    "build_export_policy",
    "build_import_chain",
    "irr_child_prefixes",
]
