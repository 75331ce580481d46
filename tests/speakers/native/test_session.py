"""Sans-IO BGP session: the transition table, OPEN negotiation, timers on a fake clock, UPDATE
handling (RFC 7606), NOTIFICATIONs, our announcements, ExaBGP command lines. No event loop."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, Attributes, Origin
from orchestrator.rib.prefix import Family, format_prefix, parse_prefix
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
from speakers.exabgp.session import announce_command, withdraw_command
from speakers.native import codec
from speakers.native.commands import parse_command
from speakers.native.session import (
    TRANSITIONS,
    BgpSession,
    IllegalTransition,
    Input,
    SessionConfig,
    State,
)

PEER_RID = "192.0.2.9"
CFG = SessionConfig(peer="p1", local_as=65001, peer_as=65010, router_id="192.0.2.1", hold_time=90)
ATTRS = Attributes(
    next_hop="192.0.2.2", as_path=((AS_SEQUENCE, (65010, 3)),), med=5, communities=(1 << 16 | 2,)
)


def key(text: str) -> int:
    return parse_prefix(text)[1]


def peer_open(asn: int = 65010, hold: int = 90, families: tuple[Family, ...] = (Family.IPV4, Family.IPV6),
              **kw: object) -> bytes:  # fmt: skip
    return codec.encode_open(asn, hold, PEER_RID, families, **kw)  # type: ignore[arg-type]


def drain(s: BgpSession) -> list[SpeakerEvent]:
    return list(s.events())


def sent(s: BgpSession) -> list[tuple[int, bytes]]:
    buf = bytearray(s.data_to_send())
    return [(t, bytes(b)) for t, b in codec.split_messages(buf, codec.MAX_EXTENDED_MESSAGE)]


def notification(s: BgpSession) -> tuple[int, int, bytes]:
    notes = [b for t, b in sent(s) if t == codec.MSG_NOTIFICATION]
    assert len(notes) == 1, notes
    code, sub, data, _ = codec.decode_notification(notes[0])
    return code, sub, data


def established(cfg: SessionConfig = CFG, now: float = 0.0, **open_kw: object) -> BgpSession:
    s = BgpSession(cfg)
    s.start(now)
    s.connection_made(now)
    s.receive_data(peer_open(**open_kw), now)  # type: ignore[arg-type]
    s.receive_data(codec.encode_keepalive(), now)
    assert s.state is State.ESTABLISHED
    s.data_to_send()  # OPEN, KEEPALIVE, End-of-RIBs
    return s


# --- the table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "inp"), list(itertools.product(State, Input)), ids=lambda v: v.value)
def test_transition_table(state: State, inp: Input) -> None:
    """Each legal input moves to the table's state; each illegal one raises, state unchanged."""
    s = BgpSession(CFG)
    s.state = state
    target = TRANSITIONS[state].get(inp)
    if target is None:
        with pytest.raises(IllegalTransition):
            s._move(inp)
        assert s.state is state
        assert drain(s) == []
        return
    s._move(inp)
    assert s.state is target
    events = drain(s)
    if state is State.ESTABLISHED and target is not State.ESTABLISHED:
        (down,) = events
        assert isinstance(down, PeerDown) and down.reason is not None
    elif target is not state and target is not State.ESTABLISHED:
        assert events == [SessionState("p1", target.value)]


def test_every_state_has_stop_and_established_only_via_keepalive() -> None:
    for state in State:
        assert TRANSITIONS[state][Input.STOP] is State.IDLE
    into_established = [(s, i) for s, row in TRANSITIONS.items() for i, t in row.items()
                        if t is State.ESTABLISHED and s is not State.ESTABLISHED]  # fmt: skip
    assert into_established == [(State.OPENCONFIRM, Input.KEEPALIVE_RECEIVED)]


def test_edge_misuse_raises_and_keeps_state() -> None:
    s = BgpSession(CFG)
    with pytest.raises(IllegalTransition):
        s.connection_made(0.0)  # not started
    assert s.state is State.IDLE
    s.start(0.0)
    s.connection_made(0.0)
    with pytest.raises(IllegalTransition):
        s.connection_made(0.0)
    assert s.state is State.OPENSENT


