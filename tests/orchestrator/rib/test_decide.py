"""Decision process: the steps as data tables, and the ranked fast path against the reference."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.rib.decide import (
    DecisionOptions,
    PathFacts,
    Reason,
    better2,
    compare,
    order,
    pack_rank,
    reference_select,
    select,
)

DEFAULT = DecisionOptions()
ACM = DecisionOptions(always_compare_med=True)


def facts(
    lp: int = 100,
    aspath: int = 3,
    origin: int = 0,
    med: int | None = None,
    nas: int = 65001,
    ebgp: bool = True,
    rid: int = 10,
    addr: int = 1,
) -> PathFacts:
    return PathFacts(lp, aspath, origin, med, nas, ebgp, rid, (4, addr))


@dataclass(frozen=True)
class R:
    """A ranked path built from facts (address ordinal = rank of the address among the set)."""

    rank: int
    index: int


def ranked(paths: list[PathFacts], options: DecisionOptions) -> list[R]:
    addresses = sorted({p.address for p in paths})
    out = []
    for i, p in enumerate(paths):
        med = p.med if p.med is not None else (0xFFFFFFFF if options.missing_med_worst else 0)
        rank = pack_rank(
            local_pref=p.local_pref,
            as_path_length=p.as_path_length,
            origin=p.origin,
            med=med,
            ebgp=p.ebgp,
            router_id=p.router_id,
            address_ordinal=addresses.index(p.address),
            neighbor_as=p.neighbor_as,
        )
        out.append(R(rank, i))
    return out


# (description, a, b, options, expected winner "a"/"b", expected reason)
PAIRS = [
    ("higher local-pref", facts(lp=200, aspath=9), facts(addr=2), DEFAULT, "a", Reason.LOCAL_PREF),
    ("shorter as-path wins", facts(aspath=4), facts(aspath=2, addr=2), DEFAULT, "b", Reason.AS_PATH),
    ("lower origin wins", facts(origin=2), facts(origin=0, addr=2), DEFAULT, "b", Reason.ORIGIN),
    ("lower med, same neighbor AS", facts(med=10), facts(med=5, addr=2, rid=20), DEFAULT, "b", Reason.MED),
    ("missing med is 0", facts(med=None, rid=30), facts(med=1, addr=2), DEFAULT, "a", Reason.MED),
    ("missing med worst option", facts(med=None), facts(med=1, addr=2, rid=30),
     DecisionOptions(missing_med_worst=True), "b", Reason.MED),
    ("med ignored across neighbor ASes", facts(med=100, nas=1, rid=1), facts(med=5, nas=2, rid=2, addr=2),
     DEFAULT, "a", Reason.ROUTER_ID),
    ("always-compare-med", facts(med=100, nas=1, rid=1), facts(med=5, nas=2, rid=2, addr=2),
     ACM, "b", Reason.MED),
    ("ebgp over ibgp", facts(ebgp=False, rid=1), facts(ebgp=True, rid=2, addr=2), DEFAULT, "b",
     Reason.EBGP_OVER_IBGP),
    ("lowest router id", facts(rid=5, addr=9), facts(rid=4, addr=10), DEFAULT, "b", Reason.ROUTER_ID),
    ("lowest peer address", facts(rid=5, addr=9), facts(rid=5, addr=3), DEFAULT, "b", Reason.PEER_ADDRESS),
]  # fmt: skip


@pytest.mark.parametrize(("desc", "a", "b", "options", "winner", "reason"), PAIRS, ids=[p[0] for p in PAIRS])
def test_each_step_decides(
    desc: str, a: PathFacts, b: PathFacts, options: DecisionOptions, winner: str, reason: Reason
) -> None:
    assert compare(a, b, options) == ((-1 if winner == "a" else 1), reason)
    assert compare(b, a, options) == ((1 if winner == "a" else -1), reason)
    ra, rb = ranked([a, b], options)
    assert better2(ra, rb, options.always_compare_med) == (winner == "a", reason)
    best, why = select([ra, rb], options.always_compare_med)
    assert (best.index, why) == ((0 if winner == "a" else 1), reason)


def test_single_path() -> None:
    assert reference_select([facts()], DEFAULT) == (0, Reason.ONLY_PATH)
    (r,) = ranked([facts()], DEFAULT)
    assert select([r], False) == (r, Reason.ONLY_PATH)


def test_ipv4_address_before_ipv6() -> None:
    v4 = PathFacts(100, 1, 0, None, 1, True, 7, (4, 0xFFFFFFFF))
    v6 = PathFacts(100, 1, 0, None, 1, True, 7, (6, 1))
    assert compare(v4, v6, DEFAULT) == (-1, Reason.PEER_ADDRESS)


def test_med_non_transitive_set_is_order_independent() -> None:
    # A beats B on MED (same neighbor AS 1); C (AS 2) beats A on router id; B beats C on router id.
    # Pairwise scans give different answers per order; set elimination drops B at MED, then C wins.
    a = facts(med=0, nas=1, rid=3, addr=1)
    b = facts(med=10, nas=1, rid=1, addr=2)
    c = facts(med=0, nas=2, rid=2, addr=3)
    paths = [a, b, c]
    expected = (2, Reason.ROUTER_ID)
    assert reference_select(paths, DEFAULT) == expected
    for perm in itertools.permutations(range(3)):
        chosen = [paths[i] for i in perm]
        idx, reason = reference_select(chosen, DEFAULT)
        assert (perm[idx], reason) == expected
        best, reason2 = select(ranked(chosen, DEFAULT), False)
        assert (perm[best.index], reason2) == expected


def test_order_puts_best_first_then_rank() -> None:
    paths = ranked([facts(aspath=5, addr=1), facts(aspath=2, addr=2), facts(aspath=3, addr=3)], DEFAULT)
    ordered, reason = order(list(paths), False)
    assert [p.index for p in ordered] == [1, 2, 0]
    assert reason is Reason.AS_PATH


def test_identical_paths_assert() -> None:
    r = ranked([facts()], DEFAULT)[0]
    with pytest.raises(AssertionError):
        order([r, R(r.rank, 1)], False)


# ---- properties ---------------------------------------------------------------------------------


@st.composite
def path_sets(draw: st.DrawFn) -> list[PathFacts]:
    n = draw(st.integers(1, 6))
    addrs = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n, unique=True))
    out = []
    for addr in addrs:
        out.append(
            PathFacts(
                local_pref=draw(st.sampled_from([90, 100, 100, 200])),
                as_path_length=draw(st.integers(1, 3)),
                origin=draw(st.integers(0, 2)),
                med=draw(st.sampled_from([None, 0, 5, 10])),
                neighbor_as=draw(st.sampled_from([1, 2, 3])),
                ebgp=draw(st.booleans()),
                router_id=draw(st.integers(1, 4)),
                address=(4, addr),
            )
        )
    return out


options_st = st.builds(DecisionOptions, st.booleans(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(path_sets(), options_st, st.randoms(use_true_random=False))
def test_ranked_select_matches_reference_in_any_order(
    paths: list[PathFacts], options: DecisionOptions, rnd: object
) -> None:
    expected_idx, expected_reason = reference_select(paths, options)
    rs = ranked(paths, options)
    shuffled = list(rs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    best, reason = select(shuffled, options.always_compare_med)
    assert (best.index, reason) == (expected_idx, expected_reason)
    # the reference itself does not depend on arrival order either
    perm = [paths[r.index] for r in shuffled]
    idx, reason2 = reference_select(perm, options)
    assert (shuffled[idx].index, reason2) == (expected_idx, expected_reason)


@settings(max_examples=300, deadline=None)
@given(path_sets(), options_st)
def test_pairwise_antisymmetric(paths: list[PathFacts], options: DecisionOptions) -> None:
    if len(paths) < 2:
        return
    a, b = paths[0], paths[1]
    ca, reason_a = compare(a, b, options)
    cb, reason_b = compare(b, a, options)
    assert ca == -cb and reason_a == reason_b
    ra, rb = ranked([a, b], options)
    acm = options.always_compare_med
    assert better2(ra, rb, acm)[0] != better2(rb, ra, acm)[0]
    assert better2(ra, rb, acm) == (ca == -1, reason_a)
