"""One ExaBGP peer as a sans-IO state machine: bytes from the relay in, ``SpeakerEvent``s out.

Theory of operation
-------------------
``process.py`` owns the pipes; this module owns the meaning. The relay stream from ExaBGP carries,
interleaved on one byte stream, (a) JSON lines (``decode.Decoder``) and (b) the API's answers to
our commands: ``done`` / ``error`` acks (``exabgp.api.ack=true``) and, rarely, text answers. So:

* ``feed(data)`` appends bytes; lines are cut with one ``bytes.split`` per feed (C speed), a partial
  line waits for the next feed. ``next_event()`` returns the next event or ``NEED_DATA``.
* Acks never reach the consumer: each releases one slot of the command window. Commands are queued
  with ``command()`` / ``announce()`` / ``withdraw()`` and pulled by the I/O edge with
  ``commands_to_send()``, which hands out at most ``max_in_flight`` unacknowledged commands. Every
  command gets exactly one answer, but not always in order: an unknown command is refused at once
  while ``announce``/``withdraw`` are answered from ExaBGP's scheduler later (see the recorded
  ``error`` before ``done`` in the golden acks file). The window counts answers, which is exact;
  naming the failed command assumes FIFO, exact among announces/withdraws only. ExaBGP
  5.0.15 rescans its whole pending-command queue on every loop turn, so a bounded window is ~5x
  faster than writing everything at once (EXABGP.md) and keeps its memory flat.
* The BGP session state is a table, ``TRANSITIONS[state][input]``. Inputs are derived from the
  decoded events (``Input``), plus ``EXITED`` / ``STOP`` from the I/O edge. ``SessionState`` events
  share one type for several inputs (``connected`` / ``shutdown``), so the table is keyed on
  ``Input`` rather than on event types. An input with no entry is illegal: it is logged, counted and
  dropped, and the state does not change. Every move out of ESTABLISHED yields a ``PeerDown`` with
  a ``DownReason`` and an INFO log line; a ``down`` outside ESTABLISHED (ExaBGP reports one per
  refused connection attempt, every 1-3 s) only counts ``connect_failures``.
* Protocol errors (``SpeakerProtocolError`` from the decoder) stop at this boundary: logged (rate
  limited by the caller's logger config), counted in ``errors``; ``RESTART_SPEAKER`` errors set
  ``restart_requested`` for the I/O edge. Nothing else raises out of ``next_event``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

from orchestrator.errors import ErrorAction, SpeakerProtocolError
from orchestrator.rib.attrs import AS_CONFED_SEQUENCE, AS_CONFED_SET, AS_SET, Attributes, Origin
from orchestrator.rib.prefix import Family, parse_prefix
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
from speakers.exabgp.decode import Decoder


class NeedData(enum.Enum):
    NEED_DATA = "need-data"


NEED_DATA: Final = NeedData.NEED_DATA

MAX_LINE: Final = 8 << 20  # a JSON line for one UPDATE is < 1 MB; anything longer is garbage
DEFAULT_MAX_IN_FLIGHT: Final = 200


class State(enum.Enum):
    IDLE = "idle"  # ExaBGP (re)starting or between connection attempts
    CONNECTED = "connected"  # TCP up, OPEN exchange under way
    ESTABLISHED = "established"
    CLOSED = "closed"  # ExaBGP said it is shutting down, or we stopped it


class Input(enum.Enum):
    CONNECTED = "connected"
    UP = "up"
    DOWN = "down"
    ROUTE = "route"  # Update / EndOfRib
    NOTIFICATION = "notification"
    SHUTDOWN = "shutdown"  # ExaBGP's own {"notification": "shutdown"}
    OTHER_STATE = "other-state"  # a state name we do not know: shown, no move
    EXITED = "exited"  # the ExaBGP process ended (I/O edge)
    STOP = "stop"  # we are stopping it (I/O edge)
    START = "start"  # a new ExaBGP process (I/O edge)


_S, _I = State, Input
TRANSITIONS: Final[Mapping[State, Mapping[Input, State]]] = {
    _S.IDLE: {
        _I.CONNECTED: _S.CONNECTED,
        _I.UP: _S.ESTABLISHED,  # an accepted (passive) connection may skip "connected"
        _I.DOWN: _S.IDLE,
        _I.NOTIFICATION: _S.IDLE,
        _I.OTHER_STATE: _S.IDLE,
        _I.SHUTDOWN: _S.CLOSED,
        _I.EXITED: _S.IDLE,
        _I.STOP: _S.CLOSED,
        _I.START: _S.IDLE,
    },
    _S.CONNECTED: {
        _I.CONNECTED: _S.CONNECTED,
        _I.UP: _S.ESTABLISHED,
        _I.DOWN: _S.IDLE,
        _I.NOTIFICATION: _S.CONNECTED,
        _I.OTHER_STATE: _S.CONNECTED,
        _I.SHUTDOWN: _S.CLOSED,
        _I.EXITED: _S.IDLE,
        _I.STOP: _S.CLOSED,
    },
    _S.ESTABLISHED: {
        _I.ROUTE: _S.ESTABLISHED,
        _I.NOTIFICATION: _S.ESTABLISHED,  # the "down" that follows moves us
        _I.CONNECTED: _S.ESTABLISHED,  # a colliding second connection: ExaBGP resolves it
        _I.OTHER_STATE: _S.ESTABLISHED,
        _I.DOWN: _S.IDLE,
        _I.SHUTDOWN: _S.CLOSED,
        _I.EXITED: _S.IDLE,
        _I.STOP: _S.CLOSED,
    },
    _S.CLOSED: {
        _I.START: _S.IDLE,
        _I.EXITED: _S.CLOSED,
        _I.STOP: _S.CLOSED,
        _I.DOWN: _S.CLOSED,
        _I.CONNECTED: _S.CLOSED,  # lines still in the pipe after "shutdown"
        _I.NOTIFICATION: _S.CLOSED,
        _I.OTHER_STATE: _S.CLOSED,
    },
}


def _input_of(event: SpeakerEvent) -> Input:
    match event:
        case Update() | EndOfRib():
            return Input.ROUTE
        case PeerUp():
            return Input.UP
        case PeerDown():
            return Input.DOWN
        case Notification():
            return Input.NOTIFICATION
        case SessionState(state="connected"):
            return Input.CONNECTED
        case SessionState(state="shutdown"):
            return Input.SHUTDOWN
        case SessionState():
            return Input.OTHER_STATE
    raise AssertionError(event)  # pragma: no cover - SpeakerEvent is closed


class ExaBGPSession:
    """Sans-IO session for one peer. Not thread-safe; one owner.

    ``log`` defaults to a structlog logger bound with ``peer``.
    """

    def __init__(
        self,
        peer_name: str,
        families: tuple[Family, ...] = (Family.IPV4, Family.IPV6),
        neighbor: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        log: Any = None,
    ) -> None:
        self.peer = peer_name
        self.families = families
        self.neighbor = neighbor
        self.max_in_flight = max_in_flight
        self.log = log if log is not None else structlog.get_logger().bind(peer=peer_name)
        self.state = State.IDLE
        self.decoder = Decoder(peer_name, families)
        self.errors = 0
        self.illegal = 0
        self.connect_failures = 0
        self.acks_ok = 0
        self.acks_error = 0
        self.restart_requested = False
        self.last_error: SpeakerProtocolError | None = None
        self._partial = b""
        self._lines: deque[bytes] = deque()
        self._events: deque[SpeakerEvent] = deque()
        self._queued: deque[str] = deque()  # commands not yet handed out
        self._in_flight: deque[str] = deque()  # handed out, waiting for done/error
        self._announced_connect = False
        self._gaps_logged = 0
        # Called with (command line or None, ok) for every done/error answer: lets the announcement
        # manager show which commands ExaBGP accepted (``peerctl adv``).
        self.on_answer: Callable[[str | None, bool], None] | None = None

    # -- input -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append bytes from the relay (any split: partial lines are kept)."""
        if not data:
            return
        lines = (self._partial + data).split(b"\n") if self._partial else data.split(b"\n")
        self._partial = lines.pop()
        self._lines.extend(lines)
        if len(self._partial) > MAX_LINE:
            self._protocol_error(
                SpeakerProtocolError(
                    self.peer,
                    "$",
                    f"line longer than {MAX_LINE} bytes",
                    ErrorAction.RESTART_SPEAKER,
                    text=self._partial[:200].decode("utf-8", "replace"),
                )
            )
            self._partial = b""

    def next_event(self) -> SpeakerEvent | NeedData:
        """The next event for the consumer, or NEED_DATA when the fed bytes are used up."""
        events = self._events
        while not events:
            if not self._lines:
                return NEED_DATA
            line = self._lines.popleft()
            if not line or line[0] != 0x7B:  # not "{": an API answer
                self._answer(line)
                continue
            try:
                decoded = self.decoder.decode(line)
            except SpeakerProtocolError as exc:
                self._protocol_error(exc)
                continue
            for event in decoded:
                self._apply(event)
            if self.decoder.counter_gaps > self._gaps_logged:
                self._gaps_logged = self.decoder.counter_gaps
                self.log.warning("exabgp_counter_gap", gaps=self._gaps_logged, counter=self.decoder.counter)
        return events.popleft()

    def events(self) -> list[SpeakerEvent]:
        """Drain: every event available now, as one list.

        Same events, in the same order, as calling ``next_event`` until NEED_DATA, without the
        per-event calls: an ``Update`` while ESTABLISHED (almost every event) goes straight to the
        list, anything else through the state table.
        """
        out = list(self._events)
        self._events.clear()
        lines = self._lines
        decode = self.decoder.decode
        established = State.ESTABLISHED
        pending = self._events
        while lines:
            line = lines.popleft()
            if not line or line[0] != 0x7B:  # not "{": an API answer
                self._answer(line)
                continue
            try:
                decoded = decode(line)
            except SpeakerProtocolError as exc:
                self._protocol_error(exc)
                continue
            for event in decoded:
                if type(event) is Update and self.state is established:
                    out.append(event)  # TRANSITIONS[ESTABLISHED][ROUTE] is ESTABLISHED
                else:
                    self._apply(event)
                    out.extend(pending)
                    pending.clear()
            if self.decoder.counter_gaps > self._gaps_logged:
                self._gaps_logged = self.decoder.counter_gaps
                self.log.warning("exabgp_counter_gap", gaps=self._gaps_logged, counter=self.decoder.counter)
        return out

    # -- inputs from the I/O edge ----------------------------------------------------------------

    def process_started(self) -> None:
        """A new ExaBGP process: fresh decoder (its counter starts at 1), no pending bytes/acks."""
        self._move(Input.START, None)
        self.decoder = Decoder(self.peer, self.families)
        self._partial = b""
        self._lines.clear()
        self._announced_connect = False
        self._gaps_logged = 0
        # commands sent to the dead process are lost: queue them again (ExaBGP has no adj-rib-out
        # across restarts), in their original order before anything queued since
        self._queued.extendleft(reversed(self._in_flight))
        self._in_flight.clear()

    def process_exited(self, returncode: int | None) -> None:
        """ExaBGP ended without being asked: PeerDown(SPEAKER_EXITED) if the session was up."""
        detail = f"exabgp exited with code {returncode}"
        self._move(Input.EXITED, PeerDown(self.peer, DownReason.SPEAKER_EXITED, detail))

    def stop(self) -> None:
        """We are stopping ExaBGP: PeerDown(ADMIN_SHUTDOWN) if the session was up."""
        self._move(Input.STOP, PeerDown(self.peer, DownReason.ADMIN_SHUTDOWN, "stopped by peerctl"))

    # -- commands --------------------------------------------------------------------------------

    def command(self, line: str) -> None:
        """Queue one API command line (without newline). ValueError on a newline or non-ASCII."""
        if "\n" in line or not line.isascii():
            raise ValueError(f"an ExaBGP command is one ASCII line: {line!r}")
        self._queued.append(line)

    def announce(self, prefix: str, attrs: Attributes) -> str:
        """Queue ``announce route`` for ``prefix`` with ``attrs``; returns the command line."""
        line = self._scoped(announce_command(prefix, attrs))
        self.command(line)
        return line

    def withdraw(self, prefix: str, next_hop: str | None = None) -> str:
        """Queue ``withdraw route`` for ``prefix``; returns the command line."""
        line = self._scoped(withdraw_command(prefix, next_hop))
        self.command(line)
        return line

    def commands_to_send(self) -> bytes:
        """Bytes to write to ExaBGP now: queued commands up to the in-flight window."""
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0 or not self._queued:
            return b""
        batch = [self._queued.popleft() for _ in range(min(room, len(self._queued)))]
        self._in_flight.extend(batch)
        return ("\n".join(batch) + "\n").encode("ascii")

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def queued(self) -> int:
        return len(self._queued)

    def _scoped(self, line: str) -> str:
        return f"neighbor {self.neighbor} {line}" if self.neighbor else line

    # -- internals -------------------------------------------------------------------------------

    def _answer(self, line: bytes) -> None:
        text = line.strip()
        if text == b"done" or text == b"error":
            command = self._in_flight.popleft() if self._in_flight else None
            if text == b"done":
                self.acks_ok += 1
            else:
                self.acks_error += 1
                self.log.error("exabgp_command_failed", likely_command=command)
            if command is None:
                self.log.warning("exabgp_unexpected_ack", answer=text.decode("ascii", "replace"))
            if self.on_answer is not None:
                self.on_answer(command, text == b"done")
        elif text:
            self.log.debug("exabgp_answer", text=text[:200].decode("utf-8", "replace"))

    def _protocol_error(self, exc: SpeakerProtocolError) -> None:
        self.errors += 1
        self.last_error = exc
        if exc.action is ErrorAction.RESTART_SPEAKER:
            self.restart_requested = True
        self.log.error(
            "exabgp_protocol_error",
            json_path=exc.json_path,
            error=exc.message,
            action=exc.action.value,
            text=exc.text,
        )

    def _apply(self, event: SpeakerEvent) -> None:
        inp = _input_of(event)
        if inp is Input.DOWN and self.state is not State.ESTABLISHED:
            assert isinstance(event, PeerDown)
            self.connect_failures += 1
            self.log.debug("exabgp_connect_failed", reason=event.detail)
            self._move(inp, None)
            return
        if inp is Input.CONNECTED:
            first = not self._announced_connect and self.state is not State.ESTABLISHED
            self._announced_connect = True
            self._move(inp, event if first else None)
            return
        if inp is Input.SHUTDOWN and self.state is State.ESTABLISHED:
            # ExaBGP normally says "down" first; if it did not, the consumer still gets a PeerDown
            self._move(inp, PeerDown(self.peer, DownReason.ADMIN_SHUTDOWN, "exabgp shut down"))
            self._events.append(event)
            return
        self._move(inp, event)

    def _move(self, inp: Input, event: SpeakerEvent | None) -> None:
        """Apply one input. Illegal inputs are logged and dropped; the state is unchanged."""
        old = self.state
        new = TRANSITIONS[old].get(inp)
        if new is None:
            self.illegal += 1
            self.log.warning("exabgp_illegal_event", state=old.value, input=inp.value)
            return
        self.state = new
        if old is State.ESTABLISHED and new is not State.ESTABLISHED:
            down = event if isinstance(event, PeerDown) else None
            if down is None:  # e.g. SHUTDOWN handled above; keep the invariant anyway
                down = PeerDown(self.peer, DownReason.CONNECTION_LOST, inp.value)
                self._events.append(down)
            self.log.debug("session_down", reason=down.reason.value, detail=down.detail)  # daemon: peer_down
            self._announced_connect = False
            if event is not None:
                self._events.append(event)
            return
        if new is State.ESTABLISHED and old is not State.ESTABLISHED:
            assert isinstance(event, PeerUp)
            self.log.debug("session_up", peer_as=event.peer_as, router_id=event.router_id)  # daemon: peer_up
        if event is not None and not isinstance(event, PeerDown):
            self._events.append(event)


