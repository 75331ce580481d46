"""fib/diff.py: pure folding of best-path changes."""

from __future__ import annotations

import random

from orchestrator.fib.diff import FibDiff, NextHopRef, OpKind
from orchestrator.rib.prefix import Family, parse_prefix


def k(text: str) -> int:
    return parse_prefix(text)[1]


def test_last_change_wins_and_replace_is_one_op() -> None:
    d = FibDiff()
    d.add(Family.IPV4, k("10.0.0.0/24"), NextHopRef(1))
    d.add(Family.IPV4, k("10.0.0.0/24"), NextHopRef(2))
    d.add(Family.IPV4, k("10.0.1.0/24"), NextHopRef(1))
    d.add(Family.IPV4, k("10.0.1.0/24"), None)
    d.add(Family.IPV6, k("2001:db8::/32"), NextHopRef(3))
    ops = d.drain()
    assert [(o.kind, o.family, o.key, o.nexthop) for o in ops] == [
        (OpKind.REPLACE, Family.IPV4, k("10.0.0.0/24"), 2),
        (OpKind.REPLACE, Family.IPV6, k("2001:db8::/32"), 3),
        (OpKind.DELETE, Family.IPV4, k("10.0.1.0/24"), None),
    ]
    assert len(d) == 0
    assert d.drain() == []


def test_deletions_never_ascending() -> None:
    d = FibDiff()
    keys = [k(f"10.{i >> 8}.{i & 255}.0/24") for i in range(2000)] + [k("10.0.0.0/8"), k("0.0.0.0/0")]
    random.Random(1).shuffle(keys)
    for key in keys:
        d.add(Family.IPV4, key, None)
    dels = [o.key for o in d.drain()]
    assert dels == sorted(keys, reverse=True)
    same_len = [x for x in dels if x > 0xFFFFFFFF]  # the /24s in drain order: network descending
    assert same_len == sorted(same_len, reverse=True)


def test_drain_family_matches_drain() -> None:
    a, b = FibDiff(), FibDiff()
    rng = random.Random(2)
    for _ in range(5000):
        key = k(f"10.{rng.randrange(4)}.{rng.randrange(256)}.0/24")
        nh = None if rng.random() < 0.3 else NextHopRef(rng.randrange(1, 4))
        a.add(Family.IPV4, key, nh)
        b.add(Family.IPV4, key, nh)
    ops = a.drain()
    replaces, deletes = b.drain_family(Family.IPV4)
    assert [(o.key, o.nexthop) for o in ops if o.kind is OpKind.REPLACE] == replaces
    assert [o.key for o in ops if o.kind is OpKind.DELETE] == deletes


def test_pure_module() -> None:
    from pathlib import Path

    import orchestrator.fib.diff as mod

    src = Path(mod.__file__).read_text()
    assert "import asyncio" not in src and "pyroute2" not in src.split('"""', 2)[2]
