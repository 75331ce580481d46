"""Live update stream: ``GET /api/v1/stream`` as Server-Sent Events (or a WebSocket on upgrade).

Theory of operation
-------------------
One ``StreamHub`` per app is the only thing on ``daemon.event_listeners``, and only while at least one
client is connected (the daemon skips listeners entirely when the list is empty). The daemon calls
the hub synchronously for every speaker event, inside the RIB task, before the RIB applies it. So the
hub must be cheap and must never wait: for each client it checks the event-level filters (peer, type,
family of the prefix filter), counts the messages the event may become with ``len()`` only, and
appends ``(timestamp, event)`` to that client's deque. Its cost is O(clients) per event, whatever the
number of prefixes in the event or the backlog of a client. The per-prefix work (the prefix filter,
building and encoding messages) runs later in the client's own handler task, at the client's pace.

A client's buffer is bounded in candidate messages (the prefixes of the buffered events, before the
prefix filter, which is what the buffer holds in memory). When an event would overflow it, the hub
drops the client there and then: the backlog is released, the client is detached from the hub, and
its handler is told (``on_drop``), which stops writing, sends a final ``event: dropped`` and closes
the connection. A slow client therefore never slows the RIB and never grows memory past its buffer.

The listener is removed from the daemon when the last client unsubscribes (always from a handler
task, never from inside the listener call, so the daemon's listener loop is never mutated while it
runs).

Messages are RIS-Live-like JSON, one per (event, prefix); see ``StreamEncoder``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Collection, Iterator, MutableSequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import WSCloseCode, web
from multidict import MultiMapping

from orchestrator.api.app import DAEMON, register
from orchestrator.api.views import ORIGIN_NAMES
from orchestrator.errors import ApiError
from orchestrator.rib.attrs import Attributes, community_text
from orchestrator.rib.prefix import Family, format_prefix, key_length, key_network, parse_prefix
from speakers.events import EndOfRib, Notification, PeerDown, PeerUp, SessionState, SpeakerEvent, Update

if TYPE_CHECKING:
    from orchestrator.daemon import Daemon

DEFAULT_BUFFER: Final = 10_000  # messages per client
MAX_BUFFER: Final = 100_000
KEEPALIVE_S: Final = 15.0
DROP_GRACE_S: Final = 5.0  # how long a dropped client gets to take its final event before an abort
WRITE_CHUNK: Final = 64 * 1024  # bytes per SSE write (aiohttp drains above 64 KiB)

ANNOUNCE: Final = "announce"
WITHDRAW: Final = "withdraw"
PEER_UP: Final = "peer_up"
PEER_DOWN: Final = "peer_down"
END_OF_RIB: Final = "end_of_rib"
TYPES: Final = (ANNOUNCE, WITHDRAW, PEER_UP, PEER_DOWN, END_OF_RIB)
PARAMS: Final = ("peer", "prefix", "origin_as", "type", "buffer")

Listener = Callable[[float, SpeakerEvent], None]


# -- filters ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrefixFilter:
    """A prefix and all its more-specifics: ``network`` is the prefix's address shifted to ``length`` bits."""

    family: Family
    length: int
    network: int

    @classmethod
    def parse(cls, text: str) -> PrefixFilter:
        """ValueError naming the text when it is not a prefix."""
        family, key = parse_prefix(text)
        length = key_length(key)
        return cls(family, length, key_network(key, family) >> (family.max_length - length))

    def covers(self, key: int) -> bool:
        """Whether the key (of ``self.family``) is this prefix or one of its more-specifics."""
        length = key_length(key)
        if length < self.length:
            return False
        return key_network(key, self.family) >> (self.family.max_length - self.length) == self.network


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """What one client asked for. Empty collections mean "everything".

    ``peers`` and ``types`` apply to every message. ``prefixes`` and ``origin_as`` apply to route
    messages only; peer_up/peer_down/end_of_rib pass them (a peer_down withdraws everything). A
    withdrawal carries no AS path, so a client filtering on ``origin_as`` gets announcements only.
    """

    peers: frozenset[str] = frozenset()
    prefixes: tuple[PrefixFilter, ...] = ()
    origin_as: frozenset[int] = frozenset()
    types: frozenset[str] = frozenset(TYPES)

    @property
    def families(self) -> frozenset[Family]:
        return frozenset(p.family for p in self.prefixes) if self.prefixes else frozenset(Family)

    def wants_prefix(self, family: Family, key: int) -> bool:
        if not self.prefixes:
            return True
        return any(p.family is family and p.covers(key) for p in self.prefixes)

    def wants_attrs(self, attrs: Attributes) -> bool:
        return not self.origin_as or attrs.origin_as in self.origin_as

    def candidates(self, event: SpeakerEvent) -> int:
        """How many messages ``event`` may become for this client, at most; O(1), never iterates prefixes."""
        if self.peers and event.peer not in self.peers:
            return 0
        match event:
            case Update():
                if event.family not in self.families:
                    return 0
                n = 0
                attrs = event.attrs
                if (
                    event.announce
                    and attrs is not None
                    and ANNOUNCE in self.types
                    and self.wants_attrs(attrs)
                ):
                    n += len(event.announce)
                if event.withdraw and WITHDRAW in self.types and not self.origin_as:
                    n += len(event.withdraw)
                return n
            case PeerUp():
                return 1 if PEER_UP in self.types else 0
            case PeerDown():
                return 1 if PEER_DOWN in self.types else 0
            case EndOfRib():
                return 1 if END_OF_RIB in self.types else 0
            case Notification() | SessionState():
                return 0


