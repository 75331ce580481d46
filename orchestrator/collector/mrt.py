"""MRT files (RFC 6396, RFC 8050 ADD-PATH): a streaming reader and a pure writer.

Theory of operation
-------------------
*Framing.* An MRT file is a sequence of records, each a 12-byte header (timestamp, type, subtype,
32-bit length) and a body. The reader pulls the file through an incremental decompressor chosen by
magic bytes (gzip ``1f 8b``, bzip2 ``BZh``, else plain) into a byte buffer, and cuts records out of it
with ``struct.unpack_from``; it never holds more than one read chunk plus one record in memory, so a
record may be of any 32-bit length (RIS writes RIB records > 64 KB). A compressed stream that stops
early (the ``_firstMB`` samples) yields every complete record and then reports the cut as an
``MrtError``.

*Records.* ``read_mrt`` yields typed, immutable records:

- TABLE_DUMP_V2 (13): ``PeerIndex`` for PEER_INDEX_TABLE, then one ``RibEntry`` per RIB entry of
  RIB_IPV4_UNICAST / RIB_IPV6_UNICAST and their RFC 8050 ``_ADDPATH`` subtypes (``path_id`` set).
  Multicast and RIB_GENERIC records are skipped and counted in ``MrtStats.skipped``.
- TABLE_DUMP (12, v1): one ``RibEntry`` per record; 2-byte ASNs. v1 has no peer table, so
  ``peer_index`` numbers peers in order of first appearance.
- BGP4MP (16) and BGP4MP_ET (17): ``Bgp4mpUpdate`` for UPDATE messages, ``StateChange`` for state
  changes, ``Bgp4mpMessage`` for other BGP messages (OPEN, KEEPALIVE, NOTIFICATION, ...).
  MESSAGE / MESSAGE_LOCAL carry 2-byte AS_PATHs; the ``_AS4`` subtypes 4-byte ones.
- The obsolete type 5 "BGP" (RFC 6396 appendix B.2) is read for its UPDATE and STATE_CHANGE subtypes
  (as bgpdump does); its other subtypes become ``Bgp4mpMessage`` or are skipped and counted.
- Anything else is skipped and counted by (type, subtype).

*Attributes* are decoded by ``speakers.native.codec.decode_path_attributes`` and interned per raw
attribute bytes, so a table dump with ~70k distinct attribute sets decodes ~70k times, not 500k.
RIB entries carry the RFC 6396 4.3.4 abbreviated MP_REACH_NLRI (next-hop length and address only);
the reader rewrites it into the full RFC 4760 form before handing it to the codec.

*Errors.* A short header, a body shorter than its record needs, an inconsistent length, or
attributes the codec rejects raise ``MrtError(path, record_index, offset, message)`` (``offset`` is
the byte offset of the record in the decompressed stream). With ``errors="count"`` the reader skips
the bad record (its length is known from the header), appends the error to ``MrtStats.errors`` and
goes on; a truncated stream ends the read in both modes. The reader raises nothing else.

*Speed.* The RIB loop is inlined in one generator; the cyclic GC threshold is raised while a reader
runs (DESIGN.md: the default thresholds cost ~40% in bulk loads) and restored when it finishes.

*Writer.* ``MrtWriter`` and the ``encode_*`` functions are pure: they return ``bytes``. File rotation,
compression and the event loop live in ``orchestrator.collector.files``.
"""

from __future__ import annotations

import bz2
import dataclasses
import enum
import gc
import io
import os
import queue
import socket
import struct
import threading
import types
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, Literal, NamedTuple

from orchestrator.errors import OrchestratorError
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family, key_from_parts, nlri_bytes
from speakers.native import codec

__all__ = [
    "Bgp4mpMessage",
    "Bgp4mpUpdate",
    "MrtError",
    "MrtReader",
    "MrtRecord",
    "MrtStats",
    "MrtType",
    "MrtWriter",
    "PeerEntry",
    "PeerIndex",
    "RibEntry",
    "StateChange",
    "encode_bgp4mp_message",
    "encode_bgp4mp_state_change",
    "encode_bgp4mp_update",
    "encode_peer_index_table",
    "encode_record",
    "encode_rib_record",
    "read_mrt",
    "subtype_name",
]


class MrtError(OrchestratorError):
    """A truncated or corrupt MRT record (or an unreadable file).

    ``record_index`` counts records from 0; ``offset`` is the record's byte offset in the
    decompressed stream (``-1`` when the file itself could not be opened).
    """

    def __init__(self, path: str, record_index: int, offset: int, message: str) -> None:
        self.path = path
        self.record_index = record_index
        self.offset = offset
        self.message = message
        where = "" if offset < 0 else f"record {record_index} at offset {offset}: "  # -1: the file itself
        super().__init__(f"{path}: {where}{message}")


class MrtType(enum.IntEnum):
    """MRT record types (RFC 6396 4, appendix B)."""

    BGP = 5  # obsolete
    TABLE_DUMP = 12
    TABLE_DUMP_V2 = 13
    BGP4MP = 16
    BGP4MP_ET = 17


# TABLE_DUMP_V2 subtypes (RFC 6396 4.3, RFC 8050 4)
PEER_INDEX_TABLE: Final = 1
RIB_IPV4_UNICAST: Final = 2
RIB_IPV4_MULTICAST: Final = 3
RIB_IPV6_UNICAST: Final = 4
RIB_IPV6_MULTICAST: Final = 5
RIB_GENERIC: Final = 6
RIB_IPV4_UNICAST_ADDPATH: Final = 8
RIB_IPV4_MULTICAST_ADDPATH: Final = 9
RIB_IPV6_UNICAST_ADDPATH: Final = 10
RIB_IPV6_MULTICAST_ADDPATH: Final = 11
RIB_GENERIC_ADDPATH: Final = 12

# BGP4MP subtypes (RFC 6396 4.4, RFC 8050 4)
BGP4MP_STATE_CHANGE: Final = 0
BGP4MP_MESSAGE: Final = 1
BGP4MP_MESSAGE_AS4: Final = 4
BGP4MP_STATE_CHANGE_AS4: Final = 5
BGP4MP_MESSAGE_LOCAL: Final = 6
BGP4MP_MESSAGE_AS4_LOCAL: Final = 7
BGP4MP_MESSAGE_ADDPATH: Final = 8
BGP4MP_MESSAGE_AS4_ADDPATH: Final = 9
BGP4MP_MESSAGE_LOCAL_ADDPATH: Final = 10
BGP4MP_MESSAGE_AS4_LOCAL_ADDPATH: Final = 11

