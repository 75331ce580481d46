"""One BGP-4 session as a sans-IO finite state machine (RFC 4271 8): bytes in, events and bytes out.

Theory of operation
-------------------
``speaker.py`` owns the socket and the clock; this module owns the meaning, and never does I/O.

* The I/O edge reports what happened: ``start(now)``, ``connection_made(now)``,
  ``connection_failed(now)``, ``connection_lost(now)``, ``receive_data(data, now)``,
  ``handle_timer(now)``, ``stop(now, message)``. It then pulls the results: ``data_to_send()``
  (bytes to write), ``next_event()`` (a ``speakers.events`` event, or ``NEED_DATA``), ``get_timer()``
  (when to call ``handle_timer`` next), ``closed`` (close the TCP connection once the pending bytes
  are written) and ``wants_connect`` (an active session wants a new TCP connection now).
* The state is a table, ``TRANSITIONS[state][input]``: the RFC 4271 states, and inputs that are the
  RFC's FSM events folded into what this speaker distinguishes (``Input``). A move is always
  ``_move(input)``; an input with no entry for the current state raises ``IllegalTransition`` and
  leaves the state unchanged. Messages arriving in the wrong state are *legal* inputs that lead to a
  NOTIFICATION (Finite State Machine Error, RFC 6608 subcodes) and IDLE; only misuse by the I/O edge
  (e.g. ``connection_made`` twice) raises. Every move out of ESTABLISHED yields a ``PeerDown`` with a
  ``DownReason`` and logs it.
* Timers (RFC 4271 10) are deadlines on the caller's clock: ConnectRetry in CONNECT/ACTIVE (with an
  exponential backoff per consecutive failure, RFC 4271 8.1.1 "DampPeerOscillations" in spirit),
  the hold timer (4 minutes in OPENSENT, the negotiated hold time after the OPEN) and the keepalive
  timer (a third of the hold time). Expiry of the hold timer sends NOTIFICATION 4/0.
* OPEN (RFC 4271 6.2, 5492): version, peer AS (2/2), hold time (2/6), BGP identifier (2/3) are checked;
  capabilities give the ``Negotiated`` result: families (RFC 4760), 4-byte ASN (RFC 6793), route
  refresh (RFC 2918), extended messages (RFC 8654), ADD-PATH receive (RFC 7911), graceful restart
  (RFC 4724; advertised, and the peer's restart time recorded).
* UPDATEs are decoded by ``codec.decode_plain_update`` (the plain IPv4 case; 4-byte ASNs, no
  ADD-PATH; with the C accelerator built, ``codec.plain_updates`` takes a whole run of them off the
  receive buffer in one call, the same events) or else ``codec.decode_update`` straight into
  ``Update`` events (one per family part),
  ``EndOfRib`` for the RFC 4724 markers. RFC 7606: treat-as-withdraw arrives from the codec as
  withdrawals, attribute discard as a smaller attribute set; both are counted in ``errors`` and logged
  at debug level. Only a ``BgpError`` (the RFC's "session reset" cases) sends NOTIFICATION 3/x and ends
  the session with ``PeerDown(PROTOCOL_ERROR)``. NLRI of families that were not negotiated are dropped
  and counted.
* Sending: ``announce(family, attrs, keys)`` / ``withdraw(family, keys)`` keep our Adj-RIB-Out and,
  when ESTABLISHED, encode UPDATEs with as many prefixes per message as fit. On reaching ESTABLISHED
  the whole Adj-RIB-Out is sent, then End-of-RIB per family; a ROUTE-REFRESH sends it again.
  ``command(line)`` takes ExaBGP API lines (``commands.parse_command``).
* Shutdown: ``stop(now, message)`` sends Cease / Administrative Shutdown (6/2) with the RFC 9003
  shutdown communication.

Hot path: ``receive_data`` splits and decodes every complete message at once; events wait in a
deque, so a caller that stops pulling events (backpressure) should also stop feeding data.
"""

from __future__ import annotations

