"""Route-flap dampening (RFC 2439) with the RFC 7196 parameters.

Theory of operation
-------------------
Each (family, prefix) of a peer carries a *figure of merit* (penalty) that grows by a fixed amount on
every flap and decays exponentially with a half-life: ``p(t) = p(t0) * 2 ** (-(t - t0) / half_life)``
(RFC 2439 4.2). A route whose penalty reaches ``suppress`` is suppressed (not used, not installed)
until the penalty decays below ``reuse``; the penalty is capped at ``ceiling = reuse * 2 **
(max_suppress / half_life)`` so no route stays suppressed longer than ``max_suppress`` after its last
flap (RFC 2439 4.8.1). Events and penalties:

* withdrawal of a reachable route: ``withdraw`` (1000);
* re-advertisement of a withdrawn route: ``readvertise`` (1000, as Juniper; Cisco uses 0);
* advertisement with changed attributes: ``attribute_change`` (500).

Defaults follow RFC 7196 section 4 (Cisco/Juniper defaults, table 1), with the suppress threshold
raised to 6000 as it recommends; half-life 15 min, reuse 750, max suppress 60 min. Dampening is
off by default (``DampeningParams.enabled = False``) and applies per peer.

Pure: time is passed in (seconds, any monotonic origin). State is kept only while it matters: an
entry whose penalty decays below ``reuse / 2`` and is not suppressed is forgotten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family


@dataclass(frozen=True, slots=True)
class DampeningParams:
    enabled: bool = False
    half_life: float = 900.0  # seconds (15 min)
    withdraw: float = 1000.0
    readvertise: float = 1000.0
    attribute_change: float = 500.0
    suppress: float = 6000.0  # RFC 7196 4: at least 6000
    reuse: float = 750.0
    max_suppress: float = 3600.0  # seconds (60 min)

    def __post_init__(self) -> None:
        if self.half_life <= 0 or self.max_suppress <= 0:
            raise ValueError("half_life and max_suppress must be positive")
        if not 0 < self.reuse < self.suppress:
            raise ValueError("need 0 < reuse < suppress")
        if self.suppress > self.ceiling:
            raise ValueError(f"suppress {self.suppress:g} is above the ceiling {self.ceiling:g} "
                             "(reuse * 2^(max_suppress/half_life)): routes could never be suppressed")

    @property
    def ceiling(self) -> float:
        return float(self.reuse * 2.0 ** (self.max_suppress / self.half_life))

    def decay(self, penalty: float, elapsed: float) -> float:
        return float(penalty * 2.0 ** (-max(0.0, elapsed) / self.half_life))


@dataclass(frozen=True, slots=True)
class DampState:
    """What the API shows for one route."""

    penalty: float
    suppressed: bool
    reuse_in: float  # seconds until usable again; 0 when not suppressed


class _Entry:
    __slots__ = ("attrs", "penalty", "suppressed", "updated", "withdrawn")

    def __init__(self, now: float) -> None:
        self.penalty = 0.0
        self.updated = now
        self.suppressed = False
        self.withdrawn = False
        self.attrs: Attributes | None = None


class Dampening:
    """Dampening state of one peer, keyed by (family, prefix key)."""

    def __init__(self, params: DampeningParams) -> None:
        self.params = params
        self._entries: dict[tuple[Family, int], _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _charge(self, entry: _Entry, amount: float, now: float) -> None:
        p = self.params
        entry.penalty = min(p.ceiling, p.decay(entry.penalty, now - entry.updated) + amount)
        entry.updated = now
        if entry.penalty >= p.suppress:
            entry.suppressed = True
        elif entry.suppressed and entry.penalty < p.reuse:
            entry.suppressed = False

    def withdraw(self, family: Family, key: int, now: float) -> bool:
        """Record a withdrawal; returns whether the route is now suppressed."""
        if not self.params.enabled:
            return False
        entry = self._entries.get((family, key))
        if entry is None:
            entry = self._entries[(family, key)] = _Entry(now)
        if not entry.withdrawn:
            self._charge(entry, self.params.withdraw, now)
            entry.withdrawn = True
        return entry.suppressed

    def announce(self, family: Family, key: int, attrs: Attributes, now: float) -> bool:
        """Record an advertisement; returns True when the route must be held back (suppressed)."""
        if not self.params.enabled:
            return False
        entry = self._entries.get((family, key))
        if entry is None:
            entry = _Entry(now)
            entry.attrs = attrs
            self._entries[(family, key)] = entry
            return False
        if entry.withdrawn:
            self._charge(entry, self.params.readvertise, now)
        elif entry.attrs is not None and entry.attrs is not attrs and entry.attrs != attrs:
            self._charge(entry, self.params.attribute_change, now)
        else:
            self._refresh(entry, now)
        entry.withdrawn = False
        entry.attrs = attrs
        return entry.suppressed

    def _refresh(self, entry: _Entry, now: float) -> None:
        self._charge(entry, 0.0, now)

    def state(self, family: Family, key: int, now: float) -> DampState:
        entry = self._entries.get((family, key))
        if entry is None:
            return DampState(0.0, False, 0.0)
        p = self.params
        penalty = p.decay(entry.penalty, now - entry.updated)
        suppressed = entry.suppressed and penalty >= p.reuse
        reuse_in = p.half_life * math.log2(penalty / p.reuse) if suppressed else 0.0
        return DampState(penalty, suppressed, reuse_in)

    def reusable(self, now: float) -> list[tuple[Family, int]]:
        """Routes whose suppression ended by ``now`` (the daemon re-installs those still announced).

        Also forgets entries that no longer matter. Call it periodically (e.g. every 15 s).
        """
        p = self.params
        released: list[tuple[Family, int]] = []
        for fk, entry in list(self._entries.items()):
            penalty = p.decay(entry.penalty, now - entry.updated)
            if entry.suppressed and penalty < p.reuse:
                entry.suppressed = False
                released.append(fk)
            if not entry.suppressed and penalty < p.reuse / 2:
                del self._entries[fk]
        return released