def parse_filter(
    query: MultiMapping[str], known_peers: Collection[str] | None = None
) -> tuple[StreamFilter, int]:
    """Query parameters → (filter, buffer size). Raises ApiError(400) naming the bad parameter.

    Parameters: ``peer`` (repeatable; must be in ``known_peers`` when given), ``prefix`` (repeatable;
    the prefix and its more-specifics), ``origin_as`` (repeatable), ``type`` (repeatable, one of
    ``TYPES``), ``buffer`` (messages, 1..MAX_BUFFER). Unknown parameters are rejected.
    """
    for name in query:
        if name not in PARAMS:
            raise ApiError(400, f"{name}: unknown parameter (expected one of {', '.join(PARAMS)})")
    peer_names = frozenset(query.getall("peer", ()))
    for name in sorted(peer_names):
        if known_peers is not None and name not in known_peers:
            raise ApiError(400, f"peer: no peer named {name!r}")
    prefixes: list[PrefixFilter] = []
    for text in query.getall("prefix", ()):
        try:
            prefixes.append(PrefixFilter.parse(text))
        except ValueError as exc:
            raise ApiError(400, f"prefix: {exc}") from None
    origins: set[int] = set()
    for text in query.getall("origin_as", ()):
        try:
            asn = int(text.upper().removeprefix("AS"))
        except ValueError:
            raise ApiError(400, f"origin_as: expected an AS number, got {text!r}") from None
        if not 0 <= asn <= 0xFFFFFFFF:
            raise ApiError(400, f"origin_as: must be between 0 and 4294967295, got {text!r}")
        origins.add(asn)
    types: set[str] = set()
    for text in query.getall("type", ()):
        if text not in TYPES:
            raise ApiError(400, f"type: expected one of {', '.join(TYPES)}, got {text!r}")
        types.add(text)
    buffers = query.getall("buffer", ())
    if len(buffers) > 1:
        raise ApiError(400, "buffer: given more than once")
    buffer = DEFAULT_BUFFER
    if buffers:
        try:
            buffer = int(buffers[0])
        except ValueError:
            raise ApiError(400, f"buffer: expected an integer, got {buffers[0]!r}") from None
        if not 1 <= buffer <= MAX_BUFFER:
            raise ApiError(400, f"buffer: must be between 1 and {MAX_BUFFER}")
    flt = StreamFilter(
        peers=peer_names,
        prefixes=tuple(prefixes),
        origin_as=frozenset(origins),
        types=frozenset(types) if types else frozenset(TYPES),
    )
    return flt, buffer


