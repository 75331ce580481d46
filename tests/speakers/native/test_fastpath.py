"""The native codec's C accelerator (speakers/native/_fastpath.c) against its pure-Python reference.

Differential: ``fast_attrs`` vs ``codec._fast_attrs``, ``plain_update`` vs
``codec.decode_plain_update_py`` and a session fed with ``plain_updates`` vs one without it, on
well-formed, random and malformed input (the C code declines or agrees, never crashes). Then
reference counts and memory over repeated runs. ``test_accelerator_built`` fails when a C compiler
and Python.h are present but the module was not built, so CI exercises it."""

from __future__ import annotations

import gc
import os
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, Attributes, Origin
from orchestrator.rib.prefix import Family, key_from_parts
from speakers.events import Update
from speakers.native import codec
from speakers.native.session import BgpSession, SessionConfig, State
from tests.leaks import growth

try:
    from speakers.native import _fastpath
except ImportError:  # not built: the pure path alone
    _fastpath = None  # type: ignore[assignment]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
needs_c = pytest.mark.skipif(_fastpath is None, reason="speakers.native._fastpath not built")


@needs_c
def test_decode_plain_update_is_the_c_one_unless_pure() -> None:
    """(Built where it can be, and ``plain_updates`` wired in: tests/test_accelerators.py.)"""
    want = codec.decode_plain_update_py if os.environ.get("PEERCTL_PURE") == "1" else _fastpath.plain_update
    assert codec.decode_plain_update is want


@pytest.fixture(autouse=True)
def _bound() -> None:
    """Bind the module (under PEERCTL_PURE=1 the codec does not) so the tests can call it directly."""
    if _fastpath is not None:
        _fastpath.setup(
            codec._PLAIN_CACHE,
            codec._plain_miss,
            Attributes,
            Update,
            codec._ORIGINS,
            codec._trim,
            codec._CACHE_LIMIT,
        )


@contextmanager
def pure() -> Iterator[None]:
    """The codec without the accelerator, as under PEERCTL_PURE=1."""
    saved = codec.plain_updates, codec.decode_plain_update
    codec.plain_updates, codec.decode_plain_update = None, codec.decode_plain_update_py
    try:
        yield
    finally:
        codec.plain_updates, codec.decode_plain_update = saved


# --- inputs -----------------------------------------------------------------------------------------


def _attr(flags: int, atype: int, value: bytes) -> bytes:
    if flags & 0x10:
        return bytes((flags, atype)) + len(value).to_bytes(2, "big") + value
    return bytes((flags, atype, len(value) & 0xFF)) + value


def _one_attr() -> st.SearchStrategy[bytes]:
    return st.builds(
        _attr,
        st.sampled_from([0x40, 0x80, 0xC0, 0xD0, 0x50, 0x90, 0x00, 0xE0]),
        st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 17, 18, 32, 99, 255]),
        st.binary(max_size=40)
        | st.sampled_from([0, 1, 4, 8, 12]).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    )


def _reflag(block: bytes, index: int, flags: int) -> bytes:
    """``block`` with the optional/transitive/partial flags of its ``index``-th attribute replaced."""
    out = bytearray(block)
    i = 0
    for _ in range(index):
        if i + 3 > len(out):
            break
        ext = out[i] & 0x10
        length = (out[i + 2] << 8 | out[i + 3]) + 4 if ext else out[i + 2] + 3
        if i + length >= len(out):
            break
        i += length
    if i < len(out):
        out[i] = (flags & 0xE0) | (out[i] & 0x1F)
    return bytes(out)


def _segment() -> st.SearchStrategy[tuple[int, tuple[int, ...]]]:
    return st.tuples(
        st.sampled_from([AS_SEQUENCE, AS_SET, 3, 4]),
        st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=5).map(tuple),
    )