_TD2_NAMES: Final = {
    1: "PEER_INDEX_TABLE", 2: "RIB_IPV4_UNICAST", 3: "RIB_IPV4_MULTICAST", 4: "RIB_IPV6_UNICAST",
    5: "RIB_IPV6_MULTICAST", 6: "RIB_GENERIC", 7: "GEO_PEER_TABLE", 8: "RIB_IPV4_UNICAST_ADDPATH",
    9: "RIB_IPV4_MULTICAST_ADDPATH", 10: "RIB_IPV6_UNICAST_ADDPATH", 11: "RIB_IPV6_MULTICAST_ADDPATH",
    12: "RIB_GENERIC_ADDPATH",
}
_BGP4MP_NAMES: Final = {
    0: "STATE_CHANGE", 1: "MESSAGE", 4: "MESSAGE_AS4", 5: "STATE_CHANGE_AS4", 6: "MESSAGE_LOCAL",
    7: "MESSAGE_AS4_LOCAL", 8: "MESSAGE_ADDPATH", 9: "MESSAGE_AS4_ADDPATH", 10: "MESSAGE_LOCAL_ADDPATH",
    11: "MESSAGE_AS4_LOCAL_ADDPATH",
}
_BGP_NAMES: Final = {
    0: "NULL", 1: "UPDATE", 2: "PREF_UPDATE", 3: "STATE_CHANGE", 4: "SYNC", 5: "OPEN", 6: "NOTIFY",
    7: "KEEPALIVE",
}


def subtype_name(mrt_type: int, subtype: int) -> str:
    """``"TABLE_DUMP_V2/RIB_IPV4_UNICAST"``-style name of a (type, subtype); numbers when unknown."""
    try:
        tname = MrtType(mrt_type).name
    except ValueError:
        return f"{mrt_type}/{subtype}"
    if mrt_type == MrtType.TABLE_DUMP_V2:
        sname = _TD2_NAMES.get(subtype)
    elif mrt_type in (MrtType.BGP4MP, MrtType.BGP4MP_ET):
        sname = _BGP4MP_NAMES.get(subtype)
    elif mrt_type == MrtType.TABLE_DUMP:
        sname = {1: "AFI_IPV4", 2: "AFI_IPV6"}.get(subtype)
    else:
        sname = _BGP_NAMES.get(subtype)
    return f"{tname}/{sname or subtype}"


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """One peer of a PEER_INDEX_TABLE."""

    ip: str
    asn: int
    bgp_id: str = "0.0.0.0"


@dataclass(frozen=True, slots=True)
class PeerIndex:
    """TABLE_DUMP_V2 PEER_INDEX_TABLE (RFC 6396 4.3.1)."""

    timestamp: int
    collector_id: str
    view_name: str
    peers: tuple[PeerEntry, ...]


_NO_IDS: Final[Mapping[Family, list[int]]] = types.MappingProxyType({})


class RibEntry(NamedTuple):
    """One RIB entry (one peer's path to one prefix). A NamedTuple: ~500k of these per table dump."""

    peer_index: int
    peer_ip: str
    peer_as: int
    family: Family
    key: int
    attrs: Attributes
    originated_time: int
    path_id: int | None = None


class Bgp4mpUpdate(NamedTuple):
    """A BGP UPDATE seen by a collector (BGP4MP / BGP4MP_ET / obsolete BGP type).

    ``announce`` / ``withdraw`` map each family present to its prefix keys. ``attrs`` is None when the
    UPDATE carries no attributes (withdraw only). As in the codec, its ``next_hop`` is the MP_REACH_NLRI
    next hop when there is one, else the NEXT_HOP attribute, which is also kept in ``ipv4_next_hop``;
    ``attrs_for(family)`` gives the attributes with the next hop that applies to that family.
    ``path_ids`` maps family → path ids parallel to ``announce`` (ADD-PATH subtypes only); withdrawn
    path ids are in ``withdraw_path_ids``. ``end_of_rib`` is set on an End-of-RIB marker.
    A NamedTuple, not a frozen dataclass: a full table is ~90k of these, and a frozen dataclass's
    ``__init__`` costs 4x more.
    """

    timestamp: float
    peer_ip: str
    peer_as: int
    local_ip: str
    local_as: int
    announce: dict[Family, list[int]]
    withdraw: dict[Family, list[int]]
    attrs: Attributes | None
    ipv4_next_hop: str = ""
    path_ids: Mapping[Family, list[int]] = _NO_IDS
    withdraw_path_ids: Mapping[Family, list[int]] = _NO_IDS
    end_of_rib: Family | None = None  # an empty UPDATE / empty MP_UNREACH_NLRI (RFC 4724 2)

    def attrs_for(self, family: Family) -> Attributes | None:
        """Attributes with the next hop of ``family`` (MP_REACH for IPv6, NEXT_HOP for IPv4)."""
        attrs = self.attrs
        if attrs is None or family is Family.IPV6 or not self.ipv4_next_hop:
            return attrs
        if attrs.next_hop == self.ipv4_next_hop:
            return attrs
        return dataclasses.replace(attrs, next_hop=self.ipv4_next_hop)

    @property
    def prefix_count(self) -> int:
        return sum(len(v) for v in self.announce.values())


@dataclass(frozen=True, slots=True)
class StateChange:
    """A BGP FSM state change (RFC 6396 4.4.1); states use the RFC 4271 numbering 1..6."""

    timestamp: float
    peer_ip: str
    peer_as: int
    local_ip: str
    local_as: int
    old_state: int
    new_state: int


@dataclass(frozen=True, slots=True)
class Bgp4mpMessage:
    """A BGP message other than UPDATE (OPEN=1, NOTIFICATION=3, KEEPALIVE=4, ROUTE-REFRESH=5)."""

    timestamp: float
    peer_ip: str
    peer_as: int
    local_ip: str
    local_as: int
    msg_type: int
    data: bytes  # the message after the 19-byte header


MrtRecord = PeerIndex | RibEntry | Bgp4mpUpdate | StateChange | Bgp4mpMessage


@dataclass(slots=True)
class MrtStats:
    """What a read saw. Filled in while the reader runs; final once it is exhausted."""

    records: Counter[tuple[int, int]] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[MrtError] = field(default_factory=list)
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    min_timestamp: int | None = None
    max_timestamp: int | None = None
    bytes_read: int = 0
    rib_entries: int = 0
    updates: int = 0
    announced: int = 0
    withdrawn: int = 0
    attr_cache_misses: int = 0

    @property
    def record_count(self) -> int:
        return sum(self.records.values())


# ---------------------------------------------------------------------------------------------
# Byte source: plain / gzip / bzip2 by magic, incremental, tolerant of a cut-off stream