# --- connecting ---------------------------------------------------------------------------------------


def test_active_start_and_connect_retry_backoff() -> None:
    s = BgpSession(CFG)
    s.start(100.0)
    assert s.state is State.CONNECT and s.wants_connect
    s.connection_failed(100.5)
    assert s.state is State.ACTIVE and not s.wants_connect
    assert s.get_timer() == pytest.approx(100.5 + 2 * CFG.connect_retry)  # doubled after one failure
    s.handle_timer(101.0)
    assert s.state is State.ACTIVE
    s.handle_timer(104.5)
    assert s.state is State.CONNECT and s.wants_connect
    s.connection_failed(105.0)
    assert s.get_timer() == pytest.approx(105.0 + 4 * CFG.connect_retry)
    s.connection_made(106.0)  # from ACTIVE too
    assert s.state is State.OPENSENT
    assert [t for t, _ in sent(s)] == [codec.MSG_OPEN]
    assert s.get_timer() == pytest.approx(106.0 + 240.0)  # large hold timer in OpenSent


def test_passive_start_waits() -> None:
    s = BgpSession(SessionConfig(peer="p1", local_as=1, peer_as=2, router_id="192.0.2.1", passive=True))
    s.start(0.0)
    assert s.state is State.ACTIVE and not s.wants_connect and s.get_timer() is None


# --- OPEN -------------------------------------------------------------------------------------------


def test_open_negotiation() -> None:
    cfg = SessionConfig(peer="p1", local_as=4_200_000_001, peer_as=65010, router_id="192.0.2.1", hold_time=90,
                        add_path_receive=True)  # fmt: skip
    s = BgpSession(cfg)
    s.start(0.0)
    s.connection_made(0.0)
    ((_, body),) = sent(s)
    ours = codec.decode_open(body)
    assert ours.asn == 4_200_000_001 and ours.asn4 and ours.route_refresh and ours.extended_message
    assert ours.graceful_restart == 120 and set(ours.families) == {Family.IPV4, Family.IPV6}
    assert dict(ours.add_path) == {Family.IPV4: 1, Family.IPV6: 1}
    s.receive_data(codec.encode_open(65010, 30, PEER_RID, [Family.IPV4], extended_message=True,
                                     graceful_restart=60), 1.0)  # fmt: skip
    assert s.state is State.OPENCONFIRM
    assert [t for t, _ in sent(s)] == [codec.MSG_KEEPALIVE]
    neg = s.negotiated
    assert neg is not None
    assert neg.hold_time == 30 and neg.keepalive == 10 and neg.families == (Family.IPV4,)
    assert neg.asn4 and neg.extended_message and neg.route_refresh and not neg.add_path
    assert neg.peer_graceful_restart == 60
    s.receive_data(codec.encode_keepalive(), 2.0)
    events = drain(s)
    assert PeerUp("p1", 65010, PEER_RID, (Family.IPV4,)) in events
    assert events[-1] == PeerUp("p1", 65010, PEER_RID, (Family.IPV4,))
    # Our (empty) Adj-RIB-Out and End-of-RIB for the negotiated family only.
    assert sent(s) == [(codec.MSG_UPDATE, b"\x00\x00\x00\x00")]


def test_peer_without_mp_capability_gets_ipv4_only() -> None:
    s = BgpSession(CFG)
    s.start(0.0)
    s.connection_made(0.0)
    # a bare OPEN: no optional parameters at all
    body = codec._OPEN.pack(4, 65010, 90, bytes([192, 0, 2, 9]), 0)
    s.receive_data(codec._header(19 + len(body), codec.MSG_OPEN) + body, 0.0)
    assert s.negotiated is not None and s.negotiated.families == (Family.IPV4,) and not s.negotiated.asn4