def _valid_block() -> st.SearchStrategy[bytes]:
    """Plain blocks with every attribute the fast path reads, some with an extra optional
    non-transitive one it skips (ORIGINATOR_ID)."""
    attrs = st.builds(
        Attributes,
        next_hop=st.sampled_from(["192.0.2.1", "198.51.100.7", "0.0.0.0", "255.255.255.255", "10.0.0.1"]),
        origin=st.sampled_from(list(Origin)),
        as_path=st.lists(_segment(), max_size=3).map(tuple),
        med=st.none() | st.integers(0, 2**32 - 1),
        local_pref=st.none() | st.integers(0, 2**32 - 1),
        communities=st.lists(st.integers(0, 2**32 - 1), max_size=5).map(tuple),
        large_communities=st.lists(st.tuples(*[st.integers(0, 2**32 - 1)] * 3), max_size=3).map(tuple),
        atomic_aggregate=st.booleans(),
        aggregator=st.none()
        | st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(["192.0.2.9", "0.0.0.1"])),
    )
    extra = st.sampled_from([b"", _attr(0x80, 9, b"\x01\x02\x03\x04"), _attr(0x90, 10, b"\x0a\x00\x00\x01")])
    return st.builds(lambda a, x: codec.encode_path_attributes(a) + x, attrs, extra)


def _block() -> st.SearchStrategy[bytes]:
    """Valid blocks, valid blocks with random attributes added or one attribute's flags changed,
    random attribute lists, and valid blocks cut short or with one byte changed."""
    valid = _valid_block()
    mangled = st.builds(
        lambda b, cut, pos, byte: (
            (b[:cut] if cut < len(b) else b)
            if byte is None
            else b[: pos % max(len(b), 1)] + bytes((byte,)) + b[pos % max(len(b), 1) + 1 :]
        ),
        valid,
        st.integers(0, 80),
        st.integers(0, 200),
        st.none() | st.integers(0, 255),
    )
    reflagged = st.builds(
        _reflag, valid, st.integers(0, 12), st.sampled_from([0x00, 0x40, 0x80, 0xC0, 0xE0, 0x60])
    )
    added = st.builds(lambda b, xs: b + b"".join(xs), valid, st.lists(_one_attr(), min_size=1, max_size=2))
    return st.one_of(
        valid, added, reflagged, st.lists(_one_attr(), max_size=6).map(b"".join), mangled, st.just(b"")
    )


def _nlri() -> st.SearchStrategy[bytes]:
    return st.binary(max_size=30) | st.lists(
        st.sampled_from(
            [
                b"\x18\xc6\x33\x64",
                b"\x10\x0a\x01",
                b"\x00",
                b"\x20\x01\x02\x03\x04",
                b"\x21",
                b"\x19\xc6\x33\x64\xff",
                b"\x08\x0a",
                b"\x18\xc6\x33",
            ]
        )
    ).map(b"".join)


def _body(withdrawn: bytes, block: bytes, nlri: bytes) -> bytes:
    return len(withdrawn).to_bytes(2, "big") + withdrawn + len(block).to_bytes(2, "big") + block + nlri


# --- differential -----------------------------------------------------------------------------------


def _same_attrs(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, Attributes):
        assert a == b and a.raw4 == b.raw4
        for f in (
            "next_hop",
            "origin",
            "as_path",
            "med",
            "local_pref",
            "communities",
            "large_communities",
            "atomic_aggregate",
            "aggregator",
            "other",
        ):
            assert type(getattr(a, f)) is type(getattr(b, f)), f
        assert a.origin is b.origin


@needs_c
@FUZZ
@given(_block())
def test_fast_attrs_agrees(block: bytes) -> None:
    """The C parser gives what ``_fast_attrs`` gives for every plain block and declines the rest."""
    codec.clear_attribute_cache()
    py = codec._fast_attrs(block)
    c = _fastpath.fast_attrs(block)
    if type(py) is Attributes:
        assert c is not None, "a plain block the C parser declined"
        _same_attrs(c, py)
        assert c.raw4 is block
    else:
        assert c is None


