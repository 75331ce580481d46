"""The C per-prefix loop (``policies/_match.c``) against the generated Python loop and the references.

Every chain runs twice, with the C loop and with ``accel.MODULE`` patched away (what
``PEERCTL_PURE=1`` does), and both must give the same accepted groups and rejected ``(key, rule)``
lists, in the same order, as each other and as ``Policy.evaluate`` / ``naive_matches`` /
``naive_validate``: prefix lists with ge/le, length bounds, RPKI states, negations, /0 and /32
routes, odd keys (length byte only, the largest splittable key), odd origins (AS0, AS_SET, > 32
bits), empty tables, IPv6 (which stays on the Python loop). Then: bad tables are refused at
construction, inputs the C loop does not take go to the Python loop untouched, and a long loop of
calls leaks no memory and no references.
"""

from __future__ import annotations

import gc
import importlib
import sys
from array import array
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import ModuleType
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, Attributes
from orchestrator.rib.prefix import Family, key_from_parts
from policies import accel
from policies.model import Condition, Direction, ImportChain, Not, Policy, Route, Statement, Verdict
from policies.prefixset import PrefixEntry, PrefixList, naive_matches
from policies.rpki import Validity, Vrp, VrpTable, naive_validate
from policies.rules import InPrefixList, LengthOutside, NotInPrefixList, RpkiIs
from tests.leaks import growth
from tests.policies.test_fast_path import CTX, condition, prefix4
from tests.policies.test_matchers import entries, prefixes


def _import_match() -> ModuleType | None:
    try:
        return importlib.import_module("policies._match")
    except ImportError:
        return None


MATCH = _import_match()  # whatever PEERCTL_PURE says: the built module, if any
needs_c = pytest.mark.skipif(MATCH is None, reason="policies._match is not built: only the pure loop runs")


@contextmanager
def module(mod: ModuleType | None) -> Iterator[None]:
    with patch.object(accel, "MODULE", mod):
        yield


Outcome = tuple[list[tuple[Attributes, list[int]]], list[tuple[int, str]]]


def run(policy: Policy, mod: ModuleType | None, family: Family, updates: list[tuple[Attributes, Any]]
        ) -> list[Outcome]:
    """Each UPDATE through a fresh chain built under ``mod`` (twice: the second from the cache)."""
    with module(mod):
        chain = ImportChain(policy)
        out = []
        for attrs, keys in updates * 2:
            res = chain.evaluate_update(CTX, family, attrs, keys)
            out.append((res.accepted, res.rejected))
        return out


def check_reference(policy: Policy, family: Family, attrs: Attributes, keys: list[int],
                    outcome: Outcome) -> None:
    accepted, rejected = outcome
    got: dict[int, tuple[Attributes | None, str]] = {k: (None, rule) for k, rule in rejected}
    for out, ks in accepted:
        got.update((k, (out, "")) for k in ks)
    assert sorted(got) == sorted(set(keys))
    for k in keys:
        d = policy.evaluate(Route(family, k, attrs), CTX)
        if d.verdict is Verdict.ACCEPT:
            assert got[k][0] == d.route.attrs
        else:
            assert got[k] == (None, d.rule)


ODD_KEYS = [0, 1, 8, 32, 255, (1 << 40) - 1, key_from_parts(0xFFFFFFFF, 32, Family.IPV4),
            key_from_parts(0, 1, Family.IPV4), key_from_parts(0x80000000, 1, Family.IPV4)]
ORIGINS = [(), ((AS_SEQUENCE, (13335,)),), ((AS_SEQUENCE, (3356, 0)),), ((AS_SET, (13335, 174)),),
           ((AS_SEQUENCE, (4294967295,)),), ((AS_SEQUENCE, (1 << 33,)),), ((AS_SEQUENCE, (3356, 64512)),)]


