"""The RIB table: updates, implicit/explicit withdraw, peer down, counters, lookups, interning."""

from __future__ import annotations

import gc
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.rib.attrs import AS_SEQUENCE, Attributes, Origin
from orchestrator.rib.decide import DecisionOptions, PathFacts, Reason, address_sort_key, reference_select
from orchestrator.rib.prefix import Family, parse_address, parse_prefix
from orchestrator.rib.table import PeerInfo, Rib, bulk_load, decode_attrs, encode_attrs

V4 = Family.IPV4
V6 = Family.IPV6
LOCAL_AS = 65000


def peer(n: int, *, asn: int | None = None, lp: int = 100, rid: str | None = None) -> PeerInfo:
    return PeerInfo(
        name=f"p{n}",
        peer_as=asn if asn is not None else 65100 + n,
        address=f"192.0.2.{n}",
        local_as=LOCAL_AS,
        router_id=rid or f"10.0.0.{n}",
        local_pref=lp,
    )


def attrs(*path: int, med: int | None = None, lp: int | None = None, nh: str = "192.0.2.1") -> Attributes:
    return Attributes(next_hop=nh, as_path=((AS_SEQUENCE, path),) if path else (), med=med, local_pref=lp)


def k(text: str) -> int:
    return parse_prefix(text)[1]


def rib_with(*peers: PeerInfo, options: DecisionOptions | None = None) -> Rib:
    rib = Rib(options or DecisionOptions())
    for p in peers:
        rib.add_peer(p)
        rib.peer_up(p.name, p.router_id)
    return rib


def test_announce_best_and_reason() -> None:
    rib = rib_with(peer(1), peer(2))
    a1, a2 = attrs(65101, 1, 2), attrs(65102, 2)
    ch = rib.update("p1", V4, a1, [k("10.0.0.0/8"), k("10.1.0.0/16")], [])
    assert [(c.key, c.old, c.new is not None, c.reason) for c in ch] == [
        (k("10.0.0.0/8"), None, True, Reason.ONLY_PATH),
        (k("10.1.0.0/16"), None, True, Reason.ONLY_PATH),
    ]
    ch = rib.update("p2", V4, a2, [k("10.0.0.0/8")], [])
    assert (
        len(ch) == 1 and ch[0].new is not None and ch[0].new.peer == "p2" and ch[0].reason is Reason.AS_PATH
    )
    assert ch[0].old is not None and ch[0].old.peer == "p1"
    assert [p.peer for p in rib.paths(V4, k("10.0.0.0/8"))] == ["p2", "p1"]
    assert rib.reason(V4, k("10.0.0.0/8")) is Reason.AS_PATH
    assert rib.reason(V4, k("10.1.0.0/16")) is Reason.ONLY_PATH
    assert rib.reason(V4, k("10.2.0.0/16")) is None
    best = rib.best(V4, k("10.0.0.0/8"))
    assert best is not None and best.attrs == a2 and best.next_hop == "192.0.2.1" and best.local_pref == 100
    # losing path: no change
    assert rib.update("p1", V4, a1, [k("10.0.0.0/8")], []) == []


def test_implicit_withdraw_and_same_attrs_silent() -> None:
    rib = rib_with(peer(1))
    key = k("10.0.0.0/24")
    rib.update("p1", V4, attrs(65101, 1), [key], [])
    assert rib.update("p1", V4, attrs(65101, 1), [key], []) == []  # same set: same Path
    ch = rib.update("p1", V4, attrs(65101, 2), [key], [])
    assert len(ch) == 1 and ch[0].reason is Reason.ONLY_PATH
    assert ch[0].old is not None and ch[0].new is not None
    assert ch[0].old.attrs.as_path == ((AS_SEQUENCE, (65101, 1)),)
    assert ch[0].new.attrs.as_path == ((AS_SEQUENCE, (65101, 2)),)
    assert rib.peer_counts("p1", V4) == (1, 1)


