"""GET /api/v1/stream: the pure hub (filters, buffers, drops) and SSE/WebSocket end to end."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator, Sequence
from typing import Any, overload

import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict

import orchestrator.api.metrics  # noqa: F401  (registers its routes on import)
import orchestrator.api.stream as stream_mod
from orchestrator.api.app import build_app
from orchestrator.api.stream import (
    STREAM_HUB,
    PrefixFilter,
    StreamEncoder,
    StreamFilter,
    StreamHub,
    parse_filter,
)
from orchestrator.errors import ApiError
from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, Attributes, Origin
from orchestrator.rib.prefix import Family, parse_prefix
from speakers.events import DownReason, EndOfRib, PeerDown, PeerUp, Update


def k(text: str) -> int:
    return parse_prefix(text)[1]


def ann(peer: str, prefixes: Sequence[str], path: tuple[int, ...] = (64501, 64999), **kw: Any) -> Update:
    family = parse_prefix(prefixes[0])[0] if prefixes else Family.IPV4
    nh = "192.0.2.1" if family is Family.IPV4 else "2001:db8::1"
    attrs = Attributes(next_hop=nh, as_path=((AS_SEQUENCE, path),), **kw)
    return Update(peer, family, attrs, [k(p) for p in prefixes], [])


def wd(peer: str, prefixes: Sequence[str]) -> Update:
    return Update(peer, parse_prefix(prefixes[0])[0], None, [], [k(p) for p in prefixes])


# -- pure: filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "prefix", "covered"),
    [
        ("10.0.0.0/8", "10.0.0.0/8", True),
        ("10.0.0.0/8", "10.1.2.0/24", True),
        ("10.0.0.0/8", "10.255.255.255/32", True),
        ("10.0.0.0/8", "11.0.0.0/8", False),
        ("10.0.0.0/8", "0.0.0.0/0", False),
        ("10.0.0.0/8", "8.0.0.0/6", False),  # less specific, contains 10/8
        ("10.128.0.0/9", "10.0.0.0/16", False),
        ("10.128.0.0/9", "10.200.0.0/16", True),
        ("0.0.0.0/0", "192.0.2.0/24", True),
        ("0.0.0.0/0", "0.0.0.0/0", True),
        ("2001:db8::/32", "2001:db8:1::/48", True),
        ("2001:db8::/32", "2001:db9::/32", False),
        ("2001:db8::/32", "2001:d00::/24", False),
    ],
)
def test_prefix_filter_covers_the_prefix_and_its_more_specifics(flt: str, prefix: str, covered: bool) -> None:
    assert PrefixFilter.parse(flt).covers(k(prefix)) is covered


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ([("prefix", "10.0.0.1/8")], "prefix"),
        ([("prefix", "nonsense")], "prefix"),
        ([("origin_as", "x")], "origin_as"),
        ([("origin_as", "4294967296")], "origin_as"),
        ([("type", "update")], "type"),
        ([("buffer", "0")], "buffer"),
        ([("buffer", "1000001")], "buffer"),
        ([("buffer", "ten")], "buffer"),
        ([("buffer", "1"), ("buffer", "2")], "buffer"),
        ([("peer", "nobody")], "peer"),
        ([("prefx", "10.0.0.0/8")], "prefx"),
    ],
)
def test_bad_parameters_name_the_parameter(query: list[tuple[str, str]], param: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_filter(MultiDict(query), {"up1", "rs"})
    assert info.value.status == 400
    assert str(info.value).startswith(f"{param}: ")


def test_parse_filter_repeatable_parameters() -> None:
    flt, buffer = parse_filter(
        MultiDict(
            [
                ("peer", "up1"),
                ("peer", "rs"),
                ("type", "announce"),
                ("origin_as", "AS64999"),
                ("buffer", "50"),
            ]
        ),
        {"up1", "rs"},
    )
    assert flt.peers == {"up1", "rs"}
    assert flt.types == {"announce"}
    assert flt.origin_as == {64999}
    assert buffer == 50
    default, size = parse_filter(MultiDict(), None)
    assert default == StreamFilter() and size == stream_mod.DEFAULT_BUFFER


# -- pure: hub ----------------------------------------------------------------------------------------


class CountingKeys(Sequence[int]):
    """A prefix list that counts every element access: the hub may only take its len()."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.touched = 0

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[int]: ...
    def __getitem__(self, i: int | slice) -> int | Sequence[int]:
        self.touched += 1
        if isinstance(i, slice):
            return [k("10.0.0.0/24")] * len(range(*i.indices(self.n)))
        if not 0 <= i < self.n:
            raise IndexError(i)
        return k("10.0.0.0/24")

    def __iter__(self) -> Iterator[int]:
        self.touched += 1
        return iter([k("10.0.0.0/24")] * self.n)


