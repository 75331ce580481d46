"""PEERING safety rules: tables, the no-bad-attributes property, and the upstream JSON examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import PolicyError
from orchestrator.rib.attrs import AS_SET
from orchestrator.rib.prefix import parse_prefix
from policies.safety import Announcement, History, SafetyRules, parse_peering, schema_muxes

LOCAL = 47065
RULES = SafetyRules(LOCAL, SafetyRules.allocation(["184.164.224.0/19", "2804:269c::/32"]), origins=(61574,))
POISON = SafetyRules(LOCAL, RULES.allocated, allow_poisoning=True, origins=(61574,))
PEERING = Path(__file__).resolve().parents[3] / "shared/data/real/configs/peering"

OK = [
    Announcement("184.164.224.0/24"),
    Announcement("184.164.230.0/23", prepend=4),
    Announcement("2804:269c:1::/48", origin=61574),
    Announcement("184.164.224.0/24", communities=(1, 2, 3), large_communities=((1, 2, 3), (4, 5, 6))),
]
BAD = [
    (Announcement("8.8.8.0/24"), "allocated"),
    (Announcement("184.164.224.0/25"), "allocated"),
    (Announcement("184.164.224.0/24", prepend=5), "path-length"),
    (Announcement("184.164.224.0/24", poison=(3356,)), "poisoning"),
    (Announcement("184.164.224.0/24", origin=3356), "origin"),
    (Announcement("184.164.224.0/24", as_set=(1, 2, 3, 4, 5, 6)), "as-set"),
    (Announcement("184.164.224.0/24", communities=(1, 2, 3), large_communities=((1, 2, 3), (4, 5, 6)),
                  peers=(60,)), "communities"),
]


@pytest.mark.parametrize("ann", OK)
def test_accepted(ann: Announcement) -> None:
    attrs = RULES.check(ann, 0.0)
    assert attrs.as_path_flat()[0] == LOCAL


@pytest.mark.parametrize(("ann", "rule"), BAD)
def test_refused(ann: Announcement, rule: str) -> None:
    with pytest.raises(PolicyError) as exc:
        RULES.check(ann, 0.0)
    assert exc.value.rule == rule


def test_path_building() -> None:
    assert Announcement("184.164.224.0/24").as_path(LOCAL) == ((2, (LOCAL,)),)
    assert Announcement("184.164.224.0/24", prepend=2).as_path(LOCAL) == ((2, (LOCAL,) * 3),)
    assert Announcement("184.164.224.0/24", poison=(3356,)).as_path(LOCAL) == ((2, (LOCAL, 3356, LOCAL)),)
    assert Announcement("184.164.224.0/24", origin=61574, prepend=1).as_path(LOCAL) == \
        ((2, (LOCAL, LOCAL, 61574)),)
    assert POISON.check(Announcement("184.164.224.0/24", poison=(3356, 174)), 0).as_path_length == 4


def test_rate_limit_says_how_long() -> None:
    h = History()
    h.record("184.164.224.0/24", 1000.0)
    with pytest.raises(PolicyError, match="wait 412 s") as exc:
        RULES.check(Announcement("184.164.224.0/24"), 1188.0, h)
    assert exc.value.rule == "rate"
    RULES.check(Announcement("184.164.224.0/24"), 1600.0, h)
    RULES.check(Announcement("184.164.225.0/24"), 1188.0, h)  # other prefix


asn = st.sampled_from([LOCAL, 61574, 3356, 174, 1, 4200000000])


@settings(max_examples=300, deadline=None)
@given(st.builds(Announcement,
                 prefix=st.sampled_from(["184.164.224.0/24", "184.164.224.0/19", "184.164.0.0/16",
                                         "2804:269c::/48", "2804:269c::/56", "8.8.8.0/24"]),
                 peers=st.lists(st.integers(1, 500), max_size=4).map(tuple),
                 prepend=st.integers(0, 6), origin=st.none() | asn,
                 poison=st.lists(asn, max_size=4).map(tuple), as_set=st.lists(asn, max_size=7).map(tuple),
                 communities=st.lists(st.integers(0, 2**32 - 1), max_size=4).map(tuple),
                 large_communities=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9),
                                                      st.integers(0, 9)), max_size=3).map(tuple)),
       st.booleans())
def test_passing_announcements_yield_safe_attributes(ann: Announcement, poisoning: bool) -> None:
    rules = POISON if poisoning else RULES
    try:
        attrs = rules.check(ann, 0.0)
    except PolicyError:
        return
    assert rules._allocated.matches(*parse_prefix(ann.prefix))
    assert attrs.as_path_length <= 5
    assert sum(len(a) for t, a in attrs.as_path if t == AS_SET) <= 5
    assert len(attrs.communities) + len(attrs.large_communities) <= 5
    if not poisoning:
        assert {a for _, s in attrs.as_path for a in s} <= {LOCAL, 61574}
    assert attrs == ann.build_attributes(LOCAL)


@pytest.fixture
def muxes() -> frozenset[str]:
    if not PEERING.is_dir():
        pytest.skip(f"{PEERING} absent (shared data not mounted)")
    return schema_muxes(json.loads((PEERING / "announcement_schema.json").read_text()))


def test_peering_example_accepted(muxes: frozenset[str]) -> None:
    req = parse_peering(json.loads((PEERING / "announcement_example.json").read_text()), muxes)
    assert [a.prefix for a in req.announcements] == ["184.164.224.0/24"]
    for ann in req.announcements:
        RULES.check(ann, 0.0)


@pytest.mark.parametrize("name", ["announce-1.json", "withdraw-1.json"])
def test_peering_unknown_mux_refused(muxes: frozenset[str], name: str) -> None:
    with pytest.raises(PolicyError, match="unknown mux 'gatech01'") as exc:
        parse_peering(json.loads((PEERING / name).read_text()), muxes)
    assert exc.value.rule == "peering-json"


def test_peering_announce_1_without_mux_check_builds_poisoned_path() -> None:
    doc = {"184.164.236.0/24": {"announce": [{"muxes": ["amsterdam01"], "peers": [168, 60],
                                              "origin": 47065, "prepend": [73, 74]}]}}
    (ann,) = parse_peering(doc).announcements
    assert ann.as_path(LOCAL) == ((2, (LOCAL, 73, 74, LOCAL)),)
    with pytest.raises(PolicyError) as exc:
        RULES.check(ann, 0.0)
    assert exc.value.rule == "poisoning"  # 73, 74 are foreign ASNs