@pytest.mark.parametrize(
    ("message", "code", "subcode"),
    [
        (lambda: peer_open(asn=65999), 2, 2),  # bad peer AS
        (lambda: peer_open(hold=2), 2, 6),  # unacceptable hold time
        (lambda: peer_open()[:19] + bytes([3]) + peer_open()[20:], 2, 1),  # unsupported version
        (lambda: codec.encode_keepalive(), 5, 1),  # not an OPEN in OpenSent (RFC 6608)
        (lambda: b"\x00" * 16 + peer_open()[16:], 1, 1),  # bad marker
    ],
    ids=["peer-as", "hold-time", "version", "fsm", "marker"],
)
def test_bad_open(message: object, code: int, subcode: int) -> None:
    s = BgpSession(CFG)
    s.start(0.0)
    s.connection_made(0.0)
    sent(s)
    drain(s)
    s.receive_data(message(), 0.0)  # type: ignore[operator]
    assert s.state is State.IDLE and s.closed
    assert notification(s)[:2] == (code, subcode)
    events = drain(s)
    assert Notification("p1", code, subcode, events[0].message, sent=True) == events[0]  # type: ignore[union-attr]
    assert not any(isinstance(e, PeerUp) for e in events)


# --- timers -------------------------------------------------------------------------------------------


def test_keepalive_and_hold_timer_with_fake_clock() -> None:
    s = established(now=0.0, hold=9)
    drain(s)
    sent(s)
    assert s.get_timer() == pytest.approx(3.0)  # keepalive every hold/3
    s.handle_timer(3.0)
    assert [t for t, _ in sent(s)] == [codec.MSG_KEEPALIVE]
    s.receive_data(codec.encode_keepalive(), 5.0)  # restarts the hold timer: 5 + 9
    s.handle_timer(6.0)
    s.handle_timer(9.0)
    s.handle_timer(12.0)
    assert s.state is State.ESTABLISHED
    assert [t for t, _ in sent(s)] == [codec.MSG_KEEPALIVE] * 3
    assert s.get_timer() == pytest.approx(14.0)
    s.handle_timer(14.0)
    assert (s.state, s.closed) == (State.IDLE, True)
    assert notification(s) == (4, 0, b"")
    events = drain(s)
    assert events == [
        Notification("p1", 4, 0, "hold timer expired", sent=True),
        PeerDown("p1", DownReason.HOLD_TIMER_EXPIRED, "hold timer expired"),
    ]
    assert s.get_timer() is None


def test_hold_time_zero_means_no_timers() -> None:
    s = established(hold=0)
    assert s.get_timer() is None


def test_hold_timer_in_opensent_and_openconfirm() -> None:
    s = BgpSession(CFG)
    s.start(0.0)
    s.connection_made(0.0)
    s.handle_timer(240.0)
    assert s.state is State.IDLE and notification(s)[:2] == (4, 0)
    s = BgpSession(CFG)
    s.start(0.0)
    s.connection_made(0.0)
    s.receive_data(peer_open(hold=30), 1.0)
    s.handle_timer(31.0)
    assert s.state is State.IDLE


# --- UPDATE -----------------------------------------------------------------------------------------


def test_updates_become_events() -> None:
    s = established()
    drain(s)
    keys4 = [key("10.0.0.0/24"), key("10.0.1.0/24")]
    keys6 = [key("2001:db8::/48")]
    attrs6 = Attributes(next_hop="2001:db8::2", as_path=((AS_SEQUENCE, (65010,)),))
    msgs = codec.encode_updates(Family.IPV4, ATTRS, keys4) + codec.encode_updates(Family.IPV6, attrs6, keys6)
    msgs += codec.encode_withdraws(Family.IPV4, [key("10.9.0.0/16")])
    msgs += [codec.encode_end_of_rib(Family.IPV4), codec.encode_end_of_rib(Family.IPV6)]
    data = b"".join(msgs)
    # Fed in awkward pieces: framing must not care.
    for i in range(0, len(data), 7):
        s.receive_data(data[i : i + 7], 1.0)
    assert drain(s) == [
        Update("p1", Family.IPV4, ATTRS, keys4, []),
        Update("p1", Family.IPV6, attrs6, keys6, []),
        Update("p1", Family.IPV4, None, [], [key("10.9.0.0/16")]),
        EndOfRib("p1", Family.IPV4),
        EndOfRib("p1", Family.IPV6),
    ]