def test_hub_attaches_on_first_client_and_detaches_after_last() -> None:
    listeners: list[Any] = []
    hub = StreamHub(listeners)
    a = hub.subscribe(StreamFilter())
    b = hub.subscribe(StreamFilter())
    assert listeners == [hub.on_event]
    hub.unsubscribe(a)
    assert listeners == [hub.on_event]
    hub.unsubscribe(b)
    hub.unsubscribe(b)  # idempotent
    assert listeners == []


def test_hub_fans_out_by_filter() -> None:
    hub = StreamHub([])
    everything = hub.subscribe(StreamFilter())
    only_rs = hub.subscribe(StreamFilter(peers=frozenset({"rs"})))
    withdrawals = hub.subscribe(StreamFilter(types=frozenset({"withdraw"})))
    v6 = hub.subscribe(StreamFilter(prefixes=(PrefixFilter.parse("2001:db8::/32"),)))
    events = [
        ann("up1", ["10.0.0.0/24", "10.0.1.0/24"]),
        ann("rs", ["10.0.2.0/24"]),
        wd("rs", ["10.0.2.0/24"]),
        ann("up1", ["2001:db8:1::/48"]),
    ]
    for i, ev in enumerate(events):
        hub.on_event(float(i), ev)
    assert [e for _, e in everything.pending] == events and everything.buffered == 5
    assert [e for _, e in only_rs.pending] == events[1:3]
    assert [e for _, e in withdrawals.pending] == [events[2]]
    assert [e for _, e in v6.pending] == [events[3]]  # family pre-check; the prefix check is lazy


def test_listener_is_o1_per_event_and_drops_a_full_client() -> None:
    hub = StreamHub([])
    woken: list[str] = []
    dropped: list[str] = []
    slow = hub.subscribe(
        StreamFilter(), limit=1000, wake=lambda: woken.append("w"), on_drop=lambda: dropped.append("d")
    )
    keys = CountingKeys(400)
    attrs = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (64501,)),))
    event = Update("up1", Family.IPV4, attrs, keys, [])
    hub.on_event(1.0, event)
    hub.on_event(2.0, event)
    assert (slow.buffered, slow.dropped) == (800, None)
    hub.on_event(3.0, event)  # 1200 > 1000
    assert keys.touched == 0  # only len(): no per-prefix work in the RIB task
    assert slow.dropped == "slow client: buffer of 1000 messages full"
    assert dropped == ["d"] and not slow.pending and slow.buffered == 0
    assert hub.clients == () and hub.dropped_total == 1
    hub.on_event(4.0, event)  # a dropped client gets nothing more
    assert not slow.pending


def test_an_empty_buffer_takes_one_event_larger_than_the_limit() -> None:
    hub = StreamHub([])
    c = hub.subscribe(StreamFilter(), limit=10)
    hub.on_event(1.0, Update("up1", Family.IPV4, Attributes(), CountingKeys(50), []))
    assert c.dropped is None and c.buffered == 50


