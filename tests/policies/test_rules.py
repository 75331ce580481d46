"""Import rules as data tables: (peer kind, prefix, path, next hop) → verdict, rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.config import PeerKind
from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, Attributes
from orchestrator.rib.prefix import Family, parse_prefix
from policies.model import (
    Direction,
    ImportChain,
    LimitAction,
    MaxPrefix,
    PeerContext,
    Policy,
    Route,
    Statement,
    Verdict,
)
from policies.prefixset import PrefixList, parse_entry
from policies.rpki import Vrp, VrpTable
from policies.rules import ImportRules, SetLocalPref, build_import_chain

LOCAL = 47065
NB4 = "192.0.2.1"


def ctx_for(kind: PeerKind, peer_as: int = 3356) -> PeerContext:
    return PeerContext.for_kind("p", kind, peer_as, LOCAL, NB4)


def attrs(*path: int, nh: str = NB4, as_set: tuple[int, ...] = ()) -> Attributes:
    segs: tuple[tuple[int, tuple[int, ...]], ...] = ((AS_SEQUENCE, path),) if path else ()
    if as_set:
        segs += ((AS_SET, as_set),)
    return Attributes(next_hop=nh, as_path=segs)


U, RS, IXP = PeerKind.UPSTREAM, PeerKind.ROUTE_SERVER, PeerKind.IXP_PEER
A, R = Verdict.ACCEPT, Verdict.REJECT
VRPS = VrpTable([Vrp(*parse_prefix("1.1.1.0/24"), 24, 13335),
                 Vrp(*parse_prefix("2606:4700::/32"), 48, 13335)])
IRR = PrefixList([parse_entry("1.1.1.0/24"), parse_entry("8.8.0.0/16 le 24")])

TABLE = [
    # kind, prefix, attrs, verdict, rule
    (U, "1.1.1.0/24", attrs(3356, 13335), A, "accept"),
    (U, "10.1.0.0/16", attrs(3356, 64500 + 100), R, "bogon-prefix"),
    (U, "192.168.1.0/24", attrs(3356, 13335), R, "bogon-prefix"),
    (U, "0.0.0.0/0", attrs(3356), R, "bogon-prefix"),
    (U, "1.1.1.0/25", attrs(3356, 13335), R, "prefix-length"),
    (U, "4.0.0.0/7", attrs(3356, 13335), R, "prefix-length"),
    (U, "2001:db8::/32", attrs(3356, 13335), R, "bogon-prefix"),
    (U, "2606:4700::/49", attrs(3356, 13335), R, "prefix-length"),
    (U, "2600::/11", attrs(3356, 13335), R, "prefix-length"),
    (U, "8.8.8.0/24", attrs(3356, 64512), R, "bogon-asn"),
    (U, "8.8.8.0/24", attrs(3356, 23456, 15169), R, "bogon-asn"),
    (U, "8.8.8.0/24", attrs(3356, 4200000001), R, "bogon-asn"),
    (U, "8.8.8.0/24", attrs(3356, LOCAL, 15169), R, "local-as"),
    (U, "8.8.8.0/24", attrs(174, 15169), R, "first-as"),
    (RS, "8.8.8.0/24", attrs(15169, nh="192.0.2.99"), A, "accept"),  # RS: no first-as/next-hop
    (U, "8.8.8.0/24", attrs(3356, 15169, nh="192.0.2.99"), R, "next-hop"),
    (U, "8.8.8.0/24", attrs(3356, *range(1000, 1100)), R, "as-path-length"),
    (IXP, "8.8.8.0/24", attrs(3356, 15169), A, "accept"),  # the peer's own AS is not "transit"
    (IXP, "8.8.8.0/24", attrs(3356, 174, 15169), R, "transit-asn"),
    (RS, "8.8.8.0/24", attrs(15169, 1299, 64), R, "transit-asn"),
    (U, "8.8.8.0/24", attrs(3356, 174, 15169), A, "accept"),  # upstreams carry transit ASNs
    (U, "1.1.1.0/24", attrs(3356, 15169), R, "rpki-invalid"),
    (U, "1.1.1.0/24", attrs(3356, as_set=(13335,)), R, "rpki-invalid"),  # AS_SET origin = NONE
    (U, "8.8.4.0/24", attrs(3356, 15169), A, "accept"),  # not found, in IRR (le 24)
    (U, "9.9.9.0/24", attrs(3356, 19281), R, "irr"),
]


@pytest.mark.parametrize(("kind", "prefix", "a", "verdict", "rule"), TABLE)
def test_import_table(kind: PeerKind, prefix: str, a: Attributes, verdict: Verdict, rule: str) -> None:
    peer_as = 3356 if kind is not RS else 64600 + 11  # route servers: any AS
    ctx = ctx_for(kind, peer_as if kind is not RS else 6777)
    chain = build_import_chain(ImportRules.for_kind(kind), ctx, irr=IRR, vrps=VRPS)
    family, key = parse_prefix(prefix)
    d = chain.policy.evaluate(Route(family, key, a), ctx)
    assert (d.verdict, d.rule) == (verdict, rule)
    res = chain.evaluate_update(ctx, family, a, [key])
    if verdict is A:
        assert [ks for _, ks in res.accepted] == [[key]] and not res.rejected
        assert res.accepted[0][0].local_pref == {U: 100, RS: 140, IXP: 150}[kind]
    else:
        assert res.rejected == [(key, rule)] and not res.accepted


def test_import_none_is_one_line() -> None:
    ctx = ctx_for(U)
    chain = build_import_chain(ImportRules.none(), ctx)
    res = chain.evaluate_update(ctx, Family.IPV4, attrs(3356), [parse_prefix("8.8.8.0/24")[1]])
    assert res.rejected[0][1] == "import-none" and not res.accepted


@pytest.mark.parametrize(("action", "accepted", "rejected"), [
    (LimitAction.WARN, 5, 0), (LimitAction.REJECT, 2, 3), (LimitAction.TEARDOWN, 0, 5),
    (LimitAction.RESTART, 0, 5)])
def test_max_prefix(action: LimitAction, accepted: int, rejected: int) -> None:
    ctx = ctx_for(U)
    chain = ImportChain(Policy("all", Direction.IMPORT, A), MaxPrefix(10, None, action, 60))
    keys = [parse_prefix(f"8.8.{i}.0/24")[1] for i in range(5)]
    res = chain.evaluate_update(ctx, Family.IPV4, attrs(3356), keys, count=8)
    assert res.accepted_count == accepted and len(res.rejected) == rejected
    assert res.limit is not None and res.limit.action is action and res.limit.count == 13
    assert all(r == "max-prefix" for _, r in res.rejected)
    assert chain.evaluate_update(ctx, Family.IPV4, attrs(3356), keys, count=5).limit is None


def test_actions_never_mutate() -> None:
    a = attrs(3356, 15169)
    r = Route(Family.IPV4, 1, a)
    r2 = SetLocalPref(200).apply(r, ctx_for(U))
    assert a.local_pref is None and r2.attrs.local_pref == 200 and r.attrs is a


# The fast path equals the reference evaluator on random routes and chains.
prefix4 = st.builds(lambda net, ln: (net >> (32 - ln) << (32 - ln), ln), st.integers(0, 2**32 - 1),
                    st.integers(0, 32))
asns = st.sampled_from([3356, 174, 15169, 13335, 0, 23456, 64512, LOCAL, 1299, 6939])


@settings(max_examples=200, deadline=None)
@given(st.lists(prefix4, min_size=1, max_size=12), st.lists(asns, min_size=0, max_size=6),
       st.sampled_from([U, RS, IXP]), st.booleans())
def test_fast_path_equals_reference(prefixes: list[tuple[int, int]], path: list[int], kind: PeerKind,
                                    nh_ok: bool) -> None:
    from orchestrator.rib.prefix import key_from_parts
    ctx = ctx_for(kind)
    chain = build_import_chain(ImportRules.for_kind(kind), ctx, irr=IRR, vrps=VRPS)
    a = attrs(*path, nh=NB4 if nh_ok else "192.0.2.7")
    keys = list(dict.fromkeys(key_from_parts(n, ln, Family.IPV4) for n, ln in prefixes))
    res = chain.evaluate_update(ctx, Family.IPV4, a, keys)
    fast = {k: ("accept", out) for out, ks in res.accepted for k in ks} | \
        {k: (rule, None) for k, rule in res.rejected}
    for k in keys:
        d = chain.policy.evaluate(Route(Family.IPV4, k, a), ctx)
        rule, out = fast[k]
        assert rule == d.rule
        if d.verdict is A:
            assert out == d.route.attrs


def test_slow_path_for_prefix_dependent_next_actions() -> None:
    from policies.rules import InPrefixList
    pl = PrefixList([parse_entry("8.8.0.0/16 le 24")])
    pol = Policy("x", Direction.IMPORT, A, (Statement("lp", (InPrefixList(pl),), (SetLocalPref(7),)),))
    chain = ImportChain(pol)
    ctx = ctx_for(U)
    k1, k2 = parse_prefix("8.8.8.0/24")[1], parse_prefix("9.9.9.0/24")[1]
    res = chain.evaluate_update(ctx, Family.IPV4, attrs(3356), [k1, k2])
    by = {k: a.local_pref for a, ks in res.accepted for k in ks}
    assert by == {k1: 7, k2: None}
