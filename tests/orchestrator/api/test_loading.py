"""``loading`` in GET /api/v1/summary (and the progress bar): until every peer has sent its table,
but a peer down for longer than ``[fib] stale_timeout`` no longer keeps it on."""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.rib.prefix import Family
from speakers.events import EndOfRib, PeerUp

from .conftest import make_daemon


def test_a_peer_that_stays_down_stops_counting_after_the_stale_timeout(tmp_path: Path) -> None:
    d = make_daemon(tmp_path)  # peers up1 (ipv4, ipv6) and rs (ipv4), both "connect" since now
    assert d.loading() and not d.tables_complete()
    changes: list = []
    d._apply(PeerUp("up1", 4, "192.0.2.1"), changes)
    for family in (Family.IPV4, Family.IPV6):
        d._apply(EndOfRib("up1", family), changes)
    assert d.loading()  # rs has been down only a moment
    d.status["rs"].since = time.monotonic() - d.config.fib.stale_timeout - 1
    assert not d.loading()
    assert not d.tables_complete()  # the FIB still keeps rs's old routes until its own timer
    d._apply(PeerUp("rs", 4, "192.0.2.2"), changes)
    assert d.loading()  # rs is back and sending its table
    d._apply(EndOfRib("rs", Family.IPV4), changes)
    assert not d.loading() and d.tables_complete()