@st.composite
def native_policy(draw: st.DrawFn) -> Policy:
    sts = [Statement(f"r{i}", (draw(condition(native=True)),), (),
                     draw(st.sampled_from([Verdict.ACCEPT, Verdict.REJECT, Verdict.REJECT])))
           for i in range(draw(st.integers(0, 5)))]
    if draw(st.booleans()):
        sts.append(Statement("accept", (), (), Verdict.ACCEPT))
    return Policy("p", Direction.IMPORT, draw(st.sampled_from([Verdict.ACCEPT, Verdict.REJECT])), tuple(sts))


@st.composite
def native_update(draw: st.DrawFn) -> tuple[Attributes, list[int]]:
    attrs = Attributes(next_hop="192.0.2.1", as_path=draw(st.sampled_from(ORIGINS)))
    keys = [draw(st.sampled_from(ODD_KEYS)) if draw(st.integers(0, 5)) == 0 else prefix4(draw)
            for _ in range(draw(st.integers(0, 70)))]
    return attrs, keys


@needs_c
@settings(max_examples=120, deadline=None)
@given(native_policy(), st.lists(native_update(), min_size=1, max_size=4), st.booleans())
def test_c_loop_equals_python_loop_and_reference(policy: Policy, updates: list[tuple[Attributes, list[int]]],
                                                 as_tuple: bool) -> None:
    if as_tuple:
        updates = [(a, tuple(ks)) for a, ks in updates]  # type: ignore[misc]
    fast = run(policy, MATCH, Family.IPV4, updates)
    pure = run(policy, None, Family.IPV4, updates)
    assert fast == pure
    for (attrs, keys), outcome in zip(updates * 2, fast, strict=True):
        check_reference(policy, Family.IPV4, attrs, list(keys), outcome)


def test_builtin_shapes_run_in_c() -> None:
    """The chains above really take the C loop (else the differential test proves nothing)."""
    if accel.MODULE is None:
        pytest.skip("pure loop (PEERCTL_PURE=1 or not built)")
    pl = PrefixList([PrefixEntry(Family.IPV4, key_from_parts(0x0A000000, 8, Family.IPV4), 8, 24)])
    vrps = VrpTable([Vrp(Family.IPV4, key_from_parts(0x0A000000, 8, Family.IPV4), 16, 13335)])
    policy = Policy("p", Direction.IMPORT, Verdict.ACCEPT, (
        Statement("bogon", (InPrefixList(pl),), (), Verdict.REJECT),
        Statement("len", (LengthOutside(),), (), Verdict.REJECT),
        Statement("rpki", (RpkiIs(vrps, Validity.INVALID),), (), Verdict.REJECT),
        Statement("irr", (Not(InPrefixList(pl)),), (), Verdict.REJECT)))
    chain = ImportChain(policy)
    prog = chain.program(CTX, Family.IPV4, Attributes(as_path=((AS_SEQUENCE, (13335,)),)))
    assert prog is not None and isinstance(prog[0], accel.MODULE.Loop)
    prog6 = chain.program(CTX, Family.IPV6, Attributes(as_path=((AS_SEQUENCE, (13335,)),)))
    assert prog6 is not None and not isinstance(prog6[0], accel.MODULE.Loop)  # IPv6: Python loop


@pytest.mark.parametrize("family", list(Family))
@pytest.mark.parametrize("bucket_min", [0, 10_000])
def test_list_and_rpki_steps_equal_naive(family: Family, bucket_min: int) -> None:
    """Each C step alone against the scan-everything references (IPv6: the Python loop, same test)."""
    width = family.max_length

    @settings(max_examples=60, deadline=None)
    @given(st.lists(entries(family), max_size=20),
           st.lists(st.tuples(prefixes(family), st.integers(0, 8), st.sampled_from([0, 1, 13335])),
                    max_size=20),
           st.lists(prefixes(family), min_size=1, max_size=40),
           st.sampled_from([None, 0, 1, 13335, 1 << 33]))
    def check(es: list[PrefixEntry], raw_vrps: list[tuple[tuple[int, int], int, int]],
              routes: list[tuple[int, int]], origin: int | None) -> None:
        vrps = [Vrp(family, key, min(width, length + extra), asn) for (key, length), extra, asn in raw_vrps]
        pl, table = PrefixList(es, bucket_min), VrpTable(vrps, bucket_min)
        attrs = Attributes(as_path=() if origin is None else ((AS_SEQUENCE, (origin,)),))
        keys = [key for key, _ in routes]
        conds: list[tuple[Condition, Any]] = [
            (InPrefixList(pl), lambda k: naive_matches(es, family, k)),
            (NotInPrefixList(pl), lambda k: not naive_matches(es, family, k)),
        ]
        conds += [(RpkiIs(table, state), lambda k, s=state: naive_validate(vrps, family, k, origin) is s)
                  for state in Validity]
        for cond, ref in conds:
            policy = Policy("p", Direction.IMPORT, Verdict.ACCEPT,
                            (Statement("hit", (cond,), (), Verdict.REJECT),))
            for mod in {MATCH, None}:
                [(_, rejected), _] = run(policy, mod, family, [(attrs, keys)])
                assert [k for k, _ in rejected] == [k for k in keys if ref(k)]

    check()


