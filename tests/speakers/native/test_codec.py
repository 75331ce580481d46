"""Codec: round trips, ExaBGP's real decoding vectors, RFC 7606 handling, fuzzing (only BgpError)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.rib.attrs import AS_SEQUENCE, AS_SET, Attributes, Origin
from orchestrator.rib.prefix import Family, format_prefix, key_from_parts, parse_prefix
from speakers.native.codec import (
    MSG_KEEPALIVE,
    MSG_OPEN,
    MSG_UPDATE,
    BgpError,
    clear_attribute_cache,
    decode_nlri,
    decode_notification,
    decode_open,
    decode_path_attributes,
    decode_plain_update,
    decode_update,
    encode_end_of_rib,
    encode_keepalive,
    encode_notification,
    encode_open,
    encode_path_attributes,
    encode_updates,
    encode_withdraws,
    shutdown_data,
    split_messages,
)

VECTORS = Path(__file__).resolve().parents[4] / "shared/data/real/bgp-messages/exabgp-qa-decoding"
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"real decoding vectors absent: {VECTORS}")


def _vector(name: str) -> tuple[str, bytes, dict[str, object]]:
    lines = (VECTORS / name).read_text().splitlines()
    return lines[0], bytes.fromhex(lines[1].replace(":", "")), json.loads(lines[2])


def _body(raw: bytes) -> tuple[int, bytes]:
    if raw.startswith(b"\xff" * 16):
        ((mtype, body),) = split_messages(bytearray(raw))
        return mtype, bytes(body)
    return MSG_UPDATE, raw


# --- round trips ---------------------------------------------------------------------------------

FULL = Attributes(
    next_hop="192.0.2.2",
    origin=Origin.INCOMPLETE,
    as_path=((AS_SEQUENCE, (65001, 4_200_000_000, 3)), (AS_SET, (7, 8))),
    med=5,
    local_pref=200,
    communities=((65001 << 16) | 1, 0xFFFFFF01),
    large_communities=((4_200_000_000, 1, 2),),
    atomic_aggregate=True,
    aggregator=(4_200_000_000, "198.51.100.1"),
    other=((0xE0, 99, b"xyz"),),
)


@pytest.mark.parametrize("asn4", [True, False])
def test_ipv4_updates_round_trip(asn4: bool) -> None:
    keys = [parse_prefix(f"{i >> 8}.{i & 255}.0.0/16")[1] for i in range(256, 3000)]
    keys += [parse_prefix(p)[1] for p in ("1.2.3.0/24", "0.0.0.0/0", "1.2.3.128/25", "9.9.9.9/32")]
    msgs = encode_updates(Family.IPV4, FULL, keys, asn4=asn4)
    assert len(msgs) > 1 and all(len(m) <= 4096 for m in msgs)
    got: list[int] = []
    for m in msgs:
        d = decode_update(m[19:], asn4=asn4)
        (fu,) = d.families
        assert fu.family is Family.IPV4 and fu.attrs == FULL and not d.errors
        got += fu.announce
    assert got == keys


@pytest.mark.parametrize("asn4", [True, False])
def test_ipv6_updates_round_trip(asn4: bool) -> None:
    attrs = Attributes(next_hop="2001:db8::2", as_path=((AS_SEQUENCE, (65001, 4_200_000_000)),), med=1)
    keys = [parse_prefix(f"2001:db8:{i:x}::/48")[1] for i in range(3000)] + [parse_prefix("2001:db8::/29")[1]]
    got: list[int] = []
    for m in encode_updates(Family.IPV6, attrs, keys, asn4=asn4):
        (fu,) = decode_update(m[19:], asn4=asn4).families
        assert fu.family is Family.IPV6 and fu.attrs == attrs
        got += fu.announce
    assert got == keys
    withdrawn: list[int] = []
    for m in encode_withdraws(Family.IPV6, keys):
        (fu,) = decode_update(m[19:]).families
        assert fu.attrs is None and not fu.announce
        withdrawn += fu.withdraw
    assert withdrawn == keys


def test_withdraw_and_end_of_rib() -> None:
    keys = [parse_prefix(f"10.{i}.0.0/16")[1] for i in range(200)]
    (m,) = encode_withdraws(Family.IPV4, keys)
    assert decode_update(m[19:]).families[0].withdraw == keys
    for fam in Family:
        d = decode_update(encode_end_of_rib(fam)[19:])
        assert d.end_of_rib is fam and not d.families


def test_attributes_are_interned() -> None:
    keys = [parse_prefix(f"11.{i}.0.0/16")[1] for i in range(5)]
    a = decode_update(encode_updates(Family.IPV4, FULL, keys[:2])[0][19:]).families[0].attrs
    b = decode_update(encode_updates(Family.IPV4, FULL, keys[2:])[0][19:]).families[0].attrs
    assert a is b


def test_path_attributes_round_trip() -> None:
    for asn4 in (True, False):
        assert decode_path_attributes(encode_path_attributes(FULL, asn4=asn4), asn4=asn4).attrs == FULL


def test_open_round_trip() -> None:
    raw = encode_open(
        4_200_000_000,
        90,
        "192.0.2.1",
        [Family.IPV4, Family.IPV6],
        graceful_restart=120,
        add_path_receive=[Family.IPV6],
        extended_message=True,
    )
    ((mtype, body),) = split_messages(bytearray(raw))
    o = decode_open(body)
    assert mtype == MSG_OPEN
    assert (o.asn, o.hold_time, o.router_id, o.families) == (
        4_200_000_000,
        90,
        "192.0.2.1",
        (Family.IPV4, Family.IPV6),
    )
    assert o.asn4 and o.route_refresh and o.extended_message and o.graceful_restart == 120
    assert o.add_path == ((Family.IPV6, 1),)


def test_notification_and_keepalive_framing() -> None:
    buf = bytearray(
        encode_keepalive() + encode_notification(6, 2, shutdown_data("maintenance")) + b"\xff" * 7
    )
    msgs = split_messages(buf)
    assert [t for t, _ in msgs] == [MSG_KEEPALIVE, 3]
    assert decode_notification(msgs[1][1]) == (6, 2, b"\x0bmaintenance", "maintenance")
    assert bytes(buf) == b"\xff" * 7  # remainder kept


def test_framing_errors() -> None:
    with pytest.raises(BgpError) as err:
        split_messages(bytearray(b"\x00" * 19))
    assert (err.value.code, err.value.subcode) == (1, 1)
    with pytest.raises(BgpError) as err:
        split_messages(bytearray(b"\xff" * 16 + b"\x00\x13\x09"))
    assert (err.value.code, err.value.subcode) == (1, 3)


def test_nlri_host_bits_cleared() -> None:
    assert decode_nlri(bytes([17, 10, 1, 0xFF])) == [key_from_parts(0x0A01FF00, 17, Family.IPV4)]
    assert format_prefix(Family.IPV4, decode_nlri(bytes([23, 10, 1, 3]))[0]) == "10.1.2.0/23"
    with pytest.raises(BgpError):
        decode_nlri(bytes([33, 1, 2, 3, 4, 5]))
    with pytest.raises(BgpError):
        decode_nlri(bytes([24, 1, 2]))


# --- RFC 7606 ------------------------------------------------------------------------------------


def _update(attrs: bytes, nlri: bytes = b"\x18\x0a\x00\x00") -> bytes:
    return b"\x00\x00" + len(attrs).to_bytes(2, "big") + attrs + nlri


ORIGIN = b"\x40\x01\x01\x00"
PATH = b"\x40\x02\x06\x02\x01\x00\x00\xfd\xe9"
NH = b"\x40\x03\x04\xc0\x00\x02\x02"


def test_malformed_origin_is_treat_as_withdraw() -> None:
    d = decode_update(_update(b"\x40\x01\x01\x07" + PATH + NH))
    assert d.treat_as_withdraw and d.families[0].withdraw and not d.families[0].announce


def test_malformed_communities_is_treat_as_withdraw() -> None:
    d = decode_update(_update(ORIGIN + PATH + NH + b"\xc0\x08\x03\x00\x00\x01"))
    assert d.treat_as_withdraw


def test_missing_next_hop_is_treat_as_withdraw() -> None:
    d = decode_update(_update(ORIGIN + PATH))
    assert d.treat_as_withdraw


def test_bad_atomic_aggregate_is_discarded() -> None:
    d = decode_update(_update(ORIGIN + PATH + NH + b"\x40\x06\x01\x00"))
    assert not d.treat_as_withdraw and d.errors and d.families[0].announce


def test_overrunning_attribute_length_resets() -> None:
    with pytest.raises(BgpError):
        decode_update(b"\x00\x00\x00\xff" + ORIGIN)


def test_unknown_well_known_resets() -> None:
    with pytest.raises(BgpError) as err:
        decode_update(_update(ORIGIN + PATH + NH + b"\x40\x63\x00"))
    assert (err.value.code, err.value.subcode) == (3, 2)


# --- real vectors (ExaBGP qa/decoding) ----------------------------------------------------------


@needs_vectors
def test_vector_ipv4_unicast_1() -> None:
    _, raw, js = _vector("ipv4-unicast-1")
    upd = js["neighbor"]["message"]["update"]  # type: ignore[index]
    _mtype, body = _body(raw)
    d = decode_update(body)
    (fu,) = d.families
    ((nh, nlris),) = upd["announce"]["ipv4 unicast"].items()
    assert fu.attrs is not None and fu.attrs.next_hop == nh
    assert [format_prefix(Family.IPV4, k) for k in fu.announce] == [n["nlri"] for n in nlris]
    attr = upd["attribute"]
    assert fu.attrs.origin.name.lower() == attr["origin"]
    assert (fu.attrs.med, fu.attrs.local_pref, fu.attrs.as_path) == (
        attr["med"],
        attr["local-preference"],
        (),
    )


@needs_vectors
def test_vector_ipv4_unicast_2() -> None:
    _, raw, js = _vector("ipv4-unicast-2")
    attr = js["neighbor"]["message"]["update"]["attribute"]  # type: ignore[index]
    _mtype, body = _body(raw)
    d = decode_update(body)
    assert not d.families and not d.errors  # attributes only, no NLRI
    wlen = int.from_bytes(body[:2], "big")
    attrs = decode_path_attributes(body[4 + wlen :]).attrs
    assert attrs.origin.name.lower() == attr["origin"]
    assert attrs.as_path == ((AS_SEQUENCE, tuple(attr["as-path"]["0"]["value"])),)
    assert (attrs.med, attrs.local_pref, attrs.atomic_aggregate) == (0, 100, True)
    asn, ip = attr["aggregator"].split(":")
    assert attrs.aggregator == (int(asn), ip)


@needs_vectors
def test_vector_open_software_version() -> None:
    _, raw, js = _vector("bgp-open-sofware-version")
    want = js["neighbor"]["open"]  # type: ignore[index]
    mtype, body = _body(raw)
    o = decode_open(body)
    assert mtype == MSG_OPEN
    assert (o.version, o.asn, o.hold_time, o.router_id) == (
        want["version"],
        want["asn"],
        want["hold_time"],
        want["router_id"],
    )
    assert o.families == (Family.IPV4,) and o.asn4
    assert o.software_version == want["capabilities"]["75"]["software"]
    assert sorted(str(c) for c, _ in o.capabilities) == sorted(want["capabilities"])


@needs_vectors
@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in VECTORS.iterdir()) if VECTORS.is_dir() else [],
)
def test_vectors_never_crash(name: str) -> None:
    """Other families are skipped (``unsupported``) or rejected with BgpError, never a crash."""
    _kind, raw, _ = _vector(name)
    try:
        mtype, body = _body(raw)
        if mtype == MSG_OPEN:
            decode_open(body)
            return
        d = decode_update(body)
    except BgpError:
        assert not name.startswith("ipv4-unicast")
        return
    if not name.startswith("ipv4-unicast"):
        assert d.unsupported and not d.families, name


# --- fuzzing --------------------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _attr_strategy() -> st.SearchStrategy[bytes]:
    def one(flags: int, atype: int, value: bytes) -> bytes:
        if flags & 0x10:
            return bytes((flags, atype)) + len(value).to_bytes(2, "big") + value
        return bytes((flags, atype, len(value) & 0xFF)) + value

    return st.builds(
        one,
        st.sampled_from([0x40, 0x80, 0xC0, 0xD0, 0x50, 0x90, 0x00, 0xE0]),
        st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 15, 17, 18, 32, 99, 255]),
        st.binary(max_size=40),
    )


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_update_random(data: bytes) -> None:
    for asn4 in (True, False):
        for add_path in (False, True):
            with contextlib.suppress(BgpError):
                decode_update(data, asn4=asn4, add_path=add_path)


@FUZZ
@given(st.lists(_attr_strategy(), max_size=8), st.binary(max_size=30), st.binary(max_size=12))
def test_fuzz_update_structured(attrs: list[bytes], nlri: bytes, withdrawn: bytes) -> None:
    block = b"".join(attrs)
    body = len(withdrawn).to_bytes(2, "big") + withdrawn + len(block).to_bytes(2, "big") + block + nlri
    for asn4 in (True, False):
        with contextlib.suppress(BgpError):
            decode_update(body, asn4=asn4)


@FUZZ
@given(st.binary(max_size=120))
def test_fuzz_open(data: bytes) -> None:
    for body in (data, b"\x04\xfd\xe9\x00\xb4\x0a\x00\x00\x02" + data[:1] + data[1:]):
        with contextlib.suppress(BgpError):
            decode_open(body)


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_framing(data: bytes) -> None:
    with contextlib.suppress(BgpError):
        split_messages(bytearray(b"\xff" * 16 + data))


def _valid_attrs() -> st.SearchStrategy[bytes]:
    """Well-formed attribute blocks of the kinds a table carries (the fast path's inputs)."""
    return st.builds(
        lambda path, med, comms, nh: encode_path_attributes(
            Attributes(next_hop=nh, as_path=((AS_SEQUENCE, tuple(path)),), med=med, communities=tuple(comms))
        ),
        st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=6),
        st.none() | st.integers(0, 2**32 - 1),
        st.lists(st.integers(0, 2**32 - 1), max_size=4),
        st.sampled_from(["192.0.2.1", "198.51.100.7", "", "2001:db8::1"]),
    )


