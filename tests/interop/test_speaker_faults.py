"""Speaker faults with real tables: ExaBGP killed with SIGKILL, and bad JSON on the relay stream.

Two BIRD feeders, X and Y, announce overlapping tables; Y prepends, so X's paths are best wherever
both have a prefix. peerctl runs in-process (Daemon + API) with one ExaBGP per feeder.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.log import configure_logging
from orchestrator.rib.decide import Reason
from orchestrator.rib.prefix import Family, parse_prefix
from speakers.events import DownReason, PeerDown, PeerUp, SpeakerEvent

from .bird import (
    Bird,
    api_get,
    bgp_protocol,
    daemon_toml,
    free_port,
    peer_toml,
    process_children,
    running_daemon,
    static_blackholes,
    wait_until,
)

pytestmark = pytest.mark.interop

OUR_AS, X_AS, Y_AS = 65010, 65011, 65012
X_ADDR, Y_ADDR, PEERCTL_ADDR = "127.0.80.11", "127.0.80.12", "127.0.80.13"
X4, X6 = 3000, 500  # X's table
OVERLAP4 = 2000  # X's first 2000 IPv4 prefixes are also Y's; Y has all of X's IPv6 prefixes
Y_OWN4 = 1000
V4 = [f"100.{64 + (i >> 8)}.{i & 255}.0/24" for i in range(X4 + Y_OWN4)]
V6 = [f"2001:db8:{i:x}::/48" for i in range(X6)]


def _feeder(router_id: str, asn: int, v4: list[str], v6: list[str], prepend: int) -> str:
    stmts = " ".join(f"bgp_path.prepend({asn});" for _ in range(prepend))
    return (
        f"router id {router_id};\nprotocol device {{}}\n{static_blackholes(v4, v6)}\n"
        f"filter out_attrs {{ {stmts} accept; }}\n"
        + bgp_protocol(
            "peerctl", local=router_id, local_as=asn, neighbor=PEERCTL_ADDR, peer_as=OUR_AS, passive=True,
            export="filter out_attrs", import_="none", next_hop4=f"192.0.2.{asn - 65000}",
            next_hop6=f"2001:db8:ffff::{asn - 65000}",
        )
    )  # fmt: skip


def _counts(daemon: Any, peer: str) -> tuple[int, int, int, int]:
    """(received v4, best v4, received v6, best v6)."""
    r4, b4 = daemon.rib.peer_counts(peer, Family.IPV4)
    r6, b6 = daemon.rib.peer_counts(peer, Family.IPV6)
    return r4, b4, r6, b6


X_FULL = (X4, X4, X6, X6)  # X has every one of its prefixes as best
Y_LOADED = (OVERLAP4 + Y_OWN4, Y_OWN4, X6, 0)
Y_ALONE = (OVERLAP4 + Y_OWN4, OVERLAP4 + Y_OWN4, X6, X6)


def test_kill_exabgp_and_bad_json(birds: Callable[[str, str], Bird], tmp_path: Path) -> None:
    log_file = tmp_path / "peerctl.log"
    with log_file.open("w") as log_stream:
        configure_logging("warning", json=True, stream=log_stream)
        try:
            birds("x", _feeder(X_ADDR, X_AS, V4[:X4], V6, 0))
            birds("y", _feeder(Y_ADDR, Y_AS, V4[X4 - OVERLAP4 :], V6, 2))
            config = tmp_path / "peerctl.toml"
            config.write_text(
                daemon_toml(
                    OUR_AS, PEERCTL_ADDR, free_port(),
                    peer_toml("x", X_ADDR, X_AS, PEERCTL_ADDR) + peer_toml("y", Y_ADDR, Y_AS, PEERCTL_ADDR),
                )
            )  # fmt: skip
            asyncio.run(_scenario(config, log_file))
        finally:
            configure_logging("warning")


async def _scenario(config: Path, log_file: Path) -> None:
    async with running_daemon(config) as daemon:
        events: list[tuple[float, SpeakerEvent]] = []
        daemon.event_listeners.append(lambda now, e: events.append((now, e)))
        await wait_until(lambda: _counts(daemon, "x") == X_FULL and _counts(daemon, "y") == Y_LOADED, 40,
                         "both tables")  # fmt: skip
        overlap_key = parse_prefix(V4[X4 - 1])  # in both tables
        assert daemon.rib.best(*overlap_key).peer == "x"
        assert daemon.rib.reason(*overlap_key) is Reason.AS_PATH

        # -- kill -9 X's ExaBGP: its paths leave the RIB, Y's become best; then a restart reloads X
        speaker = daemon.speakers["x"]
        old_pid = speaker.pid
        assert old_pid is not None and speaker.restarts == 0
        mark = len(events)
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        # the restart waits 1 s (backoff) and then ExaBGP takes ~1 s to come up: poll fast
        await wait_until(lambda: _counts(daemon, "x") == (0, 0, 0, 0), 10, "X's paths to leave", 0.005)
        assert _counts(daemon, "y") == Y_ALONE  # Y's paths remain and are best everywhere
        assert daemon.rib.best(*overlap_key).peer == "y"
        assert daemon.rib.reason(*overlap_key) is Reason.ONLY_PATH
        assert daemon.rib.best(*parse_prefix(V4[0])) is None  # X only
        counts = daemon.rib.counts()["families"]
        assert counts["ipv4"] == {"prefixes": OVERLAP4 + Y_OWN4, "paths": OVERLAP4 + Y_OWN4}
        assert counts["ipv6"] == {"prefixes": X6, "paths": X6}
        downs = [e for _, e in events[mark:] if isinstance(e, PeerDown)]
        assert [(d.peer, d.reason) for d in downs] == [("x", DownReason.SPEAKER_EXITED)]
        assert daemon.status["x"].state == "down"

        await wait_until(lambda: _counts(daemon, "x") == X_FULL, 30, "X's table after the restart")
        restore_s = time.monotonic() - killed_at
        assert speaker.restarts == 1
        assert speaker.pid is not None and speaker.pid != old_pid
        assert daemon.speakers["x"] is speaker
        assert daemon.status["x"].speaker_restarts == 1 and daemon.status["x"].state == "established"
        assert _counts(daemon, "y") == Y_LOADED
        assert daemon.rib.reason(*overlap_key) is Reason.AS_PATH
        ups = [e for _, e in events[mark:] if isinstance(e, PeerUp)]
        assert [u.peer for u in ups] == ["x"]
        assert daemon.speakers["y"].restarts == 0
        peer_view = await api_get(daemon, "/api/v1/peers/x")
        assert peer_view["state"] == "established", peer_view

        # -- bad lines on the relay stream: logged, counted, RIB untouched, the stream goes on
        await _bad_json(daemon, speaker, log_file)
        assert restore_s < 15, f"X's table took {restore_s:.1f} s to come back"


def _relay_pid(speaker: Any) -> int:
    """The relay (ExaBGP's API process) of ``speaker``: a child of ExaBGP naming its socket."""
    assert speaker.pid is not None
    for pid in process_children(speaker.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(speaker.socket_path).encode() in cmdline:
            return pid
    raise AssertionError(f"no relay process under ExaBGP {speaker.pid}")


def _envelope(counter: int, body: str) -> str:
    return (
        f'{{ "exabgp": "5.0.0", "time": {time.time()}, "host" : "test", "pid" : 1, "ppid" : 1, '
        f'"counter": {counter}, "type": "update", "neighbor": {{ "address": {{ "local": "{PEERCTL_ADDR}", '
        f'"peer": "{X_ADDR}" }}, "asn": {{ "local": {OUR_AS}, "peer": {X_AS} }}, '
        f'"router-id": "{X_ADDR}" , "direction": "receive", {body} }} }}'
    )


async def _bad_json(daemon: Any, speaker: Any, log_file: Path) -> None:
    relay = _relay_pid(speaker)
    before_counts = daemon.rib.counts()
    before_best = {p: daemon.rib.best(*parse_prefix(p)) for p in (V4[0], V4[X4 - 1], V4[-1], V6[7])}
    errors = speaker.session.errors
    good = (
        '"message": { "update": { "attribute": { "origin": "igp", "as-path": {"0": {"element": '
        f'"as-sequence", "value": [{X_AS}, 64999]}}}} }}, "announce": {{ "ipv4 unicast": {{ '
        '"192.0.2.99": [ { "nlri": "198.51.100.0/24" } ] } } } }'
    )
    lines = [
        b'{ "exabgp": "5.0.0", "type": "update", "neighbor": {\n',  # cut short: not JSON
        # wrong shape:
        b'{"exabgp": "5.0.0", "counter": 1000000, "type": "update", "neighbor": {"address": 7}}\n',
        b"\xff\xfe{ garbage\n",  # not UTF-8, not JSON, not an ack
        _envelope(1000001, good).encode() + b"\n",  # a valid update after them
    ]
    # ExaBGP is idle once its table is loaded (no keepalives on the API), so a line written into the
    # pipe ExaBGP → relay (a second writer via /proc) arrives whole and between ExaBGP's lines.
    fd = os.open(f"/proc/{relay}/fd/0", os.O_WRONLY)
    try:
        for line in lines:
            os.write(fd, line)
    finally:
        os.close(fd)
    new_key = parse_prefix("198.51.100.0/24")
    await wait_until(
        lambda: daemon.rib.best(*new_key) is not None, 10, "the valid update after the bad lines"
    )
    assert speaker.session.errors == errors + 2, speaker.session.last_error  # the two "{" lines
    assert speaker.restarts == 1 and speaker.pid is not None and daemon.status["x"].state == "established"
    path = daemon.rib.best(*new_key)
    assert (path.peer, path.next_hop, path.attrs.as_path_flat()) == ("x", "192.0.2.99", [X_AS, 64999])
    after = daemon.rib.counts()
    before_counts["families"]["ipv4"]["prefixes"] += 1
    before_counts["families"]["ipv4"]["paths"] += 1
    before_counts["peers"]["x"]["ipv4"]["received"] += 1
    before_counts["peers"]["x"]["ipv4"]["best"] += 1
    assert after == before_counts
    for p, best in before_best.items():
        assert daemon.rib.best(*parse_prefix(p)) is best, p
    logged = log_file.read_text()
    assert logged.count('"exabgp_protocol_error"') >= 2, logged[-2000:]
    assert '"json_path":"$"' in logged  # the syntax error names where it broke