import dataclasses
import enum
import socket
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family
from speakers.events import (
    DownReason,
    EndOfRib,
    Notification,
    PeerDown,
    PeerUp,
    SessionState,
    SpeakerEvent,
    Update,
)
from speakers.native import codec
from speakers.native.codec import (
    MAX_EXTENDED_MESSAGE,
    MAX_MESSAGE,
    MSG_KEEPALIVE,
    MSG_NOTIFICATION,
    MSG_OPEN,
    MSG_ROUTE_REFRESH,
    MSG_UPDATE,
    BgpError,
    OpenMessage,
)
from speakers.native.commands import NEXT_HOP_SELF, parse_command


class NeedData(enum.Enum):
    NEED_DATA = "need-data"


NEED_DATA: Final = NeedData.NEED_DATA

OPEN_HOLD_TIME: Final = 240.0  # RFC 4271 8.2.2: "a large value ... suggested 4 minutes"
CONNECT_RETRY: Final = 2.0  # seconds; RFC 4271 suggests 120, far too slow for a lab or a restart
CONNECT_RETRY_MAX: Final = 60.0
GRACEFUL_RESTART_TIME: Final = 120  # as the ExaBGP speaker advertises (speakers/exabgp/render.py)

_NOTIFICATION_NAMES: Final[Mapping[int, str]] = {
    1: "message header error",
    2: "OPEN message error",
    3: "UPDATE message error",
    4: "hold timer expired",
    5: "finite state machine error",
    6: "cease",
}


class IllegalTransition(RuntimeError):
    """The I/O edge reported an input the current state does not accept (a bug in the caller).

    Defined here rather than in ``orchestrator/errors.py`` because it is a programming error, never a
    protocol condition: it is not caught anywhere.
    """


class State(enum.Enum):
    """RFC 4271 8.2.2 session states."""

    IDLE = "idle"
    CONNECT = "connect"
    ACTIVE = "active"
    OPENSENT = "opensent"
    OPENCONFIRM = "openconfirm"
    ESTABLISHED = "established"


class Input(enum.Enum):
    """FSM inputs (RFC 4271 8.1 events, grouped)."""

    START = "start"  # ManualStart / AutomaticStart (8.1.2 events 1, 3)
    PASSIVE_START = "passive-start"  # ManualStart_with_PassiveTcpEstablishment (event 4)
    STOP = "stop"  # ManualStop (event 2)
    CONNECT_RETRY_EXPIRED = "connect-retry-expired"  # event 9
    TCP_CONNECTED = "tcp-connected"  # events 16/17
    TCP_FAILED = "tcp-failed"  # event 18
    OPEN_RECEIVED = "open-received"  # event 19 (acceptable OPEN)
    OPEN_ERROR = "open-error"  # events 21/22 (bad header or OPEN)
    KEEPALIVE_RECEIVED = "keepalive-received"  # event 26
    UPDATE_RECEIVED = "update-received"  # event 27
    UPDATE_ERROR = "update-error"  # event 28
    NOTIFICATION_RECEIVED = "notification-received"  # events 24/25
    HOLD_EXPIRED = "hold-expired"  # event 10
    KEEPALIVE_TIMER = "keepalive-timer"  # event 11
    ROUTE_REFRESH_RECEIVED = "route-refresh-received"
    FSM_ERROR = "fsm-error"  # a message the state does not expect: NOTIFICATION 5/x