@FUZZ
@given(
    st.one_of(_valid_attrs(), st.lists(_attr_strategy(), max_size=6).map(b"".join), st.just(b"")),
    st.binary(max_size=30) | st.lists(st.sampled_from([b"\x18\xc6\x33\x64", b"\x10\x0a\x01", b"\x00",
                                                     b"\x20\x01\x02\x03\x04", b"\x21"])).map(b"".join),
    st.binary(max_size=12) | st.just(b"\x18\xc6\x33\x65"),
    st.booleans(),
)  # fmt: skip
def test_plain_update_fast_path_agrees(block: bytes, nlri: bytes, withdrawn: bytes, warm: bool) -> None:
    """``decode_plain_update`` is None or exactly ``decode_update``'s one IPv4 part (cold or warm cache)."""
    body = len(withdrawn).to_bytes(2, "big") + withdrawn + len(block).to_bytes(2, "big") + block + nlri
    clear_attribute_cache()
    if warm:
        with contextlib.suppress(BgpError):
            decode_update(body)
    fast = decode_plain_update(body)
    try:
        dec = decode_update(body)
    except BgpError:
        assert fast is None
        return
    if fast is None:
        return
    attrs, announce, withdraw = fast
    assert dec.end_of_rib is None and not dec.treat_as_withdraw and not dec.errors
    (fu,) = dec.families
    assert (fu.family, fu.attrs if fu.announce else None, fu.announce, fu.withdraw) == (
        Family.IPV4, attrs, announce, withdraw,
    )  # fmt: skip
    assert attrs is None or attrs is fu.attrs  # the same interned object