def test_withdraw_absent_is_noop_and_withdraw_present() -> None:
    rib = rib_with(peer(1), peer(2))
    key = k("10.0.0.0/24")
    assert rib.update("p1", V4, None, [], [key, k("10.0.1.0/24")]) == []
    rib.update("p1", V4, attrs(65101), [key], [])
    assert rib.update("p2", V4, None, [], [key]) == []  # p2 never announced it
    ch = rib.update("p1", V4, None, [], [key])
    assert len(ch) == 1 and ch[0].new is None and ch[0].reason is None
    assert rib.best(V4, key) is None and rib.paths(V4, key) == []
    assert rib.counts()["families"]["ipv4"] == {"prefixes": 0, "paths": 0}


def test_peer_down_falls_back_and_counters() -> None:
    rib = rib_with(peer(1), peer(2), peer(3))
    keys = [k(f"10.{i}.0.0/16") for i in range(50)]
    rib.update("p1", V4, attrs(65101), keys, [])  # shortest: best everywhere
    rib.update("p2", V4, attrs(65102, 1), keys[:30], [])
    rib.update("p3", V4, attrs(65103, 1, 2), keys[:10], [])
    counts = rib.counts()
    assert counts["families"]["ipv4"] == {"prefixes": 50, "paths": 90}
    assert counts["peers"]["p1"]["ipv4"] == {"received": 50, "best": 50}
    assert counts["peers"]["p2"]["ipv4"] == {"received": 30, "best": 0}
    changes = rib.peer_down("p1")
    assert len(changes) == 50
    by_key = {c.key: c for c in changes}
    for i, key in enumerate(keys):
        c = by_key[key]
        if i < 30:
            assert c.new is not None and c.new.peer == "p2"
            assert c.reason is (Reason.AS_PATH if i < 10 else Reason.ONLY_PATH)
        else:
            assert c.new is None
    counts = rib.counts()
    assert counts["families"]["ipv4"] == {"prefixes": 30, "paths": 40}
    assert counts["peers"]["p1"]["ipv4"] == {"received": 0, "best": 0}
    assert counts["peers"]["p2"]["ipv4"] == {"received": 30, "best": 30}
    assert counts["peers"]["p3"]["ipv4"] == {"received": 10, "best": 0}
    assert rib.interned("p1") == 0
    assert rib.remove_peer("p3") == []  # p3 was never best
    assert rib.counts()["families"]["ipv4"] == {"prefixes": 30, "paths": 30}


def test_ebgp_local_pref_ignored_ibgp_used() -> None:
    ibgp = PeerInfo("i", LOCAL_AS, "192.0.2.9", LOCAL_AS, "10.0.0.9", local_pref=100)
    ebgp = peer(1, lp=150)
    rib = rib_with(ibgp, ebgp)
    key = k("10.0.0.0/24")
    rib.update("p1", V4, attrs(65101, lp=500), [key], [])  # received LP ignored: 150
    rib.update("i", V4, attrs(65200, 1, lp=200), [key], [])
    best = rib.best(V4, key)
    assert best is not None and best.peer == "i" and best.local_pref == 200
    assert rib.reason(V4, key) is Reason.LOCAL_PREF
    rib.update("i", V4, attrs(65200, 1), [key], [])  # no LP: peer default 100 < 150
    best = rib.best(V4, key)
    assert best is not None and best.peer == "p1" and best.local_pref == 150


def test_med_same_neighbor_as_only() -> None:
    # p1 and p2 both hear from neighbor AS 7 (route server style: same first AS), p3 from AS 8.
    rib = rib_with(peer(1, asn=7), peer(2, asn=7), peer(3, asn=8))
    key = k("10.0.0.0/24")
    rib.update("p1", V4, attrs(7, 1, med=50), [key], [])
    rib.update("p2", V4, attrs(7, 2, med=10), [key], [])
    best = rib.best(V4, key)
    assert best is not None and best.peer == "p2" and rib.reason(V4, key) is Reason.MED
    rib.update("p3", V4, attrs(8, 3, med=0), [key], [])  # other AS: MED not compared, rid decides
    best = rib.best(V4, key)
    assert best is not None and best.peer == "p2" and rib.reason(V4, key) is Reason.ROUTER_ID
    acm = rib_with(peer(1, asn=7), peer(2, asn=7), peer(3, asn=8), options=DecisionOptions(True))
    for name, a in (("p1", attrs(7, 1, med=50)), ("p2", attrs(7, 2, med=10)), ("p3", attrs(8, 3, med=0))):
        acm.update(name, V4, a, [key], [])
    best = acm.best(V4, key)
    assert best is not None and best.peer == "p3" and acm.reason(V4, key) is Reason.MED