def test_families_not_negotiated_are_dropped() -> None:
    s = established(families=(Family.IPV4,))
    drain(s)
    attrs6 = Attributes(next_hop="2001:db8::2", as_path=((AS_SEQUENCE, (65010,)),))
    s.receive_data(b"".join(codec.encode_updates(Family.IPV6, attrs6, [key("2001:db8::/48")])), 1.0)
    assert drain(s) == [] and s.dropped_families == 1 and s.state is State.ESTABLISHED


def _raw_update(attrs: bytes, nlri: bytes, withdrawn: bytes = b"") -> bytes:
    body = len(withdrawn).to_bytes(2, "big") + withdrawn + len(attrs).to_bytes(2, "big") + attrs + nlri
    return codec._header(19 + len(body), codec.MSG_UPDATE) + body


def test_malformed_attribute_is_treat_as_withdraw() -> None:
    """RFC 7606 7.1: a malformed ORIGIN turns the announcements into withdrawals; session stays."""
    s = established()
    drain(s)
    attrs = (bytes([0x40, 1, 1, 7])  # ORIGIN 7: malformed
             + bytes([0x40, 2, 6, 2, 1]) + (65010).to_bytes(4, "big")
             + bytes([0x40, 3, 4, 192, 0, 2, 2]))  # fmt: skip
    s.receive_data(_raw_update(attrs, bytes([24, 10, 0, 0])), 1.0)
    assert drain(s) == [Update("p1", Family.IPV4, None, [], [key("10.0.0.0/24")])]
    assert s.state is State.ESTABLISHED and s.errors == 1 and sent(s) == []


def test_attribute_discard_keeps_the_route() -> None:
    """RFC 7606 7.6: a malformed ATOMIC_AGGREGATE is discarded; the route stays announced."""
    s = established()
    drain(s)
    attrs = (bytes([0x40, 1, 1, 0]) + bytes([0x40, 2, 6, 2, 1]) + (65010).to_bytes(4, "big")
             + bytes([0x40, 3, 4, 192, 0, 2, 2]) + bytes([0x40, 6, 1, 0]))  # fmt: skip
    s.receive_data(_raw_update(attrs, bytes([24, 10, 0, 0])), 1.0)
    (ev,) = drain(s)
    assert isinstance(ev, Update) and ev.announce == [key("10.0.0.0/24")] and ev.attrs is not None
    assert not ev.attrs.atomic_aggregate and s.state is State.ESTABLISHED


def test_unparseable_update_resets_the_session() -> None:
    """RFC 7606 5.3: an NLRI that cannot be parsed → NOTIFICATION 3/x and PeerDown(PROTOCOL_ERROR)."""
    s = established()
    drain(s)
    attrs = bytes([0x40, 1, 1, 0]) + bytes([0x40, 2, 0]) + bytes([0x40, 3, 4, 192, 0, 2, 2])
    s.receive_data(_raw_update(attrs, bytes([33, 10, 0, 0, 0, 0])) + codec.encode_keepalive(), 1.0)
    assert s.state is State.IDLE and s.closed
    code, _, _ = notification(s)
    assert code == 3
    events = drain(s)
    assert isinstance(events[0], Notification) and events[0].sent
    assert isinstance(events[1], PeerDown) and events[1].reason is DownReason.PROTOCOL_ERROR
    assert len(events) == 2  # the KEEPALIVE after the bad UPDATE is not handled


def test_open_in_established_is_fsm_error() -> None:
    s = established()
    drain(s)
    s.receive_data(peer_open(), 1.0)
    assert notification(s)[:2] == (5, 3)
    assert drain(s)[-1] == PeerDown("p1", DownReason.PROTOCOL_ERROR, "unexpected message type 1")


def test_notification_from_peer_with_shutdown_message() -> None:
    s = established()
    drain(s)
    s.receive_data(codec.encode_notification(6, 2, codec.shutdown_data("maintenance, back at 10:00")), 1.0)
    assert s.state is State.IDLE and sent(s) == []
    assert drain(s) == [
        Notification("p1", 6, 2, "maintenance, back at 10:00", sent=False),
        PeerDown("p1", DownReason.NOTIFICATION_RECEIVED, "(6,2) maintenance, back at 10:00"),
    ]


