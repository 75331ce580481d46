"""The import fast path (compiled programs, generated loops, bucketed indexes) against the reference.

``ImportChain.evaluate_update`` must give every prefix the same verdict, rule and output attributes as
``Policy.evaluate`` on random chains: attribute gates, prefix lists, RPKI (sourced, read ``origin`` in
the generated loop), predicates without source (called), negations, NEXT statements with actions,
conjunctions (slow path) and both defaults, over bucketed and plain indexes.
"""

from __future__ import annotations

from bisect import bisect_right

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.config import PeerKind
from orchestrator.rib.attrs import AS_CONFED_SEQUENCE, AS_SEQUENCE, AS_SET, Attributes
from orchestrator.rib.prefix import Family, key_from_parts, key_length
from policies.model import (
    Condition,
    Direction,
    ImportChain,
    KeyPredicate,
    Not,
    PeerContext,
    Policy,
    Route,
    Scope,
    Statement,
    Verdict,
)
from policies.prefixset import PrefixEntry, PrefixList, RangeIndex
from policies.rpki import Validity, Vrp, VrpTable
from policies.rules import (
    AddCommunities,
    FirstAsNotPeer,
    ImportAttributes,
    ImportRules,
    InPrefixList,
    LengthOutside,
    NextHopNotPeer,
    NotInPrefixList,
    PathHasAsnIn,
    PathHasLocalAs,
    PathHasTransitAs,
    PathLongerThan,
    RpkiIs,
    SetLocalPref,
    TagKind,
    build_import_chain,
)

LOCAL = 65001
CTX = PeerContext.for_kind("p", PeerKind.UPSTREAM, 3356, LOCAL, "192.0.2.1")
ASNS = [3356, 174, 13335, 15169, 64512, 0, 23456]


class OddKey(Condition):
    """A prefix condition with neither ``source`` nor an inline: the generated loop calls it."""

    scope = Scope.PREFIX

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        return route.key % 3 == 1

    def compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> bool | KeyPredicate:
        return lambda key, network, length: key % 3 == 1


def prefix4(draw: st.DrawFn) -> int:
    """Clustered, so that routes, list entries and VRPs nest often."""
    length = draw(st.integers(0, 32))
    base = draw(st.sampled_from([0x0A000000, 0x0A010000, 0x08080800, 0xC0000200]))
    net = base | draw(st.sampled_from([0, 1, 0x80, 0x100, draw(st.integers(0, (1 << 16) - 1))]))
    return key_from_parts(net, length, Family.IPV4)


def spans(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """(key, length, an upper length bound) for list entries and VRPs."""
    out = []
    for _ in range(draw(st.integers(0, 8))):
        key = prefix4(draw)
        length = key_length(key)
        out.append((key, length, draw(st.integers(length, 32))))
    return out


@st.composite
def prefix_list(draw: st.DrawFn) -> PrefixList:
    entries = [PrefixEntry(Family.IPV4, key, length, hi) for key, length, hi in spans(draw)]
    return PrefixList(entries, bucket_min=draw(st.sampled_from([0, 10_000])))


@st.composite
def vrp_table(draw: st.DrawFn) -> VrpTable:
    vrps = [Vrp(Family.IPV4, key, hi, draw(st.sampled_from(ASNS))) for key, _, hi in spans(draw)]
    return VrpTable(vrps, bucket_min=draw(st.sampled_from([0, 10_000])))


@st.composite
def condition(draw: st.DrawFn, native: bool = False) -> Condition:
    """Any condition; ``native``: only those the C loop runs (not ``OddKey``; gates are per set)."""
    kind = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 8, 9]) if native else st.integers(0, 9))
    cond: Condition
    if kind == 0:
        cond = InPrefixList(draw(prefix_list()))
    elif kind == 1:
        cond = NotInPrefixList(draw(prefix_list()))
    elif kind == 2:
        cond = LengthOutside(draw(st.integers(0, 16)), draw(st.integers(16, 32)))
    elif kind in (3, 9):
        cond = RpkiIs(draw(vrp_table()), draw(st.sampled_from(list(Validity))))
    elif kind == 4:
        cond = PathLongerThan(draw(st.integers(0, 4)))
    elif kind == 5:
        cond = PathHasAsnIn([(64512, 65534), (0, 0)])
    elif kind == 6:
        cond = FirstAsNotPeer()
    elif kind == 7:
        cond = OddKey()
    else:
        cond = Not(draw(condition(native)))
    return cond