@needs_c
def test_empty_tables() -> None:
    policy = Policy("p", Direction.IMPORT, Verdict.ACCEPT, (
        Statement("in", (InPrefixList(PrefixList([])),), (), Verdict.REJECT),
        Statement("rpki", (RpkiIs(VrpTable([]), Validity.NOT_FOUND),), (), Verdict.REJECT)))
    updates = [(Attributes(), [0, *ODD_KEYS]), (Attributes(), [])]
    fast = run(policy, MATCH, Family.IPV4, updates)
    assert fast == run(policy, None, Family.IPV4, updates)
    assert fast[0] == ([], [(k, "rpki") for k in [0, *ODD_KEYS]])


# ---------------------------------------------------------------------------------------------------
# The C loop's own contract: bad tables refused, odd inputs handed to the Python loop, no leaks.


def _fallback_calls() -> tuple[list[tuple[Any, ...]], Any]:
    calls: list[tuple[Any, ...]] = []

    def fallback(*args: Any) -> None:
        calls.append(args)

    return calls, fallback


def _q(*v: int) -> array[int]:
    return array("Q", v)


def _i(*v: int) -> array[int]:
    return array("I", v)


@needs_c
@pytest.mark.parametrize("make", [
    lambda: (1, False, False, -1, "x", _i(0), None, _q(1)),  # starts of the wrong type
    lambda: (1, False, False, -1, "x", _q(5), None, _q(1)),  # starts not from 0
    lambda: (1, False, False, -1, "x", _q(0), None, _q(1, 2)),  # one mask per range
    lambda: (1, False, False, -1, "x", _q(0), _i(1, 1), _q(1)),  # bucket table of the wrong size
    lambda: (1, False, False, -1, "x", _q(0), _i(*[0] * 65537), _q(1)),  # bucket bound 0
    lambda: (1, False, False, -1, "x", _q(0), _i(*[1] * 65536, 2), _q(1)),  # bound past the starts
    lambda: (1, False, False, -1, "x", _q(0), _i(*[1] * 65536, 0), _q(1)),  # decreasing
    lambda: (1, False, False, -1, "x", [0], None, _q(1)),  # not a buffer
    lambda: (3, False, False, -1, "x", _q(0), None, _i(0, 2), _q(1), 1),  # offset past cands
    lambda: (3, False, False, -1, "x", _q(0), None, _i(0), _q(), 1),  # one offset too few
    lambda: (3, False, False, -1, "x", _q(0), None, _i(1, 0), _q(1), 1),  # decreasing
    lambda: (3, False, False, -1, "x", _q(0), None, _i(0, 0), _q(), 3),  # unknown state
    lambda: (9, False, False, -1, "x"),  # unknown op
    lambda: (0, False, False, -1, "x", 1),  # wrong arity
    lambda: (0, False, True, -1, "x"),  # accepting without an output
    lambda: (0, False, False, -1, b"x"),  # rule name not a str
    lambda: (2, False, False, -1, "x", 1 << 70, 3),  # bound out of range
    lambda: "not a tuple",
])
def test_bad_tables_are_refused(make: Any) -> None:
    assert MATCH is not None
    step = make()
    _, fallback = _fallback_calls()
    with pytest.raises((ValueError, TypeError, OverflowError)):
        MATCH.Loop(fallback, [step])
    assert accel.native_loop(32, [step], fallback) is fallback
    for arg in step[5:] if isinstance(step, tuple) else ():
        if isinstance(arg, array):
            arg.append(0)  # the refused constructor released every buffer it took
    with pytest.raises(ValueError):
        MATCH.Loop(fallback, [])
    with pytest.raises(TypeError):
        MATCH.Loop("not callable", [(0, False, True, 0, "x")])