def test_connection_lost() -> None:
    s = established()
    drain(s)
    s.connection_lost(1.0, "reset by peer")
    assert s.state is State.IDLE
    assert drain(s) == [PeerDown("p1", DownReason.CONNECTION_LOST, "reset by peer")]
    s.connection_lost(1.0)  # idempotent once closed
    assert drain(s) == []


def test_stop_sends_cease_with_shutdown_communication() -> None:
    s = established()
    drain(s)
    s.stop(1.0, "going away")
    code, subcode, data = notification(s)
    assert (code, subcode) == (6, 2) and data == codec.shutdown_data("going away")
    assert drain(s) == [
        Notification("p1", 6, 2, "going away", sent=True),
        PeerDown("p1", DownReason.ADMIN_SHUTDOWN, "going away"),
    ]


# --- what we send ---------------------------------------------------------------------------------------


def _announced(s: BgpSession) -> list[tuple[str, Attributes | None]]:
    out: list[tuple[str, Attributes | None]] = []
    for mtype, body in sent(s):
        if mtype != codec.MSG_UPDATE:
            continue
        dec = codec.decode_update(body)
        for fu in dec.families:
            out += [(format_prefix(fu.family, k), fu.attrs) for k in fu.announce]
            out += [(format_prefix(fu.family, k), None) for k in fu.withdraw]
    return out


def test_announce_before_and_after_established() -> None:
    s = BgpSession(CFG)
    s.announce(Family.IPV4, ATTRS, [key("198.51.100.0/24")])
    s.start(0.0)
    s.connection_made(0.0)
    s.receive_data(peer_open(), 0.0)
    sent(s)
    s.receive_data(codec.encode_keepalive(), 0.0)
    msgs = sent(s)
    assert msgs[-2:] == [(codec.MSG_UPDATE, b"\x00\x00\x00\x00"),
                         (codec.MSG_UPDATE, codec.encode_end_of_rib(Family.IPV6)[19:])]  # fmt: skip
    assert codec.decode_update(msgs[0][1]).families[0].announce == [key("198.51.100.0/24")]
    s.command("announce route 203.0.113.0/24 next-hop 192.0.2.7 as-path [ 65001 ] med 10")
    s.command("withdraw route 198.51.100.0/24")
    s.command("withdraw route 192.0.2.0/24")  # never announced: nothing sent
    got = _announced(s)
    assert got[0][0] == "203.0.113.0/24" and got[0][1] is not None and got[0][1].med == 10
    assert got[1:] == [("198.51.100.0/24", None)]
    assert set(s.adj_rib_out(Family.IPV4)) == {key("203.0.113.0/24")}


def test_next_hop_self_and_route_refresh() -> None:
    s = established()
    sent(s)
    s.next_hop_self[Family.IPV4] = "192.0.2.1"
    s.next_hop_self[Family.IPV6] = "2001:db8::1"
    s.command("announce route 203.0.113.0/24 next-hop self as-path [ 65001 ]")
    s.command("announce route 2001:db8:1::/48 next-hop self")
    got = _announced(s)
    assert [(p, a.next_hop if a else None) for p, a in got] == [
        ("203.0.113.0/24", "192.0.2.1"),
        ("2001:db8:1::/48", "2001:db8::1"),
    ]
    s.receive_data(codec.encode_route_refresh(Family.IPV4), 1.0)
    assert [p for p, _ in _announced(s)] == ["203.0.113.0/24"]


def test_bad_commands_raise_value_error() -> None:
    s = BgpSession(CFG)
    for line in ("announce route 10.0.0.0/8", "announce route 10.0.0.1/8 next-hop 1.2.3.4",
                 "announce route 10.0.0.0/8 next-hop 1.2.3.4 colour blue", "show neighbor",
                 "announce route 10.0.0.0/8 next-hop 2001:db8::1"):  # fmt: skip
        with pytest.raises(ValueError):
            s.command(line)