def test_plain_update_fast_path_taken() -> None:
    attrs = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (65001, 3)),), med=7)
    keys = [parse_prefix(p)[1] for p in ("10.0.0.0/8", "198.51.100.0/24", "203.0.113.128/25", "0.0.0.0/0")]
    (msg,) = encode_updates(Family.IPV4, attrs, keys)
    fast = decode_plain_update(msg[19:])
    assert fast is not None and fast[0] == attrs and fast[1:] == (keys, [])
    (wd,) = encode_withdraws(Family.IPV4, keys[:2])
    assert decode_plain_update(wd[19:]) == (None, [], keys[:2])
    assert decode_plain_update(encode_end_of_rib(Family.IPV4)[19:]) is None


@FUZZ
@given(st.one_of(_valid_attrs(), st.lists(_attr_strategy(), max_size=6).map(b"".join)))
def test_fast_attribute_parser_agrees_with_the_general_one(block: bytes) -> None:
    """``_fast_attrs`` (with its ORIGIN/AS_PATH/NEXT_HOP head) says None or what ``_decode_attrs`` says."""
    from speakers.native.codec import DecodedAttributes, _decode_attrs, _fast_attrs

    clear_attribute_cache()
    fast = _fast_attrs(block)
    if fast is None:
        return
    general = _decode_attrs(block, True)
    if isinstance(fast, DecodedAttributes):
        assert fast == general
    else:  # a plain block: its Attributes stand for the whole DecodedAttributes
        assert (general.attrs, general.mp_reach, general.mp_unreach, general.errors) == (fast, None, None, ())
        assert general.has_next_hop and not general.treat_as_withdraw and not general.unsupported