class Key(int):
    pass


@needs_c
@pytest.mark.parametrize(("keys", "origin", "groups", "rejected"), [
    (iter([1, 2]), None, [[]], []),  # not a list or tuple: the Python loop iterates it
    (range(3), None, [[]], []),
    ([1, True], None, [[]], []),  # a bool is not an exact int
    ([1, Key(2)], None, [[]], []),
    ([1, -1], None, [[]], []),
    ([1, 1 << 40], None, [[]], []),  # past what split_key's tables cover: the Python loop raises
    ([1], 3.0, [[]], []),  # an origin that is not an int
    ([1], None, [], []),  # too few groups
    ([1], None, [()], []),
    ([1], None, ([],), []),
    ([1], None, [[]], ()),
])
def test_odd_inputs_go_to_the_python_loop(keys: Any, origin: Any, groups: Any, rejected: Any) -> None:
    assert MATCH is not None
    calls, fallback = _fallback_calls()
    loop = MATCH.Loop(fallback, [(0, False, True, 0, "a")])
    loop(keys, origin, (), groups, rejected)
    assert calls == [(keys, origin, (), groups, rejected)]
    assert groups in ([[]], [], [()], ([],)) and rejected in ([], ())  # untouched
    with pytest.raises(TypeError):
        loop(keys, origin, (), groups)
    with pytest.raises(TypeError):
        loop(keys, origin, (), groups, rejected=rejected)


def test_python_loop_raises_what_it_raised() -> None:
    """A key past 40 bits fails in both loops alike (the C one hands it over)."""
    policy = Policy("p", Direction.IMPORT, Verdict.ACCEPT,
                    (Statement("len", (LengthOutside(),), (), Verdict.REJECT),))
    for mod in {MATCH, None}:
        with pytest.raises(IndexError):
            run(policy, mod, Family.IPV4, [(Attributes(), [1 << 40])])


@needs_c
def test_tables_cannot_change_under_a_loop() -> None:
    assert MATCH is not None
    starts, masks = array("Q", [0]), array("Q", [1])
    loop = MATCH.Loop(lambda *a: None, [(1, False, False, -1, "x", starts, None, masks),
                                        (0, False, True, 0, "a")])
    with pytest.raises(BufferError):
        starts.append(1)
    del loop
    gc.collect()
    starts.append(1)


@needs_c
def test_no_leaks() -> None:
    """Many calls through every path (C, fallback, error) leave memory and reference counts as they were."""
    assert MATCH is not None
    ten = key_from_parts(0x0A000000, 8, Family.IPV4)
    pl = PrefixList([PrefixEntry(Family.IPV4, ten, 8, 24)], bucket_min=0)
    vrps = VrpTable([Vrp(Family.IPV4, ten, 16, 13335)], bucket_min=0)
    policy = Policy("p", Direction.IMPORT, Verdict.ACCEPT, (
        Statement("rpki", (RpkiIs(vrps, Validity.INVALID),), (), Verdict.REJECT),
        Statement("irr", (Not(InPrefixList(pl)),), (), Verdict.REJECT)))
    with module(MATCH):
        chain = ImportChain(policy)
        prog = chain.program(CTX, Family.IPV4, Attributes(as_path=((AS_SEQUENCE, (13335,)),)))
    assert prog is not None
    loop = prog[0]
    assert isinstance(loop, MATCH.Loop)
    keys = [key_from_parts((10 << 24) | (i << 8), 24, Family.IPV4) for i in range(200)]
    keys += [key_from_parts(11 << 24, 16, Family.IPV4)] * 50  # rejected by irr
    big = list(keys) * 2  # > 64 keys: the heap path
    probe, rule = keys[0], "irr"

    def once() -> None:
        for ks, origin in ((keys[:10], 13335), (big, 1), (tuple(big), None), ([*keys[:5], True], 13335)):
            groups: list[list[int]] = [[]]
            rejected: list[tuple[int, str]] = []
            loop(ks, origin, (), groups, rejected)
        with suppress(IndexError):
            loop([1 << 40], None, (), [[]], [])

    for _ in range(50):
        once()
    gc.collect()
    refs = sys.getrefcount(probe), sys.getrefcount(rule)
    grown = growth(once, 2000)
    assert grown < 64 * 1024, grown
    assert (sys.getrefcount(probe), sys.getrefcount(rule)) == refs