def test_longest_match_and_families() -> None:
    rib = rib_with(peer(1))
    rib.update("p1", V4, attrs(65101), [k("10.0.0.0/8"), k("10.1.0.0/16"), k("0.0.0.0/0")], [])
    rib.update("p1", V6, attrs(65101, nh="2001:db8::1"), [k("2001:db8::/32")], [])
    assert rib.longest_match(V4, parse_address("10.1.2.3")[1]) == k("10.1.0.0/16")
    assert rib.longest_match(V4, parse_address("10.2.2.3")[1]) == k("10.0.0.0/8")
    assert rib.longest_match(V4, parse_address("11.0.0.1")[1]) == k("0.0.0.0/0")
    assert rib.longest_match(V6, parse_address("2001:db8::5")[1]) == k("2001:db8::/32")
    assert rib.longest_match(V6, parse_address("2001:db9::5")[1]) is None
    assert rib.counts()["families"]["ipv6"] == {"prefixes": 1, "paths": 1}


def test_iter_best_by_peer_iter_paths_adj_rib_in() -> None:
    rib = rib_with(peer(1), peer(2))
    a = [k(f"10.0.{i}.0/24") for i in range(6)]
    rib.update("p1", V4, attrs(65101), a[:4], [])
    rib.update("p2", V4, attrs(65102, 1), a[2:], [])
    assert {key for key, _ in rib.iter_best(V4, "p1")} == set(a[:4])
    assert {key for key, _ in rib.iter_best(V4, "p2")} == set(a[4:])
    assert {key for key, _ in rib.iter_best(V4)} == set(a)
    assert {key: len(ps) for key, ps in rib.iter_paths(V4)} == {key: (2 if key in a[2:4] else 1) for key in a}
    assert {key for key, p in rib.adj_rib_in("p2", V4)} == set(a[2:])
    assert all(p.peer == "p2" for _, p in rib.adj_rib_in("p2", V4))


def test_intern_shares_and_sweeps() -> None:
    rib = rib_with(peer(1))
    keys = [k(f"10.0.{i}.0/24") for i in range(10)]
    rib.update("p1", V4, attrs(65101, 1), keys, [])
    p0 = rib.best(V4, keys[0])
    assert all(rib.best(V4, key) is p0 for key in keys)
    assert rib.interned("p1") == 1
    for i in range(10):  # each prefix moves to its own set; the first set is unreferenced
        rib.update("p1", V4, attrs(65101, 2, i), [keys[i]], [])
    del p0
    gc.collect()
    assert rib.interned("p1") == 11
    assert rib.sweep() == 1
    assert rib.interned("p1") == 10
    held = rib.best(V4, keys[0])  # a caller's reference keeps an unreferenced path alive
    rib.update("p1", V4, None, [], [keys[0]])
    assert rib.sweep() == 0
    del held
    assert rib.sweep() == 1


def test_intern_cache_bounded_under_churn() -> None:
    rib = rib_with(peer(1))
    key = k("10.0.0.0/24")
    for i in range(20_000):  # every UPDATE a new set for the same prefix
        rib.update("p1", V4, attrs(65101, i), [key], [])
    assert rib.interned("p1") <= 2 * 4096