def test_equal_sets_from_different_bytes_keep_their_own_raw_bytes() -> None:
    """Two peers' blocks that differ only in what Attributes does not model (ORIGINATOR_ID) decode to
    equal sets, but each keeps the bytes it came with (the plain-block cache is keyed by the bytes;
    only MP sets, which carry no raw4, are interned by value): the collector records raw4 as
    received."""
    import struct

    from speakers.native import codec

    def body(originator: bytes) -> bytes:
        attrs = (bytes((0x40, 1, 1, 0)) + bytes((0x40, 2, 6, 2, 1)) + struct.pack(">I", 64500)
                 + bytes((0x40, 3, 4)) + bytes((192, 0, 2, 1)) + bytes((0x80, 9, 4)) + originator)  # fmt: skip
        return struct.pack(">H", 0) + struct.pack(">H", len(attrs)) + attrs + bytes((24, 10, 1, 2))

    codec.clear_attribute_cache()
    a = codec.decode_plain_update(body(bytes((1, 1, 1, 1))))
    b = codec.decode_plain_update(body(bytes((2, 2, 2, 2))))
    assert a is not None and b is not None and a[0] is not None and b[0] is not None
    assert a[0] == b[0]
    assert a[0].raw4.endswith(bytes((0x80, 9, 4, 1, 1, 1, 1)))
    assert b[0].raw4.endswith(bytes((0x80, 9, 4, 2, 2, 2, 2)))
