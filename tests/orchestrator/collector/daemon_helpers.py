"""A real ``Daemon`` with the collector on and no speakers: peers are registered by hand (what
``Daemon._start_peer`` does, minus the speaker), the real RIB task runs, and events go in through
``emit_many`` as a speaker's would. The events come from a real RouteViews update file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.collector.mrt import Bgp4mpUpdate, MrtReader, StateChange
from orchestrator.config import CollectorConfig, Config, LocalConfig, PeerConfig, PeerKind, RibPolicy
from orchestrator.daemon import Daemon
from orchestrator.rib.prefix import Family
from orchestrator.rib.table import PeerInfo
from orchestrator.status import PeerStatus
from speakers.events import PeerDown, PeerUp, SpeakerEvent, Update

LOCAL_AS = 6447
UPDATES_FILE = "updates/routeviews.updates.20161101.0000.bz2"  # 4 peers (2 IPv4, 2 IPv6), 2,623 UPDATEs


def real_peers_and_events(
    path: Path, limit: int | None = None
) -> tuple[list[PeerConfig], list[SpeakerEvent]]:
    """Peers of an MRT update file (one PeerConfig per peer address) and its UPDATEs as the events a
    speaker would emit: one ``Update`` per family, each peer brought up before its first UPDATE."""
    peers: dict[str, PeerConfig] = {}
    events: list[SpeakerEvent] = []
    for rec in MrtReader(path):
        if isinstance(rec, StateChange) or not isinstance(rec, Bgp4mpUpdate):
            continue
        if rec.end_of_rib is not None:
            continue
        peer = peers.get(rec.peer_ip)
        if peer is None:
            peer = peers[rec.peer_ip] = PeerConfig(
                name=f"p{len(peers)}", kind=PeerKind.COLLECTOR, neighbor=rec.peer_ip, peer_as=rec.peer_as,
                local_address=rec.local_ip)
            events.append(PeerUp(peer.name, peer.peer_as, f"10.0.0.{len(peers)}"))
        for family in Family:
            ann = rec.announce.get(family, [])
            wd = rec.withdraw.get(family, [])
            if ann or wd:
                events.append(Update(peer.name, family, rec.attrs_for(family) if ann else None, ann, wd))
        if limit is not None and len(events) >= limit:
            break
    return list(peers.values()), events


def make_daemon(tmp_path: Path, peers: list[PeerConfig], *, enabled: bool = True, interval: int = 900,
                compression: str = "gz", rib_policy: RibPolicy = RibPolicy.POST) -> Daemon:
    collector = CollectorConfig(enabled=enabled, dir=tmp_path / "mrt", updates_interval=interval,
                                rib_interval=0, compression=compression, rib_policy=rib_policy)
    config = Config(path=tmp_path / "peerctl.toml", local=LocalConfig(asn=LOCAL_AS, router_id="10.9.9.9"),
                    peers=tuple(peers), collector=collector)
    daemon = Daemon(config)
    for peer in peers:
        daemon.imports.configure(peer, str(config.path))
        daemon.rib.add_peer(PeerInfo(name=peer.name, peer_as=peer.peer_as, address=peer.neighbor,
                                     local_as=LOCAL_AS, local_pref=peer.local_pref))
        daemon.status[peer.name] = PeerStatus(state="connect", since=time.monotonic())
    return daemon


async def start(daemon: Daemon) -> None:
    """What ``Daemon.start`` does without FIB, lab and speakers: collector, then the RIB task."""
    await daemon.start_collector()
    daemon._rib_task = asyncio.create_task(daemon._rib_loop(), name="rib")


async def feed(daemon: Daemon, events: list[SpeakerEvent], per_read: int = 50) -> None:
    """Emit ``events`` in speaker-read-sized lists, then wait until the RIB task applied them all."""
    for i in range(0, len(events), per_read):
        await daemon.emit_many(events[i:i + per_read])
    while not daemon.events.empty():
        await asyncio.sleep(0.005)
    await asyncio.sleep(0)


def down_events(peers: list[PeerConfig]) -> list[SpeakerEvent]:
    from speakers.events import DownReason

    return [PeerDown(p.name, DownReason.ADMIN_SHUTDOWN) for p in peers]


def updates_in(directory: Path) -> Iterator[Any]:
    """Every record of every finished ``updates.*`` file, files in name order."""
    for path in sorted(directory.glob("updates.*")):
        if path.name.endswith(".partial"):
            continue
        yield from MrtReader(path)