@st.composite
def statement(draw: st.DrawFn) -> Statement:
    # Mostly shapes the fast path compiles (one condition; NEXT with actions only on attribute
    # conditions); the rest (conjunctions, per-prefix NEXT actions) exercise the slow-path fallback.
    conds = tuple(draw(st.lists(condition(), max_size=2 if draw(st.integers(0, 5)) == 0 else 1)))
    actions = draw(st.sampled_from([(), (), (SetLocalPref(7),), (AddCommunities((0x00010002,)),),
                                    (SetLocalPref(9), AddCommunities((), ((1, 2, 3),)))]))
    verdict = draw(st.sampled_from([Verdict.ACCEPT, Verdict.REJECT, Verdict.REJECT, Verdict.NEXT]))
    return Statement(f"s{draw(st.integers(0, 99))}", conds, actions, verdict)


@st.composite
def update(draw: st.DrawFn) -> tuple[Attributes, list[int]]:
    path = tuple(draw(st.lists(st.sampled_from(ASNS), max_size=5)))
    attrs = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, path),) if path else ())
    keys = list(dict.fromkeys(prefix4(draw) for _ in range(draw(st.integers(1, 12)))))
    return attrs, keys


@settings(max_examples=400, deadline=None)
@given(st.lists(statement(), max_size=6), st.sampled_from([Verdict.ACCEPT, Verdict.REJECT]),
       st.lists(update(), min_size=1, max_size=4))
def test_fast_path_equals_reference(statements: list[Statement], default: Verdict,
                                    updates: list[tuple[Attributes, list[int]]]) -> None:
    policy = Policy("x", Direction.IMPORT, default, tuple(statements))
    chain = ImportChain(policy)
    for attrs, keys in updates * 2:  # twice: the second pass runs from the program cache
        res = chain.evaluate_update(CTX, Family.IPV4, attrs, keys)
        fast: dict[int, tuple[Attributes | None, str]] = {k: (None, rule) for k, rule in res.rejected}
        for out, ks in res.accepted:
            for k in ks:
                assert k not in fast
                fast[k] = (out, "")
        assert sorted(fast) == sorted(keys)
        for k in keys:
            d = policy.evaluate(Route(Family.IPV4, k, attrs), CTX)
            got, rule = fast[k]
            if d.verdict is Verdict.ACCEPT:
                assert got == d.route.attrs, (k, d.rule)
            else:
                assert got is None and rule == d.rule


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, (1 << 32) - 1), max_size=300), st.lists(st.integers(0, (1 << 32) - 1),
                                                                        min_size=1, max_size=50))
def test_bucketed_index_equals_plain_bisect(raw: list[int], queries: list[int]) -> None:
    starts = [0, *sorted(set(raw))]
    idx = RangeIndex(starts, list(range(len(starts))), 32, bucket_min=0)
    assert idx.bnd is not None
    for q in queries:
        assert idx.index(q) == bisect_right(starts, q) - 1


CONTEXTS = [CTX, PeerContext.for_kind("rs", PeerKind.ROUTE_SERVER, 6695, LOCAL, "192.0.2.1"),
            PeerContext.for_kind("ibgp", PeerKind.UPSTREAM, LOCAL, LOCAL, "2001:db8::1"),
            PeerContext.for_kind("nn", PeerKind.IXP_PEER, 174, LOCAL, "")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([AS_SEQUENCE, AS_SEQUENCE, AS_SET, AS_CONFED_SEQUENCE]),
                          st.lists(st.sampled_from([*ASNS, LOCAL]), max_size=4).map(tuple)), max_size=3),
       st.sampled_from(["", "192.0.2.1", "192.0.2.7", "2001:db8::1", "bogus"]),
       st.lists(st.sampled_from([1, 0x00010002, 7]), max_size=2, unique=True).map(lambda c: tuple(sorted(c))),
       st.sampled_from([(), ((1, 2, 3),), ((9, 9, 9), (LOCAL, 1, 1))]))  # sorted, as decoded
