"""Dampening: decay against the closed form, suppression and reuse times."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family
from policies.dampening import Dampening, DampeningParams

P = DampeningParams(enabled=True)
A1, A2 = Attributes(next_hop="192.0.2.1"), Attributes(next_hop="192.0.2.2")


def test_rfc7196_defaults() -> None:
    d = DampeningParams()
    assert (d.enabled, d.suppress, d.reuse, d.half_life, d.max_suppress) == (False, 6000, 750, 900, 3600)
    assert d.ceiling == 750 * 16


def test_off_by_default() -> None:
    damp = Dampening(DampeningParams())
    for t in range(20):
        assert not damp.withdraw(Family.IPV4, 1, t)
        assert not damp.announce(Family.IPV4, 1, A1, t)
    assert len(damp) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 2000), min_size=1, max_size=10), st.floats(0, 10000))
def test_decay_matches_closed_form(gaps: list[float], after: float) -> None:
    damp = Dampening(P)
    t = 0.0
    damp.announce(Family.IPV4, 1, A1, t)
    expected = 0.0
    for gap in gaps:
        t += gap
        expected = min(P.ceiling, expected * 2 ** (-gap / P.half_life) + P.withdraw)
        damp.withdraw(Family.IPV4, 1, t)
        damp.announce(Family.IPV4, 1, A1, t)  # same instant: +readvertise
        expected = min(P.ceiling, expected + P.readvertise)
    st_ = damp.state(Family.IPV4, 1, t + after)
    assert st_.penalty == pytest.approx(expected * 2 ** (-after / P.half_life), rel=1e-9)


def test_suppress_and_reuse() -> None:
    damp = Dampening(P)
    damp.announce(Family.IPV4, 1, A1, 0)
    suppressed = False
    t = 0.0
    for _ in range(4):  # a flap = withdraw + re-advertise = 2000; 4 flaps pass 6000
        t += 1
        damp.withdraw(Family.IPV4, 1, t)
        suppressed = damp.announce(Family.IPV4, 1, A1, t)
    s = damp.state(Family.IPV4, 1, t)
    assert suppressed and s.suppressed
    assert s.reuse_in == pytest.approx(P.half_life * math.log2(s.penalty / P.reuse))
    assert damp.reusable(t + s.reuse_in - 1) == []
    assert damp.reusable(t + s.reuse_in + 1) == [(Family.IPV4, 1)]
    assert not damp.state(Family.IPV4, 1, t + s.reuse_in + 1).suppressed


def test_attribute_change_penalty_and_cap() -> None:
    damp = Dampening(P)
    damp.announce(Family.IPV4, 1, A1, 0)
    damp.announce(Family.IPV4, 1, A2, 0)
    assert damp.state(Family.IPV4, 1, 0).penalty == 500
    for i in range(100):
        damp.announce(Family.IPV4, 1, A1 if i % 2 else A2, 0)
    assert damp.state(Family.IPV4, 1, 0).penalty == P.ceiling
    # max suppress: after max_suppress from the last flap, the route is reusable
    assert not damp.state(Family.IPV4, 1, P.max_suppress + 1).suppressed


def test_bad_params() -> None:
    with pytest.raises(ValueError, match="ceiling"):
        DampeningParams(suppress=20000)
