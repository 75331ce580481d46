"""``peerctl irr refresh`` with the real bgpq4 against a small IRRd on loopback (``fake_irrd``):
lists written atomically where the chain reads them, the last good list kept on every failure
(unknown set, closed port, a server that never answers → timeout), and the daemon's chain rebuilt
through ``POST /api/v1/irr/reload`` so the next UPDATE is filtered by the new list."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

import orchestrator.cli_irr  # noqa: F401  (registers /api/v1/irr/reload, as `peerctl run` does)
from orchestrator.api.app import build_app
from orchestrator.cli import main as cli_main
from orchestrator.config import load_config
from orchestrator.daemon import Daemon
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, parse_prefix
from orchestrator.rib.table import BestChange, PeerInfo
from orchestrator.status import PeerStatus
from policies.irr import load_prefix_file, refresh_file
from policies.prefixset import PrefixList
from speakers.events import PeerUp, Update
from tests.policies.fake_irrd import FakeIrrd

BGPQ4 = shutil.which("bgpq4")
pytestmark = pytest.mark.skipif(BGPQ4 is None, reason="bgpq4 is not installed")

SETS = {"AS-TEST": (["192.0.2.0/24", "198.51.100.0/22"], ["2001:db8::/32"]),
        "AS13335": (["1.1.1.0/24"], ["2606:4700::/32"])}


@pytest.fixture
def irrd() -> Iterator[FakeIrrd]:
    server = FakeIrrd(SETS)
    yield server
    server.close()


@pytest.fixture
def silent() -> Iterator[FakeIrrd]:
    server = FakeIrrd({}, host="127.77.1.2", silent=True)
    yield server
    server.close()


def closed_port() -> str:
    s = socket.socket()
    s.bind(("127.77.1.5", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now
    return f"127.77.1.5:{port}"


def test_refresh_writes_what_bgpq4_parsed(irrd: FakeIrrd, tmp_path: Path) -> None:
    assert BGPQ4 is not None
    path = tmp_path / "irr" / "cf.json"
    res = refresh_file("cf", "AS-TEST", path, bgpq4_path=BGPQ4, timeout=20, extra=("-h", irrd.addr))
    assert res.ok and res.entries == 3, res
    assert "!a4AS-TEST" in irrd.queries and "!a6AS-TEST" in irrd.queries  # bgpq4 really asked
    pl = PrefixList(load_prefix_file(path))
    assert pl.matches(*parse_prefix("198.51.100.0/22")) and pl.matches(*parse_prefix("2001:db8::/32"))
    assert not pl.matches(*parse_prefix("198.51.100.0/24"))  # exact entries
    assert [p.name for p in path.parent.iterdir()] == ["cf.json"]  # no temporary left behind
    res = refresh_file("one", "AS13335", tmp_path / "one.json", bgpq4_path=BGPQ4, timeout=20,
                       extra=("-h", irrd.addr))
    assert res.ok and res.entries == 2 and "!gas13335" in irrd.queries  # a single ASN source


def test_failures_keep_the_last_good_list(irrd: FakeIrrd, silent: FakeIrrd, tmp_path: Path) -> None:
    assert BGPQ4 is not None
    path = tmp_path / "cf.json"
    assert refresh_file("cf", "AS-TEST", path, bgpq4_path=BGPQ4, timeout=20, extra=("-h", irrd.addr)).ok
    good = path.read_bytes()
    res = refresh_file("cf", "AS-NOPE", path, bgpq4_path=BGPQ4, timeout=20, extra=("-h", irrd.addr))
    assert not res.ok and "no prefixes for AS-NOPE" in res.error and res.entries == 3
    res = refresh_file("cf", "AS-TEST", path, bgpq4_path=BGPQ4, timeout=20, extra=("-h", closed_port()))
    assert not res.ok and res.error.startswith("bgpq4 exited") and "connect" in res.error, res.error
    t0 = time.monotonic()
    res = refresh_file("cf", "AS-TEST", path, bgpq4_path=BGPQ4, timeout=1.0, extra=("-h", silent.addr))
    assert not res.ok and res.error == "bgpq4 timed out after 1 s (AS-TEST)" and res.entries == 3
    assert time.monotonic() - t0 < 10
    res = refresh_file("cf", "AS-TEST", path, bgpq4_path=str(tmp_path / "no-bgpq4"), timeout=5)
    assert not res.ok and "cannot run" in res.error
    assert path.read_bytes() == good


CONFIG = """
[local]
asn = 64500
router_id = "10.0.0.1"

[api]
listen = "127.77.1.3:{port}"

[runtime]
dir = "run"

[fib]
mode = "off"

[[peers]]
name = "cf"
kind = "upstream"
neighbor = "127.77.1.4"
peer_as = 13335
import = {{ next_hop = false }}
irr = {{ as_set = "AS-TEST" }}
"""


def free_port(host: str) -> int:
    s = socket.socket()
    s.bind((host, 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def test_cli_refresh_reloads_the_running_daemon(irrd: FakeIrrd, silent: FakeIrrd, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port("127.77.1.3")
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(CONFIG.format(port=port))
    config = load_config(cfg_path)
    d = Daemon(config)
    peer = config.peers[0]
    d.imports.configure(peer, str(cfg_path))
    d.rib.add_peer(PeerInfo(peer.name, peer.peer_as, peer.neighbor, 64500))
    d.status[peer.name] = PeerStatus(state="connect", since=time.monotonic())  # as _start_peer does
    v4 = Family.IPV4
    path = Attributes(next_hop="127.77.1.4", as_path=((AS_SEQUENCE, (13335,)),))

    def update(*prefixes: str) -> None:
        changes: list[BestChange] = []
        d._apply(Update("cf", v4, path, [parse_prefix(p)[1] for p in prefixes], ()), changes)

    def rule(prefix: str) -> str | None:
        for fp in d.imports.filtered_paths(v4, parse_prefix(prefix)[1]):
            return fp.rule
        return None

    async def go() -> None:
        server = TestServer(build_app(d), host="127.77.1.3", port=port)
        await server.start_server()
        try:
            d._apply(PeerUp("cf", 13335, "1.1.1.1"), [])
            update("8.8.8.0/24")  # no list yet: no IRR filter
            assert d.rib.peer_counts("cf", v4)[0] == 1 and d.imports.peers["cf"].irr_entries() is None
            argv = ["-c", str(cfg_path), "irr", "refresh", "--host", irrd.addr, "--timeout", "20"]
            assert await asyncio.to_thread(cli_main, argv) == 0
            assert d.imports.peers["cf"].irr_entries() == 3
            update("9.9.9.0/24", "198.51.100.0/22")
            assert rule("9.9.9.0/24") == "irr" and rule("198.51.100.0/22") is None
            assert d.rib.peer_counts("cf", v4)[0] == 2  # 8.8.8.0/24 stays until re-sent + the /22
            # a refresh that times out keeps the list, in the file and in the daemon
            argv = ["-c", str(cfg_path), "irr", "refresh", "--host", silent.addr, "--timeout", "1"]
            assert await asyncio.to_thread(cli_main, argv) == 1
            assert d.imports.peers["cf"].irr_entries() == 3 and rule("9.9.9.0/24") == "irr"
        finally:
            await server.close()

    asyncio.run(go())
    out = capsys.readouterr().out
    assert "cf: 3 prefixes from AS-TEST" in out and "daemon: import chains rebuilt for cf" in out
    assert "cf: kept the last good list (3 prefixes): bgpq4 timed out after 1 s (AS-TEST)" in out
    assert (tmp_path / "run" / "irr" / "cf.json").exists()
