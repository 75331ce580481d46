"""Truncated or corrupt input gives a clear MrtError, never another exception."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.collector.mrt import (
    Bgp4mpUpdate,
    MrtError,
    MrtReader,
    MrtWriter,
    RibEntry,
    encode_record,
    read_mrt,
)
from orchestrator.rib.prefix import Family

from .mrt_samples import PEERS, sample_attrs, sample_table


def _rib() -> bytes:
    return MrtWriter(PEERS, timestamp=1_700_000_000).rib_dump(sample_table(40, seed=2))


def _updates() -> bytes:
    import random

    rng = random.Random(9)
    w = MrtWriter(PEERS)
    out = [w.state_change(1.0, "192.0.2.1", 64500, "192.0.2.254", 65000, 1, 6)]
    for i in range(20):
        fam = Family.IPV4 if i % 2 else Family.IPV6
        peer, local = ("192.0.2.1", "192.0.2.254") if fam is Family.IPV4 else ("2001:db8::1", "2001:db8::fe")
        v4key = (24 << 24) | (10 << 16) | (i << 8)
        key = v4key if fam is Family.IPV4 else (48 << 48) | (0x20010DB8 << 16) | i
        out.append(w.update(2.0 + i, peer, 64500, local, 65000, fam, [key], [key] if i % 4 == 0 else [],
                            sample_attrs(rng, fam), extended=bool(i % 3)))
    return b"".join(out)


RIB = _rib()
UPDATES = _updates()


def _drain(data: bytes, errors: str = "raise") -> MrtReader:
    reader = MrtReader(data, errors=errors)  # type: ignore[arg-type]
    for _ in reader:
        pass
    return reader


def _record_starts(data: bytes) -> list[int]:
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 12 + struct.unpack_from(">I", data, pos + 8)[0]
    return starts


SAMPLES = (RIB, UPDATES, RIB[: _record_starts(RIB)[10]] + UPDATES)


def test_samples_are_clean() -> None:
    for data in SAMPLES:
        assert not _drain(data).stats.errors


@pytest.mark.parametrize("which", [0, 1])
def test_every_truncation_point(which: int) -> None:
    data = SAMPLES[which]
    starts = set(_record_starts(data))
    for cut in range(0, len(data), 7 if which == 0 else 3):
        if cut in starts:
            _drain(data[:cut])  # a cut between records is a shorter, valid file
            continue
        with pytest.raises(MrtError) as err:
            _drain(data[:cut])
        assert "truncated" in err.value.message
        assert err.value.offset == max(s for s in starts if s < cut)
        counted = _drain(data[:cut], errors="count")
        assert len(counted.stats.errors) == 1


def test_truncated_gzip_and_bz2() -> None:
    for compress, kind in ((gzip.compress, "gzip"), (bz2.compress, "bzip2")):
        packed = compress(RIB)
        for thread in (True, False):
            reader = MrtReader(packed[: len(packed) * 2 // 3], errors="count", decompress_thread=thread)
            for _ in reader:
                pass
            (err,) = reader.stats.errors
            assert kind in err.message, err.message


def test_corrupt_gzip_is_an_mrt_error() -> None:
    packed = bytearray(gzip.compress(RIB))
    packed[len(packed) // 2] ^= 0xFF
    with pytest.raises(MrtError):
        _drain(bytes(packed))


def test_count_mode_skips_a_bad_record_and_goes_on() -> None:
    starts = _record_starts(RIB)
    bad = bytearray(RIB)
    bad[starts[5] + 12 + 4] = 99  # a prefix length of 99 in an IPv4 RIB record (or 99 in IPv6: fine)
    hdr = struct.unpack_from(">IHHI", bad, starts[5])
    if hdr[2] == 4:  # IPv6 record: make it impossible there too
        bad[starts[5] + 12 + 4] = 200
    reader = _drain(bytes(bad), errors="count")
    (err,) = reader.stats.errors
    assert err.record_index == 5 and err.offset == starts[5] and "prefix length" in err.message
    assert reader.stats.record_count == len(starts)
    with pytest.raises(MrtError, match="record 5 at offset"):
        _drain(bytes(bad))


def test_rib_before_peer_index_and_missing_file(tmp_path: Path) -> None:
    starts = _record_starts(RIB)
    with pytest.raises(MrtError, match="before any PEER_INDEX_TABLE"):
        _drain(RIB[starts[1]:])
    with pytest.raises(MrtError, match="cannot open") as err:
        MrtReader(tmp_path / "nope.mrt")
    assert err.value.offset == -1


def test_unknown_types_are_skipped_and_counted() -> None:
    data = encode_record(1, 99, 3, b"abc") + encode_record(2, 13, 6, b"x" * 10) + UPDATES
    reader = _drain(data)
    assert reader.stats.skipped == {"99/3": 1, "TABLE_DUMP_V2/RIB_GENERIC": 1}
    assert not reader.stats.errors


def test_records_over_64k() -> None:
    attrs = sample_attrs(__import__("random").Random(1), Family.IPV4)
    paths = [(0, attrs, i) for i in range(3000)]  # ~3000 * 60 bytes: a 180 KB record
    data = MrtWriter(PEERS).rib_dump([(Family.IPV4, (24 << 24) | 0x0A0000, paths)])
    assert len(data) > 65536
    entries = [r for r in read_mrt(data) if isinstance(r, RibEntry)]
    assert [e.originated_time for e in entries] == list(range(3000))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sample=st.sampled_from(range(len(SAMPLES))), data=st.data())
def test_mutated_bytes_only_raise_mrt_error(sample: int, data: st.DataObject) -> None:
    raw = bytearray(SAMPLES[sample])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    blob = bytes(raw)
    with contextlib.suppress(MrtError):
        _drain(blob)
    reader = _drain(blob, errors="count")  # never raises in count mode
    for rec in read_mrt(SAMPLES[sample]):
        assert isinstance(rec, object)
    assert reader.stats.record_count >= 0


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=300))
def test_random_bytes_only_raise_mrt_error(blob: bytes) -> None:
    with contextlib.suppress(MrtError):
        _drain(blob)
    _drain(blob, errors="count")


def test_updates_sample_is_read() -> None:
    ups = [r for r in read_mrt(UPDATES) if isinstance(r, Bgp4mpUpdate)]
    assert len(ups) == 20 and sum(len(v) for u in ups for v in u.withdraw.values()) == 5


def test_a_file_that_is_not_mrt_says_so() -> None:
    import lzma

    for data, says in ((lzma.compress(UPDATES), "not an MRT file: xz data"),
                       (b"\xff\xff\xff\xff\xee\xee\xee\xee\xfe\xfe\xfe\xfe" + b"\x00" * 100,
                        "not an MRT file: the first record's type is 61166")):
        reader = MrtReader(data, errors="count")
        assert list(reader) == []
        (error,) = reader.stats.errors
        assert says in str(error) and "plain, gz or bz2" in str(error)
    with pytest.raises(MrtError, match=r"^/nonexistent\.mrt: cannot open: No such file"):
        list(MrtReader("/nonexistent.mrt"))