# -- hub --------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class StreamClient:
    """One subscriber's buffer. Written by the hub (in the RIB task), read by the client's handler."""

    filter: StreamFilter
    limit: int
    wake: Callable[[], None] = lambda: None
    """Called (synchronously) when events arrive, on drop and on close."""
    on_drop: Callable[[], None] = lambda: None
    """Called (synchronously) once when the hub drops the client."""
    pending: deque[tuple[float, SpeakerEvent]] = field(default_factory=deque)
    buffered: int = 0  # candidate messages in ``pending``
    dropped: str | None = None  # the reason, once dropped
    closed: bool = False  # the server is shutting down
    sent: int = 0  # messages written so far (for the handler)

    def take(self) -> list[tuple[float, SpeakerEvent]]:
        """Everything buffered, oldest first; empties the buffer."""
        out = list(self.pending)
        self.pending.clear()
        self.buffered = 0
        return out


class StreamHub:
    """Fans speaker events out to stream clients; one per app. No I/O, no awaiting.

    ``listeners`` is the daemon's ``event_listeners`` list: the hub adds its listener when the first
    client subscribes and removes it when the last one unsubscribes.
    """

    def __init__(self, listeners: MutableSequence[Listener]) -> None:
        self._listeners = listeners
        self._clients: tuple[StreamClient, ...] = ()  # replaced, never mutated: safe to iterate
        self._members: set[StreamClient] = set()  # subscribed and not yet unsubscribed
        self._attached = False
        self.dropped_total = 0

    @property
    def clients(self) -> tuple[StreamClient, ...]:
        return self._clients

    def subscribe(
        self,
        flt: StreamFilter,
        limit: int = DEFAULT_BUFFER,
        wake: Callable[[], None] | None = None,
        on_drop: Callable[[], None] | None = None,
    ) -> StreamClient:
        client = StreamClient(flt, limit)
        if wake is not None:
            client.wake = wake
        if on_drop is not None:
            client.on_drop = on_drop
        self._clients = (*self._clients, client)
        self._members.add(client)
        if not self._attached:
            self._listeners.append(self.on_event)
            self._attached = True
        return client

    def unsubscribe(self, client: StreamClient) -> None:
        """Detach a client (idempotent); the last one out removes the listener from the daemon."""
        self._clients = tuple(c for c in self._clients if c is not client)
        self._members.discard(client)
        client.pending.clear()
        client.buffered = 0
        if not self._members and self._attached:
            with contextlib.suppress(ValueError):
                self._listeners.remove(self.on_event)
            self._attached = False

    def close_all(self) -> None:
        """Server shutdown: every client's handler finishes."""
        for client in self._clients:
            client.closed = True
            client.wake()

    def on_event(self, now: float, event: SpeakerEvent) -> None:
        """The daemon's event listener: O(clients), never iterates prefixes, never awaits."""
        drop: list[StreamClient] = []
        for client in self._clients:
            n = client.filter.candidates(event)
            if not n:
                continue
            # An event larger than the whole buffer is still taken by an empty buffer; the bound is
            # then limit + one event.
            if client.buffered and client.buffered + n > client.limit:
                drop.append(client)
                continue
            client.pending.append((now, event))
            client.buffered += n
            client.wake()
        for client in drop:
            self._drop(client, f"slow client: buffer of {client.limit} messages full")

    def _drop(self, client: StreamClient, reason: str) -> None:
        self._clients = tuple(c for c in self._clients if c is not client)
        client.pending.clear()
        client.buffered = 0
        client.dropped = reason
        self.dropped_total += 1
        client.on_drop()
        client.wake()


# -- messages ---------------------------------------------------------------------------------------


