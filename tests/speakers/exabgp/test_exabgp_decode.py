"""Golden ExaBGP 5.0.15 lines → events; malformed input → SpeakerProtocolError and nothing else."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.errors import ErrorAction, SpeakerProtocolError
from orchestrator.rib.attrs import AS_CONFED_SEQUENCE, AS_SEQUENCE, AS_SET, Attributes, Origin
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
from speakers.exabgp.decode import Decoder, _prefix_key, down_reason

DATA = Path(__file__).with_name("data")
P = "p1"


def lines(name: str) -> list[bytes]:
    return [ln for ln in (DATA / name).read_bytes().split(b"\n") if ln.startswith(b"{")]


def decode_all(name: str) -> list[SpeakerEvent]:
    d = Decoder(P)
    return [e for ln in lines(name) for e in d.decode(ln)]


def k(text: str) -> int:
    return parse_prefix(text)[1]


def c(a: int, b: int) -> int:
    return (a << 16) | b


RICH = Attributes(
    next_hop="192.0.2.4",
    origin=Origin.EGP,
    as_path=((AS_SEQUENCE, (65010, 65011)), (AS_SET, (65020, 65021))),
    med=50,
    local_pref=250,
    communities=(c(65010, 100), c(65010, 200), c(65535, 65281)),
    large_communities=((65010, 1, 2), (4200000000, 3, 4)),
    atomic_aggregate=True,
    aggregator=(65011, "192.0.2.99"),
)

IBGP_EXPECTED: list[SpeakerEvent] = [
    SessionState(P, "connected"),
    PeerUp(P, 65001, "127.0.50.4", (Family.IPV4, Family.IPV6)),
    Update(P, Family.IPV4, RICH, [k("20.0.0.0/24"), k("20.0.1.0/24")], ()),
    Update(P, Family.IPV4, Attributes(next_hop="192.0.2.5", origin=Origin.INCOMPLETE, local_pref=90),
           [k("20.0.2.0/24")], ()),
    Update(P, Family.IPV4, Attributes(next_hop="192.0.2.5", as_path=((AS_SEQUENCE, (65010,)),), med=0,
                                      local_pref=100), [k("20.0.3.0/24")], ()),
    Update(P, Family.IPV6, Attributes(next_hop="2001:db8::4", as_path=((AS_SEQUENCE, (4200000001, 65010)),),
                                      med=7, local_pref=300, communities=(c(65010, 1),)),
           [k("2001:db8:20::/48")], ()),
    Update(P, Family.IPV6, Attributes(next_hop="2001:db8::5", local_pref=100), [k("2001:db8:21::/48")], ()),
    EndOfRib(P, Family.IPV4),
    EndOfRib(P, Family.IPV6),
]  # fmt: skip


def test_ibgp_golden() -> None:
    events = decode_all("exabgp_ibgp.jsonl")
    assert events[: len(IBGP_EXPECTED)] == IBGP_EXPECTED
    tail = events[len(IBGP_EXPECTED) :]
    assert tail[-1] == SessionState(P, "shutdown")
    assert all(isinstance(e, PeerDown | SessionState) for e in tail)
    assert PeerDown(P, DownReason.CONNECTION_LOST, "closing connection") in tail


def test_compact_golden_same_events() -> None:
    """``exabgp.api.compact=true`` (NLRI as strings; what render_env asks for) decodes the same."""
    compact = decode_all("exabgp_ibgp_compact_acks.jsonl")
    assert compact[: len(IBGP_EXPECTED)] == IBGP_EXPECTED


def test_bird_golden() -> None:
    events = decode_all("bird_ebgp.jsonl")
    bird = Attributes(
        next_hop="192.0.2.2", as_path=((AS_SEQUENCE, (65002, 64600, 64601)),), communities=(c(65002, 1),),
        large_communities=((65002, 1, 1),),
    )  # fmt: skip
    assert events[0] == SessionState(P, "connected")
    assert events[1] == PeerUp(P, 65002, "127.0.50.2", (Family.IPV4, Family.IPV6))
    assert Update(P, Family.IPV4, bird, [k("16.0.0.0/24"), k("16.0.1.0/24")], ()) in events
    inc = Attributes(next_hop="192.0.2.2", origin=Origin.INCOMPLETE, as_path=((AS_SEQUENCE, (65002,)),),
                     communities=(c(65002, 2), c(65535, 65281)))  # fmt: skip
    assert Update(P, Family.IPV4, inc, [k("16.0.2.0/23")], ()) in events
    assert Update(P, Family.IPV4, None, (), [k("17.0.0.0/24")]) in events
    assert Update(P, Family.IPV6, None, (), [k("2001:db8:2::/48")]) in events
    assert Notification(P, 6, 2, 'Shutdown Communication: "maintenance window"') in events
    i = events.index(Notification(P, 6, 2, 'Shutdown Communication: "maintenance window"'))
    assert events[i + 1] == PeerDown(P, DownReason.NOTIFICATION_RECEIVED, "notification received (6,2)")
    assert events[-2] == PeerDown(P, DownReason.ADMIN_SHUTDOWN, "stop, message [shutting down]")
    assert events[-1] == SessionState(P, "shutdown")
    assert sum(isinstance(e, PeerUp) for e in events) == 2
    assert sum(isinstance(e, EndOfRib) for e in events) == 4


def test_attributes_are_cached_per_attribute_set_and_next_hop() -> None:
    d = Decoder(P)
    ls = lines("bird_ebgp.jsonl")
    first = [e for ln in ls for e in d.decode(ln) if isinstance(e, Update) and e.attrs is not None]
    d2 = Decoder(P)
    again = [e for ln in ls for e in d2.decode(ln) if isinstance(e, Update) and e.attrs is not None]
    assert first == again
    # the two announcements of 16.0.0.0/24+16.0.1.0/24 (before and after the reset) share one object
    same = [e.attrs for e in first if k("16.0.0.0/24") in e.announce]
    assert len(same) == 2 and same[0] is same[1]


def test_confederation_segments_and_ignored_families() -> None:
    line = lines("exabgp_ibgp.jsonl")[3]
    obj = orjson.loads(line)
    upd = obj["neighbor"]["message"]["update"]
    upd["attribute"]["as-path"] = {
        "0": {"element": "confed-sequence", "value": [65100, 65101]},
        "1": {"element": "as-sequence", "value": [65010]},
    }
    upd["announce"]["ipv4 flow"] = {"no-nexthop": [{"flow": "x"}]}
    d = Decoder(P)
    d.lines = 1  # not the first line
    (event,) = d.decode(orjson.dumps(obj))
    assert isinstance(event, Update) and event.attrs is not None
    assert event.attrs.as_path == ((AS_CONFED_SEQUENCE, (65100, 65101)), (AS_SEQUENCE, (65010,)))
    assert event.attrs.as_path_length == 1
    assert d.ignored == 1


def test_version_checked_on_first_line() -> None:
    obj = orjson.loads(lines("bird_ebgp.jsonl")[0])
    obj["exabgp"] = "4.0.1"
    with pytest.raises(SpeakerProtocolError) as exc:
        Decoder(P).decode(orjson.dumps(obj))
    assert exc.value.json_path == "$.exabgp"
    assert exc.value.action is ErrorAction.RESTART_SPEAKER


def test_counter_gaps_counted_not_fatal() -> None:
    d = Decoder(P)
    ls = lines("bird_ebgp.jsonl")
    d.decode(ls[0])
    d.decode(ls[3])  # skipped two
    assert d.counter_gaps == 1
    d.decode(ls[4])
    assert d.counter_gaps == 1


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda o: o["neighbor"]["message"]["update"]["announce"]["ipv4 unicast"]["192.0.2.4"].append(
            {"nlri": "20.0.0.1/24"}), "$.neighbor.message.update.announce['ipv4 unicast']['192.0.2.4'][2]"),
        (lambda o: o["neighbor"]["message"]["update"]["attribute"].update(med="x"),
         "$.neighbor.message.update.attribute.med"),
        (lambda o: o["neighbor"]["message"]["update"]["attribute"].update(origin="bogus"),
         "$.neighbor.message.update.attribute.origin"),
        (lambda o: o["neighbor"]["message"]["update"]["attribute"]["community"].append([1]),
         "$.neighbor.message.update.attribute.community"),
        (lambda o: o["neighbor"].pop("message"), "$.neighbor.message"),
        (lambda o: o.update(type=5), "$.type"),
    ],
)  # fmt: skip
def test_error_names_json_path(mutate: object, path: str) -> None:
    obj = orjson.loads(lines("exabgp_ibgp.jsonl")[3])
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(SpeakerProtocolError) as exc:
        Decoder(P).decode(orjson.dumps(obj))
    assert exc.value.json_path == path
    assert exc.value.peer == P and len(exc.value.text) <= 200


def test_truncated_golden_lines() -> None:
    for line in lines("exabgp_ibgp.jsonl") + lines("bird_ebgp.jsonl"):
        for cut in range(1, len(line) - 1, 7):
            with pytest.raises(SpeakerProtocolError) as exc:
                Decoder(P).decode(line[:cut])
            assert exc.value.json_path == "$" and len(exc.value.text) <= 200


def test_down_reasons() -> None:
    assert down_reason("notification received (6,2)") is DownReason.NOTIFICATION_RECEIVED
    assert down_reason("notification sent (4,0)") is DownReason.HOLD_TIMER_EXPIRED
    assert down_reason("notification sent (6,4)") is DownReason.NOTIFICATION_SENT
    assert down_reason("stop, message [shutting down]") is DownReason.ADMIN_SHUTDOWN
    assert down_reason("closing connection") is DownReason.CONNECTION_LOST


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_ipv4_fast_key_matches_parse_prefix(addr: int, length: int) -> None:
    network = addr & ~((1 << (32 - length)) - 1) & 0xFFFFFFFF
    text = f"{network >> 24}.{(network >> 16) & 255}.{(network >> 8) & 255}.{network & 255}/{length}"
    assert _prefix_key(text) == parse_prefix(text)[1]
    if length < 32 and network != addr:
        host = f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}/{length}"
        with pytest.raises(ValueError):
            _prefix_key(host)


# -- property: only SpeakerProtocolError, whatever comes in ------------------------------------------

GOLDEN = lines("exabgp_ibgp.jsonl") + lines("bird_ebgp.jsonl") + lines("exabgp_ibgp_compact_acks.jsonl")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, (*prefix, i))
    return out


def _decode_only_protocol_errors(data: bytes, first: bool) -> None:
    d = Decoder(P)
    if not first:
        d.lines = 1
    try:
        events = d.decode(data)
    except SpeakerProtocolError as exc:
        assert len(exc.text) <= 200
        return
    assert isinstance(events, list)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes(data: bytes, first: bool) -> None:
    _decode_only_protocol_errors(data, first)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(GOLDEN), st.data(), json_values, st.sampled_from(["replace", "delete"]))
def test_mutated_golden(line: bytes, data: st.DataObject, value: object, op: str) -> None:
    obj = orjson.loads(line)
    path = data.draw(st.sampled_from(_paths(obj)[1:]))
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    if op == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    try:
        text = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return  # hypothesis made an int too big for JSON
    _decode_only_protocol_errors(text, False)
    _decode_only_protocol_errors(text, True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(GOLDEN), st.integers(0, 10_000), st.binary(min_size=1, max_size=3))
def test_spliced_golden(line: bytes, pos: int, junk: bytes) -> None:
    pos %= len(line)
    _decode_only_protocol_errors(line[:pos] + junk + line[pos + 1 :], False)
