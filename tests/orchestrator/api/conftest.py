"""A real ``Daemon`` without speakers: peers are registered in the RIB and status by hand and events
are fed with ``daemon._apply`` (what the RIB task does), so no ExaBGP is needed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.config import Config, LocalConfig, PeerConfig, PeerKind, RuntimeConfig
from orchestrator.daemon import Daemon
from orchestrator.rib.prefix import Family
from orchestrator.rib.table import BestChange, PeerInfo
from orchestrator.status import PeerStatus
from speakers.events import PeerUp, SpeakerEvent

LOCAL_AS = 64512
PEERS = (
    PeerConfig(name="up1", kind=PeerKind.UPSTREAM, neighbor="192.0.2.1", peer_as=64501),
    PeerConfig(
        name="rs", kind=PeerKind.ROUTE_SERVER, neighbor="192.0.2.2", peer_as=64502, families=(Family.IPV4,)
    ),
)


def make_daemon(tmp_path: Path) -> Daemon:
    config = Config(
        path=tmp_path / "peerctl.toml", local=LocalConfig(asn=LOCAL_AS, router_id="10.0.0.1"), peers=PEERS,
        runtime=RuntimeConfig(dir=tmp_path / "run"),  # never the repository's own run/
    )
    daemon = Daemon(config)
    for peer in PEERS:  # what Daemon._start_peer does, minus the speaker
        daemon.rib.add_peer(
            PeerInfo(
                name=peer.name,
                peer_as=peer.peer_as,
                address=peer.neighbor,
                local_as=LOCAL_AS,
                local_pref=peer.local_pref,
            )
        )
        daemon.status[peer.name] = PeerStatus(state="connect", since=time.monotonic())
    return daemon


class Lab:
    """The daemon plus the RIB task's one step: ``feed`` applies events and publishes the changes."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def feed(self, *events: SpeakerEvent) -> list[BestChange]:
        changes: list[BestChange] = []
        for event in events:
            self.daemon._apply(event, changes)
        self.daemon._publish(changes)
        return changes

    def bring_up(self) -> None:
        self.feed(*(PeerUp(p.name, p.peer_as, f"10.0.0.{i + 2}") for i, p in enumerate(PEERS)))


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(make_daemon(tmp_path))
