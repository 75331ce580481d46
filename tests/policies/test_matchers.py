"""Differential property tests: fast prefix lists and RPKI lookups vs naive scans."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.rib.prefix import Family, format_prefix, key_from_parts
from policies.prefixset import (
    PrefixEntry,
    PrefixList,
    naive_matches,
    parse_bgpq4_json,
    parse_entry,
    parse_lines,
)
from policies.rpki import Validity, Vrp, VrpTable, naive_validate, parse_vrp_json


def prefixes(family: Family, max_len: int | None = None) -> st.SearchStrategy[tuple[int, int]]:
    width = family.max_length
    # Cluster addresses so that entries nest and overlap often.
    top = st.sampled_from([0, 1, 2, 3]).map(lambda t: t << (width - 2))
    low = st.integers(0, (1 << (width - 2)) - 1) | st.sampled_from([0, 1 << (width - 9), 1 << (width - 17)])
    return st.tuples(top, low, st.integers(0, max_len or width)).map(
        lambda t: (key_from_parts(t[0] | t[1], t[2], family), t[2]))


def entries(family: Family) -> st.SearchStrategy[PrefixEntry]:
    width = family.max_length

    def make(kl: tuple[int, int], a: int, b: int) -> PrefixEntry:
        key, length = kl
        lo, hi = sorted((length + a % (width - length + 1), length + b % (width - length + 1)))
        return PrefixEntry(family, key, lo, hi)

    return st.builds(make, prefixes(family, 24 if family is Family.IPV4 else 48), st.integers(0, 200),
                     st.integers(0, 200))


@pytest.mark.parametrize("family", list(Family))
def test_prefix_list_differential(family: Family) -> None:
    @settings(max_examples=150, deadline=None)
    @given(st.lists(entries(family), max_size=25), st.lists(prefixes(family), min_size=1, max_size=20))
    def check(es: list[PrefixEntry], routes: list[tuple[int, int]]) -> None:
        pl = PrefixList(es)
        for key, _ in routes:
            assert pl.matches(family, key) == naive_matches(es, family, key), format_prefix(family, key)
        for e in es:  # every entry matches its own prefix at its ge length when ge == length
            if e.ge == e.length:
                assert pl.matches(family, e.key)

    check()


@pytest.mark.parametrize("family", list(Family))
def test_rpki_differential(family: Family) -> None:
    width = family.max_length

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(prefixes(family, 24 if width == 32 else 48), st.integers(0, 8),
                              st.sampled_from([0, 1, 2, 3])), max_size=25),
           st.lists(st.tuples(prefixes(family), st.sampled_from([None, 0, 1, 2, 3])), min_size=1,
                    max_size=20))
    def check(raw: list[tuple[tuple[int, int], int, int]],
              routes: list[tuple[tuple[int, int], int | None]]) -> None:
        vrps = [Vrp(family, key, min(width, length + extra), asn) for (key, length), extra, asn in raw]
        table = VrpTable(vrps)
        for (key, _), origin in routes:
            assert table.validate(family, key, origin) is naive_validate(vrps, family, key, origin)

    check()


ENTRY_TABLE = [
    ("10.0.0.0/8", (8, 8)), ("10.0.0.0/8 le 24", (8, 24)), ("10.0.0.0/8 ge 16 le 24", (16, 24)),
    ("10.0.0.0/8 ge 16", (16, 32)), ("10.0.0.0/8{12,20}", (12, 20)), ("10.0.0.0/8+", (8, 32)),
    ("2001:db8::/32 le 48", (32, 48)),
]


@pytest.mark.parametrize(("text", "bounds"), ENTRY_TABLE)
def test_parse_entry(text: str, bounds: tuple[int, int]) -> None:
    e = parse_entry(text)
    assert (e.ge, e.le) == bounds


@pytest.mark.parametrize("bad", ["10.0.0.0/8 le 4", "10.0.0.1/8", "foo", "10.0.0.0/8 ge 40", "10.0.0.0/8-"])
def test_parse_entry_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_entry(bad)


def test_bgpq4_json_and_lines() -> None:
    text = ('{"NN": [{"prefix": "1.0.0.0/24", "exact": true},'
            ' {"prefix": "1.0.4.0/22", "exact": false, "greater-equal": 23, "less-equal": 24},'
            ' {"prefix": "8.0.0.0/12", "exact": false, "less-equal": 24}]}')
    es = parse_bgpq4_json(text)
    assert [(e.ge, e.le) for e in es] == [(24, 24), (23, 24), (12, 24)]
    assert [str(e) for e in parse_lines(["# c", "", "1.0.0.0/24", "8.0.0.0/12 le 24  # x"])] == \
        ["1.0.0.0/24", "8.0.0.0/12 ge 12 le 24"]
    with pytest.raises(ValueError, match="line 2"):
        parse_lines(["1.0.0.0/24", "nope"])


def test_vrp_json() -> None:
    vrps = parse_vrp_json('{"roas": [{"asn": "AS13335", "prefix": "1.1.1.0/24", "maxLength": 24, '
                          '"ta": "apnic"},'
                          ' {"asn": 13335, "prefix": "2606:4700::/32", "maxLength": 48}]}')
    t = VrpTable(vrps)
    from orchestrator.rib.prefix import parse_prefix
    assert t.validate(*parse_prefix("1.1.1.0/24"), 13335) is Validity.VALID
    assert t.validate(*parse_prefix("1.1.1.0/24"), 1) is Validity.INVALID
    assert t.validate(*parse_prefix("1.1.0.0/16"), 13335) is Validity.NOT_FOUND
    assert t.validate(*parse_prefix("2606:4700:10::/48"), 13335) is Validity.VALID
    with pytest.raises(ValueError, match=r"roas\[0\]"):
        parse_vrp_json('{"roas": [{"asn": "ASx", "prefix": "1.1.1.0/24"}]}')