def test_router_id_change_redecides() -> None:
    rib = rib_with(peer(1, rid="10.0.0.1"), peer(2, rid="10.0.0.2"))
    key = k("10.0.0.0/24")
    rib.update("p1", V4, attrs(65101, 1), [key], [])
    rib.update("p2", V4, attrs(65102, 1), [key], [])
    best = rib.best(V4, key)
    assert best is not None and best.peer == "p1"
    changes = rib.peer_up("p1", "10.0.0.3")
    assert len(changes) == 1 and changes[0].new is not None and changes[0].new.peer == "p2"
    assert changes[0].reason is Reason.ROUTER_ID
    assert rib.peer_counts("p2", V4) == (1, 1) and rib.peer_counts("p1", V4) == (1, 0)


def test_attrs_roundtrip() -> None:
    a = Attributes(
        next_hop="2001:db8::1",
        origin=Origin.INCOMPLETE,
        as_path=((AS_SEQUENCE, (1, 2)), (1, (3, 4))),
        med=5,
        local_pref=7,
        communities=(1, 2),
        large_communities=((1, 2, 3),),
        atomic_aggregate=True,
        aggregator=(65000, "192.0.2.1"),
        other=((0xC0, 99, b"x"),),
    )
    assert decode_attrs(encode_attrs(a)) == a


# ---- differential test against a naive model ------------------------------------------------

PEERS = [
    peer(1, asn=7),
    peer(2, asn=7),
    peer(3, asn=8),
    PeerInfo("i", LOCAL_AS, "192.0.2.20", LOCAL_AS, "10.0.0.1"),
]
KEYS = [k(f"10.0.{i}.0/24") for i in range(4)] + [k("10.0.0.0/23")]
ATTRS = [
    attrs(7, 1, med=10),
    attrs(7, 2, 3, med=0),
    attrs(8, 1),
    attrs(8, 1, med=5, lp=300),
    attrs(7, 9, med=20),
    attrs(65001, 1, lp=150),
]

op_st: st.SearchStrategy[tuple[str, int, int, set[int], set[int]]] = st.one_of(
    st.tuples(st.just("update"), st.integers(0, 3), st.integers(0, 5), st.sets(st.integers(0, 4)),
              st.sets(st.integers(0, 4))),
    st.tuples(st.just("down"), st.integers(0, 3), st.just(0), st.just(frozenset()), st.just(frozenset())),
)  # fmt: skip


def model_best(
    model: dict[str, dict[int, Attributes]], key: int, options: DecisionOptions
) -> tuple[str, Reason]:
    cands = []
    for info in PEERS:
        a = model[info.name].get(key)
        if a is None:
            continue
        lp = info.local_pref if info.ebgp or a.local_pref is None else a.local_pref
        med = a.med
        cands.append(
            (
                info.name,
                PathFacts(lp, a.as_path_length, int(a.origin), med, a.neighbor_as or 0, info.ebgp,
                          int(info.router_id.split(".")[-1]) + (10 << 24), address_sort_key(info.address)),
            )
        )  # fmt: skip
    idx, reason = reference_select([f for _, f in cands], options)
    return cands[idx][0], reason


@settings(max_examples=200, deadline=None)
@given(st.lists(op_st, max_size=25), st.booleans())
def test_against_model(ops: list[tuple[str, int, int, set[int], set[int]]], acm: bool) -> None:
    options = DecisionOptions(always_compare_med=acm)
    rib = rib_with(*PEERS, options=options)
    model: dict[str, dict[int, Attributes]] = {p.name: {} for p in PEERS}
    best: dict[int, object] = {}
    for op, pi, ai, ann, wd in ops:
        name = PEERS[pi].name
        if op == "down":
            changes = rib.peer_down(name)
            model[name].clear()
        else:
            ann_keys = [KEYS[i] for i in sorted(ann - wd)]
            changes = rib.update(
                name, V4, ATTRS[ai] if ann_keys else None, ann_keys, [KEYS[i] for i in sorted(wd)]
            )
            for key in [KEYS[i] for i in wd]:
                model[name].pop(key, None)
            for key in ann_keys:
                model[name][key] = ATTRS[ai]
        for c in changes:
            assert c.old is not c.new
            assert best.get(c.key) is c.old
            best[c.key] = c.new
        for key in KEYS:
            present = any(key in m for m in model.values())
            b = rib.best(V4, key)
            assert best.get(key) is b
            if not present:
                assert b is None
                continue
            assert b is not None
            want_peer, want_reason = model_best(model, key, options)
            assert (b.peer, rib.reason(V4, key)) == (want_peer, want_reason)
            assert len(rib.paths(V4, key)) == sum(key in m for m in model.values())
    counts = rib.counts()
    for info in PEERS:
        received = len(model[info.name])
        bests = sum(1 for key in KEYS if (b := rib.best(V4, key)) is not None and b.peer == info.name)
        assert counts["peers"][info.name]["ipv4"] == {"received": received, "best": bests}


