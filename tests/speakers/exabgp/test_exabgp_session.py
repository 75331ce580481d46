"""ExaBGPSession: line splitting, state table, acks and the command window (no I/O, no loop)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, Attributes, Origin
from speakers.events import DownReason, EndOfRib, PeerDown, PeerUp, SessionState, SpeakerEvent, Update
from speakers.exabgp.session import (
    NEED_DATA,
    TRANSITIONS,
    ExaBGPSession,
    Input,
    State,
    announce_command,
    withdraw_command,
)

DATA = Path(__file__).with_name("data")
IBGP = (DATA / "exabgp_ibgp.jsonl").read_bytes()
BIRD = (DATA / "bird_ebgp.jsonl").read_bytes()
ACKS = (DATA / "exabgp_ibgp_compact_acks.jsonl").read_bytes()


def drain(s: ExaBGPSession) -> list[SpeakerEvent]:
    return list(s.events())


def run(data: bytes, chunks: list[int] | None = None) -> tuple[ExaBGPSession, list[SpeakerEvent]]:
    s = ExaBGPSession("p1")
    out: list[SpeakerEvent] = []
    if chunks is None:
        s.feed(data)
    else:
        pos = 0
        for size in chunks:
            s.feed(data[pos : pos + size])
            pos += size
            out += drain(s)
        s.feed(data[pos:])
    out += drain(s)
    return s, out


def test_whole_stream_bird() -> None:
    s, events = run(BIRD)
    kinds = [type(e).__name__ for e in events]
    # "connected" is shown once per attempt cycle, refused attempts while down are only counted
    assert kinds[:2] == ["SessionState", "PeerUp"]
    assert sum(isinstance(e, PeerUp) for e in events) == 2
    downs = [e for e in events if isinstance(e, PeerDown)]
    assert [d.reason for d in downs] == [DownReason.NOTIFICATION_RECEIVED, DownReason.ADMIN_SHUTDOWN]
    assert s.connect_failures == 2
    assert events[-1] == SessionState("p1", "shutdown")
    assert s.state is State.CLOSED
    assert s.errors == 0 and s.illegal == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 400), max_size=40))
def test_any_split_gives_same_events(chunks: list[int]) -> None:
    _, whole = run(IBGP + BIRD[:0])
    _, split = run(IBGP, chunks)
    assert split == whole


def test_byte_by_byte() -> None:
    _, whole = run(IBGP)
    _, split = run(IBGP, [1] * len(IBGP))
    assert split == whole


def test_need_data_and_partial_line() -> None:
    s = ExaBGPSession("p1")
    line = IBGP.split(b"\n")[0]
    s.feed(line[:50])
    assert s.next_event() is NEED_DATA
    s.feed(line[50:] + b"\n")
    assert s.next_event() == SessionState("p1", "connected")
    assert s.next_event() is NEED_DATA


def test_malformed_line_logged_and_skipped() -> None:
    s = ExaBGPSession("p1")
    first, second = IBGP.split(b"\n")[:2]
    s.feed(first + b"\n" + b'{"exabgp": "5.0.0", "type": "update", trunc\n' + second + b"\n")
    events = drain(s)
    assert events == [SessionState("p1", "connected")]  # the open line makes no event
    assert s.errors == 1 and s.last_error is not None and not s.restart_requested


def test_wrong_version_requests_restart() -> None:
    s = ExaBGPSession("p1")
    s.feed(IBGP.split(b"\n")[0].replace(b'"5.0.0"', b'"4.0.1"') + b"\n")
    assert drain(s) == []
    assert s.restart_requested


def test_routes_before_up_are_illegal() -> None:
    s = ExaBGPSession("p1")
    update_line = IBGP.split(b"\n")[3]
    s.feed(update_line + b"\n")
    assert drain(s) == []
    assert s.illegal == 1 and s.state is State.IDLE


def test_exit_and_stop_emit_peerdown_only_when_up() -> None:
    s = ExaBGPSession("p1")
    s.process_exited(1)
    assert drain(s) == []
    s.feed(b"\n".join(IBGP.split(b"\n")[:4]) + b"\n")
    assert any(isinstance(e, Update) for e in drain(s))
    s.process_exited(-9)
    assert drain(s) == [PeerDown("p1", DownReason.SPEAKER_EXITED, "exabgp exited with code -9")]
    assert s.state is State.IDLE
    s.process_started()
    s.feed(b"\n".join(IBGP.split(b"\n")[:3]) + b"\n")
    assert isinstance(drain(s)[-1], PeerUp)
    s.stop()
    assert drain(s) == [PeerDown("p1", DownReason.ADMIN_SHUTDOWN, "stopped by peerctl")]
    assert s.state is State.CLOSED


def test_shutdown_without_down_still_gives_peerdown() -> None:
    s = ExaBGPSession("p1")
    s.feed(b"\n".join(IBGP.split(b"\n")[:3]) + b"\n")
    drain(s)
    s.feed(IBGP.strip().split(b"\n")[-1] + b"\n")  # {"notification": "shutdown"}
    assert drain(s) == [
        PeerDown("p1", DownReason.ADMIN_SHUTDOWN, "exabgp shut down"),
        SessionState("p1", "shutdown"),
    ]


def test_transition_table_is_total_over_states() -> None:
    assert set(TRANSITIONS) == set(State)
    for state, moves in TRANSITIONS.items():
        assert all(isinstance(i, Input) and isinstance(n, State) for i, n in moves.items()), state
    assert Input.ROUTE not in TRANSITIONS[State.IDLE]
    assert TRANSITIONS[State.ESTABLISHED][Input.DOWN] is State.IDLE


def test_acks_interleaved_with_json_release_the_window() -> None:
    s = ExaBGPSession("p1", max_in_flight=4)
    for i in range(6):
        s.command(f"announce route 10.0.{i}.0/24 next-hop self")
    assert s.commands_to_send().count(b"\n") == 4
    assert s.commands_to_send() == b""
    assert s.in_flight == 4 and s.queued == 2
    # the recorded stream: JSON, "exabgp 5.0.15" (a text answer), then done/error/done/done
    s.feed(ACKS)
    events = drain(s)
    assert any(isinstance(e, EndOfRib) for e in events)
    assert s.acks_ok + s.acks_error == 4 and s.acks_error == 1 and s.in_flight == 0
    sent = s.commands_to_send()
    assert sent.count(b"\n") == 2 and s.queued == 0


def test_restart_requeues_in_flight_commands() -> None:
    s = ExaBGPSession("p1", max_in_flight=1)
    s.command("a")
    s.command("b")
    assert s.commands_to_send() == b"a\n"
    s.process_started()
    assert s.commands_to_send() == b"a\n" and s.queued == 1


def test_command_validation_and_scoping() -> None:
    s = ExaBGPSession("p1", neighbor="127.0.50.2")
    with pytest.raises(ValueError):
        s.command("announce\nroute")
    line = s.withdraw("10.0.0.0/24")
    assert line == "neighbor 127.0.50.2 withdraw route 10.0.0.0/24"
    with pytest.raises(ValueError):
        withdraw_command("10.0.0.1/24")


def test_announce_command_text() -> None:
    attrs = Attributes(
        next_hop="192.0.2.1", origin=Origin.IGP, as_path=((AS_SEQUENCE, (65001, 64999)), (AS_SET, (1, 2))),
        med=5, local_pref=200, communities=((65001 << 16) | 1,), large_communities=((65001, 1, 1),),
        atomic_aggregate=True, aggregator=(65001, "192.0.2.9"),
    )  # fmt: skip
    assert announce_command("100.64.0.0/24", attrs) == (
        "announce route 100.64.0.0/24 next-hop 192.0.2.1 origin igp as-path [ 65001 64999 ] ( 1 2 ) med 5"
        " local-preference 200 community [ 65001:1 ] large-community [ 65001:1:1 ] atomic-aggregate"
        " aggregator ( 65001:192.0.2.9 )"
    )
    with pytest.raises(ValueError):
        announce_command("100.64.0.0/24", Attributes())