def _int_slot(v: int) -> int:
    """The slot of ``v`` in _fastpath.c's cache of 32-bit values (``u32_int``)."""
    return ((v * 0x9E3779B1) & 0xFFFFFFFF) >> 22


@needs_c
def test_shared_values_agree() -> None:
    """The C decoder shares the ints of 32-bit values and the last next hop's text between
    attribute sets (its caches): a run of sets whose values collide in the int cache's slots, and
    next hops that come back after another, decode each as the Python decoder does."""
    same_slot = [v for v in range(1, 2**20) if _int_slot(v) == _int_slot(64500)][:4]
    colliding = [*same_slot, 2**32 - 1, 0, 64500]
    hops = ["192.0.2.1", "192.0.2.1", "198.51.100.7", "192.0.2.1", "0.0.0.0", "255.255.255.255"]
    for n in range(40):
        asns = tuple(colliding[(n + k) % len(colliding)] for k in range(1 + n % 4))
        attrs = Attributes(
            next_hop=hops[n % len(hops)],
            origin=Origin.IGP,
            as_path=((AS_SEQUENCE, asns),),
            med=colliding[n % len(colliding)] if n % 3 else None,
            local_pref=colliding[(n + 1) % len(colliding)] if n % 2 else None,
            communities=tuple(colliding[: n % 5]),
            aggregator=(colliding[n % len(colliding)], hops[(n + 2) % len(hops)]) if n % 5 == 0 else None,
        )
        block = codec.encode_path_attributes(attrs)
        codec.clear_attribute_cache()
        c = _fastpath.fast_attrs(block)
        _same_attrs(c, codec._fast_attrs(block))
        assert c == attrs


@needs_c
@FUZZ
@given(_block(), _nlri(), st.binary(max_size=12) | st.just(b"\x18\xc6\x33\x65"), st.booleans())
def test_plain_update_agrees(block: bytes, nlri: bytes, withdrawn: bytes, warm: bool) -> None:
    """``plain_update`` == ``decode_plain_update_py``, each from a cold cache (or both warm)."""
    body = _body(withdrawn, block, nlri)
    for view in (body, memoryview(body)):
        codec.clear_attribute_cache()
        if warm:
            codec.decode_plain_update_py(body)
        py = codec.decode_plain_update_py(view)
        codec.clear_attribute_cache()
        if warm:
            codec.decode_plain_update_py(body)
        c = _fastpath.plain_update(view)
        if py is None:
            assert c is None
            continue
        assert c is not None and c[1:] == py[1:] and type(c[1]) is list and type(c[2]) is list
        _same_attrs(c[0], py[0])


@needs_c
def test_plain_update_keys_and_cache() -> None:
    attrs = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (65001, 3)),), med=7)
    keys = [
        key_from_parts(n, ln, Family.IPV4)
        for n, ln in (
            (10 << 24, 8),
            (0xC6336400, 24),
            (0xCB007180, 25),
            (0, 0),
            (0x01020304, 32),
            (0xC0A80000, 17),
        )
    ]
    (msg,) = codec.encode_updates(Family.IPV4, attrs, keys)
    codec.clear_attribute_cache()
    first = _fastpath.plain_update(msg[19:])
    assert first is not None and first[0] == attrs and first[1:] == (keys, [])
    again = _fastpath.plain_update(msg[19:])
    assert again is not None and again[0] is first[0]  # the cached object
    assert codec.decode_plain_update_py(msg[19:]) == first
    (wd,) = codec.encode_withdraws(Family.IPV4, keys[:2])
    assert _fastpath.plain_update(wd[19:]) == (None, [], keys[:2])
    assert _fastpath.plain_update(codec.encode_end_of_rib(Family.IPV4)[19:]) is None