def test_bound_gates_and_actions_equal_matches(path: list[tuple[int, tuple[int, ...]]], nh: str,
                                                comms: tuple[int, ...],
                                                large: tuple[tuple[int, int, int], ...]) -> None:
    """``Condition.bind`` / ``Action.bind`` (what the fast path runs per attribute set) agree with
    ``matches`` / ``apply`` on multi-segment paths, every peer kind and odd next hops."""
    attrs = Attributes(next_hop=nh, as_path=tuple(path), communities=comms, large_communities=large)
    conds: list[Condition] = [PathHasAsnIn([(64512, 65534), (0, 0)]), PathHasLocalAs(), PathLongerThan(2),
                              FirstAsNotPeer(), PathHasTransitAs(), NextHopNotPeer()]
    actions = [ImportAttributes(100), ImportAttributes(50, (0x00010002,), ((1, 2, 3),)),
               ImportAttributes(70, (), (), tag_kind=False)]
    for ctx in CONTEXTS:
        route = Route(Family.IPV4, 0, attrs)
        for cond in conds:
            test = cond.bind(ctx)
            assert test is not None
            assert test(attrs) is cond.matches(route, ctx), (cond, ctx.name)
            assert test(attrs) is cond.matches(route, ctx)  # again, from any memo
        for action in actions:  # reference: the three plain actions it stands for
            ref = AddCommunities(action.communities, action.large).apply(
                SetLocalPref(action.local_pref).apply(route, ctx), ctx)
            ref = TagKind().apply(ref, ctx) if action.tag_kind else ref
            assert action.bind(ctx)(attrs) == ref.attrs


OTHER = PeerContext.for_kind("q", PeerKind.IXP_PEER, 13335, 64512, "192.0.2.9")


@settings(max_examples=200, deadline=None)
@given(prefix_list(), vrp_table(), st.lists(update(), min_size=1, max_size=4), st.booleans())
def test_builtin_chain_with_peers_taking_turns_equals_reference(
        irr: PrefixList, vrps: VrpTable, updates: list[tuple[Attributes, list[int]]], strict: bool) -> None:
    """The simple plan is bound to the last (ctx, family) seen (``ImportChain._fast``) and leaves
    ``origin`` out of loops that cannot read it: peers taking turns on one chain, with RPKI steps
    (which read it) and without, decide as ``Policy.evaluate``, rule names included."""
    rules = ImportRules.for_kind(PeerKind.UPSTREAM, max_path_length=3, rpki_not_found=(
        Verdict.REJECT if strict else Verdict.ACCEPT), max_prefix=None)
    for chain in (build_import_chain(rules, CTX, irr=irr, vrps=vrps), build_import_chain(rules, CTX)):
        for (attrs, keys), ctx in zip(updates * 3, [CTX, OTHER, OTHER, CTX, CTX, OTHER] * 2, strict=False):
            res = chain.evaluate_update(ctx, Family.IPV4, attrs, keys)
            got: dict[int, tuple[Attributes | None, str]] = {k: (None, rule) for k, rule in res.rejected}
            got.update({k: (out, "") for out, ks in res.accepted for k in ks})
            assert sorted(got) == sorted(keys)
            for k in keys:
                d = chain.policy.evaluate(Route(Family.IPV4, k, attrs), ctx)
                if d.verdict is Verdict.ACCEPT:
                    assert got[k] == (d.route.attrs, "")
                else:
                    assert got[k] == (None, d.rule)
