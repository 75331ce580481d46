"""ExaBGPSpeaker against a real BIRD 2 on loopback: table, kill -9 and restart, commands, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from orchestrator.config import LocalConfig, PeerConfig, PeerKind
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family, parse_prefix
from speakers.events import DownReason, EndOfRib, PeerDown, PeerUp, SpeakerEvent, Update
from speakers.exabgp.process import ExaBGPSpeaker
from speakers.exabgp.session import State

from .conftest import bird_routes_conf

pytestmark = pytest.mark.interop

N4, N6 = 300, 40


class Collector:
    """What a RIB would see: a per-family table rebuilt from the event stream."""

    def __init__(self) -> None:
        self.events: list[SpeakerEvent] = []
        self.table: dict[Family, dict[int, Attributes]] = {Family.IPV4: {}, Family.IPV6: {}}
        self.changed = asyncio.Event()

    async def emit(self, event: SpeakerEvent) -> None:
        self.events.append(event)
        if isinstance(event, Update):
            t = self.table[event.family]
            for key in event.withdraw:
                t.pop(key, None)
            if event.attrs is not None:
                for key in event.announce:
                    t[key] = event.attrs
        elif isinstance(event, PeerDown):
            for t in self.table.values():
                t.clear()
        self.changed.set()

    async def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; events: {self.events[-10:]}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)

    def count(self, kind: type, since: int = 0, **match: Any) -> int:
        return sum(
            1
            for e in self.events[since:]
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())
        )


def expected_keys() -> tuple[set[int], set[int]]:
    v4 = {parse_prefix(f"100.{64 + (i >> 8)}.{i & 255}.0/24")[1] for i in range(N4)}
    v6 = {parse_prefix(f"2001:db8:{i:x}::/48")[1] for i in range(N6)}
    return v4, v6


def test_table_kill_restart_commands_stop(bird_factory: Any, tmp_path: Path) -> None:
    asyncio.run(_scenario(bird_factory, tmp_path))


async def _scenario(bird_factory: Any, tmp_path: Path) -> None:
    bird = bird_factory("127.0.50.12", "127.0.50.11", 65002, 65001, bird_routes_conf(N4, N6))
    peer = PeerConfig(
        name="bird50", kind=PeerKind.UPSTREAM, neighbor="127.0.50.12", peer_as=65002,
        local_address="127.0.50.11", port=bird.port, hold_time=30,
    )  # fmt: skip
    local = LocalConfig(asn=65001, router_id="127.0.50.11")
    col = Collector()
    speaker = ExaBGPSpeaker(peer, local, tmp_path / "run", col.emit, structlog.get_logger())
    v4, v6 = expected_keys()
    try:
        await speaker.start()
        full = lambda: set(col.table[Family.IPV4]) == v4 and set(col.table[Family.IPV6]) == v6  # noqa: E731
        eors = lambda since: col.count(EndOfRib, since) >= 2  # noqa: E731
        await col.wait_for(lambda: full() and eors(0), 30, "the full table and two End-of-RIBs")
        assert speaker.state is State.ESTABLISHED
        up = next(e for e in col.events if isinstance(e, PeerUp))
        assert (up.peer_as, up.router_id) == (65002, "127.0.50.12")
        assert up.families == (Family.IPV4, Family.IPV6)
        attrs = col.table[Family.IPV4][parse_prefix("100.64.7.0/24")[1]]  # i = 7: prepended, i%5=2
        assert attrs.as_path == ((2, (65002, 64600)),)
        assert attrs.communities == ((65002 << 16) | 2,)
        assert attrs.large_communities == ((65002, 1, 7),)
        assert attrs.next_hop == "192.0.2.50"
        assert col.table[Family.IPV6][parse_prefix("2001:db8:1::/48")[1]].next_hop == "2001:db8::50"

        # commands: announce one route and see BIRD import it; the ack comes back
        await speaker.send(
            "announce route 198.51.100.0/24 next-hop 127.0.50.11 as-path [ 65001 ] community [ 65001:9 ]"
        )
        for _ in range(100):
            if "198.51.100.0/24" in bird.cmd("show", "route", "198.51.100.0/24"):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("BIRD did not receive the announced route")
        await col.wait_for(lambda: speaker.session.acks_ok >= 1, 5, "the ack")
        assert speaker.session.in_flight == 0

        # kill -9: PeerDown(SPEAKER_EXITED), then a restart (1 s backoff) and the full table again
        pid = speaker.pid
        assert pid is not None
        mark = len(col.events)
        os.kill(pid, signal.SIGKILL)
        await col.wait_for(
            lambda: col.count(PeerDown, mark, reason=DownReason.SPEAKER_EXITED) == 1, 10, "PeerDown"
        )
        await col.wait_for(
            lambda: col.count(PeerUp, mark) == 1 and full() and eors(mark), 30, "table after restart"
        )
        assert speaker.restarts == 1 and speaker.pid not in (None, pid)
        assert col.count(PeerDown, mark) == 1  # no second PeerDown for the same loss
    finally:
        mark = len(col.events)
        was_up = speaker.state is State.ESTABLISHED
        await speaker.stop()
    assert speaker.pid is None
    if was_up:
        downs = [e for e in col.events[mark:] if isinstance(e, PeerDown)]
        assert [d.reason for d in downs] == [DownReason.ADMIN_SHUTDOWN]


def test_lost_relay_restarts_exabgp(tmp_path: Path) -> None:
    """ExaBGP 5.0.15 keeps running, deaf, when its API process dies: we restart it ourselves."""

    async def scenario() -> None:
        peer = PeerConfig(
            name="deaf50", kind=PeerKind.UPSTREAM, neighbor="127.0.50.99", peer_as=65002,
            local_address="127.0.50.98", port=11199,
        )  # fmt: skip
        col = Collector()
        speaker = ExaBGPSpeaker(
            peer, LocalConfig(65001, "127.0.50.98"), tmp_path, col.emit, structlog.get_logger()
        )
        try:
            await speaker.start()
            deadline = time.monotonic() + 15
            while speaker._writer is None:  # the relay connected back
                assert time.monotonic() < deadline, "relay never connected"
                await asyncio.sleep(0.05)
            first = speaker.pid
            speaker._writer.close()
            while speaker.restarts == 0 or speaker.pid in (None, first):
                assert time.monotonic() < deadline, "ExaBGP was not restarted"
                await asyncio.sleep(0.05)
        finally:
            await speaker.stop()
        assert speaker.pid is None

    asyncio.run(scenario())
