"""The native speaker's I/O edge: one TCP connection per peer driving ``session.BgpSession``.

Theory of operation
-------------------
``NativeSpeaker`` implements the daemon's ``Speaker`` protocol (``start``/``stop``/``send``/
``restarts``). All protocol decisions are in the sans-IO ``BgpSession``; this module only moves bytes,
reads the clock and sleeps:

* Active peers: a runner task connects (from ``local_address``, TCP-MD5 and TTL set on the socket
  before ``connect``) whenever the session ``wants_connect``; a failed attempt is reported and the
  session's ConnectRetry timer (exponential backoff) says when to try again. Passive peers: a listener
  on ``local_address:port`` accepts one connection at a time from the neighbor's address (others get
  Cease 6/5, Connection Rejected).
* Per connection: a read loop (``reader.read`` → ``receive_data`` → write ``data_to_send()`` → await
  ``emit_many`` for the read's events in lists of at most ``EMIT_BATCH``, or ``emit`` for each when
  the consumer has no ``emit_many``) and a timer task (``handle_timer`` at the session's deadlines, at
  least once a second). Awaiting the emit before the next read is the backpressure: when the daemon's
  RIB queue is full the socket is not read, TCP's window closes and the peer stops sending. Lists
  (one queue slot each) cost one put and one get per ``EMIT_BATCH`` UPDATEs instead of per UPDATE, and
  keep the queue's bound in events at ``EMIT_BATCH`` times its slots: 64 x 512 (the daemon's
  ``EVENT_QUEUE_SIZE``) = 32,768 events, ~210k prefixes of a table load at ~6.4 per UPDATE, shared by
  all peers. 64 rather than 16 (8,192 events): a 200k load takes ~5% less time, mostly from the
  deeper buffer (64 per item with 128 slots measures as 16 with 512), for ~11 MB more peak RSS
  (bounded by the queue, not by the table). Both tasks emit under one lock, so events keep their order.
* After a session ends (error, NOTIFICATION, hold timer, peer gone) the session restarts after an
  idle hold time that doubles while sessions keep failing quickly; ``restarts`` counts them.
* ``stop()`` sends Cease / Administrative Shutdown with an RFC 9003 message, closes the connection and
  emits ``PeerDown(ADMIN_SHUTDOWN)`` when the session was up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from orchestrator.config import LocalConfig, PeerConfig
from orchestrator.rib.prefix import Family
from speakers.events import SpeakerEvent
from speakers.native.codec import encode_notification
from speakers.native.session import NEED_DATA, BgpSession, SessionConfig, State

READ_SIZE: Final = 256 * 1024
EMIT_BATCH: Final = 64  # events per emit_many list (see the module docstring)
CONNECT_TIMEOUT: Final = 10.0
TIMER_TICK: Final = 1.0  # the timer task wakes at least this often (deadlines move as data arrives)
IDLE_HOLD_FIRST: Final = 1.0
IDLE_HOLD_MAX: Final = 60.0
STABLE_SESSION: Final = 60.0  # a session up this long resets the idle hold backoff
SHUTDOWN_MESSAGE: Final = "peerctl: session stopped by the operator"

TCP_MD5SIG: Final = 14  # linux/tcp.h
TCP_MD5SIG_MAXKEYLEN: Final = 80

Emit = Callable[[SpeakerEvent], Awaitable[None]]
EmitMany = Callable[[list[SpeakerEvent]], Awaitable[None]]


def tcp_md5sig(peer_ip: str, password: str) -> bytes:
    """``struct tcp_md5sig`` (linux/tcp.h) for ``setsockopt(IPPROTO_TCP, TCP_MD5SIG, ...)`` (RFC 2385).

    Raises ValueError when the key is longer than 80 bytes or the address is not an IP address.
    """
    key = password.encode()
    if len(key) > TCP_MD5SIG_MAXKEYLEN:
        raise ValueError("TCP-MD5 key longer than 80 bytes")
    try:
        if ":" in peer_ip:
            addr = struct.pack("=H", socket.AF_INET6) + struct.pack(">HI", 0, 0)
            addr += socket.inet_pton(socket.AF_INET6, peer_ip) + struct.pack("=I", 0)
        else:
            addr = struct.pack("=H", socket.AF_INET) + struct.pack(">H", 0) + socket.inet_aton(peer_ip)
    except OSError:
        raise ValueError(f"not an IP address: {peer_ip!r}") from None
    # sockaddr_storage (128) + flags, prefixlen, keylen, ifindex + key[80]
    return (
        addr.ljust(128, b"\0")
        + struct.pack("=BBHi", 0, 0, len(key), 0)
        + key.ljust(TCP_MD5SIG_MAXKEYLEN, b"\0")
    )


def _family_of(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _prepare_socket(peer: PeerConfig, family: socket.AddressFamily) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if peer.password:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, tcp_md5sig(peer.neighbor, peer.password))
        if peer.multihop is not None:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, peer.multihop)
            else:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, peer.multihop)
    except BaseException:
        sock.close()
        raise
    return sock


def session_config(peer: PeerConfig, local: LocalConfig) -> SessionConfig:
    return SessionConfig(
        peer=peer.name,
        local_as=local.asn,
        peer_as=peer.peer_as,
        router_id=local.router_id,
        hold_time=peer.hold_time,
        families=peer.families,
        passive=peer.passive,
    )


class NativeSpeaker:
    """Our own asyncio BGP speaker for one peer (see the module docstring)."""

    def __init__(
        self,
        peer: PeerConfig,
        local: LocalConfig,
        emit: Emit,
        log: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        session: SessionConfig | None = None,
        emit_many: EmitMany | None = None,
    ) -> None:
        self.peer = peer
        self.local = local
        self._emit = emit
        self._emit_many = emit_many
        self.log = log
        self._clock = clock
        self.session = BgpSession(session or session_config(peer, local), log)
        self._restarts = 0
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._timer: asyncio.Task[None] | None = None
        self._emit_lock = asyncio.Lock()
        self._idle_hold = IDLE_HOLD_FIRST
        self._connect_failures_logged = 0

    # -- Speaker protocol ---------------------------------------------------------------------------

    @property
    def restarts(self) -> int:
        """Sessions restarted after one ended (there is no process to restart)."""
        return self._restarts

    @property
    def pid(self) -> int | None:
        return None

    def _is_stopping(self) -> bool:  # calls, so that mypy does not narrow across awaits
        return self._stopping

    def _session_state(self) -> State:
        return self.session.state

    @property
    def state(self) -> State:
        return self.session.state

    async def start(self) -> None:
        """Start connecting (or listening, when passive). Raises OSError if the listener cannot bind."""
        self._stopping = False
        if self.peer.passive:
            host = self.peer.local_address or ("::" if ":" in self.peer.neighbor else "0.0.0.0")
            sock = _prepare_socket(self.peer, _family_of(host))
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, self.peer.port))
                sock.listen(8)
            except BaseException:
                sock.close()
                raise
            self._server = await asyncio.start_server(self._accepted, sock=sock, limit=READ_SIZE)
            self.session.start(self._clock())
            await self._pump()
            self.log.info("listening", address=host, port=self.peer.port)
        else:
            self._runner = asyncio.create_task(self._active_loop(), name=f"bgp-{self.peer.name}")

    async def stop(self) -> None:
        """Cease / Administrative Shutdown (RFC 9003 message), close, PeerDown(ADMIN_SHUTDOWN) if up."""
        self._stopping = True
        session = self.session
        session.stop(self._clock(), SHUTDOWN_MESSAGE)
        writer = self._writer
        if writer is not None:
            data = session.data_to_send()
            with contextlib.suppress(Exception):
                if data:
                    writer.write(data)
                    await asyncio.wait_for(writer.drain(), 2.0)
            writer.close()
        for task in (self._runner, self._timer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runner = self._timer = None
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
        await self._pump()

    async def send(self, command: str) -> None:
        """An ExaBGP API command line; sent at once when established. ValueError for a bad line."""
        self.session.command(command)
        await self._flush()

    # -- connections --------------------------------------------------------------------------------

    async def _active_loop(self) -> None:
        session = self.session
        first = True
        while not self._stopping:
            if session.state is State.IDLE:
                if not first:
                    await asyncio.sleep(self._idle_hold)
                    self._restarts += 1
                first = False
                session.start(self._clock())
                await self._pump()
            if not session.wants_connect:
                await self._sleep_until_timer()
                continue
            try:
                reader, writer = await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                if self._connect_failures_logged < 3:
                    self.log.info("connect_failed", address=self.peer.neighbor, detail=str(exc) or "timeout")
                self._connect_failures_logged += 1
                session.connection_failed(self._clock())
                await self._pump()
                continue
            self._connect_failures_logged = 0
            await self._serve(reader, writer)

    async def _sleep_until_timer(self) -> None:
        deadline = self.session.get_timer()
        delay = TIMER_TICK if deadline is None else max(0.0, min(deadline - self._clock(), TIMER_TICK))
        await asyncio.sleep(delay)
        self.session.handle_timer(self._clock())
        await self._pump()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        peer = self.peer
        sock = _prepare_socket(peer, _family_of(peer.neighbor))
        try:
            if peer.local_address:
                sock.bind((peer.local_address, 0))
            await asyncio.get_running_loop().sock_connect(sock, (peer.neighbor, peer.port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=READ_SIZE)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if peername else "?"
        if address.startswith("::ffff:") and "." in address:
            address = address[7:]
        if address != self.peer.neighbor or self.session.state is not State.ACTIVE or self._stopping:
            self.log.info("connection_rejected", address=address, state=self.session.state.value)
            with contextlib.suppress(Exception):
                writer.write(encode_notification(6, 5))  # Cease / Connection Rejected (RFC 4486)
                await asyncio.wait_for(writer.drain(), 1.0)
            writer.close()
            return
        await self._serve(reader, writer)
        if not self._is_stopping() and self._session_state() is State.IDLE:
            await asyncio.sleep(self._idle_hold)
            if not self._is_stopping() and self._session_state() is State.IDLE:
                self._restarts += 1
                self.session.start(self._clock())
                await self._pump()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run one TCP connection until the session closes it or the peer does."""
        session = self.session
        clock = self._clock
        session.connection_made(clock())
        sockname = writer.get_extra_info("sockname")
        self._set_next_hop_self(str(sockname[0]) if sockname else "")
        self._writer = writer
        self._timer = asyncio.create_task(self._timer_loop(), name=f"bgp-timer-{self.peer.name}")
        established_at: float | None = None
        try:
            await self._flush()
            await self._pump()
            read = reader.read
            while not session.closed:
                data = await read(READ_SIZE)
                if not data:
                    session.connection_lost(clock(), "connection closed by the peer")
                    break
                session.receive_data(data, clock())
                if established_at is None and session.state is State.ESTABLISHED:
                    established_at = clock()
                await self._flush()
                await self._pump()  # awaits emit: backpressure (no read while the RIB is behind)
        except (ConnectionError, OSError) as exc:
            session.connection_lost(clock(), str(exc) or type(exc).__name__)
        finally:
            timer, self._timer = self._timer, None
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(Exception):
                data = session.data_to_send()  # a final NOTIFICATION
                if data:
                    writer.write(data)
            writer.close()
            self._writer = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        await self._pump()
        if established_at is not None and clock() - established_at >= STABLE_SESSION:
            self._idle_hold = IDLE_HOLD_FIRST
        else:
            self._idle_hold = min(self._idle_hold * 2, IDLE_HOLD_MAX) if established_at else self._idle_hold

    def _set_next_hop_self(self, local_ip: str) -> None:
        nhs = self.session.next_hop_self
        nhs.clear()
        source4, source6 = self.local.source4, self.local.source6
        if local_ip and ":" not in local_ip:
            nhs[Family.IPV4] = local_ip
        elif local_ip.startswith("::ffff:") and "." in local_ip:
            nhs[Family.IPV4] = local_ip[7:]
        elif local_ip:
            nhs[Family.IPV6] = local_ip
        if source4 and Family.IPV4 not in nhs:
            nhs[Family.IPV4] = source4
        if source6 and Family.IPV6 not in nhs:
            nhs[Family.IPV6] = source6

    async def _timer_loop(self) -> None:
        session = self.session
        while True:
            deadline = session.get_timer()
            now = self._clock()
            delay = TIMER_TICK if deadline is None else max(0.0, min(deadline - now, TIMER_TICK))
            await asyncio.sleep(delay)
            session.handle_timer(self._clock())
            await self._flush()
            if session.closed and self._writer is not None:
                self._writer.close()  # the read loop sees EOF / an error and ends
            await self._pump()

    async def _flush(self) -> None:
        data = self.session.data_to_send()
        writer = self._writer
        if data and writer is not None and not writer.is_closing():
            writer.write(data)
            await writer.drain()

    async def _pump(self) -> None:
        """Emit every pending event, in order; blocks while the consumer's queue is full."""
        session = self.session
        emit = self._emit
        emit_many = self._emit_many
        async with self._emit_lock:
            if emit_many is not None:
                while session.pending_events:
                    await emit_many(session.take_events(EMIT_BATCH))
                return
            while True:
                event = session.next_event()
                if event is NEED_DATA:
                    return
                await emit(event)


__all__ = ["NativeSpeaker", "session_config", "tcp_md5sig"]
