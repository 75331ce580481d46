"""``Rib.update``'s C announcement loop and intern (orchestrator/rib/_fastrib.c) against the Python alone.

Random announce/withdraw/peer-down sequences over several peers and both families are applied to
two RIBs, one with the accelerator and one without: after every step the best-path changes (in
order), and at the end the buckets (index bytes and destinations), best paths and counters are
identical; ``update_many`` is ``update`` per item, with and without C. The C intern gives the blob
and rank of ``Rib._intern`` for any attribute set (or raises what it raises), and its marshal
writer ``dumps2`` the bytes of ``marshal.dumps(v, 2)``. Then reference counts and memory over
repeated loads, and GC tracking of the iterator.
``test_accelerator_built`` fails when a C compiler and Python.h are present but the module was not
built."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.rib import table
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes, Origin
from orchestrator.rib.decide import DecisionOptions, Reason
from orchestrator.rib.prefix import Family, key_from_parts
from orchestrator.rib.table import DISCARD, LO_BITS, BestChange, Path, PeerInfo, Rib
from speakers.events import Update
from tests.leaks import growth

try:
    from orchestrator.rib import _fastrib
except ImportError:  # not built: the pure path alone
    _fastrib = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(_fastrib is None, reason="orchestrator.rib._fastrib not built")


def _c_announcer() -> Callable[..., Any]:
    assert _fastrib is not None
    _fastrib.setup(Path, BestChange, Reason.ONLY_PATH, table._LO, LO_BITS)  # as table does; also under PURE
    return _fastrib.announcer


@contextmanager
def announcer(fn: Callable[..., Any] | None) -> Iterator[None]:
    """The RIB with the C loop and the C intern (``fn`` given, which must be ``_c_announcer()``), or
    neither (None: the Python reference)."""
    saved = table._c_announce, table._c_run
    if fn is not None:
        _c_intern()
    table._c_announce = None if fn is None else _fastrib.announce
    table._c_run = None if fn is None else _fastrib.run
    try:
        yield
    finally:
        table._c_announce, table._c_run = saved


def _c_intern() -> Callable[..., Any]:
    assert _fastrib is not None
    _fastrib.setup_intern(Path, table._Peer, Attributes, table._SWEEP_MIN)  # as table does; also under PURE
    return _fastrib.intern


PEERS = [
    PeerInfo(
        f"p{i}",
        65000 if i == 3 else 65001 + (i % 2),  # p3 iBGP, the others eBGP from two neighbour ASes
        f"192.0.2.{i + 1}",
        65000,
        router_id=f"10.0.0.{i + 1}",
    )
    for i in range(4)
]
ATTRS = [
    Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, path),), med=med, local_pref=lp)
    for path, med, lp in [
        ((1,), None, None),
        ((1, 2), 5, None),
        ((3,), 1, 200),
        ((3, 4, 5), None, 50),
        ((1,), 9, None),
        ((7, 8), 0, 100),
        ((3, 65000, 9), None, None),  # our AS (the PEERS' local_as): an AS loop, applied as a withdrawal
    ]
]
NETS = (0x0A000000, 0x0A000100, 0x0A010000, 0xC6336400, 0x0A0007F0)
V4 = [key_from_parts(net, ln, Family.IPV4) for net in NETS for ln in (8, 16, 24, 28)]  # several per bucket
V6 = [key_from_parts((0x20010DB8 << 96) | (i << 80), ln, Family.IPV6) for i in range(3) for ln in (32, 48)]

_op = st.one_of(
    st.tuples(
        st.just("update"),
        st.integers(0, 3),
        st.sampled_from([Family.IPV4, Family.IPV4, Family.IPV6]),
        st.integers(0, len(ATTRS) - 1),
        st.lists(st.integers(0, 19), max_size=40),  # past the C loop's warm-up window of 16 keys
        st.lists(st.integers(0, 19), max_size=4),
    ),
    st.tuples(st.just("down"), st.integers(0, 3)),
)


def _norm_path(p: Path | None) -> tuple[str, bytes, int] | None:
    return None if p is None else (p.peer, p.blob, p.rank)


def _norm_changes(changes: list[BestChange]) -> list[tuple[Any, ...]]:
    return [(c.family, c.key, _norm_path(c.old), _norm_path(c.new), c.reason) for c in changes]


def _state(rib: Rib) -> Any:
    buckets = [
        {hi: (b[0], [tuple(map(_norm_path, table._entries(d))) for d in b[1:]]) for hi, b in fam.items()}
        for fam in rib._buckets
    ]
    return buckets, rib.counts(), sorted((k, _norm_path(p)) for k, p in rib.iter_best(Family.IPV4))


def _apply(rib: Rib, op: tuple[Any, ...], record: bool) -> list[tuple[Any, ...]]:
    if op[0] == "down":
        return _norm_changes(rib.peer_down(PEERS[op[1]].name))
    _, p, family, a, ann, wd = op
    keys = V4 if family is Family.IPV4 else V6
    changes: list[BestChange] = [] if record else DISCARD
    rib.update(
        PEERS[p].name,
        family,
        ATTRS[a],
        [keys[i % len(keys)] for i in ann],
        [keys[i % len(keys)] for i in wd],
        changes,
    )
    if record:
        assert all(type(c) is BestChange for c in changes)
    return _norm_changes(changes)


def _rib(acm: bool) -> Rib:
    rib = Rib(DecisionOptions(always_compare_med=acm))
    for info in PEERS:
        rib.add_peer(info)
    return rib


@needs_c
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=30), st.booleans(), st.booleans())
def test_same_rib_with_and_without_the_accelerator(
    ops: list[tuple[Any, ...]], record: bool, acm: bool
) -> None:
    fast = _c_announcer()
    ref, acc = _rib(acm), _rib(acm)
    for op in ops:
        with announcer(None):
            want = _apply(ref, op, record)
        with announcer(fast):
            got = _apply(acc, op, record)
        assert got == want, op
    assert _state(acc) == _state(ref)


@needs_c
def test_cases_it_handles_and_yields() -> None:
    fast = _c_announcer()
    rib = _rib(False)
    ps = rib._peers["p0"]
    path = rib._intern(ps, ATTRS[0])
    other = rib._intern(ps, ATTRS[1])
    buckets = rib._buckets[0]
    k1, k2, k3 = V4[2], V4[6], V4[0]  # 10.0.0.0/24 and 10.0.1.0/24 share a bucket
    assert k1 >> LO_BITS == k2 >> LO_BITS
    changes: list[BestChange] = []
    run = fast(buckets, path, ps, Family.IPV4, changes, [k1, k2, k1, k3, 1 << 200])
    assert list(run) == [1 << 200]  # wider than 64 bits: handed back
    assert run.received == 3
    assert [(c.key, c.old, c.new, c.reason) for c in changes] == [
        (k, None, path, Reason.ONLY_PATH) for k in (k1, k2, k3)
    ]
    assert buckets[k1 >> LO_BITS] == [table._LO[k1 & 0x7FF] + table._LO[k2 & 0x7FF], path, path]
    assert buckets[k3 >> LO_BITS][0] is table._LO[k3 & 0x7FF]  # the shared entry
    changes.clear()
    run = fast(buckets, other, ps, Family.IPV4, changes, (k2,))  # our own single path: replaced
    assert list(run) == [] and run.received == 0
    assert changes == [BestChange(Family.IPV4, k2, path, other, Reason.ONLY_PATH)]
    assert _fastrib is not None
    run = _fastrib.announce(rib, ps, ATTRS[0], buckets, Family.IPV4, changes, [k1, 7 << 200])
    assert run.path is path and list(run) == [7 << 200]  # intern + announcer in one call
    q = rib._intern(rib._peers["p1"], ATTRS[2])
    assert list(fast(buckets, q, rib._peers["p1"], Family.IPV4, None, [k1, k2, 5])) == [
        k1,
        k2,
    ]  # another peer's


def _no_growth(load: Callable[[], None]) -> None:
    """Memory traced after one ``load`` does not grow over five more."""
    grown = growth(load, 5)
    assert grown < 64 * 1024, f"{grown} bytes more after 5 loads"


@needs_c
def test_no_leaks_and_gc() -> None:
    fast = _c_announcer()
    keys = [key_from_parts((10 << 24) | (i << 8), 24, Family.IPV4) for i in range(5000)]

    def load() -> None:
        rib = _rib(False)
        changes: list[BestChange] = []
        with announcer(fast):
            for i in range(0, len(keys), 7):
                rib.update("p0", Family.IPV4, ATTRS[i % 3], keys[i : i + 7], [], changes)
            rib.update("p0", Family.IPV4, ATTRS[4], keys[::2], [], changes)  # own single paths replaced
            rib.update("p1", Family.IPV4, ATTRS[2], keys[::3], [], changes)  # decisions: the Python body
            ps = rib._peers["p2"]
            run = fast(rib._buckets[0], rib._intern(ps, ATTRS[3]), ps, Family.IPV4, None, keys[5:50])
            next(run)  # dropped half-way, its warmed keys still held
            del run
        assert rib.counts()["families"]["ipv4"]["prefixes"] == len(keys)
        rib.peer_down("p0")

    load()
    gc.collect()
    refs = sys.getrefcount(Reason.ONLY_PATH), sys.getrefcount(Family.IPV4), sys.getrefcount(table._LO[0])
    _no_growth(load)
    assert (
        sys.getrefcount(Reason.ONLY_PATH),
        sys.getrefcount(Family.IPV4),
        sys.getrefcount(table._LO[0]),
    ) == refs
    rib = _rib(False)
    ps = rib._peers["p0"]
    run = fast(rib._buckets[0], rib._intern(ps, ATTRS[0]), ps, Family.IPV4, [], keys)
    assert gc.is_tracked(run) and rib._buckets[0] in gc.get_referents(run)
    gc.collect()
    assert list(run) == [] and run.received == len(keys)


_updates = st.lists(
    st.tuples(
        st.sampled_from([Family.IPV4, Family.IPV4, Family.IPV6]),
        st.integers(0, len(ATTRS) - 1),
        st.lists(st.integers(0, 19), max_size=10),
        st.lists(st.integers(0, 19), max_size=4),
    ),
    max_size=12,
)


def _events(runs: list[tuple[int, list[tuple[Any, ...]]]], slots: bool) -> list[tuple[str, list[Any]]]:
    """Each run as ``speakers.events.Update`` (slots: what the daemon hands the RIB, read by the C
    through the slot offsets) or as ``Rib.update``'s ``_One`` (a named tuple: getattr)."""
    out = []
    for p, items in runs:
        evs: list[Any] = []
        for family, a, ann, wd in items:
            keys = V4 if family is Family.IPV4 else V6
            fields = (family, ATTRS[a], [keys[i % len(keys)] for i in ann], [keys[i % len(keys)] for i in wd])
            evs.append(Update(PEERS[p].name, *fields) if slots else table._One(*fields))
        out.append((PEERS[p].name, evs))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, 3), _updates), max_size=8),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_update_many_is_update_in_order(
    runs: list[tuple[int, list[tuple[Any, ...]]]], record: bool, acm: bool, c: bool, listen: bool, slots: bool
) -> None:
    """With the C accelerator and no ``on_update``, ``update_many`` goes through a run in C
    (``_fastrib.run``) and hands UPDATEs with withdrawals, and keys needing a decision, to Python."""
    fast = _c_announcer() if c and _fastrib is not None else None
    ref, acc = _rib(acm), _rib(acm)
    seen: list[list[Any]] = [[], []]
    if listen:
        ref.on_update = lambda *args: seen[0].append(args)
        acc.on_update = lambda *args: seen[1].append(args)
    for peer, evs in _events(runs, slots):
        want: list[BestChange] = [] if record else DISCARD
        got: list[BestChange] = [] if record else DISCARD
        with announcer(None):
            for e in evs:
                ref.update(peer, e.family, e.attrs, e.announce, e.withdraw, want)
        with announcer(fast):
            assert acc.update_many(peer, evs, got) is got
        assert _norm_changes(got) == _norm_changes(want)
    assert seen[1] == seen[0]
    assert _state(acc) == _state(ref)