@needs_c
@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    codec.clear_attribute_cache()
    assert _fastpath.plain_update(data) == codec.decode_plain_update_py(data)
    codec.clear_attribute_cache()
    c = _fastpath.fast_attrs(data)
    assert c is None or c == codec._fast_attrs(data)
    buf = bytearray(b"\xff" * 16 + data)
    before = bytes(buf)
    events, n = _fastpath.plain_updates(buf, codec.MAX_MESSAGE, "p", Family.IPV4)
    assert len(events) == n and before.endswith(bytes(buf))


def _session() -> BgpSession:
    config = SessionConfig(
        peer="feeder",
        local_as=64512,
        peer_as=65001,
        router_id="192.0.2.254",
        hold_time=90,
        families=(Family.IPV4, Family.IPV6),
    )
    session = BgpSession(config)
    session.start(0.0)
    session.connection_made(0.0)
    session.receive_data(codec.encode_open(65001, 90, "192.0.2.1", [Family.IPV4, Family.IPV6]), 0.0)
    session.receive_data(codec.encode_keepalive(), 0.0)
    assert session.state is State.ESTABLISHED
    session.data_to_send()
    session.take_events(1 << 30)
    return session


def _message() -> st.SearchStrategy[bytes]:
    """Messages of a table load and what may interrupt it: plain UPDATEs, withdrawals, End-of-RIB,
    KEEPALIVE, an IPv6 UPDATE, random UPDATE bodies, a bad marker, a bad length, a NOTIFICATION."""
    v4 = st.builds(
        lambda block, nlri, wd: (
            codec._header(19 + len(_body(wd, block, nlri)), codec.MSG_UPDATE) + _body(wd, block, nlri)
        ),
        _block(),
        _nlri(),
        st.sampled_from([b"", b"\x18\xc6\x33\x65", b"\x21"]),
    )
    v6 = st.just(
        codec.encode_updates(
            Family.IPV6,
            Attributes(next_hop="2001:db8::1", as_path=((2, (1,)),)),
            [key_from_parts(0x20010DB8 << 96, 32, Family.IPV6)],
        )[0]
    )
    fixed = st.sampled_from(
        [
            codec.encode_end_of_rib(Family.IPV4),
            codec.encode_keepalive(),
            codec.encode_withdraws(Family.IPV4, [0x18C63364])[0],
            b"\xfe" + b"\xff" * 15 + b"\x00\x17\x02\x00\x00\x00\x00",  # bad marker
            b"\xff" * 16 + b"\x00\x12\x02",  # length below the header
            b"\xff" * 16 + b"\x10\x01\x02" + b"\x00" * 4077,  # longer than 4096
            codec.encode_notification(6, 2),
        ]
    )
    return st.one_of(v4, v4, v4, v6, fixed)


def _run(stream: bytes, cuts: list[int]) -> tuple[Any, ...]:
    session = _session()
    events: list[Any] = []
    pos = 0
    for cut in [*sorted(cuts), len(stream)]:
        session.receive_data(stream[pos:cut], 1.0)
        events += session.take_events(1 << 30)
        pos = max(pos, cut)
    return (
        events,
        session.state,
        session.messages_received,
        session._hold_at,
        bytes(session._buf),
        session.errors,
    )


@needs_c
@FUZZ
@given(st.lists(_message(), max_size=12), st.lists(st.integers(0, 6000), max_size=4))
def test_session_with_and_without_the_accelerator(messages: list[bytes], cuts: list[int]) -> None:
    """The same events, state, counters, hold timer and leftover bytes for any stream, cut anywhere."""
    stream = b"".join(messages)
    cuts = [c % (len(stream) + 1) for c in cuts]
    codec.clear_attribute_cache()
    with pure():
        want = _run(stream, cuts)
    codec.clear_attribute_cache()
    got = _run(stream, cuts)
    assert got == want


