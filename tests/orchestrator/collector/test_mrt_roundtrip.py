"""Writer → reader gives back the same entries; bgpdump reads what we write and agrees with us."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.collector.mrt import (
    Bgp4mpMessage,
    Bgp4mpUpdate,
    MrtWriter,
    PeerIndex,
    RibEntry,
    StateChange,
    encode_bgp4mp_message,
    read_mrt,
)
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, key_from_parts

from .mrt_samples import PEERS, parse_bgpdump_line, rib_lines, sample_attrs, sample_table, update_lines

BGPDUMP = shutil.which("bgpdump")
needs_bgpdump = pytest.mark.skipif(BGPDUMP is None, reason="bgpdump (Debian package) not installed")


def _expected(table: list, add_path: bool) -> list[tuple]:  # type: ignore[type-arg]
    out = []
    for family, key, paths in table:
        for path in paths:
            pid = path[3] if add_path else None
            out.append((family, key, path[0], path[1], path[2], pid))
    return out


@pytest.mark.parametrize("add_path", [False, True])
def test_rib_round_trip(add_path: bool) -> None:
    table = sample_table(3000, seed=7, add_path=add_path)
    writer = MrtWriter(PEERS, collector_id="192.0.2.254", view_name="lab", timestamp=1_700_000_000)
    data = writer.rib_dump(table)
    records = list(read_mrt(data))
    assert isinstance(records[0], PeerIndex)
    assert records[0].peers == PEERS and records[0].view_name == "lab"
    entries = [r for r in records[1:] if isinstance(r, RibEntry)]
    assert len(entries) == len(records) - 1
    got = [(e.family, e.key, e.peer_index, e.attrs, e.originated_time, e.path_id) for e in entries]
    assert got == _expected(table, add_path)
    for e in entries:
        assert (e.peer_ip, e.peer_as) == (PEERS[e.peer_index].ip, PEERS[e.peer_index].asn)


def test_rib_round_trip_gzip_stream_and_interning() -> None:
    table = sample_table(500, seed=3)
    data = gzip.compress(MrtWriter(PEERS).rib_dump(table))
    entries = [r for r in read_mrt(data) if isinstance(r, RibEntry)]
    assert len(entries) == sum(len(p) for _, _, p in table)
    by_value: dict[Attributes, int] = {}
    for e in entries:  # equal attribute sets are one object (interned per raw bytes)
        assert by_value.setdefault(e.attrs, id(e.attrs)) == id(e.attrs)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 40), add_path=st.booleans())
def test_rib_round_trip_property(seed: int, n: int, add_path: bool) -> None:
    table = sample_table(n, seed=seed, add_path=add_path)
    entries = [r for r in read_mrt(MrtWriter(PEERS).rib_dump(table)) if isinstance(r, RibEntry)]
    got = [(e.family, e.key, e.peer_index, e.attrs, e.originated_time, e.path_id) for e in entries]
    assert got == _expected(table, add_path)


def _update_stream() -> tuple[bytes, list[tuple]]:  # type: ignore[type-arg]
    import random

    rng = random.Random(5)
    w = MrtWriter(PEERS)
    chunks = [w.state_change(1_700_000_000.25, "192.0.2.1", 64500, "192.0.2.254", 65000, 5, 6, extended=True)]
    sent = []
    for i in range(200):
        family = Family.IPV4 if i % 3 else Family.IPV6
        peer_ip = "192.0.2.1" if family is Family.IPV4 else "2001:db8::1"
        local_ip = "192.0.2.254" if family is Family.IPV4 else "2001:db8::fe"
        attrs = sample_attrs(rng, family)
        width = 32 if family is Family.IPV4 else 128
        announce = [key_from_parts(rng.getrandbits(width), rng.choice((24, 22, 48 if width == 128 else 16)),
                                   family) for _ in range(rng.randint(1, 20))]
        announce = list(dict.fromkeys(announce))
        withdraw = [key_from_parts(rng.getrandbits(width), 24, family)] if i % 5 == 0 else []
        chunks.append(w.update(1_700_000_001 + i, peer_ip, 64500, local_ip, 65000, family, announce, withdraw,
                               attrs))
        sent.append((family, announce, withdraw, attrs))
    chunks.append(w.update(1_700_000_500, "192.0.2.1", 64500, "192.0.2.254", 65000, Family.IPV4, [], [],
                           None))
    return b"".join(chunks), sent


def test_bgp4mp_round_trip() -> None:
    data, sent = _update_stream()
    records = list(read_mrt(data))
    assert isinstance(records[0], StateChange)
    assert (records[0].old_state, records[0].new_state, records[0].timestamp) == (5, 6, 1_700_000_000.25)
    updates = [r for r in records if isinstance(r, Bgp4mpUpdate)]
    assert len(updates) == len(sent) + 1
    for u, (family, announce, withdraw, attrs) in zip(updates, sent, strict=False):
        assert u.announce == {family: announce}
        assert u.withdraw == ({family: withdraw} if withdraw else {})
        assert u.attrs_for(family) == attrs
        assert u.peer_as == 64500 and u.local_as == 65000
    assert updates[-1].end_of_rib is Family.IPV4


def test_other_bgp_messages_are_kept() -> None:
    keepalive = b"\xff" * 16 + b"\x00\x13\x04"
    (rec,) = list(read_mrt(encode_bgp4mp_message(1.0, "192.0.2.1", 1, "192.0.2.2", 2, keepalive)))
    assert isinstance(rec, Bgp4mpMessage) and rec.msg_type == 4 and rec.data == b""


def _bgpdump(path: Path) -> list[str]:
    assert BGPDUMP is not None
    out = subprocess.run([BGPDUMP, "-m", str(path)], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.splitlines()


@needs_bgpdump
def test_bgpdump_reads_our_table_dump(tmp_path: Path) -> None:
    table = sample_table(2000, seed=11)
    path = tmp_path / "rib.20240101.0000"
    path.write_bytes(MrtWriter(PEERS, timestamp=1_700_000_000).rib_dump(table))
    lines = _bgpdump(path)
    entries = [r for r in read_mrt(path) if isinstance(r, RibEntry)]
    assert len(lines) == len(entries)
    assert all(line.startswith("TABLE_DUMP2|1700000000|B|") for line in lines)
    assert sorted(parse_bgpdump_line(line) for line in lines) == rib_lines(entries)


@needs_bgpdump
def test_bgpdump_reads_our_add_path_dump(tmp_path: Path) -> None:
    path = tmp_path / "rib.ap"
    table = sample_table(300, seed=12, add_path=True)
    path.write_bytes(MrtWriter(PEERS).rib_dump(table))
    lines = _bgpdump(path)
    assert len(lines) == sum(len(p) for _, _, p in table)
    entries = [r for r in read_mrt(path) if isinstance(r, RibEntry)]
    assert sorted(parse_bgpdump_line(line) for line in lines) == rib_lines(entries)


@needs_bgpdump
def test_bgpdump_reads_our_updates(tmp_path: Path) -> None:
    data, sent = _update_stream()
    path = tmp_path / "updates.20240101.0000.gz"
    path.write_bytes(gzip.compress(data))
    lines = _bgpdump(path)
    updates = [r for r in read_mrt(path) if isinstance(r, Bgp4mpUpdate)]
    prefix_lines = [line for line in lines if line.split("|")[2] in ("A", "W")]
    assert len(prefix_lines) == sum(len(a) + len(w) for _, a, w, _ in sent)
    assert sorted(parse_bgpdump_line(line) for line in prefix_lines) == update_lines(updates)
    assert lines[0].split("|")[2:] == ["STATE", "192.0.2.1", "64500", "5", "6"]


def test_writer_rejects_unknown_peer_index() -> None:
    attrs = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (1,)),))
    with pytest.raises(ValueError, match="peer index 9"):
        MrtWriter(PEERS).rib_dump([(Family.IPV4, 0x180A0000, [(9, attrs, 0)])])


def test_bgp4mp_add_path_and_local_subtypes() -> None:
    """RFC 8050 MESSAGE_AS4_ADDPATH (9) and MESSAGE_AS4_LOCAL (7): path ids read, other fields as usual."""
    import struct

    from orchestrator.collector.mrt import encode_record
    from speakers.native import codec

    attrs = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (64500, 1)),))
    raw_attrs = codec.encode_path_attributes(attrs)
    nlri = struct.pack(">IB3s", 7, 24, bytes((10, 1, 2))) + struct.pack(">IB2s", 9, 16, bytes((10, 2)))
    withdrawn = struct.pack(">IB1s", 3, 8, bytes((11,)))
    body = struct.pack(">H", len(withdrawn)) + withdrawn + struct.pack(">H", len(raw_attrs)) + raw_attrs
    body += nlri
    msg = b"\xff" * 16 + struct.pack(">HB", 19 + len(body), 2) + body
    head = struct.pack(">IIHH4s4s", 64500, 65000, 0, 1, bytes((192, 0, 2, 1)), bytes((192, 0, 2, 254)))
    body2 = struct.pack(">H", 0) + struct.pack(">H", len(raw_attrs)) + raw_attrs
    msg2 = b"\xff" * 16 + struct.pack(">HB", 19 + len(body2), 2) + body2
    data = encode_record(5, 16, 9, head + msg) + encode_record(6, 16, 7, head + msg2)
    first, second = list(read_mrt(data))
    assert isinstance(first, Bgp4mpUpdate) and isinstance(second, Bgp4mpUpdate)
    assert first.announce == {Family.IPV4: [0x180A0102, 0x100A02]}
    assert first.path_ids == {Family.IPV4: [7, 9]} and first.withdraw_path_ids == {Family.IPV4: [3]}
    assert first.withdraw == {Family.IPV4: [0x080B]} and first.attrs == attrs
    assert second.announce == {} and second.attrs is None  # attributes without NLRI