def test_update_many_raises_as_update() -> None:
    rib = _rib(False)
    good = table._One(Family.IPV4, ATTRS[0], [V4[0]], [])
    bad = table._One(Family.IPV4, None, [V4[1]], [])
    with pytest.raises(ValueError, match="attributes"):
        rib.update_many("p0", [good, bad, good])
    assert rib.peer_counts("p0", Family.IPV4) == (1, 1)  # the items before it are applied
    with pytest.raises(KeyError):
        rib.update_many("nobody", [good])
    # a bad key: raised by the Python loop body the C run hands it to, after the good ones before it
    worse = table._One(Family.IPV4, ATTRS[1], [V4[2], V4[3], "ten", V4[6]], [])
    with pytest.raises(TypeError):
        rib.update_many("p0", [worse, good])
    assert rib.peer_counts("p0", Family.IPV4) == (3, 3)
    assert rib.best(Family.IPV4, V4[3]) is not None and rib.best(Family.IPV4, V4[6]) is None


# --- the C intern and its marshal writer ---------------------------------------------------------

_int = st.one_of(st.integers(-(2**70), 2**70), st.integers(0, 2**32), st.integers(-5, 300))
_marshalable = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        _int,
        st.binary(max_size=8),
        st.text(max_size=6),
        st.floats(allow_nan=False),
        st.sampled_from([Reason.ONLY_PATH, ..., 1j]),
    ),
    lambda inner: st.one_of(
        st.tuples(inner, inner),
        st.lists(inner, max_size=3).map(tuple),
        st.lists(inner, max_size=2),
        st.frozensets(st.integers(), max_size=2),
    ),
    max_leaves=12,
)


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # the same exception type is the contract
        return type(exc)