# ---------------------------------------------------------------------------------------------------
# Copier: the import action's new attribute set built by slot copies.

REPLACED = ("local_pref", "communities", "large_communities", "raw4")


@st.composite
def attributes(draw: st.DrawFn) -> Attributes:
    a = Attributes(next_hop=draw(st.sampled_from(["", "192.0.2.1", "2001:db8::1"])),
                   as_path=draw(st.sampled_from(ORIGINS)), med=draw(st.sampled_from([None, 0, 7])),
                   local_pref=draw(st.sampled_from([None, 100])),
                   communities=tuple(draw(st.lists(st.integers(0, 1 << 32), max_size=3))),
                   atomic_aggregate=draw(st.booleans()),
                   aggregator=draw(st.sampled_from([None, (1, "1.2.3.4")])),
                   other=draw(st.sampled_from([(), ((0xC0, 99, b"x"),)])))
    if draw(st.booleans()):
        vars(Attributes)["raw4"].__set__(a, b"\x40\x01\x01\x00")  # as the native codec fills it
    return a


@needs_c
@settings(max_examples=200, deadline=None)
@given(attributes(), st.sampled_from([None, 50, 200]), st.lists(st.integers(0, 9), max_size=3).map(tuple),
       st.sampled_from([(), ((1, 2, 3),)]))
def test_copier_equals_attributes_fast(a: Attributes, local_pref: int | None, comms: tuple[int, ...],
                                       large: tuple[tuple[int, int, int], ...]) -> None:
    assert MATCH is not None
    from policies.rules import _with_import_py
    copy = MATCH.Copier(Attributes, tuple(vars(Attributes)["__slots__"]), REPLACED, _with_import_py)
    got, want = copy(a, local_pref, comms, large, b""), _with_import_py(a, local_pref, comms, large, b"")
    assert type(got) is Attributes and got == want and hash(got) == hash(want)
    assert [getattr(got, s) for s in vars(Attributes)["__slots__"]] == \
        [getattr(want, s) for s in vars(Attributes)["__slots__"]]  # raw4 too (not part of ==)
    assert got.raw4 == b"" and got.local_pref is local_pref and got.communities is comms


class Plain:
    pass


@needs_c
def test_copier_refuses_and_falls_back() -> None:
    assert MATCH is not None
    slots = tuple(vars(Attributes)["__slots__"])
    from policies.rules import _with_import_py
    for args in ((Plain, ("x",), (), _with_import_py), (Attributes, (*slots, "nope"), (), _with_import_py),
                 (Attributes, slots, ("nope",), _with_import_py), (Attributes, slots, REPLACED, "no"),
                 (Attributes, ("__init__",), (), _with_import_py)):
        with pytest.raises((ValueError, TypeError)):
            MATCH.Copier(*args)
    copy = MATCH.Copier(Attributes, slots, REPLACED, _with_import_py)
    with pytest.raises(AttributeError):  # not an Attributes: the Python function's own error
        copy(Plain(), 1, (), (), b"")
    unset = object.__new__(Attributes)  # every slot unset
    with pytest.raises(AttributeError):
        copy(unset, 1, (), (), b"")
    with pytest.raises(TypeError):
        copy(Attributes(), 1, (), ())
    a, comms = Attributes(as_path=((AS_SEQUENCE, (1, 2)),)), (1, 2)
    for _ in range(100):
        copy(a, 1, comms, (), b"")
    gc.collect()
    refs = sys.getrefcount(a.as_path), sys.getrefcount(comms), sys.getrefcount(a)
    grown = growth(lambda: copy(a, 1, comms, (), b""), 20_000)
    assert grown < 16 * 1024, grown
    assert (sys.getrefcount(a.as_path), sys.getrefcount(comms), sys.getrefcount(a)) == refs


