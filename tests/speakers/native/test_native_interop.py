"""NativeSpeaker against real peers on loopback (127.0.70.0/24): BIRD 2, GoBGP, ExaBGP 5.0.15, and a
raw-socket peer that misbehaves on purpose. Tables of a few thousand prefixes, IPv4 and IPv6."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from orchestrator.config import LocalConfig, PeerConfig, PeerKind
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, key_from_parts, parse_prefix
from speakers.events import DownReason, EndOfRib, Notification, PeerDown, PeerUp, SpeakerEvent, Update
from speakers.native import codec
from speakers.native.session import State
from speakers.native.speaker import NativeSpeaker

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
N4, N6 = 3000, 700  # the feeder's table
OURS = 500  # prefixes the native speaker announces
LOCAL_AS = 65001
FEEDER_AS = 65010
log = structlog.get_logger("test")


def run(coro: Coroutine[Any, Any, None], timeout: float = 80) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout)

    asyncio.run(bounded())


class Collector:
    """A table rebuilt from the event stream (what the RIB would hold), plus every other event."""

    def __init__(self) -> None:
        self.events: list[SpeakerEvent] = []
        self.table: dict[Family, dict[int, Attributes]] = {Family.IPV4: {}, Family.IPV6: {}}
        self.changed = asyncio.Event()
        self.block: asyncio.Event | None = None  # set: emit waits (backpressure tests)

    async def emit(self, event: SpeakerEvent) -> None:
        if self.block is not None:
            await self.block.wait()
        if isinstance(event, Update):
            t = self.table[event.family]
            for key in event.withdraw:
                t.pop(key, None)
            if event.attrs is not None:
                for key in event.announce:
                    t[key] = event.attrs
        else:
            self.events.append(event)
            if isinstance(event, PeerDown):
                for t in self.table.values():
                    t.clear()
        self.changed.set()

    def count(self, kind: type) -> int:
        return sum(1 for e in self.events if isinstance(e, kind))

    def counts(self) -> tuple[int, int]:
        return len(self.table[Family.IPV4]), len(self.table[Family.IPV6])

    async def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; counts {self.counts()}, "
                                     f"events {self.events[-8:]}")  # fmt: skip
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))


def _wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def feeder(tmp: Path, address: str, port: int, peer_as: int) -> Iterator[subprocess.Popen[bytes]]:
    """The native feeder (passive) serving the N4/N6 table."""
    ready = tmp / f"feeder-{port}.ready"
    cmd = [sys.executable, "-m", "speakers.native.feeder", "--listen", address, "--port", str(port),
           "--asn", str(FEEDER_AS), "--router-id", address, "--peer-as", str(peer_as), "--hold-time", "30",
           "--ipv4", str(N4), "--ipv6", str(N6), "--seed", "7", "--ready-file", str(ready)]  # fmt: skip
    with open(tmp / f"feeder-{port}.log", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait(lambda: ready.exists() or proc.poll() is not None, 30, "feeder ready")
        assert proc.poll() is None, (tmp / f"feeder-{port}.log").read_text()
        yield proc
    finally:
        _stop(proc)


def our_routes(
    next_hop4: str = "192.0.2.50", next_hop6: str = "2001:db8::50"
) -> list[tuple[Family, Attributes, list[int]]]:
    a4 = Attributes(
        next_hop=next_hop4, as_path=((AS_SEQUENCE, (LOCAL_AS,)),), communities=((LOCAL_AS << 16) | 1,)
    )
    a6 = Attributes(next_hop=next_hop6, as_path=((AS_SEQUENCE, (LOCAL_AS,)),))
    keys4 = [
        key_from_parts((203 << 24 | 0 << 16 | i << 8) & 0xFFFFFFFF, 24, Family.IPV4) for i in range(OURS - 50)
    ]
    keys6 = [parse_prefix(f"2001:db8:ff{i:02x}::/48")[1] for i in range(50)]
    return [(Family.IPV4, a4, keys4[: OURS - 50]), (Family.IPV6, a6, keys6)]


def make_speaker(c: Collector, neighbor: str, peer_as: int, local_address: str, port: int, *,
                 passive: bool = False, hold: int = 30, password: str | None = None,
                 families: tuple[Family, ...] = (Family.IPV4, Family.IPV6)) -> NativeSpeaker:  # fmt: skip
    peer = PeerConfig(name="p", kind=PeerKind.UPSTREAM, neighbor=neighbor, peer_as=peer_as,
                      local_address=local_address, port=port, passive=passive, hold_time=hold,
                      password=password, families=families)  # fmt: skip
    sp = NativeSpeaker(peer, LocalConfig(asn=LOCAL_AS, router_id=local_address), c.emit, log)
    sp.session.config = type(sp.session.config)(**{**_fields(sp.session.config), "connect_retry": 0.5})
    return sp


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


# --- BIRD 2 ---------------------------------------------------------------------------------------

BIRD_CONF = """
log "{log}" all;
router id 127.0.70.2;
protocol device {{}}
ipv4 table t4; ipv6 table t6;
# The feeder's next hops (192.0.2.2, 2001:db8::2) must resolve, or BIRD will not export its routes.
protocol static nh4 {{ ipv4 {{ table t4; }}; route 192.0.2.0/24 blackhole; }}
protocol static nh6 {{ ipv6 {{ table t6; }}; route 2001:db8::/64 blackhole; }}
protocol bgp feeder {{
  local 127.0.70.2 port 17979 as 65020;  # its own listening socket: *:179 may be taken
  neighbor 127.0.70.1 port 17971 as 65010;
  strict bind yes; multihop; hold time 30; error wait time 1,5; connect retry time 2;
  ipv4 {{ table t4; import all; export none; }};
  ipv6 {{ table t6; import all; export none; }};
}}
protocol bgp native {{
  local 127.0.70.2 port 17972 as 65020;
  neighbor 127.0.70.3 as 65001;
  strict bind yes; passive yes; multihop 2;
  hold time 6; error wait time 1,2; connect retry time 1;
  ipv4 {{ table t4; import all; export where source = RTS_BGP; next hop keep; }};
  ipv6 {{ table t6; import all; export where source = RTS_BGP; next hop keep; }};
}}
"""


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 not installed")
def test_native_bird(tmp_path: Path) -> None:
    """Feeder → BIRD → native (full table, v4+v6); native → BIRD (our routes); flap via birdc
    disable/enable (Cease received); hold timer expiry while BIRD is stopped (SIGSTOP)."""
    conf, sock = tmp_path / "bird.conf", tmp_path / "bird.ctl"
    conf.write_text(BIRD_CONF.format(log=tmp_path / "bird.log"))

    def birdc(*args: str) -> str:
        return subprocess.run(
            ["birdc", "-s", str(sock), *args], capture_output=True, text=True, timeout=10
        ).stdout

    with feeder(tmp_path, "127.0.70.1", 17971, 65020):
        bird = subprocess.Popen(["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(tmp_path / "pid")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            _wait(sock.exists, 10, "bird control socket")

            async def scenario() -> None:
                c = Collector()
                sp = make_speaker(c, "127.0.70.2", 65020, "127.0.70.3", 17972, hold=6)
                for fam, attrs, keys in our_routes():
                    sp.session.announce(fam, attrs, keys)
                await sp.start()
                try:
                    await c.wait_for(lambda: c.counts() == (N4, N6) and c.count(EndOfRib) >= 2, 40, "table")
                except AssertionError as exc:
                    tail = (tmp_path / "bird.log").read_text()[-3000:]
                    raise AssertionError(f"{exc}\n{birdc('show', 'protocols', 'all')}\n{tail}") from None
                up = [e for e in c.events if isinstance(e, PeerUp)]
                assert up == [PeerUp("p", 65020, "127.0.70.2", (Family.IPV4, Family.IPV6))]

                def bird_has_ours() -> bool:
                    out = birdc("show", "protocols", "all", "native")
                    got = [" ".join(line.split()) for line in out.splitlines() if "Routes:" in line]
                    return got[:2] == [f"Routes: {OURS - 50} imported, {N4} exported, {OURS - 50} preferred",
                                       f"Routes: 50 imported, {N6} exported, 50 preferred"]  # fmt: skip

                deadline = time.monotonic() + 20
                while not bird_has_ours():
                    assert time.monotonic() < deadline, birdc("show", "protocols", "all", "native")
                    await asyncio.sleep(0.3)
                # Flap: BIRD sends Cease / Administrative Shutdown, then comes back.
                birdc("disable", "native", '"maintenance"')
                await c.wait_for(lambda: c.count(PeerDown) == 1, 15, "PeerDown after disable")
                down = next(e for e in c.events if isinstance(e, PeerDown))
                assert down.reason is DownReason.NOTIFICATION_RECEIVED
                note = next(e for e in c.events if isinstance(e, Notification))
                assert (note.code, note.subcode, note.sent) == (6, 2, False)
                assert c.counts() == (0, 0)
                birdc("enable", "native")
                await c.wait_for(lambda: c.count(PeerUp) == 2 and c.counts() == (N4, N6), 30, "back up")
                assert sp.restarts >= 1
                # Hold timer: BIRD frozen, the native side expires after 6 s and says so.
                os.kill(bird.pid, signal.SIGSTOP)
                try:
                    await c.wait_for(lambda: c.count(PeerDown) == 2, 15, "hold timer expiry")
                finally:
                    os.kill(bird.pid, signal.SIGCONT)
                down = [e for e in c.events if isinstance(e, PeerDown)][1]
                assert down.reason is DownReason.HOLD_TIMER_EXPIRED
                assert Notification("p", 4, 0, "hold timer expired", sent=True) in c.events
                await c.wait_for(lambda: c.count(PeerUp) == 3 and c.counts() == (N4, N6), 30, "up after hold")
                await sp.stop()
                assert c.events[-1] == PeerDown(
                    "p", DownReason.ADMIN_SHUTDOWN, "peerctl: session stopped by the operator"
                )

            run(scenario(), 120)
        finally:
            _stop(bird)


# --- GoBGP ------------------------------------------------------------------------------------------

GOBGP_CONF = """
[global.config]
  as = 65030
  router-id = "127.0.70.4"
  port = 17974
  local-address-list = ["127.0.70.4"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "127.0.70.1"
    peer-as = 65010
  [neighbors.transport.config]
    local-address = "127.0.70.4"
    remote-port = 17973
  [neighbors.ebgp-multihop.config]
    enabled = true
    multihop-ttl = 5
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"

[[neighbors]]
  [neighbors.config]
    neighbor-address = "127.0.70.5"
    peer-as = 65001
  [neighbors.transport.config]
    local-address = "127.0.70.4"
    passive-mode = true
  [neighbors.ebgp-multihop.config]
    enabled = true
    multihop-ttl = 5
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"""


@pytest.mark.skipif(shutil.which("gobgpd") is None, reason="gobgpd not installed")
def test_native_gobgp(tmp_path: Path) -> None:
    """Feeder → GoBGP → native (full table, v4+v6) and native → GoBGP (our routes, 192.0.2.x next hops)."""
    conf = tmp_path / "gobgp.toml"
    conf.write_text(GOBGP_CONF)
    api = "127.0.70.4"
    api_port = "17975"

    def neighbors() -> dict[str, Any]:
        out = subprocess.run(["gobgp", "-u", api, "-p", api_port, "neighbor", "-j"], capture_output=True,
                             text=True, timeout=10).stdout  # fmt: skip
        try:
            return {n["state"]["neighbor_address"]: n for n in json.loads(out)}
        except (ValueError, KeyError, TypeError):
            return {}

    def accepted(n: dict[str, Any]) -> dict[str, int]:
        out = {}
        for afi in n.get("afi_safis", []):
            name = afi["config"]["family"]
            out["v4" if name["afi"] == 1 else "v6"] = afi.get("state", {}).get("accepted", 0)
        return out

    with feeder(tmp_path, "127.0.70.1", 17973, 65030):
        with open(tmp_path / "gobgpd.log", "wb") as err:
            gobgpd = subprocess.Popen(["gobgpd", "-f", str(conf), "--api-hosts", f"{api}:{api_port}",
                                       "--pprof-disable"], stdout=err, stderr=err)  # fmt: skip
        try:

            async def scenario() -> None:
                c = Collector()
                sp = make_speaker(c, "127.0.70.4", 65030, "127.0.70.5", 17974)
                for fam, attrs, keys in our_routes():
                    sp.session.announce(fam, attrs, keys)
                await sp.start()
                await c.wait_for(lambda: c.counts() == (N4, N6), 60, "full table through GoBGP")
                assert c.events[-1] == PeerUp("p", 65030, "127.0.70.4", (Family.IPV4, Family.IPV6)) or any(
                    isinstance(e, PeerUp) for e in c.events
                )
                attrs = next(iter(c.table[Family.IPV4].values()))
                assert attrs.as_path[0][1][:2] == (65030, FEEDER_AS)
                deadline = time.monotonic() + 20
                while accepted(neighbors().get("127.0.70.5", {})) != {"v4": OURS - 50, "v6": 50}:
                    assert time.monotonic() < deadline, neighbors().get("127.0.70.5")
                    await asyncio.sleep(0.5)
                await sp.stop()

            run(scenario(), 100)
        finally:
            _stop(gobgpd)


# --- ExaBGP -----------------------------------------------------------------------------------------

RELAY = """#!{python}
import json, os, sys
counts = {{"ipv4 unicast": 0, "ipv6 unicast": 0, "eor": 0}}
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    upd = msg.get("neighbor", {{}}).get("message", {{}})
    if "eor" in upd:
        counts["eor"] += 1
    for fam, by_nh in upd.get("update", {{}}).get("announce", {{}}).items():
        for nlris in by_nh.values():
            counts[fam] = counts.get(fam, 0) + len(nlris)
    with open("{out}.tmp", "w") as f:
        json.dump(counts, f)
    os.replace("{out}.tmp", "{out}")
"""

EXABGP_CONF = """
process relay {{
    run {relay};
    encoder json;
}}
neighbor 127.0.70.6 {{
    router-id 127.0.70.7; local-address 127.0.70.7;
    local-as 65040; peer-as 65001; hold-time 30;
    adj-rib-in false;
    connect 17976;
    family {{ ipv4 unicast; ipv6 unicast; }}
    api {{ processes [ relay ]; receive {{ parsed; update; }} }}
    static {{
{routes}
    }}
}}
"""


@pytest.mark.skipif(not (VENV_BIN / "exabgp").exists(), reason="exabgp not in the venv")
def test_native_exabgp(tmp_path: Path) -> None:
    """ExaBGP (static routes, v4+v6) → native; native → ExaBGP (our routes, counted by its API)."""
    tmp_path.chmod(0o777)
    out = tmp_path / "counts.json"
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY.format(python=sys.executable, out=out))
    relay.chmod(0o755)
    routes = [f"        route 10.{i >> 8}.{i & 255}.0/24 next-hop 192.0.2.7 community [ 65040:{i % 3} ];"
              for i in range(300)]  # fmt: skip
    routes += [f"        route 2001:db8:e{i:03x}::/48 next-hop 2001:db8::7;" for i in range(60)]
    conf = tmp_path / "exabgp.conf"
    conf.write_text(EXABGP_CONF.format(relay=relay, routes="\n".join(routes)))
    env = {
        **os.environ,
        "exabgp_log_enable": "false",
        "exabgp_api_cli": "false",
        "exabgp_daemon_drop": "false",
    }

    async def scenario() -> None:
        c = Collector()
        sp = make_speaker(c, "127.0.70.7", 65040, "127.0.70.6", 17976, passive=True)
        for fam, attrs, keys in our_routes():
            sp.session.announce(fam, attrs, keys)
        await sp.start()
        with open(tmp_path / "exabgp.log", "wb") as err:
            exa = subprocess.Popen([str(VENV_BIN / "exabgp"), str(conf)], stdout=err, stderr=err, env=env)
        try:
            await c.wait_for(lambda: c.counts() == (300, 60), 60, "ExaBGP's static routes")
            a = c.table[Family.IPV4][parse_prefix("10.0.1.0/24")[1]]
            assert a.next_hop == "192.0.2.7" and a.communities == ((65040 << 16) | 1,)
            assert c.table[Family.IPV6][parse_prefix("2001:db8:e001::/48")[1]].next_hop == "2001:db8::7"

            def got() -> dict[str, int]:
                try:
                    return json.loads(out.read_text())  # type: ignore[no-any-return]
                except (OSError, ValueError):
                    return {}

            deadline = time.monotonic() + 30
            while got() != {"ipv4 unicast": OURS - 50, "ipv6 unicast": 50, "eor": 2}:
                assert time.monotonic() < deadline, got()
                await asyncio.sleep(0.3)
            await sp.stop()
        finally:
            exa.terminate()
            try:
                exa.wait(10)
            except subprocess.TimeoutExpired:
                exa.kill()

    run(scenario(), 100)


# --- a raw-socket peer that misbehaves -------------------------------------------------------------

RAW = "127.0.70.8"
RAW_PORT = 17977
ME = "127.0.70.9"


def _raw_update(attrs: bytes, nlri: bytes) -> bytes:
    body = b"\x00\x00" + len(attrs).to_bytes(2, "big") + attrs + nlri
    return codec._header(19 + len(body), codec.MSG_UPDATE) + body


GOOD_ATTRS = (
    bytes([0x40, 1, 1, 0, 0x40, 2, 6, 2, 1]) + (65050).to_bytes(4, "big") + bytes([0x40, 3, 4, 192, 0, 2, 9])
)
BAD_ORIGIN = bytes([0x40, 1, 1, 9]) + GOOD_ATTRS[4:]


class RawPeer:
    """A listening BGP peer whose script is a coroutine on (reader, writer)."""

    def __init__(self, password: str | None = None) -> None:
        self.password = password
        self.connected = asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.password:
            from speakers.native.speaker import TCP_MD5SIG, tcp_md5sig

            sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, tcp_md5sig(ME, self.password))
        sock.bind((RAW, RAW_PORT))
        sock.listen(4)

        async def accepted(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await self.connected.put((r, w))

        self.server = await asyncio.start_server(accepted, sock=sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def establish(self, hold: int = 30) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytearray]:
        r, w = await asyncio.wait_for(self.connected.get(), 20)
        buf = bytearray()
        w.write(codec.encode_open(65050, hold, RAW, [Family.IPV4, Family.IPV6]) + codec.encode_keepalive())
        types = await read_until(r, buf, codec.MSG_KEEPALIVE)
        assert types[0] == codec.MSG_OPEN
        return r, w, buf


async def read_until(r: asyncio.StreamReader, buf: bytearray, mtype: int) -> list[int]:
    """Read messages until one of ``mtype`` arrives; return the types seen."""
    seen: list[int] = []
    while mtype not in seen:
        data = await asyncio.wait_for(r.read(65536), 20)
        if not data:
            raise ConnectionError(f"closed; saw {seen}")
        buf += data
        seen += [t for t, _ in codec.split_messages(buf)]
    return seen


async def read_notification(r: asyncio.StreamReader) -> tuple[int, int]:
    buf = bytearray()
    while True:
        data = await asyncio.wait_for(r.read(65536), 20)
        assert data, "closed without NOTIFICATION"
        buf += data
        for t, body in codec.split_messages(buf):
            if t == codec.MSG_NOTIFICATION:
                return body[0], body[1]


def test_raw_peer_malformed_updates_and_notifications() -> None:
    """Treat-as-withdraw keeps the session; an unparseable NLRI resets it with NOTIFICATION 3/10;
    a NOTIFICATION from the peer, a wrong AS and a silent peer (hold timer) end it as the RFCs say."""

    async def scenario() -> None:
        c = Collector()
        sp = make_speaker(c, RAW, 65050, ME, RAW_PORT, hold=3)
        async with RawPeer() as peer:
            await sp.start()
            r, w, _ = await peer.establish(hold=3)
            k = parse_prefix("10.1.0.0/24")[1]
            w.write(_raw_update(GOOD_ATTRS, bytes([24, 10, 1, 0])) + codec.encode_keepalive())
            await c.wait_for(lambda: k in c.table[Family.IPV4], 10, "announcement")
            # RFC 7606 7.1: malformed ORIGIN → treat-as-withdraw; the session stays up.
            w.write(_raw_update(BAD_ORIGIN, bytes([24, 10, 1, 0])) + codec.encode_keepalive())
            await c.wait_for(lambda: k not in c.table[Family.IPV4], 10, "treat-as-withdraw")
            assert sp.state is State.ESTABLISHED and sp.session.errors == 1
            # RFC 7606 5.3: a prefix length of 33 cannot be parsed → NOTIFICATION 3/10, PeerDown.
            w.write(_raw_update(GOOD_ATTRS, bytes([33, 10, 1, 0, 0, 0])))
            assert await read_notification(r) == (3, 10)
            await c.wait_for(lambda: c.count(PeerDown) == 1, 10, "PeerDown")
            assert next(e for e in c.events if isinstance(e, PeerDown)).reason is DownReason.PROTOCOL_ERROR
            w.close()
            # It comes back (idle hold), and this time the peer sends a NOTIFICATION.
            r, w, _ = await peer.establish(hold=3)
            await c.wait_for(lambda: c.count(PeerUp) == 2, 10, "second PeerUp")
            w.write(codec.encode_notification(6, 2, codec.shutdown_data("bye")))
            await c.wait_for(lambda: c.count(PeerDown) == 2, 10, "PeerDown after NOTIFICATION")
            assert c.events[-1] == PeerDown("p", DownReason.NOTIFICATION_RECEIVED, "(6,2) bye")
            w.close()
            # A silent peer: hold timer (3 s) → NOTIFICATION 4/0 on the wire, PeerDown(HOLD_TIMER_EXPIRED).
            r, w, _ = await peer.establish(hold=3)
            assert await read_notification(r) == (4, 0)
            await c.wait_for(lambda: c.count(PeerDown) == 3, 10, "hold timer PeerDown")
            assert c.events[-1].reason is DownReason.HOLD_TIMER_EXPIRED  # type: ignore[union-attr]
            w.close()
            # Wrong AS in the OPEN → NOTIFICATION 2/2, no PeerUp.
            r2, w2 = await asyncio.wait_for(peer.connected.get(), 20)
            w2.write(codec.encode_open(65099, 30, RAW, [Family.IPV4]))
            assert await read_notification(r2) == (2, 2)
            assert c.count(PeerUp) == 3
            w2.close()
            await sp.stop()
            assert sp.restarts >= 3

    run(scenario(), 80)


def test_raw_peer_backpressure_and_md5() -> None:
    """With TCP-MD5 on both ends the session comes up; while emit is blocked the speaker stops
    reading (the peer's writes back up); released, every prefix arrives."""

    async def scenario() -> None:
        c = Collector()
        sp = make_speaker(c, RAW, 65050, ME, RAW_PORT, password="s3cret", families=(Family.IPV4,))
        async with RawPeer(password="s3cret") as peer:
            await sp.start()
            _r, w, _ = await peer.establish()
            await c.wait_for(lambda: c.count(PeerUp) == 1, 10, "PeerUp")
            c.block = asyncio.Event()
            attrs = Attributes(next_hop="192.0.2.9", as_path=((AS_SEQUENCE, (65050,)),))
            n = 400_000
            keys = [key_from_parts((11 << 24) + (i << 8), 24, Family.IPV4) for i in range(n)]
            msgs = [*codec.encode_updates(Family.IPV4, attrs, keys), codec.encode_end_of_rib(Family.IPV4)]
            w.write(b"".join(msgs))
            await asyncio.sleep(1.5)
            received = sp.session.messages_received
            # One read's worth (256 KiB, ~64 UPDATEs) was decoded; the rest waits in socket buffers.
            assert received < len(msgs) / 4, (received, len(msgs))
            await asyncio.sleep(0.5)
            assert sp.session.messages_received == received  # nothing read meanwhile
            c.block.set()
            c.block = None
            await c.wait_for(lambda: c.counts()[0] == n and c.count(EndOfRib) == 1, 30, "all prefixes")
            await sp.stop()

    run(scenario(), 80)


# --- the same table through the ExaBGP speaker and the native speaker ------------------------------


@pytest.mark.skipif(not (VENV_BIN / "exabgp").exists(), reason="exabgp not in the venv")
def test_exabgp_speaker_and_native_speaker_give_the_same_rib(tmp_path: Path) -> None:
    """Feeder → peerctl's ExaBGP speaker → Rib, and feeder → NativeSpeaker → Rib: identical contents."""
    from orchestrator.rib.decide import DecisionOptions
    from orchestrator.rib.table import PeerInfo, Rib
    from speakers.exabgp.process import ExaBGPSpeaker

    def load(kind: str) -> dict[Family, dict[int, Attributes]]:
        rib = Rib(DecisionOptions())
        rib.add_peer(PeerInfo(name="p", peer_as=FEEDER_AS, address="127.0.70.1", local_as=LOCAL_AS))
        eors: set[Family] = set()

        async def emit(ev: SpeakerEvent) -> None:
            if isinstance(ev, PeerUp):
                rib.peer_up("p", ev.router_id)
            elif isinstance(ev, Update):
                rib.update("p", ev.family, ev.attrs, ev.announce, ev.withdraw)
            elif isinstance(ev, EndOfRib):
                eors.add(ev.family)

        async def scenario() -> None:
            peer = PeerConfig(name="p", kind=PeerKind.UPSTREAM, neighbor="127.0.70.1", peer_as=FEEDER_AS,
                              local_address="127.0.70.10", port=17978)  # fmt: skip
            local = LocalConfig(asn=LOCAL_AS, router_id="127.0.70.10")
            sp: Any = (NativeSpeaker(peer, local, emit, log) if kind == "native"
                       else ExaBGPSpeaker(peer, local, tmp_path / "run", emit, log))  # fmt: skip
            await sp.start()
            deadline = time.monotonic() + 60
            while eors != {Family.IPV4, Family.IPV6}:
                assert time.monotonic() < deadline, f"{kind}: no End-of-RIB"
                await asyncio.sleep(0.1)
            await sp.stop()

        with feeder(tmp_path, "127.0.70.1", 17978, LOCAL_AS):
            run(scenario(), 90)
        return {fam: {k: p.attrs for k, p in rib.adj_rib_in("p", fam)} for fam in (Family.IPV4, Family.IPV6)}

    def norm(table: dict[Family, dict[int, Attributes]]) -> dict[Family, dict[int, Attributes]]:
        # ExaBGP 5.0.15 sorts (large) communities; the native speaker keeps wire order. Both are sets
        # (RFC 1997, RFC 8092), so compare them as such.
        return {fam: {k: dataclasses.replace(a, communities=tuple(sorted(a.communities)),
                                             large_communities=tuple(sorted(a.large_communities)))
                      for k, a in t.items()} for fam, t in table.items()}  # fmt: skip

    native = norm(load("native"))
    exa = norm(load("exabgp"))
    assert (len(native[Family.IPV4]), len(native[Family.IPV6])) == (N4, N6)
    for fam in (Family.IPV4, Family.IPV6):
        diff = [(k, native[fam].get(k), exa[fam].get(k)) for k in native[fam].keys() | exa[fam].keys()
                if native[fam].get(k) != exa[fam].get(k)]  # fmt: skip
        assert not diff, "\n".join(f"{k}\n {a}\n {b}" for k, a, b in diff[:2])