@needs_c
@settings(max_examples=500, deadline=None)
@given(_marshalable)
def test_dumps2_is_marshal_version_2(value: Any) -> None:
    import marshal

    assert _fastrib is not None
    assert _outcome(lambda: _fastrib.dumps2(value)) == _outcome(lambda: marshal.dumps(value, 2))


_segment = st.tuples(st.sampled_from([1, 2, 2, 2, 3, 4, 9]), st.lists(_int, max_size=4).map(tuple))
_odd = st.sampled_from([None, 1.5, "x", Reason.ONLY_PATH, True])
_attrs = st.builds(
    Attributes.fast,
    st.one_of(st.just("192.0.2.1"), st.text(max_size=4)),
    st.one_of(st.sampled_from(list(Origin)), st.integers(-3, 5), _odd),
    st.one_of(st.lists(_segment, max_size=3).map(tuple), st.just(((AS_SEQUENCE, (65001, 2)),)), _odd),
    st.one_of(st.none(), _int, _odd),
    st.one_of(st.none(), _int, _odd),
    st.lists(st.integers(0, 2**32 - 1), max_size=3).map(tuple),
    st.lists(st.tuples(_int, _int, _int), max_size=2).map(tuple),
    st.booleans(),
    st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.just("10.0.0.1"))),
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=4)), max_size=2).map(
        tuple
    ),
)