def test_origin_as_filter_takes_announcements_only() -> None:
    flt = StreamFilter(origin_as=frozenset({64999}))
    assert flt.candidates(ann("up1", ["10.0.0.0/24"], (64501, 64999))) == 1
    assert flt.candidates(ann("up1", ["10.0.0.0/24"], (64501, 65000))) == 0
    assert flt.candidates(wd("up1", ["10.0.0.0/24"])) == 0
    assert flt.candidates(PeerDown("up1", DownReason.CONNECTION_LOST)) == 1


# -- pure: messages -----------------------------------------------------------------------------------


def test_message_format() -> None:
    attrs = Attributes(
        next_hop="192.0.2.1",
        origin=Origin.INCOMPLETE,
        as_path=((AS_SEQUENCE, (64501, 3356)), (AS_SET, (65002, 65001))),
        med=10,
        local_pref=None,
        communities=((64501 << 16) | 100,),
        large_communities=((64501, 1, 2),),
    )
    enc = StreamEncoder(StreamFilter())
    update = Update("up1", Family.IPV4, attrs, [k("10.0.0.0/24")], [k("10.9.0.0/16")])
    msgs = [orjson.loads(m) for m in enc.messages(1700000000.25, update)]
    assert msgs == [
        {
            "type": "withdraw",
            "peer": "up1",
            "timestamp": 1700000000.25,
            "prefix": "10.9.0.0/16",
            "family": "ipv4",
            "next_hop": None,
            "as_path": None,
            "origin": None,
            "med": None,
            "local_pref": None,
            "communities": None,
            "large_communities": None,
        },
        {
            "type": "announce",
            "peer": "up1",
            "timestamp": 1700000000.25,
            "prefix": "10.0.0.0/24",
            "family": "ipv4",
            "next_hop": "192.0.2.1",
            "as_path": [64501, 3356, [65001, 65002]],
            "origin": "incomplete",
            "med": 10,
            "local_pref": None,
            "communities": ["64501:100"],
            "large_communities": ["64501:1:2"],
        },
    ]
    up = orjson.loads(next(enc.messages(1.0, PeerUp("rs", 64502, "10.0.0.3"))))
    assert up["type"] == "peer_up" and up["peer_as"] == 64502 and up["router_id"] == "10.0.0.3"
    down = orjson.loads(next(enc.messages(1.0, PeerDown("rs", DownReason.HOLD_TIMER_EXPIRED, "x"))))
    assert (down["type"], down["reason"], down["detail"]) == ("peer_down", "hold-timer-expired", "x")
    eor = orjson.loads(next(enc.messages(1.0, EndOfRib("rs", Family.IPV6))))
    assert (eor["type"], eor["family"], eor["prefix"]) == ("end_of_rib", "ipv6", None)


def test_encoder_applies_the_prefix_filter_per_prefix() -> None:
    enc = StreamEncoder(StreamFilter(prefixes=(PrefixFilter.parse("10.1.0.0/16"),)))
    event = ann("up1", ["10.0.0.0/16", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "10.0.0.0/8"])
    assert [orjson.loads(m)["prefix"] for m in enc.messages(1.0, event)] == ["10.1.0.0/16", "10.1.2.0/24"]


# -- end to end -----------------------------------------------------------------------------------------


async def _client(lab: Any) -> TestClient[web.Request, web.Application]:
    client = TestClient(TestServer(build_app(lab.daemon)))
    await client.start_server()
    return client


