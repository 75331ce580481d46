"""Per-peer status: how long the initial table took (Established → End-of-RIB per family)."""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator.api.views import peer_json
from orchestrator.config import PeerConfig, PeerKind
from orchestrator.rib.prefix import Family
from speakers.events import EndOfRib, PeerUp
from tests.orchestrator.test_import_policy import feed, make

V4, V6 = Family.IPV4, Family.IPV6


def test_table_load_time_per_family_from_established_to_end_of_rib(tmp_path: Path) -> None:
    peer = PeerConfig(name="up", kind=PeerKind.UPSTREAM, neighbor="192.0.2.1", peer_as=65001)
    d = make(tmp_path, peer)
    st = d.status["up"]
    assert st.table_load_s(V4) is None
    assert peer_json(d, peer, time.monotonic())["families"]["ipv4"]["table_load_s"] is None
    feed(d, PeerUp("up", 65001, "192.0.2.1"))
    time.sleep(0.02)
    feed(d, EndOfRib("up", V4))
    load = st.table_load_s(V4)
    assert load is not None and 0.02 <= load < 5
    feed(d, EndOfRib("up", V4))  # a second End-of-RIB (e.g. after a route refresh) keeps the first
    assert st.table_load_s(V4) == load
    fams = peer_json(d, peer, time.monotonic())["families"]
    assert fams["ipv4"]["table_load_s"] == round(load, 3) and fams["ipv6"]["table_load_s"] is None
    feed(d, PeerUp("up", 65001, "192.0.2.1"))  # a new session: its own table
    assert st.table_load_s(V4) is None