@needs_c
@settings(max_examples=500, deadline=None)
@given(st.lists(_attrs, min_size=1, max_size=6), st.sampled_from(PEERS), st.booleans())
def test_c_intern_is_rib_intern(sets: list[Attributes], info: PeerInfo, worst: bool) -> None:
    intern = _c_intern()
    ref, acc = Rib(DecisionOptions(missing_med_worst=worst)), Rib(DecisionOptions(missing_med_worst=worst))
    for rib in (ref, acc):
        rib.add_peer(info)
    rp, ap = ref._peers[info.name], acc._peers[info.name]
    for attrs in sets + sets:  # the second time: cache hits
        want = _outcome(partial(ref._intern, rp, attrs))
        got = _outcome(partial(intern, acc, ap, attrs))
        if isinstance(want, Path):
            assert isinstance(got, Path) and got._peer is ap
            assert (got.blob, got.rank) == (want.blob, want.rank)
            assert got is acc._peers[info.name].cache[got.blob]
        else:
            assert got == want
    assert list(acc._peers[info.name].cache) == list(ref._peers[info.name].cache)


@needs_c
def test_c_intern_sweeps_and_does_not_leak() -> None:
    intern = _c_intern()
    sets = [Attributes.fast("192.0.2.1", Origin.IGP, ((AS_SEQUENCE, (65001, i)),), None, None, (), (),
                            False, None) for i in range(6000)]  # fmt: skip

    def load() -> None:
        rib = _rib(False)
        ps = rib._peers["p0"]
        for a in sets:
            intern(rib, ps, a)  # nothing holds the paths: the sweep at 4,096 drops them
        assert len(ps.cache) < 4096 and ps.sweep_at == table._SWEEP_MIN

    load()
    gc.collect()
    refs = [sys.getrefcount(x) for x in (sets[0], sets[0].as_path, Origin.IGP)]
    _no_growth(load)
    assert [sys.getrefcount(x) for x in (sets[0], sets[0].as_path, Origin.IGP)] == refs
    rib = _rib(False)
    path = intern(rib, rib._peers["p0"], sets[0])
    assert gc.is_tracked(path) and rib._peers["p0"] in gc.get_referents(path)
    # the same sweeps as Rib._intern's when some paths are held (by a table entry, by a caller)
    ref, acc = _rib(False), _rib(False)
    held: list[Path] = []
    for i, a in enumerate(sets + sets[::-1] + sets):
        want = ref._intern(ref._peers["p0"], a)
        got = intern(acc, acc._peers["p0"], a)
        if i % 3 == 0:
            held += [want, got]
        if i % 97 == 0 or ref._peers["p0"].sweep_at != acc._peers["p0"].sweep_at:
            assert list(acc._peers["p0"].cache) == list(ref._peers["p0"].cache)
            assert acc._peers["p0"].sweep_at == ref._peers["p0"].sweep_at
    assert list(acc._peers["p0"].cache) == list(ref._peers["p0"].cache)