@needs_c
def test_an_update_the_c_declines_does_not_end_its_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A declined UPDATE (here MP_REACH, as extended communities on a real table: ~2% of UPDATEs)
    goes the general way alone and the C takes the plain ones after it in the same read; they used
    to go one by one through ``decode_plain_update`` for the rest of the read."""
    plain = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (65001, 3)),))
    v6 = Attributes(next_hop="2001:db8::1", as_path=((AS_SEQUENCE, (65001, 3)),))
    keys4 = [key_from_parts(0x0A000000 + (i << 8), 24, Family.IPV4) for i in range(3)]
    key6 = key_from_parts(0x20010DB8 << 96, 32, Family.IPV6)
    stream = b"".join([
        *codec.encode_updates(Family.IPV4, plain, keys4[:1]),
        *codec.encode_updates(Family.IPV6, v6, [key6]),
        *codec.encode_updates(Family.IPV4, plain, keys4[1:2]),
        *codec.encode_updates(Family.IPV4, plain, keys4[2:]),
    ])  # fmt: skip
    calls: list[object] = []
    per_message = codec.decode_plain_update
    monkeypatch.setattr(codec, "decode_plain_update", lambda body: calls.append(body) or per_message(body))
    codec.clear_attribute_cache()
    session = _session()
    session.receive_data(stream, 1.0)
    events = session.take_events(1 << 30)
    assert [(e.family, list(e.announce)) for e in events] == [
        (Family.IPV4, keys4[:1]), (Family.IPV6, [key6]), (Family.IPV4, keys4[1:2]), (Family.IPV4, keys4[2:]),
    ]  # fmt: skip
    assert calls == []  # every plain UPDATE through the C run, the declined one straight to the general path
    assert bytes(session._buf) == b""


# --- memory and reference counts --------------------------------------------------------------------


def _table_stream(updates: int) -> bytes:
    out = []
    for u in range(updates):
        attrs = Attributes(
            next_hop="192.0.2.1",
            as_path=((AS_SEQUENCE, (65001, u)),),
            med=u,
            communities=(u, 7),
            large_communities=((1, 2, u),),
            aggregator=(u, "10.0.0.1"),
        )
        keys = [key_from_parts((10 << 24) | (u << 8) | (i << 4), 28, Family.IPV4) for i in range(5)]
        out += codec.encode_updates(Family.IPV4, attrs, keys)
    return b"".join(out)


@needs_c
def test_no_leaks() -> None:
    """Repeated decoding holds no more memory and leaves the shared objects' counts as they were."""
    stream = _table_stream(400)
    peer = "feeder-leak"

    def once() -> None:
        codec.clear_attribute_cache()
        buf = bytearray(stream)
        events, n = _fastpath.plain_updates(buf, codec.MAX_MESSAGE, peer, Family.IPV4)
        assert n == 400 and not buf
        body = stream[19 : struct.unpack_from(">H", stream, 16)[0]]
        block = body[4 : 4 + struct.unpack_from(">H", body, 2)[0]]
        for _ in range(50):
            assert _fastpath.plain_update(body) is not None
            assert _fastpath.fast_attrs(block) is not None
        del events

    once()
    codec.clear_attribute_cache()
    gc.collect()
    refs = sys.getrefcount(peer), sys.getrefcount(Family.IPV4), sys.getrefcount(Origin.IGP)
    grown = growth(once, 10, settle=codec.clear_attribute_cache)
    assert grown < 64 * 1024, f"{grown} bytes more after 10 runs"
    assert (sys.getrefcount(peer), sys.getrefcount(Family.IPV4), sys.getrefcount(Origin.IGP)) == refs


@needs_c
def test_events_are_gc_tracked_like_python_ones() -> None:
    buf = bytearray(_table_stream(3))
    events, _ = _fastpath.plain_updates(buf, codec.MAX_MESSAGE, "p", Family.IPV4)
    with pure():
        ref = _session()
        ref.receive_data(_table_stream(3), 0.0)
        want = ref.take_events(100)
    assert [gc.is_tracked(e) for e in events] == [gc.is_tracked(e) for e in want]
    assert [gc.is_tracked(e.attrs) for e in events] == [gc.is_tracked(e.attrs) for e in want]
    assert all(e.attrs in gc.get_referents(e) for e in events)
