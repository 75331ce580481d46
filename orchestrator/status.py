"""Per-peer session bookkeeping the API and CLI show (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.rib.prefix import Family


@dataclass(slots=True)
class PeerStatus:
    """What we know of one peer's session, updated by the RIB task from speaker events."""

    state: str = "idle"
    since: float = 0.0  # monotonic time of the last state change
    established_at: float | None = None
    router_id: str = "0.0.0.0"
    last_error: str = ""
    # family → monotonic time of its first End-of-RIB this session
    end_of_rib: dict[Family, float] = field(default_factory=dict)
    updates: int = 0  # Update events received
    announced: int = 0  # prefixes announced (before policy)
    withdrawn: int = 0
    filtered: int = 0
    flaps: int = 0
    speaker_restarts: int = 0

    def uptime(self, now: float) -> float:
        return now - self.established_at if self.established_at is not None else 0.0

    def table_load_s(self, family: Family) -> float | None:
        """Seconds from Established to the family's End-of-RIB (the initial table), None before."""
        at = self.end_of_rib.get(family)
        return None if at is None or self.established_at is None else at - self.established_at
