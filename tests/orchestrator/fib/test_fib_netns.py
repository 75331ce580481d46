"""FibWriter against a real kernel, in network namespaces created (and deleted) by each test."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import FibConfig, FibMode, LocalConfig
from orchestrator.errors import KernelInstallError, NotPermitted
from orchestrator.fib import writer as writer_mod
from orchestrator.fib.writer import FibWriter
from orchestrator.rib.prefix import Family, format_prefix, parse_prefix

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[3]
TABLE = 20000
LOCAL = LocalConfig(asn=64500, router_id="192.0.2.1", source4="192.0.2.1", source6="2001:db8::1")

if os.geteuid() != 0:
    pytest.skip("netns tests need root", allow_module_level=True)


class NullLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _log(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    debug = info = warning = error = _log


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"ptest-{secrets.token_hex(4)}"
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def ip(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True).stdout


def routes(ns: str, family: Family) -> dict[str, dict[str, Any]]:
    out = ip(ns, "-j", "-4" if family is Family.IPV4 else "-6", "route", "show", "table", str(TABLE))
    host = "/32" if family is Family.IPV4 else "/128"
    return {r["dst"] if "/" in r["dst"] or r["dst"] == "default" else r["dst"] + host: r
            for r in json.loads(out or "[]")}


def cfg(ns: str, **kw: Any) -> FibConfig:
    base: dict[str, Any] = dict(mode=FibMode.FULL, table=TABLE, protocol=201, metric=0, netns=ns,
                                source_interface="peerctl0")
    base.update(kw)
    return FibConfig(**base)


def v4(n: int) -> int:
    return parse_prefix(f"{10 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}.0/24")[1]


def v6(n: int) -> int:
    return parse_prefix(f"2a00:{n >> 8:x}:{n & 255:x}00::/40")[1]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_install_replace_withdraw(ns: str) -> None:
    async def go() -> None:
        w = FibWriter(cfg(ns, metric=50), LOCAL, NullLog(), reconcile_interval=0)
        await w.start()
        assert any("veth peerctl0" in c for c in w.created)
        for n in range(300):
            w.submit(Family.IPV4, v4(n), "192.0.2.2", "a")
            w.submit(Family.IPV6, v6(n), "2001:db8::2", "a")
        await w.flush()
        r4, r6 = routes(ns, Family.IPV4), routes(ns, Family.IPV6)
        assert len(r4) == 300 and len(r6) == 300
        r = r4["10.0.5.0/24"]
        want = ("192.0.2.2", "201", 50, "192.0.2.1")
        assert (r["gateway"], r["protocol"], r["metric"], r["prefsrc"]) == want
        r = r6["2a00:0:500::/40"]
        assert (r["gateway"], r["protocol"], r["metric"], r["prefsrc"]) == ("2001:db8::2", "201", 50,
                                                                            "2001:db8::1")
        assert "nhid" in r
        assert w.is_installed(Family.IPV4, v4(5)) and not w.is_installed(Family.IPV4, v4(999))
        # replace (another upstream) and withdraw, folded: last change wins
        w.submit(Family.IPV4, v4(5), "192.0.2.3", "b")
        w.submit(Family.IPV4, v4(6), "192.0.2.3", "b")
        w.submit(Family.IPV4, v4(6), None, None)
        w.submit(Family.IPV6, v6(7), None, None)
        await w.flush()
        r4, r6 = routes(ns, Family.IPV4), routes(ns, Family.IPV6)
        assert r4["10.0.5.0/24"]["gateway"] == "192.0.2.3"
        assert "10.0.6.0/24" not in r4 and "2a00:0:700::/40" not in r6
        st = w.status()
        keys = {"netns", "table", "protocol", "mode", "installed", "pending", "stale", "stale_timeout",
                "errors", "last_error"}
        assert set(st) == keys
        assert st["installed"] == {"ipv4": 299, "ipv6": 299} and st["pending"] == 0 and st["errors"] == 0
        await w.stop()
        assert len(routes(ns, Family.IPV4)) == 299  # stop() leaves routes in place (graceful restart)

    run(go())


def test_default_mode_takes_default_routes_only(ns: str) -> None:
    async def go() -> None:
        w = FibWriter(cfg(ns, mode=FibMode.DEFAULT), LOCAL, NullLog(), reconcile_interval=0)
        await w.start()
        w.submit(Family.IPV4, v4(1), "192.0.2.2", "a")
        w.submit(Family.IPV4, 0, "192.0.2.2", "a")
        w.submit(Family.IPV6, 0, "2001:db8::2", "a")
        await w.flush()
        assert list(routes(ns, Family.IPV4)) == ["default"] and list(routes(ns, Family.IPV6)) == ["default"]
        await w.stop()

    run(go())


def test_per_route_errors(ns: str) -> None:
    async def go() -> None:
        log = NullLog()
        w = FibWriter(cfg(ns), LOCAL, log, reconcile_interval=0)
        await w.start()
        ip(ns, "route", "add", "10.0.3.0/24", "via", "192.0.2.9", "table", str(TABLE))  # behind our back
        for n in range(10):
            w.submit(Family.IPV4, v4(n), "192.0.2.2", "a")
        w.submit(Family.IPV4, parse_prefix("198.18.0.0/24")[1], "203.0.113.1", "x")  # unreachable gateway
        await w.flush()
        fails = w.failures(Family.IPV4)
        assert set(fails) == {v4(3), parse_prefix("198.18.0.0/24")[1]}
        assert fails[v4(3)].errno == 17 and "10.0.3.0/24" in str(fails[v4(3)])  # EEXIST, not clobbered
        unreach = fails[parse_prefix("198.18.0.0/24")[1]]
        assert unreach.errno == 101 and "ENETUNREACH" in str(unreach)
        assert routes(ns, Family.IPV4)["10.0.3.0/24"]["gateway"] == "192.0.2.9"
        assert len(routes(ns, Family.IPV4)) == 10  # 9 of ours + the foreign one: one bad route stops none
        assert w.status()["errors"] == 2 and w.status()["last_error"]
        await w.stop()
        # prefsrc no longer local: the kernel says why, for each route. (A fresh table: the kernel
        # skips the check when an identical route already exists in the same table.)
        w2 = FibWriter(cfg(ns, table=TABLE + 1), LOCAL, log, reconcile_interval=0)
        await w2.start()
        ip(ns, "addr", "del", "192.0.2.1/24", "dev", "peerctl0")
        ip(ns, "addr", "add", "192.0.2.50/24", "dev", "peerctl0")
        for n in range(20, 25):
            w2.submit(Family.IPV4, v4(n), "192.0.2.2", "a")
        await w2.flush()
        msg = str(w2.failures(Family.IPV4)[v4(20)])
        assert "EINVAL" in msg and "Invalid prefsrc address" in msg, msg
        assert len(w2.failures(Family.IPV4)) == 5 and not w2.is_installed(Family.IPV4, v4(20))
        await w2.stop()

    run(go())


def test_missing_source_is_explained(ns: str) -> None:
    async def go() -> None:
        w = FibWriter(cfg(ns, source_interface=""), LOCAL, NullLog(), reconcile_interval=0)
        expected = r"source4 = 192.0.2.1.* on no interface in netns.*source_interface"
        with pytest.raises(KernelInstallError, match=expected):
            await w.start()

    run(go())


def test_privilege(monkeypatch: pytest.MonkeyPatch, ns: str) -> None:
    monkeypatch.setattr(writer_mod, "has_net_admin", lambda: False)

    async def go() -> None:
        off = FibWriter(cfg(ns, mode=FibMode.OFF), LOCAL, NullLog())
        await off.start()
        off.submit(Family.IPV4, v4(1), "192.0.2.2", "a")
        assert off.status()["installed"] == {"ipv4": 0, "ipv6": 0}
        await off.stop()
        with pytest.raises(NotPermitted) as info:
            await FibWriter(cfg(ns), LOCAL, NullLog()).start()
        assert "CAP_NET_ADMIN" in str(info.value) and "\n" not in str(info.value)

    run(go())


def test_periodic_reconcile_repairs(ns: str) -> None:
    async def go() -> None:
        w = FibWriter(cfg(ns), LOCAL, NullLog(), reconcile_interval=0)
        await w.start()
        for n in range(100):
            w.submit(Family.IPV4, v4(n), "192.0.2.2", "a")
        await w.flush()
        ip(ns, "route", "del", "10.0.1.0/24", "table", str(TABLE))
        ip(ns, "route", "replace", "10.0.2.0/24", "via", "192.0.2.7", "table", str(TABLE), "proto", "201")
        ip(ns, "route", "add", "172.16.0.0/24", "via", "192.0.2.7", "table", str(TABLE), "proto", "201")
        counts = await w.reconcile()
        await w.flush()
        assert counts["missing"] == 1 and counts["changed"] == 1 and counts["stray"] == 1
        r4 = routes(ns, Family.IPV4)
        assert len(r4) == 100 and "172.16.0.0/24" not in r4 and r4["10.0.2.0/24"]["gateway"] == "192.0.2.2"
        await w.stop()

    run(go())


CHILD = textwrap.dedent("""
    import asyncio, sys
    from orchestrator.config import FibConfig, FibMode, LocalConfig
    from orchestrator.fib.writer import FibWriter
    from orchestrator.rib.prefix import Family, parse_prefix
    class L:
        def __getattr__(self, name): return lambda *a, **k: None
    async def main():
        cfg = FibConfig(mode=FibMode.FULL, table=20000, protocol=201, netns=sys.argv[1],
                        source_interface="peerctl0")
        w = FibWriter(cfg, LocalConfig(asn=1, router_id="1.1.1.1", source4="192.0.2.1",
                      source6="2001:db8::1"), L(), reconcile_interval=0)
        await w.start()
        for n in range(int(sys.argv[2])):
            w.submit(Family.IPV4, parse_prefix(f"{10 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}.0/24")[1],
                     "192.0.2.2", "a")
            w.submit(Family.IPV6, parse_prefix(f"2a00:{n >> 8:x}:{n & 255:x}00::/40")[1], "2001:db8::2", "a")
        await w.flush()
        print("ready", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
""")


def test_restart_after_kill9_reconciles_without_blackhole(ns: str) -> None:
    n_routes = 5000
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", CHILD, ns, str(n_routes)], stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(routes(ns, Family.IPV4)) == n_routes
    for n in range(0, 50):  # removed by hand
        ip(ns, "route", "del", format_prefix(Family.IPV4, v4(n)), "table", str(TABLE))
    for n in range(3):  # strays of our protocol
        ip(ns, "route", "add", f"172.16.{n}.0/24", "via", "192.0.2.3", "table", str(TABLE), "proto", "201")
    # desired after restart: v4 routes 0..4499 only (500 withdrawn while we were down), v6 all
    desired4 = {v4(n) for n in range(4500)}
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            out = subprocess.run(["ip", "-n", ns, "route", "show", "table", str(TABLE)], capture_output=True,
                                 text=True).stdout
            samples.append(out.count("\n"))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()

    async def go() -> None:
        w = FibWriter(cfg(ns), LOCAL, NullLog(), reconcile_interval=0)
        await w.start()
        assert w.status()["installed"]["ipv4"] == n_routes - 50 + 3  # adopted, stale
        for key in desired4:
            w.submit(Family.IPV4, key, "192.0.2.2", "a")
        for n in range(n_routes):
            w.submit(Family.IPV6, v6(n), "2001:db8::2", "a")
        await w.flush()
        assert len(routes(ns, Family.IPV4)) > 4500  # stale routes kept until the sweep
        status = w.status()
        assert status["stale"] == 500 + 3 and status["stale_timeout"] == FibConfig().stale_timeout
        await w.sweep_stale()
        assert w.status()["stale"] == 0
        await w.stop()

    try:
        run(go())
    finally:
        stop.set()
        sampler.join()
    kernel4 = {parse_prefix(p)[1] for p in routes(ns, Family.IPV4)}
    assert kernel4 == desired4
    assert len(routes(ns, Family.IPV6)) == n_routes
    assert samples and min(samples) >= 4500, min(samples)
    nexthops = ip(ns, "nexthop", "show")
    assert nexthops.count("id ") == 2, nexthops  # the old process's objects were adopted, not duplicated


def test_peer_down_and_next_hop_change_via_nexthop_objects(ns: str) -> None:
    n_routes = 20000

    async def go() -> None:
        w = FibWriter(cfg(ns), LOCAL, NullLog(), reconcile_interval=0)
        await w.start()
        w.submit(Family.IPV4, parse_prefix("192.168.0.0/24")[1], "192.0.2.3", "b")
        for n in range(n_routes):
            w.submit(Family.IPV4, v4(n), "192.0.2.2", "a")
            w.submit(Family.IPV6, v6(n), "2001:db8::2", "a")
        await w.flush()
        t = time.perf_counter()
        assert await w.next_hop_changed("a", "192.0.2.2", "192.0.2.4") == 1
        took = time.perf_counter() - t
        r4 = routes(ns, Family.IPV4)
        assert sum(r["gateway"] == "192.0.2.4" for r in r4.values()) == n_routes and took < 0.5
        # the RIB then re-submits the routes with the new next hop: no kernel work needed
        for n in range(n_routes):
            w.submit(Family.IPV4, v4(n), "192.0.2.4", "a")
        await w.flush()
        # peer a goes down, b is the fallback for IPv4; IPv6 has no fallback and is removed
        assert await w.peer_down("a", fallback="b") == 2
        r4 = routes(ns, Family.IPV4)
        assert sum(r["gateway"] == "192.0.2.3" for r in r4.values()) == n_routes + 1
        assert routes(ns, Family.IPV6) == {} and w.status()["installed"]["ipv6"] == 0
        for n in range(n_routes):  # the RIB's follow-up moves them onto b's own object
            w.submit(Family.IPV4, v4(n), "192.0.2.3", "b")
        await w.flush()
        await w._collect_nexthops()
        assert ip(ns, "nexthop", "show").count("id ") == 1
        assert await w.peer_down("b") == 1
        assert routes(ns, Family.IPV4) == {} and w.status()["installed"]["ipv4"] == 0
        await w.stop()

    run(go())