_S, _I = State, Input
TRANSITIONS: Final[Mapping[State, Mapping[Input, State]]] = {
    _S.IDLE: {
        _I.START: _S.CONNECT,
        _I.PASSIVE_START: _S.ACTIVE,
        _I.STOP: _S.IDLE,
        _I.TCP_FAILED: _S.IDLE,  # a connection attempt that ends after stop()
    },
    _S.CONNECT: {
        _I.STOP: _S.IDLE,
        _I.TCP_CONNECTED: _S.OPENSENT,
        _I.TCP_FAILED: _S.ACTIVE,
        _I.CONNECT_RETRY_EXPIRED: _S.CONNECT,
    },
    _S.ACTIVE: {
        _I.STOP: _S.IDLE,
        _I.TCP_CONNECTED: _S.OPENSENT,
        _I.TCP_FAILED: _S.ACTIVE,
        _I.CONNECT_RETRY_EXPIRED: _S.CONNECT,
    },
    _S.OPENSENT: {
        _I.STOP: _S.IDLE,
        _I.TCP_FAILED: _S.ACTIVE,  # RFC 4271 8.2.2: TcpConnectionFails in OpenSent → Active
        _I.OPEN_RECEIVED: _S.OPENCONFIRM,
        _I.OPEN_ERROR: _S.IDLE,
        _I.NOTIFICATION_RECEIVED: _S.IDLE,
        _I.HOLD_EXPIRED: _S.IDLE,
        _I.FSM_ERROR: _S.IDLE,
    },
    _S.OPENCONFIRM: {
        _I.STOP: _S.IDLE,
        _I.TCP_FAILED: _S.IDLE,
        _I.KEEPALIVE_RECEIVED: _S.ESTABLISHED,
        _I.KEEPALIVE_TIMER: _S.OPENCONFIRM,
        _I.OPEN_ERROR: _S.IDLE,
        _I.NOTIFICATION_RECEIVED: _S.IDLE,
        _I.HOLD_EXPIRED: _S.IDLE,
        _I.FSM_ERROR: _S.IDLE,
    },
    _S.ESTABLISHED: {
        _I.STOP: _S.IDLE,
        _I.TCP_FAILED: _S.IDLE,
        _I.KEEPALIVE_RECEIVED: _S.ESTABLISHED,
        _I.KEEPALIVE_TIMER: _S.ESTABLISHED,
        _I.UPDATE_RECEIVED: _S.ESTABLISHED,
        _I.ROUTE_REFRESH_RECEIVED: _S.ESTABLISHED,
        _I.UPDATE_ERROR: _S.IDLE,
        _I.OPEN_ERROR: _S.IDLE,  # a bad message header
        _I.NOTIFICATION_RECEIVED: _S.IDLE,
        _I.HOLD_EXPIRED: _S.IDLE,
        _I.FSM_ERROR: _S.IDLE,
    },
}

# Why a session leaves ESTABLISHED, by the input that moved it.
_DOWN_REASONS: Final[Mapping[Input, DownReason]] = {
    _I.STOP: DownReason.ADMIN_SHUTDOWN,
    _I.TCP_FAILED: DownReason.CONNECTION_LOST,
    _I.UPDATE_ERROR: DownReason.PROTOCOL_ERROR,
    _I.OPEN_ERROR: DownReason.PROTOCOL_ERROR,
    _I.FSM_ERROR: DownReason.PROTOCOL_ERROR,
    _I.NOTIFICATION_RECEIVED: DownReason.NOTIFICATION_RECEIVED,
    _I.HOLD_EXPIRED: DownReason.HOLD_TIMER_EXPIRED,
}

# RFC 6608 FSM error subcodes: unexpected message in OpenSent / OpenConfirm / Established.
_FSM_SUBCODE: Final[Mapping[State, int]] = {_S.OPENSENT: 1, _S.OPENCONFIRM: 2, _S.ESTABLISHED: 3}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What one session needs to know (built from ``PeerConfig`` + ``LocalConfig`` by the I/O edge)."""

    peer: str  # the peer's name: every event carries it
    local_as: int
    peer_as: int  # 0: accept any
    router_id: str
    hold_time: int = 90
    families: tuple[Family, ...] = (Family.IPV4, Family.IPV6)
    passive: bool = False
    connect_retry: float = CONNECT_RETRY
    connect_retry_max: float = CONNECT_RETRY_MAX
    graceful_restart: int | None = GRACEFUL_RESTART_TIME
    extended_message: bool = True
    add_path_receive: bool = False  # ask for ADD-PATH receive on every family (RFC 7911)
    route_refresh: bool = True


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of the OPEN exchange."""

    peer_as: int
    router_id: str  # the peer's BGP identifier
    hold_time: int  # 0: no keepalives, no hold timer
    keepalive: float
    families: tuple[Family, ...]
    asn4: bool
    route_refresh: bool
    extended_message: bool
    add_path: bool  # we receive path identifiers on every negotiated family
    peer_graceful_restart: int | None  # the peer's restart time when it advertised the capability
    open: OpenMessage