# -- command lines ---------------------------------------------------------------------------------

_ORIGIN_TEXT: Final[Mapping[Origin, str]] = {
    Origin.IGP: "igp",
    Origin.EGP: "egp",
    Origin.INCOMPLETE: "incomplete",
}


def _as_path_text(attrs: Attributes) -> str:
    parts: list[str] = []
    for seg_type, asns in attrs.as_path:
        body = " ".join(map(str, asns))
        if seg_type == AS_SET:
            parts.append(f"( {body} )")
        elif seg_type in (AS_CONFED_SEQUENCE, AS_CONFED_SET):
            raise ValueError("confederation segments cannot be announced through the ExaBGP API")
        else:
            parts.append(body)
    # ExaBGP syntax: a leading sequence in [ ], an AS_SET in ( ) after it
    seqs = [p for p in parts if not p.startswith("(")]
    sets = [p for p in parts if p.startswith("(")]
    if sets and parts.index(sets[0]) < len(seqs):
        raise ValueError("an AS_SET can only be announced at the end of the AS path")
    text = f"[ {' '.join(seqs)} ]" if seqs else "[ ]"
    return " ".join([text, *sets])


def announce_command(prefix: str, attrs: Attributes) -> str:
    """``announce route P next-hop NH origin O as-path [ ... ] med M local-preference L community
    [ ... ] large-community [ ... ]``. The AS path is sent as written: include our own ASN.

    Raises ValueError for a bad prefix or an attribute set the API cannot express.
    """
    parse_prefix(prefix)
    if not attrs.next_hop:
        raise ValueError(f"{prefix}: announce needs a next hop (or 'self')")
    out = [f"announce route {prefix} next-hop {attrs.next_hop} origin {_ORIGIN_TEXT[attrs.origin]}"]
    if attrs.as_path:
        out.append(f"as-path {_as_path_text(attrs)}")
    if attrs.med is not None:
        out.append(f"med {attrs.med}")
    if attrs.local_pref is not None:
        out.append(f"local-preference {attrs.local_pref}")
    if attrs.communities:
        out.append("community [ " + " ".join(f"{c >> 16}:{c & 0xFFFF}" for c in attrs.communities) + " ]")
    if attrs.large_communities:
        out.append(
            "large-community [ " + " ".join(f"{a}:{b}:{c}" for a, b, c in attrs.large_communities) + " ]"
        )
    if attrs.atomic_aggregate:
        out.append("atomic-aggregate")
    if attrs.aggregator is not None:
        out.append(f"aggregator ( {attrs.aggregator[0]}:{attrs.aggregator[1]} )")
    return " ".join(out)


def withdraw_command(prefix: str, next_hop: str | None = None) -> str:
    """``withdraw route P`` (ValueError for a bad prefix)."""
    parse_prefix(prefix)
    return f"withdraw route {prefix}" + (f" next-hop {next_hop}" if next_hop else "")
