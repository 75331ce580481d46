"""Config reload with real peers: unchanged peers are not touched, removed ones leave the RIB, added
ones come up; a broken config changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ConfigError
from orchestrator.log import configure_logging
from orchestrator.rib.prefix import Family, parse_prefix

from .bird import (
    Bird,
    api_get,
    bgp_protocol,
    daemon_toml,
    free_port,
    peer_toml,
    running_daemon,
    static_blackholes,
    wait_until,
)

pytestmark = pytest.mark.interop

OUR_AS = 65020
PEERCTL_ADDR = "127.0.80.24"
FEEDERS = {  # name: (address, AS, first IPv4 /24 index)
    "a": ("127.0.80.21", 65021, 0),
    "b": ("127.0.80.22", 65022, 200),
    "c": ("127.0.80.23", 65023, 400),
}
N4, N6, SHARED4 = 300, 20, 100  # each feeder: 300 /24s of which the last 100 overlap the next one


def _v4(name: str) -> list[str]:
    start = FEEDERS[name][2]
    return [f"100.{64 + (i >> 8)}.{i & 255}.0/24" for i in range(start, start + N4)]


def _v6(name: str) -> list[str]:
    return [f"2001:db8:{FEEDERS[name][1] - 65000:x}{i:02x}::/48" for i in range(N6)]


def _feeder(name: str) -> str:
    address, asn, _ = FEEDERS[name]
    return (
        f"router id {address};\nprotocol device {{}}\n{static_blackholes(_v4(name), _v6(name))}\n"
        + bgp_protocol(
            "peerctl", local=address, local_as=asn, neighbor=PEERCTL_ADDR, peer_as=OUR_AS, passive=True,
            export="all", import_="none", next_hop4=f"192.0.2.{asn - 65000}",
            next_hop6=f"2001:db8:ffff::{asn - 65000}",
        )
    )  # fmt: skip


def _config(api_port: int, names: list[str]) -> str:
    peers = "".join(peer_toml(n, FEEDERS[n][0], FEEDERS[n][1], PEERCTL_ADDR) for n in names)
    return daemon_toml(OUR_AS, PEERCTL_ADDR, api_port, peers)


def _received(daemon: Any, name: str) -> tuple[int, int]:
    return daemon.rib.peer_counts(name, Family.IPV4)[0], daemon.rib.peer_counts(name, Family.IPV6)[0]


def test_reload_add_remove_keep(birds: Callable[[str, str], Bird], tmp_path: Path) -> None:
    configure_logging("warning")
    for name in FEEDERS:
        birds(name, _feeder(name))
    config = tmp_path / "peerctl.toml"
    port = free_port()
    config.write_text(_config(port, ["a", "b"]))
    asyncio.run(_scenario(config, port))


async def _scenario(config: Path, port: int) -> None:
    async with running_daemon(config) as daemon:
        full = (N4, N6)
        await wait_until(lambda: _received(daemon, "a") == full and _received(daemon, "b") == full, 40,
                         "A's and B's tables")  # fmt: skip
        a_speaker = daemon.speakers["a"]
        a_pid = a_speaker.pid
        a_best_before = daemon.rib.peer_counts("a", Family.IPV4)
        b_only = parse_prefix(_v4("b")[150])  # B only (A ends at 299, C starts at 400)
        ab_shared = parse_prefix(_v4("a")[-1])  # A and B: 100.65.43.0/24
        assert daemon.rib.best(*b_only).peer == "b"
        assert len(daemon.rib.paths(*ab_shared)) == 2

        # -- add C, remove B, keep A as it was (the same text: diff_peers sees A unchanged)
        config.write_text(_config(port, ["a", "c"]))
        summary = await daemon.reload()
        assert summary == {"added": ["c"], "removed": ["b"], "changed": [], "policy_changed": [],
                           "unchanged": ["a"]}
        assert "b" not in daemon.speakers and "b" not in daemon.status
        assert "b" not in daemon.rib.counts()["peers"]
        assert daemon.rib.best(*b_only) is None
        assert [p.peer for p in daemon.rib.paths(*ab_shared)] == ["a"]
        assert not any(p.peer == "b" for f in Family for _, p in daemon.rib.iter_best(f))
        await wait_until(lambda: _received(daemon, "c") == full, 30, "C's table")
        assert daemon.speakers["a"] is a_speaker and a_speaker.pid == a_pid and a_speaker.restarts == 0
        assert _received(daemon, "a") == full
        assert daemon.rib.peer_counts("a", Family.IPV4) == a_best_before  # A and C do not overlap
        assert daemon.status["a"].flaps == 0 and daemon.status["a"].state == "established"
        assert daemon.status["c"].state == "established"
        assert [p.name for p in daemon.config.peers] == ["a", "c"]
        peers = await api_get(daemon, "/api/v1/peers")
        assert sorted(p["name"] for p in peers) == ["a", "c"], peers

        # -- a broken config: ConfigError, and nothing changes
        good_config = daemon.config
        pids = {n: s.pid for n, s in daemon.speakers.items()}
        counts = daemon.rib.counts()
        broken = [
            _config(port, ["a", "c"]) + '\n[[peers]]\nname = "d"\nkind = "upstream"\n',  # no neighbor
            _config(port, ["a", "c"]).replace("[fib]", "[fib\n"),  # TOML syntax
            _config(port, ["a", "c", "a"]),  # duplicate peer
        ]
        for text in broken:
            config.write_text(text)
            with pytest.raises(ConfigError):
                await daemon.reload()
            assert daemon.config is good_config
            assert {n: s.pid for n, s in daemon.speakers.items()} == pids
            assert daemon.rib.counts() == counts
        await asyncio.sleep(0.5)  # nothing restarts later either
        assert {n: (s.pid, s.restarts) for n, s in daemon.speakers.items()} == {
            n: (pid, 0) for n, pid in pids.items()
        }
        assert daemon.rib.counts() == counts

        # -- an import-policy change alone keeps A's session: new chain, ROUTE-REFRESH, re-sent routes
        no_24 = 'import = { bogon_prefixes = false, bogon_asns = false, next_hop = false, max4 = 23 }\n'
        text = _config(port, ["a", "c"])
        config.write_text(text.replace('name = "a"\n', 'name = "a"\n' + no_24, 1))
        summary = await daemon.reload()
        assert summary == {"added": [], "removed": [], "changed": [], "policy_changed": ["a"],
                           "unchanged": ["c"]}
        # BIRD sends its table again only because it was asked: every /24 is now refused
        await wait_until(lambda: _received(daemon, "a") == (0, N6), 30, "A's /24s filtered after the refresh")
        assert daemon.speakers["a"].pid == pids["a"] and daemon.status["a"].flaps == 0
        assert daemon.status["a"].state == "established"
        filtered = await api_get(daemon, f"/api/v1/routes/{_v4('a')[0]}?filtered=1")
        paths = [(p["peer"], p["filtered"], p["rule"]) for p in filtered["paths"]]
        assert paths == [("a", True, "prefix-length")]