_CHUNK: Final = 1 << 20
_HEADER = struct.Struct(">IHHI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_RIB_ENTRY = struct.Struct(">HIH")
_RIB_ENTRY_AP = struct.Struct(">HIIH")
_BGP4MP_AS4 = struct.Struct(">IIHH")  # peer AS, local AS, interface index, AFI
_BGP4MP_AS2 = struct.Struct(">HHHH")
_BGP_LEN_TYPE = struct.Struct(">HB")


class _Source:
    """Decompressed bytes of a file, in chunks. ``truncated`` is set when a compressed stream ended
    before its end marker (the data decoded up to there is still delivered)."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        head = raw.read(4)
        self._pending = head
        self.kind = "plain"
        self._dec: Any = None
        if head[:2] == b"\x1f\x8b":
            self.kind = "gzip"
        elif head[:3] == b"BZh":
            self.kind = "bzip2"
        self._new_decoder()
        self.truncated = False
        self._done = False

    def _new_decoder(self) -> None:
        if self.kind == "gzip":
            self._dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif self.kind == "bzip2":
            self._dec = bz2.BZ2Decompressor()

    def read(self) -> bytes:
        """Next chunk of decompressed data; ``b""`` at the end."""
        while True:
            if self._done:
                return b""
            data = self._pending or self._raw.read(_CHUNK)
            self._pending = b""
            if self._dec is None:
                return data
            if not data:
                self._done = True
                if not self._dec.eof:
                    self.truncated = True
                    if self.kind == "gzip":
                        tail: bytes = self._dec.flush()
                        if tail:
                            return tail
                return b""
            out: bytes = self._dec.decompress(data)
            while self._dec.eof and self._dec.unused_data:  # multi-member gzip / multi-stream bz2
                rest = self._dec.unused_data
                self._new_decoder()
                out += self._dec.decompress(rest)
            if out:
                return out


class _Prefetch:
    """Runs a bzip2 ``_Source`` in a thread: bz2 releases the GIL while it decompresses, so on two
    cores decompression overlaps record parsing (it is ~25% of reading a bz2 RIB; gzip is too cheap
    to be worth the hand-off). At most
    ``depth`` chunks wait in the queue; ``close`` stops the thread."""

    def __init__(self, src: _Source, depth: int = 4) -> None:
        self._src = src
        self.kind = src.kind
        self._q: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="mrt-decompress", daemon=True)
        self._thread.start()

    @property
    def truncated(self) -> bool:
        return self._src.truncated

    @truncated.setter
    def truncated(self, value: bool) -> None:
        self._src.truncated = value

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                item: bytes | BaseException = self._src.read()
            except Exception as exc:  # handed to the reader thread, which reports it
                item = exc
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not item or isinstance(item, BaseException):
                return

    def read(self) -> bytes:
        if self._done:
            return b""
        item = self._q.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if not item:
            self._done = True
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# Every type RFC 6396 defines (0-10 deprecated, OSPF, IS-IS): a first record of another type
# means the file is something else.
_MRT_TYPES: Final = frozenset((*range(0, 14), 16, 17, 32, 33, 48, 49))
_MAGIC: Final = ((b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x04\x22\x4d\x18", "lz4"),
                 (b"PK\x03\x04", "zip"), (b"\xd4\xc3\xb2\xa1", "pcap"), (b"\x0a\x0d\x0d\x0a", "pcapng"))
_MAX_SANE_LENGTH: Final = 1 << 24  # the largest real records (a RIB entry with 1000s of paths) are ~1 MB


def not_mrt_detail(head: bytes, mtype: int, length: int) -> str:
    """Why a file is not read as MRT, judged by its first record header ("" when it may be MRT): a
    format named by its magic bytes, or a type RFC 6396 does not define with a length no record has
    (an unknown type of a sane length is a newer record type, skipped and counted)."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return f"not an MRT file: {name} data (MRT files are read plain, gz or bz2)"
    if mtype not in _MRT_TYPES and length > _MAX_SANE_LENGTH:
        return (f"not an MRT file: the first record's type is {mtype}, which RFC 6396 does not define, "
                f"and its length {length} bytes (MRT files are read plain, gz or bz2)")
    return ""


def _open_source(source: str | os.PathLike[str] | bytes | BinaryIO) -> tuple[str, BinaryIO, bool]:
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>", io.BytesIO(bytes(source)), True
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:
            return path, open(path, "rb"), True
        except OSError as exc:
            raise MrtError(path, 0, -1, f"cannot open: {exc.strerror or exc}") from None
    return getattr(source, "name", "<stream>"), source, False


# ---------------------------------------------------------------------------------------------
# Attribute decoding with interning


def _ip4(b: bytes) -> str:
    return socket.inet_ntoa(b)


def _ip(b: bytes) -> str:
    return socket.inet_ntoa(b) if len(b) == 4 else socket.inet_ntop(socket.AF_INET6, b)


def _expand_rib_mp_reach(raw: bytes, family: Family) -> bytes:
    """Rewrite the abbreviated MP_REACH_NLRI of a RIB entry (RFC 6396 4.3.4: next-hop length and
    next hop only) into the full RFC 4760 form the codec expects; other attributes pass unchanged."""
    pos, end = 0, len(raw)
    while pos + 3 <= end:
        flags, atype = raw[pos], raw[pos + 1]
        if flags & 0x10:
            if pos + 4 > end:
                return raw
            alen, hdr = (raw[pos + 2] << 8) | raw[pos + 3], 4
        else:
            alen, hdr = raw[pos + 2], 3
        if atype == 14:
            value = raw[pos + hdr:pos + hdr + alen]
            if value and value[0] == alen - 1:  # abbreviated (a full one starts with AFI 0x00)
                full = struct.pack(">HB", family.afi, 1) + value + b"\x00"
            elif len(value) >= 5 and 4 + value[3] < len(value):  # full form: drop its NLRI
                full = value[:4 + value[3]] + b"\x00"
            else:
                return raw
            attr = bytes((flags | 0x10, 14)) + _U16.pack(len(full)) + full
            return raw[:pos] + attr + raw[pos + hdr + alen:]
        pos += hdr + alen
    return raw


class _AttrDecoder:
    """Raw attribute bytes → interned ``Attributes`` (plus the MP fields the reader needs).

    One dict per (context, ASN width), keyed by the raw bytes: the hot path is one ``dict.get``.
    """

    __slots__ = ("_norm6", "_rib", "_stats")

    def __init__(self, stats: MrtStats) -> None:
        self._rib: dict[tuple[Family, bool], dict[bytes, Attributes]] = {
            (f, a): {} for f in Family for a in (False, True)}
        self._norm6: dict[tuple[bytes, bool], Attributes] = {}
        self._stats = stats

    def rib_cache(self, family: Family, asn4: bool) -> dict[bytes, Attributes]:
        return self._rib[(family, asn4)]

    def rib(self, raw: bytes, family: Family, asn4: bool) -> Attributes:
        cache = self._rib[(family, asn4)]
        hit = cache.get(raw)
        if hit is not None:
            return hit
        data = raw
        if family is Family.IPV6:
            # Some dumpers write the full MP_REACH_NLRI, prefix included, so the raw bytes differ per
            # prefix: intern on the normalized form too.
            data = _expand_rib_mp_reach(raw, family)
            hit = self._norm6.get((data, asn4))
            if hit is not None:
                if len(cache) > 1_000_000:
                    cache.clear()
                cache[raw] = hit
                return hit
        self._stats.attr_cache_misses += 1
        dec = codec.decode_path_attributes(data, asn4=asn4)
        attrs = dec.attrs
        if family is Family.IPV4 and dec.next_hop4 and attrs.next_hop != dec.next_hop4:
            attrs = dataclasses.replace(attrs, next_hop=dec.next_hop4)
        if len(cache) > 1_000_000:
            cache.clear()
        cache[raw] = attrs
        if family is Family.IPV6:
            if len(self._norm6) > 1_000_000:
                self._norm6.clear()
            self._norm6[(data, asn4)] = attrs
        return attrs


def _mask_key(key: int, plen: int) -> int:
    if plen & 7:
        return key & ~((1 << (8 - (plen & 7))) - 1)
    return key


# ---------------------------------------------------------------------------------------------
# The reader


class _Corrupt(Exception):
    """Internal: a record body is inconsistent (turned into MrtError with position)."""


_Errors = Literal["raise", "count"]


class MrtReader:
    """Iterate the typed records of one MRT file; ``stats`` fills in as it goes.

    ``source`` is a path, the file's bytes, or a binary stream; compression is detected from the
    content. ``errors="raise"`` raises the first ``MrtError``; ``"count"`` skips corrupt records and
    appends the errors to ``stats.errors`` (a truncated stream still ends the read). Opening a path
    that cannot be read raises ``MrtError`` at construction. ``decompress_thread=True`` inflates
    bzip2 in a second thread: ~15% faster on an idle second core, slower when the cores are busy
    (benchmarks/RESULTS.md), so it is opt-in.
    """

    def __init__(self, source: str | os.PathLike[str] | bytes | BinaryIO, *,
                 errors: _Errors = "raise", raise_gc_threshold: bool = True,
                 decompress_thread: bool = False) -> None:
        if errors not in ("raise", "count"):
            raise ValueError(f"errors must be 'raise' or 'count', not {errors!r}")
        self.path, self._fh, self._owns = _open_source(source)
        self.errors = errors
        self.stats = MrtStats()
        self._gc = raise_gc_threshold
        self._threads = decompress_thread
        self.peer_index: PeerIndex | None = None

    def __iter__(self) -> Iterator[MrtRecord]:
        old = gc.get_threshold()
        if self._gc:
            gc.set_threshold(max(old[0], 100_000), max(old[1], 50), max(old[2], 100))
        try:
            yield from self._records()
        finally:
            if self._gc:
                gc.set_threshold(*old)
            if self._owns:
                self._fh.close()

    def _fail(self, index: int, offset: int, message: str) -> None:
        err = MrtError(self.path, index, offset, message)
        if self.errors == "raise":
            raise err
        self.stats.errors.append(err)

    def _records(self) -> Iterator[MrtRecord]:
        try:
            plain = _Source(self._fh)
        except OSError as exc:
            raise MrtError(self.path, 0, 0, f"cannot read: {exc}") from None
        src: _Source | _Prefetch = plain
        if plain.kind == "bzip2" and self._threads:  # gzip inflates ~10x faster: a thread costs more
            src = _Prefetch(plain)
        try:
            yield from self._parse(src)
        finally:
            if isinstance(src, _Prefetch):
                src.close()

    def _parse(self, src: _Source | _Prefetch) -> Iterator[MrtRecord]:  # one loop on purpose (speed)
        stats = self.stats
        records = stats.records
        rcount: dict[int, int] = {}
        buf = b""
        pos = 0  # position in buf
        base = 0  # stream offset of buf[0]
        index = 0
        eof = False
        ipv4, ipv6 = Family.IPV4, Family.IPV6
        attrs_dec = _AttrDecoder(stats)
        rib_miss = attrs_dec.rib
        cache4 = attrs_dec.rib_cache(ipv4, True)
        cache6 = attrs_dec.rib_cache(ipv6, True)
        unpack_entry_ap = _RIB_ENTRY_AP.unpack_from
        unpack_u32 = _U32.unpack_from
        unpack_as4 = _BGP4MP_AS4.unpack_from
        unpack_as2 = _BGP4MP_AS2.unpack_from
        unpack_bgp_len_type = _BGP_LEN_TYPE.unpack_from
        last_ts: int | None = None
        peers: list[tuple[str, int]] = []
        v1_peers: dict[tuple[str, int], int] = {}
        ip_cache: dict[bytes, str] = {}
        unpack_header = _HEADER.unpack_from
        unpack_entry = _RIB_ENTRY.unpack_from
        unpack_u16 = _U16.unpack_from
        from_bytes = int.from_bytes
        tmin = tmax = None

        def more(need: int) -> bool:
            nonlocal buf, pos, base, eof
            chunks = [buf[pos:]]
            have = len(chunks[0])
            base += pos
            pos = 0
            while have < need and not eof:
                try:
                    chunk = src.read()
                except (OSError, EOFError, ValueError, zlib.error) as exc:
                    eof = True
                    src.truncated = True
                    self._truncation_detail = f"{src.kind} stream is corrupt: {exc}"
                    break
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
                have += len(chunk)
            buf = b"".join(chunks)
            return have >= need

        self._truncation_detail = ""
        try:
            while True:
                if pos + 12 > len(buf) and not more(12):
                    if pos < len(buf):
                        detail = self._truncation_detail or (
                            f"{src.kind} stream ended early" if src.truncated else "file ends")
                        self._fail(index, base + pos,
                                   f"truncated record header ({len(buf) - pos} of 12 bytes; {detail})")
                    elif src.truncated:
                        self._fail(index, base + pos, self._truncation_detail
                                   or f"{src.kind} stream ended before its end marker")
                    break
                ts, mtype, subtype, length = unpack_header(buf, pos)
                if index == 0 and base + pos == 0 and (detail := not_mrt_detail(buf[:8], mtype, length)):
                    self._fail(0, 0, detail)
                    break
                if pos + 12 + length > len(buf) and not more(12 + length):
                    detail = self._truncation_detail or (
                        f"{src.kind} stream ended early" if src.truncated else "file ends")
                    self._fail(index, base + pos,
                               f"truncated {subtype_name(mtype, subtype)} record: header says "
                               f"{length} bytes, only {len(buf) - pos - 12} present ({detail})")
                    break
                end = pos + 12 + length
                offset = base + pos
                rkey = (mtype << 16) | subtype
                rcount[rkey] = rcount.get(rkey, 0) + 1
                if ts != last_ts:
                    if tmin is None or ts < tmin:
                        tmin = ts
                    if tmax is None or ts > tmax:
                        tmax = ts
                    if last_ts is None:
                        stats.first_timestamp = ts
                    last_ts = ts
                try:
                    if mtype == 13 and (subtype == 2 or subtype == 4 or subtype == 8 or subtype == 10):
                        # RIB_IPV4/6_UNICAST[_ADDPATH] (RFC 6396 4.3.2, RFC 8050 4), parsed in place in buf
                        p = pos + 16  # after the header and the sequence number
                        pos = end
                        plen = buf[p]
                        if subtype == 2 or subtype == 8:
                            family = ipv4
                            cget = cache4.get
                            if plen > 32:
                                raise _Corrupt(f"prefix length {plen}")
                        else:
                            family = ipv6
                            cget = cache6.get
                            if plen > 128:
                                raise _Corrupt(f"prefix length {plen}")
                        q = p + 1 + ((plen + 7) >> 3)
                        key = from_bytes(buf[p:q], "big")
                        if plen & 7:
                            key &= ~((1 << (8 - (plen & 7))) - 1)
                        (count,) = unpack_u16(buf, q)
                        p = q + 2
                        if subtype < 8:
                            if count == 1:  # the common case: validate fully, then yield without a list
                                peer_i, orig, alen = unpack_entry(buf, p)
                                p += 8
                                q = p + alen
                                if q != end:
                                    raise _Corrupt(f"RIB entry ends {q - end:+d} bytes from the record end")
                                peer_ip, peer_as = peers[peer_i]
                                raw = buf[p:q]
                                stats.rib_entries += 1
                                yield RibEntry(peer_i, peer_ip, peer_as, family, key,
                                               cget(raw) or rib_miss(raw, family, True), orig, None)
                                index += 1
                                continue
                            out: list[RibEntry] = []
                            for _ in range(count):
                                peer_i, orig, alen = unpack_entry(buf, p)
                                p += 8
                                q = p + alen
                                if q > end:
                                    raise _Corrupt("attribute length past the end of the record")
                                peer_ip, peer_as = peers[peer_i]
                                raw = buf[p:q]
                                out.append(RibEntry(peer_i, peer_ip, peer_as, family, key,
                                                    cget(raw) or rib_miss(raw, family, True), orig, None))
                                p = q
                        else:
                            out = []
                            for _ in range(count):
                                peer_i, orig, path_id, alen = unpack_entry_ap(buf, p)
                                p += 12
                                q = p + alen
                                if q > end:
                                    raise _Corrupt("attribute length past the end of the record")
                                peer_ip, peer_as = peers[peer_i]
                                raw = buf[p:q]
                                out.append(RibEntry(peer_i, peer_ip, peer_as, family, key,
                                                    cget(raw) or rib_miss(raw, family, True), orig, path_id))
                                p = q
                        if p != end:
                            raise _Corrupt(f"{end - p} bytes left after {count} RIB entries")
                        stats.rib_entries += count
                        yield from out
                        index += 1
                        continue
                    if (mtype == 16 or mtype == 17) and (subtype == 4 or subtype == 1):
                        # BGP4MP(_ET) MESSAGE(_AS4) (RFC 6396 4.4.2/4.4.3), parsed in place in buf
                        p = pos + 12
                        pos = end
                        tsf: float = ts
                        if mtype == 17:
                            tsf = ts + unpack_u32(buf, p)[0] / 1e6
                            p += 4
                        if subtype == 4:
                            peer_as, local_as, _ifindex, afi = unpack_as4(buf, p)
                            p += 12
                        else:
                            peer_as, local_as, _ifindex, afi = unpack_as2(buf, p)
                            p += 8
                        alen = 4 if afi == 1 else 16
                        if afi != 1 and afi != 2:
                            raise _Corrupt(f"unknown AFI {afi}")
                        q = p + 2 * alen
                        if q + 19 > end:
                            raise _Corrupt("record too short for its addresses and a BGP header")
                        raw_ip = buf[p:p + alen]
                        peer_ip = ip_cache.get(raw_ip) or ip_cache.setdefault(raw_ip, _ip(raw_ip))
                        raw_ip = buf[p + alen:q]
                        local_ip = ip_cache.get(raw_ip) or ip_cache.setdefault(raw_ip, _ip(raw_ip))
                        mlen, bgp_type = unpack_bgp_len_type(buf, q + 16)
                        if mlen != end - q:
                            raise _Corrupt(f"BGP message length {mlen} does not match the record ({end - q})")
                        if bgp_type == 2:
                            yield self._update(buf, q + 19, end, tsf, peer_ip, peer_as, local_ip, local_as,
                                               subtype == 4, False)
                        else:
                            yield Bgp4mpMessage(tsf, peer_ip, peer_as, local_ip, local_as, bgp_type,
                                                buf[q + 19:end])
                        index += 1
                        continue
                    body = buf[pos + 12:end]
                    pos = end
                    if mtype == 16 or mtype == 17:
                        rec = self._bgp4mp(body, ts, mtype, subtype, ip_cache)
                        if rec is not None:
                            yield rec
                    elif mtype == 13:
                        if subtype == 1:
                            pi = _parse_peer_index(body, ts)
                            peers = [(p_.ip, p_.asn) for p_ in pi.peers]
                            self.peer_index = pi
                            yield pi
                        else:
                            stats.skipped[subtype_name(mtype, subtype)] += 1
                    elif mtype == 12:
                        entry = _parse_table_dump_v1(body, subtype, v1_peers, attrs_dec)
                        if entry is None:
                            stats.skipped[subtype_name(mtype, subtype)] += 1
                        else:
                            stats.rib_entries += 1
                            yield entry
                    elif mtype == 5:
                        rec = self._bgp_obsolete(body, ts, subtype)
                        if rec is None:
                            stats.skipped[subtype_name(mtype, subtype)] += 1
                        else:
                            yield rec
                    else:
                        stats.skipped[subtype_name(mtype, subtype)] += 1
                except (_Corrupt, struct.error, IndexError, ValueError, KeyError, TypeError, OSError,
                        OverflowError, UnicodeDecodeError, codec.BgpError) as exc:
                    if isinstance(exc, IndexError) and mtype == 13 and not peers:
                        msg = "RIB record before any PEER_INDEX_TABLE"
                    elif isinstance(exc, IndexError | struct.error):
                        msg = f"record body too short or inconsistent ({exc})"
                    else:
                        msg = str(exc) or type(exc).__name__
                    self._fail(index, offset, f"corrupt {subtype_name(mtype, subtype)} record: {msg}")
                index += 1
        finally:
            stats.bytes_read = base + pos
            stats.min_timestamp = tmin
            stats.max_timestamp = tmax
            stats.last_timestamp = last_ts
            for rkey, n in rcount.items():
                records[(rkey >> 16, rkey & 0xFFFF)] += n

    # -- BGP4MP ---------------------------------------------------------------------------------

    def _bgp4mp(self, body: bytes, ts: int, mtype: int, subtype: int,
                ip_cache: dict[bytes, str]) -> MrtRecord | None:
        p = 0
        tsf: float = ts
        if mtype == 17:  # BGP4MP_ET: microseconds first (RFC 6396 3)
            tsf = ts + _U32.unpack_from(body, 0)[0] / 1e6
            p = 4
        if subtype in (BGP4MP_STATE_CHANGE, BGP4MP_STATE_CHANGE_AS4):
            as4 = subtype == BGP4MP_STATE_CHANGE_AS4
        elif subtype in _BGP4MP_NAMES:
            as4 = subtype in (4, 7, 9, 11)
        else:
            self.stats.skipped[subtype_name(mtype, subtype)] += 1
            return None
        if as4:
            peer_as, local_as = struct.unpack_from(">II", body, p)
            p += 8
        else:
            peer_as, local_as = struct.unpack_from(">HH", body, p)
            p += 4
        _ifindex, afi = struct.unpack_from(">HH", body, p)
        p += 4
        alen = 4 if afi == 1 else 16 if afi == 2 else 0
        if not alen:
            raise _Corrupt(f"unknown AFI {afi}")
        raw_peer = body[p:p + alen]
        raw_local = body[p + alen:p + 2 * alen]
        if len(raw_local) != alen:
            raise _Corrupt("record body too short for the addresses")
        p += 2 * alen
        peer_ip = ip_cache.get(raw_peer)
        if peer_ip is None:
            peer_ip = ip_cache[raw_peer] = _ip(raw_peer)
        local_ip = ip_cache.get(raw_local)
        if local_ip is None:
            local_ip = ip_cache[raw_local] = _ip(raw_local)
        if subtype in (BGP4MP_STATE_CHANGE, BGP4MP_STATE_CHANGE_AS4):
            old, new = struct.unpack_from(">HH", body, p)
            if p + 4 != len(body):
                raise _Corrupt("STATE_CHANGE of the wrong length")
            return StateChange(tsf, peer_ip, peer_as, local_ip, local_as, old, new)
        # BGP message: marker, length, type (RFC 4271 4.1)
        if len(body) - p < 19:
            raise _Corrupt("BGP message shorter than its header")
        (mlen,) = _U16.unpack_from(body, p + 16)
        mtype_bgp = body[p + 18]
        if mlen != len(body) - p or mlen < 19:
            raise _Corrupt(f"BGP message length {mlen} does not match the record ({len(body) - p})")
        if mtype_bgp != 2:
            return Bgp4mpMessage(tsf, peer_ip, peer_as, local_ip, local_as, mtype_bgp, body[p + 19:])
        add_path = subtype >= BGP4MP_MESSAGE_ADDPATH
        return self._update(body, p + 19, len(body), tsf, peer_ip, peer_as, local_ip, local_as, as4, add_path)

    def _update(self, buf: bytes, m: int, end: int, ts: float, peer_ip: str, peer_as: int, local_ip: str,
                local_as: int, asn4: bool, add_path: bool) -> Bgp4mpUpdate:
        """UPDATE body ``buf[m:end]`` (after the 19-byte header; RFC 4271 4.3) → Bgp4mpUpdate.

        Decoded by ``codec.decode_update``: its fast path and shared interning cache make an UPDATE
        whose attribute block was seen before one dict probe. RFC 7606 applies as on a live session:
        announcements of a treat-as-withdraw UPDATE come out as withdrawals (counted in
        ``stats.skipped``); NLRI of families other than IPv4/IPv6 unicast are skipped and counted.
        """
        dec = codec.decode_update(buf[m:end], asn4=asn4, add_path=add_path)
        stats = self.stats
        stats.updates += 1
        announce: dict[Family, list[int]] = {}
        withdraw: dict[Family, list[int]] = {}
        attrs: Attributes | None = None
        nh4 = ""
        path_ids: dict[Family, list[int]] = {}
        wpath_ids: dict[Family, list[int]] = {}
        for fu in dec.families:
            fam = fu.family
            if fu.announce:
                announce[fam] = fu.announce
                stats.announced += len(fu.announce)
                if fu.attrs is not None:
                    if fam is Family.IPV4:
                        nh4 = fu.attrs.next_hop
                        if attrs is None:
                            attrs = fu.attrs
                    else:
                        attrs = fu.attrs
            if fu.withdraw:
                withdraw[fam] = fu.withdraw
                stats.withdrawn += len(fu.withdraw)
            if add_path:
                path_ids[fam] = fu.announce_path_ids
                wpath_ids[fam] = fu.withdraw_path_ids
        if dec.treat_as_withdraw:
            stats.skipped["UPDATE treat-as-withdraw (RFC 7606)"] += 1
        for afi_safi in dec.unsupported:
            stats.skipped[f"UPDATE with NLRI of AFI/SAFI {afi_safi[0]}/{afi_safi[1]}"] += 1
        return Bgp4mpUpdate(ts, peer_ip, peer_as, local_ip, local_as, announce, withdraw, attrs, nh4,
                            path_ids if add_path else _NO_IDS, wpath_ids if add_path else _NO_IDS,
                            dec.end_of_rib)

    def _bgp_obsolete(self, body: bytes, ts: int, subtype: int) -> MrtRecord | None:
        """Obsolete type 5 (RFC 6396 B.2.1): IPv4 only, 2-byte ASNs, message without BGP header."""
        if subtype == 3:  # STATE_CHANGE: peer AS, peer IP, old, new
            peer_as, raw_ip, old, new = struct.unpack_from(">H4sHH", body, 0)
            if len(body) != 10:
                raise _Corrupt("STATE_CHANGE of the wrong length")
            return StateChange(float(ts), _ip4(raw_ip), peer_as, "0.0.0.0", 0, old, new)
        if subtype in (1, 5, 6, 7):  # UPDATE, OPEN, NOTIFY, KEEPALIVE
            peer_as, raw_peer, local_as, raw_local = struct.unpack_from(">H4sH4s", body, 0)
            msg = body[12:]
            if subtype == 1:
                return self._update(body, 12, len(body), float(ts), _ip4(raw_peer), peer_as, _ip4(raw_local),
                                    local_as, False, False)
            bgp_type = {5: 1, 6: 3, 7: 4}[subtype]
            return Bgp4mpMessage(float(ts), _ip4(raw_peer), peer_as, _ip4(raw_local), local_as, bgp_type,
                                 msg)
        return None


def _parse_peer_index(body: bytes, ts: int) -> PeerIndex:
    """PEER_INDEX_TABLE (RFC 6396 4.3.1)."""
    collector = _ip4(body[0:4])
    (name_len,) = _U16.unpack_from(body, 4)
    view = body[6:6 + name_len].decode("utf-8", "replace")
    p = 6 + name_len
    (count,) = _U16.unpack_from(body, p)
    p += 2
    peers: list[PeerEntry] = []
    for _ in range(count):
        ptype = body[p]
        bgp_id = _ip4(body[p + 1:p + 5])
        p += 5
        alen = 16 if ptype & 1 else 4
        raw = body[p:p + alen]
        if len(raw) != alen:
            raise _Corrupt("peer entry past the end of the record")
        p += alen
        if ptype & 2:
            (asn,) = _U32.unpack_from(body, p)
            p += 4
        else:
            (asn,) = _U16.unpack_from(body, p)
            p += 2
        peers.append(PeerEntry(_ip(raw), asn, bgp_id))
    if p != len(body):
        raise _Corrupt(f"{len(body) - p} bytes left after {count} peers")
    return PeerIndex(ts, collector, view, tuple(peers))


def _parse_table_dump_v1(body: bytes, subtype: int, v1_peers: dict[tuple[str, int], int],
                         attrs_dec: _AttrDecoder) -> RibEntry | None:
    """TABLE_DUMP (RFC 6396 4.2): one entry per record, 2-byte ASNs."""
    if subtype == 1:
        family, alen = Family.IPV4, 4
    elif subtype == 2:
        family, alen = Family.IPV6, 16
    else:
        return None
    p = 4  # view number, sequence number
    network = int.from_bytes(body[p:p + alen], "big")
    p += alen
    plen = body[p]
    if plen > family.max_length:
        raise _Corrupt(f"prefix length {plen}")
    p += 2  # length, status
    (orig,) = _U32.unpack_from(body, p)
    p += 4
    raw_peer = body[p:p + alen]
    p += alen
    (peer_as,) = _U16.unpack_from(body, p)
    (attr_len,) = _U16.unpack_from(body, p + 2)
    p += 4
    if p + attr_len != len(body):
        raise _Corrupt(f"attribute length {attr_len} does not match the record")
    peer_ip = _ip(raw_peer)
    peer_i = v1_peers.setdefault((peer_ip, peer_as), len(v1_peers))
    key = key_from_parts(network, plen, family)
    attrs = attrs_dec.rib(body[p:], family, False)
    return RibEntry(peer_i, peer_ip, peer_as, family, key, attrs, orig, None)


def read_mrt(source: str | os.PathLike[str] | bytes | BinaryIO, *, errors: _Errors = "raise",
             stats: MrtStats | None = None) -> Iterator[MrtRecord]:
    """Stream the typed records of an MRT file (see ``MrtReader``). ``stats``, when given, is filled.

    Raises ``MrtError`` (when the path cannot be opened, and with ``errors="raise"`` on the first
    truncated or corrupt record).
    """
    reader = MrtReader(source, errors=errors)
    if stats is not None:
        reader.stats = stats
    return iter(reader)


# ---------------------------------------------------------------------------------------------
# The writer (pure)


def encode_record(timestamp: int, mrt_type: int, subtype: int, body: bytes) -> bytes:
    """One MRT record: common header (RFC 6396 2) + body."""
    return _HEADER.pack(timestamp & 0xFFFFFFFF, mrt_type, subtype, len(body)) + body


def _addr_bytes(ip: str) -> bytes:
    if ":" in ip:
        return socket.inet_pton(socket.AF_INET6, ip)
    return socket.inet_aton(ip)


def encode_peer_index_table(peers: Sequence[PeerEntry], *, timestamp: int, collector_id: str = "0.0.0.0",
                            view_name: str = "") -> bytes:
    """A TABLE_DUMP_V2 PEER_INDEX_TABLE record (all ASNs written as 4 bytes)."""
    name = view_name.encode()
    parts = [socket.inet_aton(collector_id), _U16.pack(len(name)), name, _U16.pack(len(peers))]
    for peer in peers:
        raw = _addr_bytes(peer.ip)
        ptype = 2 | (1 if len(raw) == 16 else 0)
        parts += [bytes((ptype,)), socket.inet_aton(peer.bgp_id), raw, _U32.pack(peer.asn)]
    return encode_record(timestamp, MrtType.TABLE_DUMP_V2, PEER_INDEX_TABLE, b"".join(parts))


def _tlv(flags: int, atype: int, value: bytes) -> bytes:
    if len(value) > 255:
        return bytes((flags | 0x10, atype)) + _U16.pack(len(value)) + value
    return bytes((flags & ~0x10, atype, len(value))) + value


class _AttrEncoder:
    """Attributes → attribute bytes, cached per attribute set (a table shares ~70k sets).

    Keyed by ``id(attrs)`` with the object kept in the value (so the id stays valid): hashing a
    frozen dataclass walks every field, an ``id`` does not. Equal but distinct objects encode twice,
    which is harmless.
    """

    __slots__ = ("_by_family",)

    def __init__(self) -> None:
        self._by_family: dict[Family, dict[int, tuple[Attributes, bytes]]] = {f: {} for f in Family}

    def rib(self, attrs: Attributes, family: Family) -> bytes:
        cache = self._by_family[family]
        hit = cache.get(id(attrs))
        if hit is not None:
            return hit[1]
        if family is Family.IPV6:
            # RFC 6396 4.3.4: the RIB entry's MP_REACH_NLRI holds the next hop only.
            nh = _addr_bytes(attrs.next_hop) if attrs.next_hop else b""
            raw = codec.encode_path_attributes(attrs, with_next_hop=False)
            raw += _tlv(0x80, 14, bytes((len(nh),)) + nh)
        else:
            raw = codec.encode_path_attributes(attrs, asn4=True)
        if len(cache) > 1_000_000:
            cache.clear()
        cache[id(attrs)] = (attrs, raw)
        return raw


_RibPath = tuple[int, Attributes, int] | tuple[int, Attributes, int, int]
_ENC_HEADER_SEQ = struct.Struct(">IHHII")  # MRT header + sequence number


def encode_rib_record(family: Family, key: int, paths: Sequence[_RibPath], *, sequence: int, timestamp: int,
                      encoder: _AttrEncoder | None = None, npeers: int = 0xFFFF + 1) -> bytes:
    """One RIB_IPV4/6_UNICAST record, or its ``_ADDPATH`` variant when the paths carry path ids
    (``(peer_index, attrs, originated_time, path_id)``). Raises ValueError for a peer index
    ``>= npeers``."""
    enc = encoder or _AttrEncoder()
    add_path = False
    for p in paths:
        if len(p) == 4:
            add_path = True
            break
    cache = enc._by_family[family]
    parts = [b"", nlri_bytes(key), _U16.pack(len(paths))]
    pack_entry = _RIB_ENTRY_AP.pack if add_path else _RIB_ENTRY.pack
    for path in paths:
        attrs = path[1]
        hit = cache.get(id(attrs))
        raw = hit[1] if hit is not None else enc.rib(attrs, family)
        if not 0 <= path[0] < npeers:
            raise ValueError(f"peer index {path[0]} not in the peer table ({npeers} peers)")
        if add_path:
            path_id = path[3] if len(path) == 4 else 0
            parts.append(pack_entry(path[0], path[2] & 0xFFFFFFFF, path_id, len(raw)))
        else:
            parts.append(pack_entry(path[0], path[2] & 0xFFFFFFFF, len(raw)))
        parts.append(raw)
    if family is Family.IPV4:
        subtype = RIB_IPV4_UNICAST_ADDPATH if add_path else RIB_IPV4_UNICAST
    else:
        subtype = RIB_IPV6_UNICAST_ADDPATH if add_path else RIB_IPV6_UNICAST
    length = 4 + sum(len(x) for x in parts)
    parts[0] = _ENC_HEADER_SEQ.pack(timestamp & 0xFFFFFFFF, MrtType.TABLE_DUMP_V2, subtype, length,
                                    sequence & 0xFFFFFFFF)
    return b"".join(parts)


def _bgp4mp_header(peer_ip: str, peer_as: int, local_ip: str, local_as: int) -> bytes:
    raw_peer, raw_local = _addr_bytes(peer_ip), _addr_bytes(local_ip)
    if len(raw_peer) != len(raw_local):
        raise ValueError("peer and local addresses must be of the same family")
    afi = 1 if len(raw_peer) == 4 else 2
    return struct.pack(">IIHH", peer_as, local_as, 0, afi) + raw_peer + raw_local


def _timestamp_parts(timestamp: float, extended: bool) -> tuple[int, bytes]:
    secs = int(timestamp)
    if not extended:
        return secs, b""
    return secs, _U32.pack(min(999_999, round((timestamp - secs) * 1e6)))


def encode_bgp4mp_message(timestamp: float, peer_ip: str, peer_as: int, local_ip: str, local_as: int,
                          message: bytes, *, extended: bool = False) -> bytes:
    """A BGP4MP(_ET) MESSAGE_AS4 record around a complete BGP message (header included)."""
    secs, micro = _timestamp_parts(timestamp, extended)
    body = micro + _bgp4mp_header(peer_ip, peer_as, local_ip, local_as) + message
    mtype = MrtType.BGP4MP_ET if extended else MrtType.BGP4MP
    return encode_record(secs, mtype, BGP4MP_MESSAGE_AS4, body)


def encode_bgp4mp_state_change(timestamp: float, peer_ip: str, peer_as: int, local_ip: str, local_as: int,
                               old_state: int, new_state: int, *, extended: bool = False) -> bytes:
    """A BGP4MP(_ET) STATE_CHANGE_AS4 record."""
    secs, micro = _timestamp_parts(timestamp, extended)
    body = micro + _bgp4mp_header(peer_ip, peer_as, local_ip, local_as) + struct.pack(
        ">HH", old_state, new_state)
    mtype = MrtType.BGP4MP_ET if extended else MrtType.BGP4MP
    return encode_record(secs, mtype, BGP4MP_STATE_CHANGE_AS4, body)


def build_update_message(family: Family, announce: Sequence[int], withdraw: Sequence[int],
                         attrs: Attributes | None) -> bytes:
    """A complete BGP UPDATE message (4-byte AS_PATH) for one family. IPv6 goes in MP_(UN)REACH."""
    raw_attrs = b""
    withdrawn = b""
    nlri = b""
    if family is Family.IPV4:
        withdrawn = b"".join(nlri_bytes(k) for k in withdraw)
        nlri = b"".join(nlri_bytes(k) for k in announce)
        if announce and attrs is not None:
            raw_attrs = codec.encode_path_attributes(attrs, asn4=True)
    else:
        if announce and attrs is not None:
            nh = _addr_bytes(attrs.next_hop) if attrs.next_hop else bytes(16)
            mp = struct.pack(">HBB", 2, 1, len(nh)) + nh + b"\x00" + b"".join(nlri_bytes(k) for k in announce)
            raw_attrs = codec.encode_path_attributes(attrs, with_next_hop=False)
            raw_attrs += _tlv(0x80, 14, mp)
        if withdraw:
            raw_attrs += _tlv(0x80, 15, struct.pack(">HB", 2, 1) + b"".join(nlri_bytes(k) for k in withdraw))
    body = _U16.pack(len(withdrawn)) + withdrawn + _U16.pack(len(raw_attrs)) + raw_attrs + nlri
    if len(body) + 19 > 65535:
        raise ValueError("UPDATE too large for one BGP message")
    return b"\xff" * 16 + _U16.pack(len(body) + 19) + b"\x02" + body


def encode_bgp4mp_update(timestamp: float, peer_ip: str, peer_as: int, local_ip: str, local_as: int,
                         family: Family, announce: Sequence[int], withdraw: Sequence[int],
                         attrs: Attributes | None, *, extended: bool = False) -> bytes:
    """A BGP4MP(_ET) MESSAGE_AS4 record carrying one UPDATE built from fields."""
    return encode_bgp4mp_message(timestamp, peer_ip, peer_as, local_ip, local_as,
                                 build_update_message(family, announce, withdraw, attrs), extended=extended)


class MrtWriter:
    """Builds TABLE_DUMP_V2 dumps and BGP4MP records as bytes (no I/O).

    ``peers`` is the PEER_INDEX_TABLE; RIB paths refer to peers by their index in it.
    """

    def __init__(self, peers: Sequence[PeerEntry], *, collector_id: str = "0.0.0.0", view_name: str = "",
                 timestamp: int = 0) -> None:
        if len(peers) > 0xFFFF:
            raise ValueError("a PEER_INDEX_TABLE holds at most 65535 peers")
        self.peers = tuple(peers)
        self.collector_id = collector_id
        self.view_name = view_name
        self.timestamp = timestamp
        self._enc = _AttrEncoder()

    def peer_index_table(self) -> bytes:
        return encode_peer_index_table(self.peers, timestamp=self.timestamp, collector_id=self.collector_id,
                                       view_name=self.view_name)

    def rib_records(self, entries: Iterable[tuple[Family, int, Sequence[_RibPath]]]) -> Iterator[bytes]:
        """PEER_INDEX_TABLE, then one RIB record per (family, key, paths), sequence numbers from 0."""
        yield self.peer_index_table()
        enc, ts, npeers = self._enc, self.timestamp, len(self.peers)
        for seq, (family, key, paths) in enumerate(entries):
            yield encode_rib_record(family, key, paths, sequence=seq, timestamp=ts, encoder=enc,
                                    npeers=npeers)

    def rib_dump(self, entries: Iterable[tuple[Family, int, Sequence[_RibPath]]]) -> bytes:
        """The whole dump as one ``bytes``."""
        return b"".join(self.rib_records(entries))

    @staticmethod
    def update(timestamp: float, peer_ip: str, peer_as: int, local_ip: str, local_as: int, family: Family,
               announce: Sequence[int], withdraw: Sequence[int], attrs: Attributes | None, *,
               extended: bool = False) -> bytes:
        return encode_bgp4mp_update(timestamp, peer_ip, peer_as, local_ip, local_as, family, announce,
                                    withdraw, attrs, extended=extended)

    @staticmethod
    def message(timestamp: float, peer_ip: str, peer_as: int, local_ip: str, local_as: int, message: bytes,
                *, extended: bool = False) -> bytes:
        return encode_bgp4mp_message(timestamp, peer_ip, peer_as, local_ip, local_as, message,
                                     extended=extended)

    @staticmethod
    def state_change(timestamp: float, peer_ip: str, peer_as: int, local_ip: str, local_as: int,
                     old_state: int, new_state: int, *, extended: bool = False) -> bytes:
        return encode_bgp4mp_state_change(timestamp, peer_ip, peer_as, local_ip, local_as, old_state,
                                          new_state, extended=extended)