class StreamEncoder:
    """(timestamp, event) → JSON messages for one client's filter, one per (event, prefix).

    Every message has the same keys, ``null`` where they do not apply::

        {"type": "announce"|"withdraw"|"peer_up"|"peer_down"|"end_of_rib", "peer", "timestamp",
         "prefix", "family", "next_hop", "as_path", "origin", "med", "local_pref", "communities",
         "large_communities"}

    plus ``peer_as`` and ``router_id`` on peer_up and ``reason`` and ``detail`` on peer_down.
    ``as_path`` is a list of ASNs with each AS_SET as a nested sorted list.
    """

    def __init__(self, flt: StreamFilter) -> None:
        self.filter = flt
        self._attrs_cache: tuple[Attributes | None, dict[str, Any]] = (None, {})

    def _attrs_json(self, attrs: Attributes) -> dict[str, Any]:
        cached, data = self._attrs_cache
        if cached is attrs:
            return data
        data = {
            "next_hop": attrs.next_hop,
            "as_path": attrs.as_path_flat(),
            "origin": ORIGIN_NAMES[int(attrs.origin)],
            "med": attrs.med,
            "local_pref": attrs.local_pref,
            "communities": [community_text(c) for c in attrs.communities],
            "large_communities": [f"{x}:{y}:{z}" for x, y, z in attrs.large_communities],
        }
        self._attrs_cache = (attrs, data)
        return data

    def messages(self, now: float, event: SpeakerEvent) -> Iterator[bytes]:
        flt = self.filter
        if flt.peers and event.peer not in flt.peers:
            return
        ts = round(now, 6)
        match event:
            case Update():
                family = event.family
                fam = family.short
                wants = flt.wants_prefix
                if event.withdraw and WITHDRAW in flt.types and not flt.origin_as:
                    for key in event.withdraw:
                        if wants(family, key):
                            yield orjson.dumps(
                                _base(WITHDRAW, event.peer, ts, format_prefix(family, key), fam)
                            )
                attrs = event.attrs
                if event.announce and attrs is not None and ANNOUNCE in flt.types and flt.wants_attrs(attrs):
                    aj = self._attrs_json(attrs)
                    for key in event.announce:
                        if wants(family, key):
                            msg = _base(ANNOUNCE, event.peer, ts, format_prefix(family, key), fam)
                            msg.update(aj)
                            yield orjson.dumps(msg)
            case PeerUp():
                if PEER_UP in flt.types:
                    msg = _base(PEER_UP, event.peer, ts, None, None)
                    msg["peer_as"] = event.peer_as
                    msg["router_id"] = event.router_id
                    yield orjson.dumps(msg)
            case PeerDown():
                if PEER_DOWN in flt.types:
                    msg = _base(PEER_DOWN, event.peer, ts, None, None)
                    msg["reason"] = event.reason.value
                    msg["detail"] = event.detail
                    yield orjson.dumps(msg)
            case EndOfRib():
                if END_OF_RIB in flt.types:
                    yield orjson.dumps(_base(END_OF_RIB, event.peer, ts, None, event.family.short))
            case Notification() | SessionState():
                return


def _base(kind: str, peer: str, ts: float, prefix: str | None, family: str | None) -> dict[str, Any]:
    return {
        "type": kind,
        "peer": peer,
        "timestamp": ts,
        "prefix": prefix,
        "family": family,
        "next_hop": None,
        "as_path": None,
        "origin": None,
        "med": None,
        "local_pref": None,
        "communities": None,
        "large_communities": None,
    }


def dropped_json(reason: str) -> bytes:
    return orjson.dumps({"type": "dropped", "reason": reason})


# -- aiohttp handler --------------------------------------------------------------------------------