# ---------------------------------------------------------------------------------------------------
# Gates: a peer's attribute gates in one call, against each gate's bound Python test.

SEGMENTS = [AS_SEQUENCE, AS_SEQUENCE, AS_SET, 3, 4, 9]
ODD_ASNS = [0, 3356, 174, 65001, 64512, 23456, 4200000000, 1 << 40, -1]


@st.composite
def odd_path(draw: st.DrawFn) -> Any:
    segs = draw(st.lists(st.tuples(st.sampled_from(SEGMENTS),
                                   st.lists(st.sampled_from(ODD_ASNS), max_size=4).map(tuple)), max_size=3))
    shape = draw(st.integers(0, 9))
    if shape == 0 and segs:  # shapes the C gates leave to Python
        return (*segs[:-1], list(segs[-1]))
    if shape == 1:
        return (*segs, (AS_SEQUENCE, (1 << 64,)))
    if shape == 2:
        return (*segs, (AS_SEQUENCE, (3356.0,)))
    if shape == 3:
        return (*segs, (AS_SEQUENCE, tuple(range(300))))
    return tuple(segs)


@needs_c
@settings(max_examples=300, deadline=None)
@given(odd_path(), st.permutations(range(6)))
def test_gates_equal_bound_tests(path: Any, order: list[int]) -> None:
    assert MATCH is not None
    from policies.rules import FirstAsNotPeer, PathHasAsnIn, PathHasLocalAs, PathHasTransitAs, PathLongerThan
    from tests.policies.test_fast_path import CONTEXTS, LOCAL
    conds = [PathHasAsnIn([(64512, 65534), (0, 0), (4200000000, 4294967294)]), PathHasLocalAs(),
             PathLongerThan(2), FirstAsNotPeer(), PathHasTransitAs(), PathHasAsnIn([])]
    attrs = Attributes(as_path=path)
    for ctx in [*CONTEXTS, CTX.for_kind("x", CTX.kind, 174, LOCAL, "")]:
        tests = [conds[i].bind(ctx) for i in order]
        natives = [getattr(t, "native", None) for t in tests]
        assert all(isinstance(n, tuple) for n in natives)
        gates = MATCH.Gates(natives)
        try:
            want = next((i for i, t in enumerate(tests) if t is not None and t(attrs)), -1)
        except (TypeError, ValueError):
            want = None  # the Python tests fail on this path: the C gates must leave it to them
        got = gates(path)
        if got is not None:
            assert got == want, (path, ctx.name)
        elif want is not None:  # left to Python: only for the shapes it does not handle
            flat = [x for seg in path for x in (seg[1] if len(seg) == 2 else ())]
            assert (not all(isinstance(s, tuple) for s in path) or len(flat) > 256
                    or any(type(x) is not int or not -(1 << 63) <= x < 1 << 63 for x in flat))


@needs_c
@pytest.mark.parametrize("gate", [(9,), (0, array("q", [1])), (0, array("q", [1]), array("q", [1, 2])),
                                  (0, array("i", [1]), array("i", [1])), (1, 1 << 64), (4, [1]), (2,), "x"])
def test_bad_gates_are_refused(gate: Any) -> None:
    assert MATCH is not None
    with pytest.raises((ValueError, TypeError, OverflowError)):
        MATCH.Gates([gate])
    assert accel.gates([gate]) is None
    gates = MATCH.Gates([])
    assert gates(((AS_SEQUENCE, (1,)),)) == -1 and gates(None) is None
    with pytest.raises(TypeError):
        gates()