def test_generated_table() -> None:
    """A generated table shaped like a real one, two peers, then one goes down."""
    from benchmarks.rib import generate_batches, load, new_rib, peer_infos

    batches = generate_batches(20_000, seed=7)
    infos = peer_infos(2)
    rib = new_rib(infos)
    with bulk_load():
        load(rib, batches, infos, prebuilt=False)
    prefixes = len({key for b in batches for key in b[5]})
    assert rib.counts()["families"]["ipv4"] == {"prefixes": prefixes, "paths": 2 * prefixes}
    rnd = random.Random(1)
    for key in rnd.sample(sorted({key for b in batches for key in b[5]}), 200):
        ps = rib.paths(V4, key)
        assert len(ps) == 2 and rib.reason(V4, key) is not None
    changes = rib.peer_down("peer0")
    assert len(changes) > 0
    assert all(c.new is not None and c.new.peer == "peer1" for c in changes)
    assert rib.counts()["peers"]["peer1"]["ipv4"] == {"received": prefixes, "best": prefixes}


def test_a_path_holding_our_as_is_a_loop_applied_as_a_withdrawal() -> None:
    """RFC 4271 9.1.2, as BIRD does: the UPDATE's prefixes are withdrawn from that peer; the path is
    never interned; ``allow_own_as`` keeps it. Also through ``update_many`` (the daemon's runs)."""
    from dataclasses import replace

    from orchestrator.rib.attrs import AS_SET
    from orchestrator.rib.table import BestChange

    a, b, c = k("10.1.0.0/24"), k("10.2.0.0/24"), k("10.3.0.0/24")
    rib = rib_with(peer(1), replace(peer(2), allow_own_as=True))
    rib.update("p1", V4, attrs(65101, 7), [a, b], ())
    looped = attrs(65101, LOCAL_AS, 7)
    changes = rib.update("p1", V4, looped, [a, c], ())
    assert rib.best(V4, a) is None and rib.best(V4, c) is None and rib.best(V4, b) is not None
    assert [(ch.key, ch.new) for ch in changes] == [(a, None)]
    assert rib.peer_counts("p1", V4) == (1, 1)
    in_a_set = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (65101,)), (AS_SET, (9, LOCAL_AS))))
    run = [
        rib_update(V4, attrs(65101, 8), [c]),
        rib_update(V4, in_a_set, [b, c]),
        rib_update(V4, attrs(65101, 9), [a]),
    ]
    got: list[BestChange] = []
    rib.update_many("p1", run, got)
    assert [(ch.key, ch.new is None) for ch in got] == [(c, False), (b, True), (c, True), (a, False)]
    assert rib.peer_counts("p1", V4) == (1, 1)
    rib.update("p2", V4, looped, [c], ())  # allow_own_as
    best = rib.best(V4, c)
    assert best is not None and best.peer == "p2" and best.attrs.as_path == looped.as_path
    seen: list[tuple[object, ...]] = []
    rib.on_update = lambda *args: seen.append(args)  # (per-upstream FIB tables): the loop as withdrawals
    rib.update("p1", V4, looped, [a], [b])
    assert [(p, list(ann), list(wd)) for p, _, _, ann, wd in seen] == [("p1", [], [b, a])]
    assert rib.best(V4, a) is None and rib.best(V4, b) is None


def rib_update(family: Family, a: Attributes, announce: list[int]) -> object:
    from speakers.events import Update

    return Update("p1", family, a, announce, [])