STREAM_HUB: web.AppKey[StreamHub] = web.AppKey("stream_hub")


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/stream: SSE, or a WebSocket when the request asks for an upgrade."""
    daemon: Daemon = request.app[DAEMON]
    hub = request.app[STREAM_HUB]
    flt, buffer = parse_filter(request.query, daemon.status)
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _serve_ws(request, hub, flt, buffer)
    return await _serve_sse(request, hub, flt, buffer)


class _Session:
    """Ties a hub client to the handler task: wake-ups and the cancellation of a stalled write."""

    def __init__(self, hub: StreamHub, flt: StreamFilter, buffer: int) -> None:
        self.ready = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None
        self.client = hub.subscribe(flt, buffer, wake=self.ready.set, on_drop=self._on_drop)
        self.encoder = StreamEncoder(flt)

    def _on_drop(self) -> None:
        if self.writer is not None:
            self.writer.cancel()  # it may be blocked in drain() on a client that does not read

    async def pump(self, write: Callable[[list[bytes]], Any], keepalive: Callable[[], Any]) -> None:
        """Write messages until the client is dropped or closed; keepalive when idle."""
        client = self.client
        while client.dropped is None and not client.closed:
            try:
                await asyncio.wait_for(self.ready.wait(), KEEPALIVE_S)
            except TimeoutError:
                await keepalive()
                continue
            self.ready.clear()
            batch = client.take()
            encode = self.encoder.messages
            out: list[bytes] = []
            for now, event in batch:
                out.extend(encode(now, event))
                if len(out) >= 256:
                    await write(out)
                    client.sent += len(out)
                    out = []  # a drop cancels this task (the hub calls on_drop)
            if out:
                await write(out)
                client.sent += len(out)

    async def run(self, write: Callable[[list[bytes]], Any], keepalive: Callable[[], Any]) -> None:
        """Run ``pump`` as a task the hub can cancel on drop; returns when it ends for any reason."""
        writer = self.writer = asyncio.create_task(self.pump(write, keepalive))
        try:
            await asyncio.wait({writer})
        except asyncio.CancelledError:
            writer.cancel()
            raise
        if writer.cancelled():
            return  # dropped by the hub
        exc = writer.exception()
        if exc is not None and not isinstance(exc, ConnectionError | RuntimeError):
            raise exc
        # ConnectionError / RuntimeError: the client went away (aiohttp's ClientConnectionResetError)


async def _serve_sse(
    request: web.Request, hub: StreamHub, flt: StreamFilter, buffer: int
) -> web.StreamResponse:
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
        }
    )
    resp.force_close()  # one stream per connection; a dropped client's connection is closed
    await resp.prepare(request)
    session = _Session(hub, flt, buffer)
    try:
        await resp.write(b": peerctl stream\nretry: 5000\n\n")  # sends the headers now

        async def write(messages: list[bytes]) -> None:
            chunk: list[bytes] = []
            size = 0
            for m in messages:
                chunk.append(b"data: " + m + b"\n\n")
                size += len(m) + 8
                if size >= WRITE_CHUNK:
                    await resp.write(b"".join(chunk))
                    chunk, size = [], 0
            if chunk:
                await resp.write(b"".join(chunk))

        async def keepalive() -> None:
            await resp.write(b":keepalive\n\n")

        await session.run(write, keepalive)
    except (ConnectionError, RuntimeError):
        return resp
    finally:
        hub.unsubscribe(session.client)
    reason = session.client.dropped
    try:
        if reason is not None:
            # The transport may be full: give the client a grace period to take the final event.
            final = b"event: dropped\ndata: " + orjson.dumps({"reason": reason}) + b"\n\n"
            async with asyncio.timeout(DROP_GRACE_S):
                await resp.write(final)
                await resp.write_eof()
        else:
            await resp.write_eof()
    except (TimeoutError, ConnectionError, RuntimeError):
        if request.transport is not None:
            request.transport.abort()
    return resp


async def _serve_ws(
    request: web.Request, hub: StreamHub, flt: StreamFilter, buffer: int
) -> web.StreamResponse:
    ws = web.WebSocketResponse(heartbeat=KEEPALIVE_S)
    await ws.prepare(request)
    session = _Session(hub, flt, buffer)

    async def write(messages: list[bytes]) -> None:
        for m in messages:
            await ws.send_str(m.decode())

    async def keepalive() -> None:
        if ws.closed:
            raise ConnectionResetError("websocket closed")

    async def reader() -> None:
        async for _ in ws:  # we ignore client messages; this notices closes and answers pings
            pass
        session.client.closed = True
        session.ready.set()

    read_task = asyncio.create_task(reader())
    try:
        await session.run(write, keepalive)
    finally:
        hub.unsubscribe(session.client)
        read_task.cancel()
    reason = session.client.dropped
    with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
        async with asyncio.timeout(DROP_GRACE_S):
            if reason is not None:
                await ws.send_str(dropped_json(reason).decode())
                await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"slow client")
            else:
                await ws.close()
    return ws


def _setup(app: web.Application) -> None:
    hub = StreamHub(app[DAEMON].event_listeners)
    app[STREAM_HUB] = hub

    async def on_shutdown(app: web.Application) -> None:
        hub.close_all()

    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/api/v1/stream", stream)


register(_setup)