# --- the command parser reads what the ExaBGP speaker writes ------------------------------------------

asns = st.integers(1, 2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(
    path=st.lists(asns, max_size=6),
    aset=st.lists(asns, min_size=1, max_size=3) | st.none(),
    med=st.integers(0, 2**32 - 1) | st.none(),
    lp=st.integers(0, 2**32 - 1) | st.none(),
    comms=st.lists(st.integers(0, 2**32 - 1), max_size=4).map(tuple),
    large=st.lists(st.tuples(asns, asns, asns), max_size=3).map(tuple),
    origin=st.sampled_from(Origin),
    six=st.booleans(),
)
def test_parse_command_reads_exabgp_announce_command(path: list[int], aset: list[int] | None, med: int | None,
                                                     lp: int | None, comms: tuple[int, ...],
                                                     large: tuple[tuple[int, int, int], ...], origin: Origin,
                                                     six: bool) -> None:  # fmt: skip
    as_path: list[tuple[int, tuple[int, ...]]] = [(AS_SEQUENCE, tuple(path))] if path else []
    if aset and path:
        as_path.append((AS_SET, tuple(aset)))
    attrs = Attributes(next_hop="2001:db8::1" if six else "192.0.2.1", origin=origin, as_path=tuple(as_path),
                       med=med, local_pref=lp, communities=comms, large_communities=large)  # fmt: skip
    prefix = "2001:db8:5::/48" if six else "198.51.100.0/24"
    cmd = parse_command(announce_command(prefix, attrs))
    assert cmd.action == "announce" and cmd.attrs == attrs
    assert format_prefix(cmd.family, cmd.key) == prefix
    wd = parse_command("neighbor 192.0.2.9 " + withdraw_command(prefix))
    assert wd.attrs is None and wd.key == cmd.key and wd.neighbor == "192.0.2.9"


def test_parse_command_extras() -> None:
    cmd = parse_command("announce route 10.0.0.0/8 next-hop 192.0.2.1 community [ no-export 65000:1 ] "
                        "as-path 65001 atomic-aggregate aggregator ( 65001:192.0.2.1 )")  # fmt: skip
    assert cmd.attrs is not None
    assert cmd.attrs.communities == (0xFFFFFF01, (65000 << 16) | 1)
    assert cmd.attrs.as_path == ((AS_SEQUENCE, (65001,)),)
    assert cmd.attrs.atomic_aggregate and cmd.attrs.aggregator == (65001, "192.0.2.1")


@pytest.mark.parametrize("module", ["session", "commands", "codec"])
def test_pure_modules_do_no_io(module: str) -> None:
    """STYLE rule 1: the sans-IO modules import no asyncio, aiohttp or pyroute2."""
    import ast
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "speakers" / "native" / f"{module}.py"
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        assert not {n.split(".")[0] for n in names} & {"asyncio", "aiohttp", "pyroute2"}, names


def test_we_ask_for_a_route_refresh_with_the_exabgp_command() -> None:
    s = established()
    s.command("neighbor 127.0.0.9 announce route-refresh ipv6 unicast")
    body = codec.encode_route_refresh(Family.IPV6)[codec.HEADER_LEN:]
    assert sent(s) == [(codec.MSG_ROUTE_REFRESH, body)]
    assert codec.decode_route_refresh(body) is Family.IPV6
    s.command("announce route-refresh ipv4 unicast")
    assert [t for t, _ in sent(s)] == [codec.MSG_ROUTE_REFRESH]
    no_cap = established(route_refresh=False)
    with pytest.raises(ValueError, match="did not advertise the capability"):
        no_cap.command("announce route-refresh ipv4 unicast")
    v4_only = established(families=(Family.IPV4,))
    with pytest.raises(ValueError, match="family not negotiated"):
        v4_only.command("announce route-refresh ipv6 unicast")
    idle = BgpSession(CFG)
    with pytest.raises(ValueError, match="the session is idle"):
        idle.command("announce route-refresh ipv4 unicast")
    assert sent(no_cap) == [] and sent(v4_only) == []