async def _read_sse(content: Any, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """``count`` data messages (comments skipped)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            line = await content.readline()
            assert line, "stream ended early"
            if line.startswith(b"data: "):
                out.append(orjson.loads(line[6:]))
    return out


async def _subscribed(hub: StreamHub, n: int) -> None:
    async with asyncio.timeout(5):
        while len(hub.clients) < n:
            await asyncio.sleep(0.01)


def test_two_clients_with_different_filters_get_exactly_their_updates(lab: Any) -> None:
    async def run() -> None:
        client = await _client(lab)
        try:
            lab.bring_up()
            hub = client.app[STREAM_HUB]
            # nothing attached without clients (other features, e.g. announcements, may listen too)
            others = list(lab.daemon.event_listeners)
            assert hub.on_event not in others
            a = await client.get("/api/v1/stream", params=[("peer", "rs"), ("type", "announce")])
            b = await client.get("/api/v1/stream", params={"prefix": "10.1.0.0/16"})
            assert a.status == b.status == 200
            assert a.headers["Content-Type"] == "text/event-stream"
            assert (await a.content.readline()).startswith(b":")
            await _subscribed(hub, 2)
            assert lab.daemon.event_listeners == [*others, hub.on_event]
            lab.feed(
                ann("up1", ["10.1.0.0/16", "10.2.0.0/16"]),
                ann("rs", ["10.1.5.0/24", "10.3.0.0/16"], (64502, 64777)),
                wd("up1", ["10.1.0.0/16"]),
                ann("rs", ["2001:db8::/32"], (64502,)),
                EndOfRib("rs", Family.IPV4),
                ann("up1", ["10.9.0.0/16"]),  # for neither
                ann("rs", ["192.0.2.0/24"], (64502,)),  # a's last
            )
            got_a = await _read_sse(a.content, 4)
            assert [(m["type"], m["prefix"]) for m in got_a] == [
                ("announce", "10.1.5.0/24"),
                ("announce", "10.3.0.0/16"),
                ("announce", "2001:db8::/32"),
                ("announce", "192.0.2.0/24"),
            ]
            assert got_a[0]["as_path"] == [64502, 64777] and got_a[0]["peer"] == "rs"
            lab.feed(ann("up1", ["10.1.255.0/24"]))  # sentinel: b's last expected message
            got_b = await _read_sse(b.content, 5)
            assert [(m["type"], m["peer"], m["prefix"]) for m in got_b] == [
                ("announce", "up1", "10.1.0.0/16"),
                ("announce", "rs", "10.1.5.0/24"),
                ("withdraw", "up1", "10.1.0.0/16"),
                ("end_of_rib", "rs", None),  # session messages pass prefix filters
                ("announce", "up1", "10.1.255.0/24"),
            ]
            # the RIB saw everything too (the stream is a tap, not a filter)
            assert lab.daemon.rib.counts()["peers"]["rs"]["ipv4"]["received"] == 3
            a.close()
            b.close()
            async with asyncio.timeout(20):  # noticed at the next write or keepalive
                while hub.on_event in lab.daemon.event_listeners:
                    lab.feed(ann("up1", ["10.1.7.0/24"]), ann("rs", ["10.1.8.0/24"], (64502,)))
                    await asyncio.sleep(0.05)
            assert hub.clients == ()
        finally:
            await client.close()

    asyncio.run(run())


def test_bad_parameter_is_a_400_json_error(lab: Any) -> None:
    async def run() -> None:
        client = await _client(lab)
        try:
            resp = await client.get("/api/v1/stream", params={"prefix": "10.0.0.0/33"})
            assert resp.status == 400
            body = await resp.json()
            assert body["status"] == 400 and body["error"].startswith("prefix: ")
            resp = await client.get("/api/v1/stream", params={"peer": "ghost"})
            assert resp.status == 400 and (await resp.json())["error"] == "peer: no peer named 'ghost'"
            assert client.app[STREAM_HUB].on_event not in lab.daemon.event_listeners
        finally:
            await client.close()

    asyncio.run(run())


def test_keepalive_comment(lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_mod, "KEEPALIVE_S", 0.05)

    async def run() -> None:
        client = await _client(lab)
        try:
            resp = await client.get("/api/v1/stream")
            async with asyncio.timeout(5):
                lines = [await resp.content.readline() for _ in range(4)]
            assert b":keepalive\n" in lines
            resp.close()
        finally:
            await client.close()

    asyncio.run(run())


def test_stalled_client_is_dropped_and_never_slows_the_rib(lab: Any) -> None:
    """A client that stops reading: its socket fills, the server's write blocks, its buffer fills,
    and the hub drops it, while the RIB keeps applying events at full speed."""

    async def run() -> None:
        client = await _client(lab)
        server = client.server
        try:
            lab.bring_up()
            hub = client.app[STREAM_HUB]
            fast = await client.get("/api/v1/stream", params={"peer": "rs"})  # a well-behaved neighbour
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((server.host, server.port))
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"GET /api/v1/stream?peer=up1&buffer=2000 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await _subscribed(hub, 2)
            stalled = next(c for c in hub.clients if c.filter.peers == {"up1"})
            long_path = tuple(range(64600, 64650))
            batch = 0
            async with asyncio.timeout(60):
                while stalled.dropped is None:
                    base = batch * 256
                    event = ann(
                        "up1",
                        [f"10.{(base + i) // 256 % 256}.{(base + i) % 256}.0/24" for i in range(256)],
                        long_path,
                    )
                    lab.feed(event)
                    batch += 1
                    await asyncio.sleep(0)  # the RIB task yields between batches
            assert stalled.dropped == "slow client: buffer of 2000 messages full"
            assert 0 < stalled.sent < batch * 256  # it got data until its socket filled
            assert stalled not in hub.clients
            # the RIB applied every event; the slow client held none of it back
            assert lab.daemon.status["up1"].updates == batch
            # the well-behaved client is unaffected
            lab.feed(ann("rs", ["198.51.100.0/24"], (64502,)))
            (msg,) = await _read_sse(fast.content, 1)
            assert msg["prefix"] == "198.51.100.0/24"
            # once it reads again, the stalled client finds the reason at the end, then EOF
            data = b""
            async with asyncio.timeout(10):
                while chunk := await reader.read(1 << 20):
                    data += chunk
            assert b"event: dropped\r\n" not in data
            tail = data[data.rindex(b"event: dropped") :]
            assert tail.startswith(
                b'event: dropped\ndata: {"reason":"slow client: buffer of 2000 messages full"}\n\n'
            )
            writer.close()
            fast.close()
        finally:
            await client.close()

    asyncio.run(run())


def test_stalled_client_that_never_reads_again_is_aborted(lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_mod, "DROP_GRACE_S", 0.2)

    async def run() -> None:
        client = await _client(lab)
        try:
            lab.bring_up()
            hub = client.app[STREAM_HUB]
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((client.server.host, client.server.port))
            sock.setblocking(False)
            _reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"GET /api/v1/stream?buffer=100 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await _subscribed(hub, 1)
            (stalled,) = hub.clients
            n = 0
            async with asyncio.timeout(60):
                while stalled.dropped is None:
                    lab.feed(ann("up1", [f"10.{n // 256 % 256}.{n % 256}.0/24"], tuple(range(64600, 64700))))
                    n += 1
                    await asyncio.sleep(0)
            async with asyncio.timeout(10):  # the handler gives up after the grace period
                while hub.on_event in lab.daemon.event_listeners:
                    await asyncio.sleep(0.05)
            writer.close()
        finally:
            await client.close()

    asyncio.run(run())


def test_websocket(lab: Any) -> None:
    async def run() -> None:
        client = await _client(lab)
        try:
            lab.bring_up()
            hub = client.app[STREAM_HUB]
            ws = await client.ws_connect("/api/v1/stream?type=withdraw&prefix=10.0.0.0/8")
            await _subscribed(hub, 1)
            lab.feed(ann("up1", ["10.1.0.0/16"]), wd("up1", ["10.1.0.0/16"]), wd("up1", ["192.0.2.0/24"]))
            msg = await ws.receive(timeout=5)
            assert msg.type is WSMsgType.TEXT
            data = orjson.loads(msg.data)
            assert (data["type"], data["prefix"]) == ("withdraw", "10.1.0.0/16")
            await ws.close()
            async with asyncio.timeout(5):
                while hub.on_event in lab.daemon.event_listeners:
                    await asyncio.sleep(0.02)
        finally:
            await client.close()

    asyncio.run(run())
