"""Per-upstream tables and writer races, against a real kernel in namespaces each test creates and deletes.

* The daemon path end to end (config → import policy → RIB → FIB): each upstream's table holds exactly
  its accepted routes, the main table the best ones; a peer down empties its table.
* Regressions for the e2e flake: a nexthop object first needed while another family is being written,
  and a peer that flaps before its peer-down's kernel work ran.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import FibConfig, FibMode, LocalConfig, load_config
from orchestrator.fib.writer import FibWriter, upstream_nh_range
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, parse_prefix
from orchestrator.rib.table import BestChange, PeerInfo
from orchestrator.status import PeerStatus
from speakers.events import DownReason, PeerDown, PeerUp, SpeakerEvent, Update

pytestmark = pytest.mark.netns
LOCAL = LocalConfig(asn=64500, router_id="192.0.2.1", source4="192.0.2.1", source6="2001:db8::1")

if os.geteuid() != 0:
    pytest.skip("netns tests need root", allow_module_level=True)


class NullLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    debug = info = warning = error = _log

    def bind(self, **_kw: Any) -> NullLog:
        return self


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"ptest-{secrets.token_hex(4)}"
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def table(ns: str, family: Family, number: int) -> dict[str, str]:
    """prefix → gateway of the routes of ``number`` with protocol 201."""
    out = subprocess.run(["ip", "-n", ns, "-j", "-4" if family is Family.IPV4 else "-6", "route", "show",
                          "table", str(number), "proto", "201"], check=True, capture_output=True,
                         text=True).stdout
    return {r["dst"]: r.get("gateway", "") for r in json.loads(out or "[]")}


def v4(n: int, length: int = 24) -> int:
    return parse_prefix(f"20.{n >> 8}.{n & 255}.0/{length}")[1]


def v6(n: int, length: int = 40) -> int:
    return parse_prefix(f"2a00:{n >> 8:x}:{n & 255:x}00::/{length}")[1]


def p4(n: int) -> str:
    return f"20.{n >> 8}.{n & 255}.0/24"


def p6(n: int) -> str:
    return str(ipaddress.ip_network(f"2a00:{n >> 8:x}:{n & 255:x}00::/40"))


def attrs(nh: str, *path: int) -> Attributes:
    return Attributes(next_hop=nh, as_path=((AS_SEQUENCE, path),))


CONFIG = """\
[local]
asn = 64500
router_id = "192.0.2.1"
source4 = "192.0.2.1"
source6 = "2001:db8::1"
[fib]
mode = "full"
table = 20000
netns = "{ns}"
source_interface = "peerctl0"
per_upstream_tables = true
upstream_table_base = 20100
[[peers]]
name = "a"
kind = "upstream"
neighbor = "127.0.95.2"
peer_as = 65001
import = {{ bogon_asns = false, next_hop = false }}
[[peers]]
name = "b"
kind = "upstream"
neighbor = "127.0.95.3"
peer_as = 65002
import = {{ bogon_asns = false, next_hop = false }}
"""


def test_per_upstream_tables_through_the_daemon(ns: str, tmp_path: Path) -> None:
    """Import policy → RIB → tables: 20100 holds a's accepted routes, 20101 b's, 20000 the best."""
    from orchestrator.daemon import Daemon

    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(ns=ns))
    config = load_config(path)
    assert [p.table for p in config.peers] == [20100, 20101]

    async def go() -> None:
        d = Daemon(config)
        d.fib = FibWriter(config.fib, config.local, NullLog(), reconcile_interval=0,
                          upstream_tables={p.name: p.table for p in config.peers if p.table is not None})
        await d.fib.start()
        d.rib.on_update = d._fib_adj_rib_in
        for p in config.peers:
            d.imports.configure(p, str(path))
            d.rib.add_peer(PeerInfo(name=p.name, peer_as=p.peer_as, address=p.neighbor, local_as=64500,
                                    local_pref=p.local_pref))
            d.status[p.name] = PeerStatus(state="connect")

        def feed(*events: SpeakerEvent) -> None:
            changes: list[BestChange] = []
            for e in events:
                d._apply(e, changes)
            d._publish(changes)

        a4, a6 = attrs("192.0.2.2", 65001), attrs("2001:db8::2", 65001)
        b4, b6 = attrs("192.0.2.3", 65002, 65002), attrs("2001:db8::3", 65002, 65002)
        feed(PeerUp("a", 65001, "127.0.95.2"), PeerUp("b", 65002, "127.0.95.3"))
        # a: 0..99, b: 50..149 (longer AS path: a wins the overlap); /25 and /64 are refused by import
        # policy (prefix length) and must appear in no table
        feed(Update("a", Family.IPV4, a4, [v4(n) for n in range(100)] + [v4(7, 25)], ()),
             Update("a", Family.IPV6, a6, [v6(n) for n in range(100)] + [v6(7, 64)], ()),
             Update("b", Family.IPV4, b4, [v4(n) for n in range(50, 150)] + [v4(8, 25)], ()),
             Update("b", Family.IPV6, b6, [v6(n) for n in range(50, 150)], ()))
        # b withdraws 140..149; a re-announces 0 with our own ASN in the path: refused, so a's
        # previous path for it is gone too (implicit withdraw) and 0 leaves a's table
        feed(Update("b", Family.IPV4, None, (), [v4(n) for n in range(140, 150)]),
             Update("a", Family.IPV4, attrs("192.0.2.2", 65001, 64500), [v4(0)], ()))
        await d.fib.flush()

        want_a4 = {p4(n): "192.0.2.2" for n in range(1, 100)}
        want_b4 = {p4(n): "192.0.2.3" for n in range(50, 140)}
        assert table(ns, Family.IPV4, 20100) == want_a4
        assert table(ns, Family.IPV4, 20101) == want_b4
        assert table(ns, Family.IPV4, 20000) == {**want_b4, **want_a4}
        assert table(ns, Family.IPV6, 20100) == {p6(n): "2001:db8::2" for n in range(100)}
        assert table(ns, Family.IPV6, 20101) == {p6(n): "2001:db8::3" for n in range(50, 150)}
        assert len(table(ns, Family.IPV6, 20000)) == 150
        st = d.fib.status()
        assert st["errors"] == 0 and st["upstreams"]["a"]["installed"] == {"ipv4": 99, "ipv6": 100}
        assert st["upstreams"]["b"] == {"table": 20101, "installed": {"ipv4": 90, "ipv6": 100}, "pending": 0,
                                        "errors": 0, "last_error": None}
        nhids = subprocess.run(["ip", "-n", ns, "-j", "nexthop", "show"], capture_output=True, text=True,
                               check=True).stdout
        lo, hi = upstream_nh_range(20100)
        assert sum(lo <= nh["id"] < hi for nh in json.loads(nhids)) == 2  # a's table: its own objects

        # a goes down: its table is emptied at nexthop-object speed, b's untouched, main falls back to b
        t = time.perf_counter()
        feed(PeerDown("a", DownReason.CONNECTION_LOST))
        await asyncio.gather(*list(d._tasks))
        took = time.perf_counter() - t
        assert table(ns, Family.IPV4, 20100) == {} and table(ns, Family.IPV6, 20100) == {}
        assert took < 0.5
        await d.fib.flush()
        assert table(ns, Family.IPV4, 20101) == want_b4
        assert table(ns, Family.IPV4, 20000) == want_b4
        assert d.fib.status()["upstreams"]["a"]["installed"] == {"ipv4": 0, "ipv6": 0}

        # a comes back: its table fills again
        feed(PeerUp("a", 65001, "127.0.95.2"), Update("a", Family.IPV4, a4, [v4(n) for n in range(10)], ()))
        await d.fib.flush()
        assert table(ns, Family.IPV4, 20100) == {p4(n): "192.0.2.2" for n in range(10)}
        fib, d.fib = d.fib, None
        await fib.stop()
        # stop() leaves every table in place (graceful restart), and a restart adopts each table's own
        w = FibWriter(config.fib, config.local, NullLog(), reconcile_interval=0,
                      upstream_tables={"a": 20100, "b": 20101})
        await w.start()
        assert w.upstreams["a"].status()["installed"]["ipv4"] == 10
        assert w.upstreams["b"].status()["installed"]["ipv4"] == 90
        assert w.status()["installed"]["ipv4"] == len(want_b4) + 10
        await w.stop()

    asyncio.run(go())


def cfg(ns: str) -> FibConfig:
    return FibConfig(mode=FibMode.FULL, table=20000, protocol=201, metric=0, netns=ns,
                     source_interface="peerctl0")


def test_nexthop_first_needed_while_another_family_is_written(ns: str) -> None:
    """The e2e flake: a new next hop appearing while IPv4 chunks are in flight must not reach the
    kernel before its nexthop object ("Nexthop id does not exist")."""

    async def go() -> None:
        w = FibWriter(cfg(ns), LOCAL, NullLog(), reconcile_interval=0, batch=64)
        await w.start()
        for n in range(3000):
            w.submit(Family.IPV4, v4(n), "192.0.2.2", "a")

        async def late() -> None:
            while not w._inflight:
                await asyncio.sleep(0)
            for n in range(500):  # first IPv6 route of peer b, while IPv4 chunks are being written
                w.submit(Family.IPV6, v6(n), "2001:db8::3", "b")

        await asyncio.gather(late(), w.flush())
        await w.flush()
        assert w.errors == 0, w.last_error
        assert len(table(ns, Family.IPV6, 20000)) == 500 and w.status()["installed"]["ipv6"] == 500
        await w.stop()

    asyncio.run(go())


def test_flap_before_peer_down_ran_keeps_relearned_routes(ns: str) -> None:
    """PeerDown then PeerUp and routes again before the peer-down task ran: the re-learned routes get
    fresh objects, which the late peer-down neither re-points nor deletes."""

    async def go() -> None:
        w = FibWriter(cfg(ns), LOCAL, NullLog(), reconcile_interval=0)
        await w.start()
        for n in range(200):
            w.submit(Family.IPV4, v4(n), "192.0.2.2", "a")
            w.submit(Family.IPV4, v4(1000 + n), "192.0.2.3", "b")
        await w.flush()
        down = w.peer_down("a", fallback="b")  # the daemon spawns this; it runs later
        for n in range(200):  # the RIB's changes for a's routes, then a is back with them
            w.submit(Family.IPV4, v4(n), None, None)
        for n in range(200):
            w.submit(Family.IPV4, v4(n), "192.0.2.2", "a")
        await down
        await w.flush()
        routes = table(ns, Family.IPV4, 20000)
        assert {p for p, gw in routes.items() if gw == "192.0.2.2"} == {p4(n) for n in range(200)}
        assert len(routes) == 400 and w.errors == 0
        await w.stop()

    asyncio.run(go())