class BgpSession:
    """Sans-IO BGP session (see the module docstring). Not thread-safe; one per peer."""

    def __init__(self, config: SessionConfig, log: Any = None) -> None:
        self.config = config
        self.log = log
        self.state = State.IDLE
        self.negotiated: Negotiated | None = None
        self.closed = False
        self.wants_connect = False
        self.connect_failures = 0
        self.errors = 0  # RFC 7606 actions taken (treat-as-withdraw, attribute discard)
        self.dropped_families = 0  # UPDATE parts of families that were not negotiated
        self.messages_received = 0
        self.last_down: DownReason | None = None
        self.next_hop_self: dict[Family, str] = {}
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._events: deque[SpeakerEvent] = deque()
        self._rib_out: dict[Family, dict[int, Attributes]] = {f: {} for f in Family}
        self._connect_retry_at: float | None = None
        self._hold_at: float | None = None
        self._keepalive_at: float | None = None
        self._max_size = MAX_MESSAGE
        self._asn4 = True
        self._add_path = False
        self._families: frozenset[Family] = frozenset()
        self._plain = False  # codec.decode_plain_update applies: 4-byte ASNs, IPv4, no ADD-PATH

    # -- the table --------------------------------------------------------------------------------

    def _move(self, inp: Input, *, detail: str = "") -> None:
        """Take the transition for ``inp``; raise IllegalTransition (state unchanged) if none."""
        allowed = TRANSITIONS[self.state]
        if inp not in allowed:
            raise IllegalTransition(f"{self.config.peer}: input {inp.value} is illegal in {self.state.value}")
        old = self.state
        new = allowed[inp]
        self.state = new
        if old is State.ESTABLISHED and new is not State.ESTABLISHED:
            reason = _DOWN_REASONS.get(inp, DownReason.CONNECTION_LOST)
            self.last_down = reason
            self._events.append(PeerDown(self.config.peer, reason, detail))
            if self.log is not None:
                self.log.info("session_down", reason=reason.value, detail=detail)
        elif new is not old and new is not State.ESTABLISHED:
            self._events.append(SessionState(self.config.peer, new.value))
        if new is State.IDLE:
            self._reset_connection()

    def _now_in(self, state: State) -> bool:
        """``self.state is state``, as a call: mypy would otherwise keep a narrowing across _move."""
        return self.state is state

    def _reset_connection(self) -> None:
        self.closed = True
        self.wants_connect = False
        self.negotiated = None
        self._hold_at = self._keepalive_at = self._connect_retry_at = None
        self._buf.clear()

    # -- inputs from the I/O edge -------------------------------------------------------------------

    def start(self, now: float) -> None:
        """ManualStart: CONNECT (active: the edge should connect now) or ACTIVE (passive: wait)."""
        self._move(Input.PASSIVE_START if self.config.passive else Input.START)
        self.closed = False
        self.wants_connect = not self.config.passive
        self._connect_retry_at = None if self.config.passive else now + self._retry_delay()

    def _retry_delay(self) -> float:
        cfg = self.config
        return float(min(cfg.connect_retry * (2 ** min(self.connect_failures, 16)), cfg.connect_retry_max))

    def connection_failed(self, now: float) -> None:
        """The TCP connection attempt failed (or the connection dropped before ESTABLISHED)."""
        self.connect_failures += 1
        self.wants_connect = False
        self._move(Input.TCP_FAILED)
        if self.state is State.ACTIVE:
            self.closed = False
            self._connect_retry_at = None if self.config.passive else now + self._retry_delay()

    def connection_made(self, now: float) -> None:
        """TCP is up (either direction): send our OPEN, wait for the peer's (RFC 4271 8.2.2)."""
        self._move(Input.TCP_CONNECTED)
        cfg = self.config
        self.closed = False
        self.wants_connect = False
        self._connect_retry_at = None
        self._buf.clear()
        self._max_size = MAX_MESSAGE
        self._out.append(
            codec.encode_open(
                cfg.local_as,
                cfg.hold_time,
                cfg.router_id,
                cfg.families,
                asn4=True,
                route_refresh=cfg.route_refresh,
                graceful_restart=cfg.graceful_restart,
                add_path_receive=cfg.families if cfg.add_path_receive else (),
                extended_message=cfg.extended_message,
            )
        )
        self._hold_at = now + OPEN_HOLD_TIME

    def connection_lost(self, now: float, detail: str = "connection closed") -> None:
        """The TCP connection ended (EOF or error). A no-op once the session has closed it itself."""
        if self.state in (State.IDLE, State.CONNECT, State.ACTIVE):
            return
        if self.state is State.OPENSENT:
            self.connect_failures += 1
        self._move(Input.TCP_FAILED, detail=detail)
        if self._now_in(State.ACTIVE):
            self._connect_retry_at = None if self.config.passive else now + self._retry_delay()
        self.closed = True

    def stop(self, now: float, message: str = "") -> None:
        """ManualStop: Cease / Administrative Shutdown (RFC 4486 6/2, RFC 9003 message) when the
        OPEN was sent, then IDLE."""
        if self.state in (State.OPENSENT, State.OPENCONFIRM, State.ESTABLISHED):
            self._notify(6, 2, codec.shutdown_data(message) if message else b"", message)
        self._move(Input.STOP, detail=message)

    def handle_timer(self, now: float) -> None:
        """Act on every deadline that has passed (hold, keepalive, connect retry)."""
        if self._hold_at is not None and now >= self._hold_at:
            self._notify(4, 0, b"", "hold timer expired")
            self._move(Input.HOLD_EXPIRED, detail="hold timer expired")
            return
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._move(Input.KEEPALIVE_TIMER)
            self._out.append(codec.encode_keepalive())
            self._arm_keepalive(now)
        if self._connect_retry_at is not None and now >= self._connect_retry_at:
            self._move(Input.CONNECT_RETRY_EXPIRED)
            self.wants_connect = True
            self._connect_retry_at = now + self._retry_delay()

    def get_timer(self) -> float | None:
        """The next deadline (on the caller's clock), None when no timer runs."""
        deadlines = [t for t in (self._hold_at, self._keepalive_at, self._connect_retry_at) if t is not None]
        return min(deadlines) if deadlines else None

    def _arm_keepalive(self, now: float) -> None:
        neg = self.negotiated
        self._keepalive_at = now + neg.keepalive if neg is not None and neg.hold_time else None

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Bytes from the peer: every complete message is handled now; events wait for next_event()."""
        if self.state not in (State.OPENSENT, State.OPENCONFIRM, State.ESTABLISHED):
            return  # closed or closing: late bytes are ignored
        buf = self._buf
        buf += data
        fast = 0
        plain_updates = codec.plain_updates
        if plain_updates is not None and self._plain and self.state is State.ESTABLISHED:
            # The C accelerator takes the run of plain UPDATEs at the front of the buffer (what
            # split_messages + _update would make of them). An UPDATE it declines (extended
            # communities, MP_REACH...: ~2% of a real table) goes the general way on its own and the
            # C takes the run after it; anything else (other messages, errors) the usual way below.
            while True:
                events, n = plain_updates(buf, self._max_size, self.config.peer, _IPV4)
                self._events.extend(events)
                fast += n
                length = codec.update_at_front(buf, self._max_size)
                if not length:
                    break
                body = memoryview(bytes(buf[codec.HEADER_LEN:length]))
                del buf[:length]
                fast += 1
                self._update_general(body)
                if not self._now_in(State.ESTABLISHED):  # it reset the session
                    self._received(fast, now)
                    return
        try:
            messages = codec.split_messages(buf, self._max_size)
        except BgpError as err:
            if fast:
                self._received(fast, now)
            self._protocol_error(err, Input.OPEN_ERROR)
            return
        if not messages and not fast:
            return
        self._received(fast + len(messages), now)
        established = State.ESTABLISHED
        for i, (mtype, body) in enumerate(messages):
            if mtype == MSG_UPDATE and self.state is established:
                self._update(body)
            else:
                self._message(mtype, body, now)
            if self._now_in(State.IDLE):  # the messages after the one that reset the session: dropped
                self.messages_received -= len(messages) - 1 - i
                return
        if len(buf) >= codec.HEADER_LEN:
            # split_messages reports a bad message that follows good ones on its next call: now.
            try:
                codec.split_messages(buf, self._max_size)  # only complete messages were left out
            except BgpError as err:
                self._protocol_error(err, Input.OPEN_ERROR)

    def _received(self, count: int, now: float) -> None:
        self.messages_received += count
        neg = self.negotiated
        if neg is not None and neg.hold_time:
            self._hold_at = now + neg.hold_time  # RFC 4271: restarted on KEEPALIVE and UPDATE

    # -- outputs ------------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the wire since the last call (b"" when nothing)."""
        if not self._out:
            return b""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def next_event(self) -> SpeakerEvent | NeedData:
        return self._events.popleft() if self._events else NEED_DATA

    def events(self) -> Iterator[SpeakerEvent]:
        """Pull every pending event (including ones queued while iterating)."""
        events = self._events
        while events:
            yield events.popleft()

    def take_events(self, limit: int) -> list[SpeakerEvent]:
        """Pull up to ``limit`` pending events, oldest first (an empty list when none)."""
        events = self._events
        if len(events) <= limit:
            out = list(events)
            events.clear()
            return out
        popleft = events.popleft
        return [popleft() for _ in range(limit)]

    @property
    def pending_events(self) -> int:
        return len(self._events)

    # -- messages -----------------------------------------------------------------------------------

    def _message(self, mtype: int, body: memoryview, now: float) -> None:
        state = self.state
        if mtype == MSG_NOTIFICATION:
            try:
                code, subcode, _, message = codec.decode_notification(body)
            except BgpError:
                code, subcode, message = 0, 0, None
            text = message or _NOTIFICATION_NAMES.get(code, "")
            self._events.append(Notification(self.config.peer, code, subcode, text, sent=False))
            if self.log is not None:
                self.log.info("notification_received", code=code, subcode=subcode, reason=text)
            self._move(Input.NOTIFICATION_RECEIVED, detail=f"({code},{subcode}) {text}".strip())
            return
        if state is State.OPENSENT:
            if mtype != MSG_OPEN:
                self._fsm_error(mtype)
                return
            self._open(body, now)
            return
        if mtype == MSG_KEEPALIVE:
            if state is State.OPENCONFIRM:
                self._established(now)
            else:
                self._move(Input.KEEPALIVE_RECEIVED)
            return
        if state is State.ESTABLISHED and mtype == MSG_ROUTE_REFRESH:
            self._move(Input.ROUTE_REFRESH_RECEIVED)
            try:
                fam = codec.decode_route_refresh(body)
            except BgpError as err:
                self._protocol_error(err, Input.UPDATE_ERROR)
                return
            if fam is not None and fam in self._families:
                self._send_rib_out(fam, end_of_rib=True)
            return
        self._fsm_error(mtype)

    def _fsm_error(self, mtype: int) -> None:
        subcode = _FSM_SUBCODE.get(self.state, 0)
        self._notify(5, subcode, bytes((mtype,)), f"unexpected message type {mtype} in {self.state.value}")
        self._move(Input.FSM_ERROR, detail=f"unexpected message type {mtype}")

    def _notify(self, code: int, subcode: int, data: bytes, message: str) -> None:
        self._out.append(codec.encode_notification(code, subcode, data))
        self._events.append(Notification(self.config.peer, code, subcode, message, sent=True))
        if self.log is not None:
            self.log.info("notification_sent", code=code, subcode=subcode, reason=message)

    def _protocol_error(self, err: BgpError, inp: Input) -> None:
        self._notify(err.code, err.subcode, err.data, err.message or str(err))
        was_established = self.state is State.ESTABLISHED
        self._move(inp, detail=str(err))
        if not was_established:
            self._events.append(PeerDown(self.config.peer, DownReason.PROTOCOL_ERROR, str(err)))

    def _open(self, body: memoryview, now: float) -> None:
        cfg = self.config
        try:
            peer_open = codec.decode_open(body)
            if cfg.peer_as and peer_open.asn != cfg.peer_as:
                raise BgpError(2, 2, codec._U16.pack(min(peer_open.asn, 0xFFFF)),
                               f"peer AS {peer_open.asn}, expected {cfg.peer_as}")  # fmt: skip
            if peer_open.router_id == cfg.router_id and peer_open.asn == cfg.local_as:
                raise BgpError(2, 3, message=f"BGP identifier {peer_open.router_id} is ours")  # RFC 4271 6.2
        except BgpError as err:
            self._protocol_error(err, Input.OPEN_ERROR)
            return
        hold = min(cfg.hold_time, peer_open.hold_time)
        families = tuple(f for f in cfg.families if f in peer_open.families)
        peer_sends = {fam for fam, mode in peer_open.add_path if mode & 2}
        add_path = cfg.add_path_receive and bool(families) and all(f in peer_sends for f in families)
        self.negotiated = Negotiated(
            peer_as=peer_open.asn,
            router_id=peer_open.router_id,
            hold_time=hold,
            keepalive=hold / 3,
            families=families,
            asn4=peer_open.asn4,
            route_refresh=peer_open.route_refresh,
            extended_message=peer_open.extended_message and cfg.extended_message,
            add_path=add_path,
            peer_graceful_restart=peer_open.graceful_restart,
            open=peer_open,
        )
        self._asn4 = peer_open.asn4
        self._add_path = add_path
        self._families = frozenset(families)
        self._plain = peer_open.asn4 and not add_path and Family.IPV4 in self._families
        self._max_size = MAX_EXTENDED_MESSAGE if self.negotiated.extended_message else MAX_MESSAGE
        self._move(Input.OPEN_RECEIVED)
        self._out.append(codec.encode_keepalive())
        self._hold_at = now + hold if hold else None
        self._arm_keepalive(now)
        if self.log is not None:
            self.log.info("open_received", peer_as=peer_open.asn, router_id=peer_open.router_id,
                          hold_time=hold, families=[f.short for f in families], asn4=peer_open.asn4,
                          add_path=add_path, extended_message=self.negotiated.extended_message)  # fmt: skip

    def _established(self, now: float) -> None:
        neg = self.negotiated
        assert neg is not None  # OPENCONFIRM always has the peer's OPEN
        self._move(Input.KEEPALIVE_RECEIVED)
        self.connect_failures = 0
        self._events.append(PeerUp(self.config.peer, neg.peer_as, neg.router_id, neg.families))
        if self.log is not None:
            self.log.info("established", peer_as=neg.peer_as, router_id=neg.router_id)
        for fam in neg.families:
            self._send_rib_out(fam, end_of_rib=True)

    def _update(self, body: memoryview) -> None:
        if self._plain:
            fast = codec.decode_plain_update(body)
            if fast is not None:  # what decode_update would say, without its per-family objects
                attrs, announce, withdraw = fast
                self._events.append(_update_event(self.config.peer, _IPV4, attrs, announce, withdraw))
                return
        self._update_general(body)

    def _update_general(self, body: memoryview) -> None:
        try:
            dec = codec.decode_update(body, asn4=self._asn4, add_path=self._add_path)
        except BgpError as err:
            self._protocol_error(err, Input.UPDATE_ERROR)
            return
        if dec.errors:
            self.errors += len(dec.errors)
            if self.log is not None:
                self.log.debug("update_errors", errors=list(dec.errors), taw=dec.treat_as_withdraw)
        peer = self.config.peer
        families = self._families
        append = self._events.append
        for fu in dec.families:
            if fu.family not in families:
                self.dropped_families += 1
                continue
            append(Update(peer, fu.family, fu.attrs if fu.announce else None, fu.announce, fu.withdraw))
        if dec.end_of_rib is not None and dec.end_of_rib in families:
            append(EndOfRib(peer, dec.end_of_rib))

    # -- what we announce -----------------------------------------------------------------------------

    def announce(self, family: Family, attrs: Attributes, keys: Iterable[int]) -> None:
        """Add ``keys`` with ``attrs`` to our Adj-RIB-Out; sent now when ESTABLISHED (and the family
        negotiated), else when the session comes up. ``attrs.next_hop`` may be ``"self"``.

        Raises ValueError when the next hop does not suit the family.
        """
        keys = list(keys)
        if attrs.next_hop != NEXT_HOP_SELF:
            _check_next_hop(family, attrs.next_hop)
        table = self._rib_out[family]
        for key in keys:
            table[key] = attrs
        if self.state is State.ESTABLISHED and family in self._families:
            self._encode_announce(family, attrs, keys)

    def withdraw(self, family: Family, keys: Iterable[int]) -> None:
        """Remove ``keys`` from our Adj-RIB-Out; a withdrawal is sent when ESTABLISHED."""
        table = self._rib_out[family]
        gone = [k for k in keys if table.pop(k, None) is not None]
        if gone and self.state is State.ESTABLISHED and family in self._families:
            self._out.extend(codec.encode_withdraws(family, gone, self._max_size))

    def command(self, line: str) -> None:
        """An ExaBGP API command line (``announce route ...`` / ``withdraw route ...``).

        Also ``[neighbor ADDR] announce route-refresh AFI SAFI``, as ExaBGP takes it: asks the peer to
        send its routes of that family again (RFC 2918), e.g. after our import policy changed.
        Raises ValueError for a line ``commands.parse_command`` rejects, or a refresh the session
        cannot send (not established, family not negotiated, no route-refresh capability).
        """
        words = line.split()
        if words[:1] == ["neighbor"]:
            words = words[2:]
        if words[:2] == ["announce", "route-refresh"]:
            self.request_refresh(Family(" ".join(words[2:4])))
            return
        cmd = parse_command(line)
        if cmd.attrs is None:
            self.withdraw(cmd.family, (cmd.key,))
        else:
            self.announce(cmd.family, cmd.attrs, (cmd.key,))

    def request_refresh(self, family: Family) -> None:
        """Send a ROUTE-REFRESH for ``family``. Raises ValueError when the session cannot."""
        neg = self.negotiated
        if self.state is not State.ESTABLISHED or neg is None:
            raise ValueError(f"route-refresh {family.value}: the session is {self.state.value}")
        if not neg.route_refresh:
            raise ValueError(f"route-refresh {family.value}: the peer did not advertise the capability")
        if family not in neg.families:
            raise ValueError(f"route-refresh {family.value}: family not negotiated")
        self._out.append(codec.encode_route_refresh(family))

    def adj_rib_out(self, family: Family) -> Mapping[int, Attributes]:
        return self._rib_out[family]

    def _resolve(self, family: Family, attrs: Attributes) -> Attributes | None:
        if attrs.next_hop != NEXT_HOP_SELF:
            return attrs
        nh = self.next_hop_self.get(family)
        if not nh:
            if self.log is not None:
                self.log.warning("next_hop_self_unknown", afi_safi=family.value)
            return None
        return dataclasses.replace(attrs, next_hop=nh)

    def _encode_announce(self, family: Family, attrs: Attributes, keys: Sequence[int]) -> None:
        resolved = self._resolve(family, attrs)
        if resolved is None or not keys:
            return
        msgs = codec.encode_updates(family, resolved, keys, asn4=self._asn4, max_size=self._max_size)
        self._out.extend(msgs)

    def _send_rib_out(self, family: Family, *, end_of_rib: bool) -> None:
        groups: dict[int, tuple[Attributes, list[int]]] = {}
        for key, attrs in self._rib_out[family].items():
            group = groups.get(id(attrs))
            if group is None:
                group = groups[id(attrs)] = (attrs, [])
            group[1].append(key)
        for attrs, keys in groups.values():
            self._encode_announce(family, attrs, keys)
        if end_of_rib:
            self._out.append(codec.encode_end_of_rib(family))


_IPV4: Final = Family.IPV4
_update_event = Update.fast


def _check_next_hop(family: Family, next_hop: str) -> None:
    try:
        socket.inet_pton(socket.AF_INET6 if family is Family.IPV6 else socket.AF_INET, next_hop)
    except OSError:
        raise ValueError(f"next hop {next_hop!r} is not an {family.short} address") from None


__all__ = [
    "NEED_DATA",
    "TRANSITIONS",
    "BgpSession",
    "IllegalTransition",
    "Input",
    "NeedData",
    "Negotiated",
    "SessionConfig",
    "State",
]
