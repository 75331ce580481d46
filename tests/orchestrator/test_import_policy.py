"""Import policies in the daemon: chain → RIB, filtered routes with their rule, max-prefix actions."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.api.views import peer_json, routes_for
from orchestrator.config import Config, LocalConfig, PeerConfig, PeerKind
from orchestrator.daemon import Daemon
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, parse_prefix
from orchestrator.rib.table import BestChange, PeerInfo
from orchestrator.status import PeerStatus
from policies.config import parse_peer_policy
from policies.dampening import DampeningParams
from speakers.events import DownReason, PeerDown, PeerUp, SpeakerEvent, Update

LOCAL_AS = 64500


def peer(name: str, addr: str, asn: int, policy: dict[str, Any] | None) -> PeerConfig:
    pol = parse_peer_policy(policy, kind=PeerKind.UPSTREAM) if policy is not None else None
    return PeerConfig(name=name, kind=PeerKind.UPSTREAM, neighbor=addr, peer_as=asn, policy=pol)


def make(tmp_path: Path, *peers: PeerConfig) -> Daemon:
    d = Daemon(Config(path=tmp_path / "c.toml", local=LocalConfig(LOCAL_AS, "10.0.0.1"), peers=peers))
    for p in peers:
        d.imports.configure(p)
        d.rib.add_peer(PeerInfo(p.name, p.peer_as, p.neighbor, LOCAL_AS, local_pref=p.local_pref))
        d.status[p.name] = PeerStatus(state="connect", since=time.monotonic())
    return d


def feed(d: Daemon, *events: SpeakerEvent) -> list[BestChange]:
    changes: list[BestChange] = []
    for e in events:
        d._apply(e, changes)
    return changes


def keys(*prefixes: str) -> list[int]:
    return [parse_prefix(p)[1] for p in prefixes]


def attrs(*path: int, nh: str = "192.0.2.9") -> Attributes:
    return Attributes(next_hop=nh, as_path=((AS_SEQUENCE, path),))


V4 = Family.IPV4


def test_no_policy_is_accept_all(tmp_path: Path) -> None:
    d = make(tmp_path, peer("a", "192.0.2.2", 65001, None))
    assert "a" not in d.imports.peers
    feed(d, PeerUp("a", 65001, "1.1.1.1"), Update("a", V4, attrs(65001), keys("10.0.0.0/8"), ()))
    assert d.rib.peer_counts("a", V4) == (1, 1)


def test_filtered_routes_keep_their_rule(tmp_path: Path) -> None:
    d = make(tmp_path, peer("a", "192.0.2.2", 3333, {"import": {"next_hop": False}}))
    feed(d, PeerUp("a", 3333, "1.1.1.1"))
    # 10/8 is a bogon, /25 too long, 16.0.0.0/16 fine; a second set has a path from a bogon ASN
    feed(d, Update("a", V4, attrs(3333), keys("10.1.0.0/16", "16.0.0.0/25", "16.0.0.0/16"), ()))
    feed(d, Update("a", V4, attrs(3333, 65535), keys("17.0.0.0/16"), ()))
    assert d.rib.peer_counts("a", V4) == (1, 1)
    r = routes_for(d, "10.1.0.0/16", filtered=True)
    assert r is not None and r["paths"][0]["rule"] == "bogon-prefix" and r["paths"][0]["filtered"]
    assert routes_for(d, "10.1.0.0/16") is None  # not shown without ?filtered
    assert routes_for(d, "16.0.0.0/25", filtered=True)["paths"][0]["rule"] == "prefix-length"  # type: ignore[index]
    assert routes_for(d, "17.0.0.0/16", filtered=True)["paths"][0]["rule"] == "bogon-asn"  # type: ignore[index]
    fams = peer_json(d, d.config.peers[0], time.monotonic())["families"]["ipv4"]
    assert (fams["received"], fams["accepted"], fams["filtered"]) == (4, 1, 3)
    # accepted path carries the import actions (local-pref by kind, kind tag)
    best = d.rib.best(V4, keys("16.0.0.0/16")[0])
    assert best is not None and best.attrs.local_pref == 100 and best.attrs.large_communities
    # a re-announcement that is now refused replaces (withdraws) the accepted path
    feed(d, Update("a", V4, attrs(3333, 0), keys("16.0.0.0/16"), ()))
    assert d.rib.peer_counts("a", V4) == (0, 0)
    # a withdraw removes a filtered entry; peer down purges the rest
    feed(d, Update("a", V4, None, (), keys("10.1.0.0/16")))
    assert routes_for(d, "10.1.0.0/16", filtered=True) is None
    feed(d, PeerDown("a", DownReason.CONNECTION_LOST))
    assert d.imports.filtered_count("a", V4) == 0


def test_import_none_is_one_line(tmp_path: Path) -> None:
    d = make(tmp_path, peer("a", "192.0.2.2", 3333, {"import": "none"}))
    feed(d, PeerUp("a", 3333, "1.1.1.1"), Update("a", V4, attrs(3333), keys("16.0.0.0/16"), ()))
    assert d.rib.peer_counts("a", V4) == (0, 0)
    assert routes_for(d, "16.0.0.0/16", filtered=True)["paths"][0]["rule"] == "import-none"  # type: ignore[index]


@pytest.mark.parametrize("action", ["warn", "reject"])
def test_max_prefix_warn_and_reject(tmp_path: Path, action: str) -> None:
    pol = parse_peer_policy({"import": {"bogon_prefixes": False, "next_hop": False},
                             "max_prefix": {"ipv4": 2, "action": action}}, kind=PeerKind.UPSTREAM)
    d = make(tmp_path, PeerConfig("a", PeerKind.UPSTREAM, "192.0.2.2", 3333, policy=pol))
    feed(d, PeerUp("a", 3333, "1.1.1.1"))
    feed(d, Update("a", V4, attrs(3333), keys("16.0.0.0/16", "17.0.0.0/16", "18.0.0.0/16"), ()))
    got = d.rib.peer_counts("a", V4)[0]
    assert got == (3 if action == "warn" else 2)
    if action == "reject":
        assert routes_for(d, "18.0.0.0/16", filtered=True)["paths"][0]["rule"] == "max-prefix"  # type: ignore[index]


def test_max_prefix_teardown_stops_the_speaker(tmp_path: Path) -> None:
    asyncio.run(_teardown(tmp_path))


async def _teardown(tmp_path: Path) -> None:
    pol = parse_peer_policy({"import": {"bogon_prefixes": False, "next_hop": False},
                             "max_prefix": {"ipv4": 1, "action": "restart", "restart_after": 0.2}},
                            kind=PeerKind.UPSTREAM)
    p = PeerConfig("a", PeerKind.UPSTREAM, "192.0.2.2", 3333, policy=pol)
    d = make(tmp_path, p)
    sent: list[str] = []
    started: list[int] = []

    class Fake:
        restarts = 0

        async def start(self) -> None:
            started.append(1)

        async def stop(self) -> None:
            sent.append("stop")

        async def send(self, command: str) -> None:
            sent.append(command)

    d.speakers["a"] = Fake()
    d._make_speaker = lambda peer: Fake()  # type: ignore[method-assign]
    feed(d, PeerUp("a", 3333, "1.1.1.1"))
    feed(d, Update("a", V4, attrs(3333), keys("16.0.0.0/16", "17.0.0.0/16"), ()))
    for _ in range(100):
        if started:
            break
        await asyncio.sleep(0.02)
    assert sent[0] == "neighbor 192.0.2.2 teardown 1" and "stop" in sent
    assert started, "the session was not restarted after restart_after"
    assert d.rib.peer_counts("a", V4) == (0, 0)


def test_dampening_suppresses_a_flapping_route(tmp_path: Path) -> None:
    pol = parse_peer_policy({"import": "all", "dampening": {"enabled": True}}, kind=PeerKind.UPSTREAM)
    d = make(tmp_path, PeerConfig("a", PeerKind.UPSTREAM, "192.0.2.2", 3333, policy=pol))
    pi = d.imports.peers["a"]
    assert pi.damp is not None and pi.damp.params == DampeningParams(enabled=True)
    ch: list[BestChange] = []
    k = keys("16.0.0.0/16")
    pi.update(d.rib, V4, attrs(3333), k, (), ch, now=0.0)
    for i in range(1, 5):
        pi.update(d.rib, V4, None, (), k, ch, now=float(i))
        pi.update(d.rib, V4, attrs(3333), k, (), ch, now=float(i) + 0.5)
    assert d.rib.peer_counts("a", V4)[0] == 0
    assert pi.filtered[0][k[0]][0] == "dampened"
    pi.reuse(d.rib, 10_000.0, ch)
    assert d.rib.peer_counts("a", V4)[0] == 1
