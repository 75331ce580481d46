"""Sans-IO BGP-4 wire codec (RFC 4271, 4760, 6793, 7606, 8092, 9072, 9003). Pure: no I/O, no asyncio.

Theory of operation
-------------------
Framing (``split_messages``) cuts a receive buffer into ``(type, body)`` pairs and keeps the
remainder. Bodies are decoded by type: ``decode_open``, ``decode_update``, ``decode_notification``.
Every decoding failure is a ``BgpError`` carrying the RFC 4271 section 6 code/subcode/data that a
NOTIFICATION would carry; nothing else escapes a decoder (a final guard turns any slip into
``BgpError(3, 1)``, and hypothesis tests hold us to that).

Speed (DESIGN.md "The native speaker"): prefixes are keys (``orchestrator.rib.prefix``): the NLRI
bytes read as one big-endian int. ``decode_nlri`` reads /17-/24 (most of a real table) with one
``unpack_from`` of four bytes and clears host bits with a precomputed mask. Attribute blocks are
decoded once per distinct raw bytes: ``decode_update`` looks the whole block up in a dict first, so
an UPDATE whose attributes were seen before costs one ``bytes`` slice and one dict probe, and the
``Attributes`` object is shared (interned) by every UPDATE, and every peer, that carries it. Blocks
with MP_REACH/MP_UNREACH (whose NLRI changes per UPDATE) are parsed each time and their
``Attributes`` interned by value. ``decode_plain_update`` is the table-load fast path the session
tries first: an IPv4 UPDATE without MP attributes goes straight to ``(attrs, announce, withdraw)``
without the per-family objects; it declines (None) whatever it does not handle exactly as
``decode_update`` would.

C accelerator (optional, ``_fastpath.c``): the same plain path in C, ``decode_plain_update`` and
``plain_updates`` (a session's whole run of plain UPDATEs at the front of its receive buffer to
``Update`` events in one call), with the plain attribute set built in C on a cache miss. The
Python functions stay the reference (``decode_plain_update_py``); not built, or
``PEERCTL_PURE=1``: they alone run.

Error handling follows RFC 7606: a malformed attribute whose effect is "treat-as-withdraw" turns the
UPDATE's announcements into withdrawals (``DecodedUpdate.treat_as_withdraw``), "attribute discard"
drops the attribute, and only errors that make the NLRI impossible to locate raise ``BgpError``
(session reset). Families other than IPv4/IPv6 unicast are skipped and listed in ``unsupported``.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final

from orchestrator.accelerators import load
from orchestrator.rib.attrs import AS_CONFED_SEQUENCE, AS_CONFED_SET, AS_SEQUENCE, AS_SET, Attributes, Origin
from orchestrator.rib.prefix import Family, nlri_bytes

# --- constants ------------------------------------------------------------------------------------

MARKER: Final = b"\xff" * 16
HEADER_LEN: Final = 19
MAX_MESSAGE: Final = 4096
MAX_EXTENDED_MESSAGE: Final = 65535

MSG_OPEN: Final = 1
MSG_UPDATE: Final = 2
MSG_NOTIFICATION: Final = 3
MSG_KEEPALIVE: Final = 4
MSG_ROUTE_REFRESH: Final = 5

# Path attribute type codes.
ATTR_ORIGIN: Final = 1
ATTR_AS_PATH: Final = 2
ATTR_NEXT_HOP: Final = 3
ATTR_MED: Final = 4
ATTR_LOCAL_PREF: Final = 5
ATTR_ATOMIC_AGGREGATE: Final = 6
ATTR_AGGREGATOR: Final = 7
ATTR_COMMUNITIES: Final = 8
ATTR_ORIGINATOR_ID: Final = 9
ATTR_CLUSTER_LIST: Final = 10
ATTR_MP_REACH: Final = 14
ATTR_MP_UNREACH: Final = 15
ATTR_AS4_PATH: Final = 17
ATTR_AS4_AGGREGATOR: Final = 18
ATTR_LARGE_COMMUNITY: Final = 32

FLAG_OPTIONAL: Final = 0x80
FLAG_TRANSITIVE: Final = 0x40
FLAG_PARTIAL: Final = 0x20
FLAG_EXTENDED: Final = 0x10

# Capability codes.
CAP_MP: Final = 1
CAP_ROUTE_REFRESH: Final = 2
CAP_EXTENDED_MESSAGE: Final = 6
CAP_GRACEFUL_RESTART: Final = 64
CAP_ASN4: Final = 65
CAP_ADD_PATH: Final = 69
CAP_ENHANCED_ROUTE_REFRESH: Final = 70
CAP_SOFTWARE_VERSION: Final = 75

AS_TRANS: Final = 23456

# NOTIFICATION codes (RFC 4271 4.5) used here.
ERR_HEADER: Final = 1
ERR_OPEN: Final = 2
ERR_UPDATE: Final = 3
ERR_HOLD_TIMER: Final = 4
ERR_FSM: Final = 5
ERR_CEASE: Final = 6

_SAFI_UNICAST: Final = 1
_FAMILY_BY_AFI_SAFI: Final[dict[tuple[int, int], Family]] = {
    (1, _SAFI_UNICAST): Family.IPV4,
    (2, _SAFI_UNICAST): Family.IPV6,
}

_HDR: Final = struct.Struct(">16sHB")
_U8: Final = struct.Struct(">B")
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_U16_U8: Final = struct.Struct(">HB")
_BBB: Final = struct.Struct(">BBB")
_BBH: Final = struct.Struct(">BBH")
_OPEN: Final = struct.Struct(">BHH4sB")
_III: Final = struct.Struct(">III")
_unpack_u32 = _U32.unpack_from
_unpack_u16 = _U16.unpack_from

# Host-bit masks for the 4-byte IPv4 fast path (length byte + 3 address bytes), lengths 17..24.
_MASK4: Final = tuple(0xFFFFFF00 | ((0xFF << max(24 - length, 0)) & 0xFF) for length in range(25))


class BgpError(Exception):
    """A protocol error (RFC 4271 section 6): what a NOTIFICATION for it would carry.

    The only exception the decoders raise.
    """

    def __init__(self, code: int, subcode: int, data: bytes = b"", message: str = "") -> None:
        self.code = code
        self.subcode = subcode
        self.data = bytes(data)
        self.message = message
        super().__init__(
            f"BGP error {code}/{subcode}: {message}" if message else f"BGP error {code}/{subcode}"
        )


# --- framing --------------------------------------------------------------------------------------

_MIN_LEN: Final = {
    MSG_OPEN: 29,
    MSG_UPDATE: 23,
    MSG_NOTIFICATION: 21,
    MSG_KEEPALIVE: 19,
    MSG_ROUTE_REFRESH: 23,
}


def update_at_front(buffer: bytearray, max_size: int = MAX_MESSAGE) -> int:
    """The length of the complete UPDATE message with a well-formed header at the front of
    ``buffer``; 0 when there is none (another type, incomplete, or a header ``split_messages``
    reports as an error)."""
    if len(buffer) < HEADER_LEN:
        return 0
    marker, length, mtype = _HDR.unpack_from(buffer)
    if marker != MARKER or mtype != MSG_UPDATE or not _MIN_LEN[MSG_UPDATE] <= length <= max_size:
        return 0
    return length if length <= len(buffer) else 0


def split_messages(buffer: bytearray, max_size: int = MAX_MESSAGE) -> list[tuple[int, memoryview]]:
    """Cut every complete message off the front of ``buffer``; the remainder stays in it.

    Returns ``[(type, body), ...]``; bodies are read-only views into one copy of the consumed bytes.
    Raises ``BgpError(1, x)`` on a bad marker, length or type (RFC 4271 6.1); ``buffer`` is then left
    as it was from the offending message on.
    """
    out: list[tuple[int, memoryview]] = []
    n = len(buffer)
    if n < HEADER_LEN:
        return out
    pos = 0
    ends: list[tuple[int, int, int]] = []
    error: BgpError | None = None
    while pos + HEADER_LEN <= n:
        marker, length, mtype = _HDR.unpack_from(buffer, pos)
        if marker != MARKER:
            error = BgpError(ERR_HEADER, 1, message="connection not synchronized")
            break
        if length < HEADER_LEN or length > max_size:
            error = BgpError(ERR_HEADER, 2, _U16.pack(length), f"bad message length {length}")
            break
        minimum = _MIN_LEN.get(mtype)
        if minimum is None:
            error = BgpError(ERR_HEADER, 3, bytes((mtype,)), f"bad message type {mtype}")
            break
        if length < minimum or (mtype == MSG_KEEPALIVE and length != HEADER_LEN):
            error = BgpError(ERR_HEADER, 2, _U16.pack(length), f"bad length {length} for type {mtype}")
            break
        if pos + length > n:
            break
        ends.append((mtype, pos + HEADER_LEN, pos + length))
        pos += length
    if pos:
        view = memoryview(bytes(buffer[:pos]))
        del buffer[:pos]
        out = [(mtype, view[start:end]) for mtype, start, end in ends]
    if error is not None:
        if out:
            # Deliver what came before the bad message; the error surfaces on the next call.
            return out
        raise error
    return out


def _header(length: int, mtype: int) -> bytes:
    return MARKER + _U16_U8.pack(length, mtype)


# --- KEEPALIVE / NOTIFICATION / ROUTE-REFRESH -------------------------------------------------------

_KEEPALIVE: Final = _header(HEADER_LEN, MSG_KEEPALIVE)


def encode_keepalive() -> bytes:
    return _KEEPALIVE


def encode_notification(code: int, subcode: int, data: bytes = b"") -> bytes:
    return _header(HEADER_LEN + 2 + len(data), MSG_NOTIFICATION) + bytes((code, subcode)) + data


def shutdown_data(message: str) -> bytes:
    """Data of a Cease / Administrative Shutdown or Reset carrying a message (RFC 9003), ≤ 255 bytes."""
    raw = message.encode()[:255]
    while True:
        try:
            raw.decode()
            break
        except UnicodeDecodeError:
            raw = raw[:-1]
    return bytes((len(raw),)) + raw


def decode_notification(body: bytes | memoryview) -> tuple[int, int, bytes, str | None]:
    """→ ``(code, subcode, data, shutdown_message)``; the message only for Cease 2/4 (RFC 9003)."""
    if len(body) < 2:
        raise BgpError(ERR_HEADER, 2, message="notification too short")
    code, subcode = body[0], body[1]
    data = bytes(body[2:])
    message: str | None = None
    if code == ERR_CEASE and subcode in (2, 4) and data:
        size = data[0]
        if size <= len(data) - 1:
            message = data[1 : 1 + size].decode("utf-8", "replace")
    return code, subcode, data, message


def encode_route_refresh(family: Family) -> bytes:
    return _header(HEADER_LEN + 4, MSG_ROUTE_REFRESH) + struct.pack(">HBB", family.afi, 0, _SAFI_UNICAST)


def decode_route_refresh(body: bytes | memoryview) -> Family | None:
    """→ the family asked for, None when it is one we do not carry."""
    if len(body) != 4:
        raise BgpError(ERR_HEADER, 2, message="bad route refresh length")
    afi, _, safi = struct.unpack(">HBB", body)
    return _FAMILY_BY_AFI_SAFI.get((afi, safi))


# --- OPEN ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenMessage:
    version: int
    asn: int  # the 4-byte ASN from the capability when present, else My Autonomous System
    hold_time: int
    router_id: str
    capabilities: tuple[tuple[int, bytes], ...]  # (code, value) in received order
    families: tuple[Family, ...]
    unsupported_families: tuple[tuple[int, int], ...] = ()
    asn4: bool = False
    route_refresh: bool = False
    extended_message: bool = False
    graceful_restart: int | None = None  # restart time when the capability is present
    add_path: tuple[tuple[Family, int], ...] = ()  # (family, 1 receive | 2 send | 3 both)
    software_version: str | None = None


def encode_open(
    asn: int,
    hold_time: int,
    router_id: str,
    families: Sequence[Family],
    *,
    asn4: bool = True,
    route_refresh: bool = True,
    graceful_restart: int | None = None,
    add_path_receive: Sequence[Family] = (),
    extended_message: bool = False,
) -> bytes:
    """An OPEN message with one Capabilities optional parameter (RFC 5492)."""
    caps = bytearray()
    for fam in families:
        caps += struct.pack(">BBHBB", CAP_MP, 4, fam.afi, 0, _SAFI_UNICAST)
    if route_refresh:
        caps += bytes((CAP_ROUTE_REFRESH, 0))
    if extended_message:
        caps += bytes((CAP_EXTENDED_MESSAGE, 0))
    if graceful_restart is not None:
        value = _U16.pack(graceful_restart & 0x0FFF) + b"".join(
            struct.pack(">HBB", fam.afi, _SAFI_UNICAST, 0) for fam in families
        )
        caps += bytes((CAP_GRACEFUL_RESTART, len(value))) + value
    if asn4:
        caps += bytes((CAP_ASN4, 4)) + _U32.pack(asn)
    if add_path_receive:
        value = b"".join(struct.pack(">HBB", fam.afi, _SAFI_UNICAST, 1) for fam in add_path_receive)
        caps += bytes((CAP_ADD_PATH, len(value))) + value
    params = bytes((2, len(caps))) + caps
    my_as = asn if asn <= 0xFFFF else AS_TRANS
    body = _OPEN.pack(4, my_as, hold_time, socket.inet_aton(router_id), len(params)) + params
    return _header(HEADER_LEN + len(body), MSG_OPEN) + body


def decode_open(body: bytes | memoryview) -> OpenMessage:
    """Decode an OPEN body; ``BgpError(2, x)`` (RFC 4271 6.2) when it is unacceptable."""
    try:
        return _decode_open(bytes(body))
    except BgpError:
        raise
    except (IndexError, struct.error, ValueError, OSError) as exc:  # safety net: see module doc
        raise BgpError(ERR_OPEN, 0, message=f"malformed OPEN: {exc}") from None


def _decode_open(body: bytes) -> OpenMessage:
    if len(body) < 10:
        raise BgpError(ERR_HEADER, 2, _U16.pack(len(body) + HEADER_LEN), "OPEN too short")
    version, my_as, hold_time, rid, opt_len = _OPEN.unpack_from(body, 0)
    if version != 4:
        raise BgpError(ERR_OPEN, 1, _U16.pack(4), f"unsupported version {version}")
    if hold_time in (1, 2):
        raise BgpError(ERR_OPEN, 6, message=f"unacceptable hold time {hold_time}")
    pos = 10
    end = pos + opt_len
    extended = False
    if opt_len == 255 and len(body) > pos and body[pos] == 255:  # RFC 9072 extended parameters
        if len(body) < pos + 3:
            raise BgpError(ERR_OPEN, 0, message="truncated extended optional parameters")
        extended = True
        opt_len = _unpack_u16(body, pos + 1)[0]
        pos += 3
        end = pos + opt_len
    if end != len(body):
        raise BgpError(ERR_OPEN, 0, message="optional parameters length mismatch")
    caps: list[tuple[int, bytes]] = []
    while pos < end:
        if extended:
            if pos + 3 > end:
                raise BgpError(ERR_OPEN, 0, message="truncated optional parameter")
            ptype = body[pos]
            plen = _unpack_u16(body, pos + 1)[0]
            pos += 3
        else:
            if pos + 2 > end:
                raise BgpError(ERR_OPEN, 0, message="truncated optional parameter")
            ptype, plen = body[pos], body[pos + 1]
            pos += 2
        if pos + plen > end:
            raise BgpError(ERR_OPEN, 0, message="optional parameter overruns")
        if ptype != 2:
            raise BgpError(ERR_OPEN, 4, message=f"unsupported optional parameter {ptype}")
        cpos, cend = pos, pos + plen
        while cpos < cend:
            if cpos + 2 > cend:
                raise BgpError(ERR_OPEN, 0, message="truncated capability")
            code, clen = body[cpos], body[cpos + 1]
            if cpos + 2 + clen > cend:
                raise BgpError(ERR_OPEN, 0, message=f"capability {code} overruns")
            caps.append((code, body[cpos + 2 : cpos + 2 + clen]))
            cpos += 2 + clen
        pos = end if pos + plen > end else pos + plen
    asn = my_as
    families: list[Family] = []
    unsupported: list[tuple[int, int]] = []
    asn4 = route_refresh = ext_msg = False
    graceful: int | None = None
    add_path: list[tuple[Family, int]] = []
    software: str | None = None
    saw_mp = False
    for code, value in caps:
        if code == CAP_MP and len(value) == 4:
            saw_mp = True
            afi, _, safi = struct.unpack(">HBB", value)
            fam = _FAMILY_BY_AFI_SAFI.get((afi, safi))
            if fam is None:
                unsupported.append((afi, safi))
            elif fam not in families:
                families.append(fam)
        elif code == CAP_ASN4 and len(value) == 4:
            asn4 = True
            asn = _unpack_u32(value, 0)[0]
        elif code in (CAP_ROUTE_REFRESH, CAP_ENHANCED_ROUTE_REFRESH, 128):
            route_refresh = True
        elif code == CAP_EXTENDED_MESSAGE:
            ext_msg = True
        elif code == CAP_GRACEFUL_RESTART and len(value) >= 2:
            graceful = _unpack_u16(value, 0)[0] & 0x0FFF
        elif code == CAP_ADD_PATH:
            for i in range(0, len(value) - 3, 4):
                afi, safi, mode = struct.unpack_from(">HBB", value, i)
                fam = _FAMILY_BY_AFI_SAFI.get((afi, safi))
                if fam is not None:
                    add_path.append((fam, mode))
        elif code == CAP_SOFTWARE_VERSION and value:
            software = value[1 : 1 + value[0]].decode("utf-8", "replace")
    if not saw_mp:
        families.append(Family.IPV4)  # RFC 4760 8: no MP capability means IPv4 unicast only
    if asn == 0:
        raise BgpError(ERR_OPEN, 2, message="bad peer AS 0")
    if rid == b"\x00\x00\x00\x00":
        raise BgpError(ERR_OPEN, 3, message="bad BGP identifier 0.0.0.0")
    return OpenMessage(
        version=version,
        asn=asn,
        hold_time=hold_time,
        router_id=socket.inet_ntoa(rid),
        capabilities=tuple(caps),
        families=tuple(families),
        unsupported_families=tuple(unsupported),
        asn4=asn4,
        route_refresh=route_refresh,
        extended_message=ext_msg,
        graceful_restart=graceful,
        add_path=tuple(add_path),
        software_version=software,
    )


# --- NLRI ---------------------------------------------------------------------------------------------


def decode_nlri(
    data: bytes | memoryview,
    add_path: bool = False,
    *,
    family: Family = Family.IPV4,
    path_ids: list[int] | None = None,
) -> list[int]:
    """NLRI field → prefix keys (host bits cleared). With ``add_path``, each prefix is preceded by a
    4-byte path identifier (RFC 7911), appended to ``path_ids`` when given.

    Raises ``BgpError(3, 10)`` (invalid network field) on a bad length or truncated prefix.
    """
    out: list[int] = []
    append = out.append
    n = len(data)
    i = 0
    if add_path:
        limit = family.max_length
        while i < n:
            if i + 5 > n:
                raise BgpError(ERR_UPDATE, 10, message="truncated ADD-PATH NLRI")
            if path_ids is not None:
                path_ids.append(_unpack_u32(data, i)[0])
            i += 4
            length = data[i]
            if length > limit:
                raise BgpError(ERR_UPDATE, 10, message=f"prefix length {length}")
            end = i + 1 + ((length + 7) >> 3)
            if end > n:
                raise BgpError(ERR_UPDATE, 10, message="truncated NLRI")
            append(_clear_host(int.from_bytes(data[i:end], "big"), length))
            i = end
        return out
    if family is Family.IPV4:
        return _nlri4(bytes(data), 0, n)  # bytes: indexing is cheaper than a memoryview's
    while i < n:
        length = data[i]
        if length > 128:
            raise BgpError(ERR_UPDATE, 10, message=f"IPv6 prefix length {length}")
        end = i + 1 + ((length + 7) >> 3)
        if end > n:
            raise BgpError(ERR_UPDATE, 10, message="truncated NLRI")
        key = int.from_bytes(data[i:end], "big")
        append(key if not length & 7 else _clear_host(key, length))
        i = end
    return out


def _clear_host(key: int, length: int) -> int:
    spare = (8 - (length & 7)) & 7
    return key & ~((1 << spare) - 1) if spare else key


# --- path attributes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecodedAttributes:
    """What ``decode_path_attributes`` found.

    ``attrs.next_hop`` is the NEXT_HOP attribute's address; the MP_REACH next hop is in ``mp_reach``.
    ``errors`` describes each RFC 7606 action taken; ``treat_as_withdraw`` says the UPDATE's
    announcements must be handled as withdrawals.
    """

    attrs: Attributes
    mp_reach: tuple[Family, str, bytes] | None = None
    mp_unreach: tuple[Family, bytes] | None = None
    errors: tuple[str, ...] = ()
    treat_as_withdraw: bool = False
    unsupported: tuple[tuple[int, int], ...] = ()
    has_next_hop: bool = False  # a valid NEXT_HOP attribute was present
    next_hop4: str = ""  # the NEXT_HOP attribute's address (``attrs.next_hop`` prefers MP_REACH's)


# Expected flags (optional/transitive bits) for the attributes we know, RFC 4271 5 / 7606 3 c.
_WELL_KNOWN_FLAGS: Final = {
    ATTR_ORIGIN: FLAG_TRANSITIVE,
    ATTR_AS_PATH: FLAG_TRANSITIVE,
    ATTR_NEXT_HOP: FLAG_TRANSITIVE,
    ATTR_MED: FLAG_OPTIONAL,
    ATTR_LOCAL_PREF: FLAG_TRANSITIVE,
    ATTR_ATOMIC_AGGREGATE: FLAG_TRANSITIVE,
    ATTR_AGGREGATOR: FLAG_OPTIONAL | FLAG_TRANSITIVE,
    ATTR_COMMUNITIES: FLAG_OPTIONAL | FLAG_TRANSITIVE,
    ATTR_MP_REACH: FLAG_OPTIONAL,
    ATTR_MP_UNREACH: FLAG_OPTIONAL,
    ATTR_LARGE_COMMUNITY: FLAG_OPTIONAL | FLAG_TRANSITIVE,
}


def decode_path_attributes(data: bytes | memoryview, *, asn4: bool = True) -> DecodedAttributes:
    """Decode a path attribute block (the general parser; ``decode_update`` caches its results).

    Raises ``BgpError(3, x)`` only where RFC 7606 requires a session reset (the attribute list cannot
    be walked, a broken MP_REACH/MP_UNREACH, an unrecognized well-known attribute).
    """
    try:
        return _decode_attrs(data, asn4)
    except BgpError:
        raise
    except (IndexError, struct.error, ValueError, OSError, UnicodeDecodeError) as exc:  # safety net
        raise BgpError(ERR_UPDATE, 1, message=f"malformed attribute list: {exc}") from None


def _as_path(value: bytes | memoryview, width: int) -> tuple[tuple[int, tuple[int, ...]], ...] | None:
    """AS_PATH segments, None when malformed (RFC 7606 7.2)."""
    segs: list[tuple[int, tuple[int, ...]]] = []
    n = len(value)
    i = 0
    fmt = ">%d" + ("I" if width == 4 else "H")
    while i < n:
        if i + 2 > n:
            return None
        stype, count = value[i], value[i + 1]
        if stype not in (AS_SET, AS_SEQUENCE, AS_CONFED_SEQUENCE, AS_CONFED_SET) or count == 0:
            return None
        end = i + 2 + count * width
        if end > n:
            return None
        segs.append((stype, struct.unpack_from(fmt % count, value, i + 2)))
        i = end
    return tuple(segs)


def _merge_as4_path(
    as_path: tuple[tuple[int, tuple[int, ...]], ...], as4: tuple[tuple[int, tuple[int, ...]], ...]
) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """RFC 6793 4.2.3: keep the leading ASes of AS_PATH that AS4_PATH does not cover."""

    def count(path: tuple[tuple[int, tuple[int, ...]], ...]) -> int:
        return sum(len(a) if t == AS_SEQUENCE else 1 for t, a in path if t in (AS_SEQUENCE, AS_SET))

    n, m = count(as_path), count(as4)
    if m > n:
        return as_path
    keep = n - m
    head: list[tuple[int, tuple[int, ...]]] = []
    for stype, asns in as_path:
        if keep <= 0:
            break
        if stype == AS_SEQUENCE:
            take = asns[:keep]
            head.append((stype, take))
            keep -= len(take)
        elif stype == AS_SET:
            head.append((stype, asns))
            keep -= 1
        else:
            head.append((stype, asns))
    if head and as4 and head[-1][0] == AS_SEQUENCE and as4[0][0] == AS_SEQUENCE:
        return (*head[:-1], (AS_SEQUENCE, head[-1][1] + as4[0][1]), *as4[1:])
    return (*head, *as4)


def _decode_attrs(data: bytes | memoryview, asn4: bool) -> DecodedAttributes:
    n = len(data)
    i = 0
    seen: set[int] = set()
    errors: list[str] = []
    taw = False
    unsupported: list[tuple[int, int]] = []
    origin = Origin.IGP
    as_path: tuple[tuple[int, tuple[int, ...]], ...] = ()
    as4_path: tuple[tuple[int, tuple[int, ...]], ...] | None = None
    next_hop = ""
    has_nh = False
    med: int | None = None
    local_pref: int | None = None
    atomic = False
    aggregator: tuple[int, str] | None = None
    as4_aggregator: tuple[int, str] | None = None
    communities: tuple[int, ...] = ()
    large: tuple[tuple[int, int, int], ...] = ()
    other: list[tuple[int, int, bytes]] = []
    mp_reach: tuple[Family, str, bytes] | None = None
    mp_unreach: tuple[Family, bytes] | None = None
    have_origin = have_path = False
    width = 4 if asn4 else 2
    while i < n:
        start = i
        if i + 3 > n:
            raise BgpError(ERR_UPDATE, 1, message="truncated attribute header")
        flags, atype = data[i], data[i + 1]
        if flags & FLAG_EXTENDED:
            if i + 4 > n:
                raise BgpError(ERR_UPDATE, 1, message="truncated attribute header")
            alen = _unpack_u16(data, i + 2)[0]
            i += 4
        else:
            alen = data[i + 2]
            i += 3
        end = i + alen
        if end > n:
            # RFC 7606 4: attribute overruns the block; MP attributes make that a reset.
            if atype in (ATTR_MP_REACH, ATTR_MP_UNREACH):
                raise BgpError(ERR_UPDATE, 1, message="MP attribute overruns the attribute list")
            errors.append(f"attribute {atype} overruns the attribute list")
            taw = True
            break
        value = data[i:end]
        i = end
        if atype in seen:
            if atype in (ATTR_MP_REACH, ATTR_MP_UNREACH):
                raise BgpError(ERR_UPDATE, 1, message=f"duplicate attribute {atype}")
            errors.append(f"duplicate attribute {atype} discarded")  # RFC 7606 3 g
            continue
        seen.add(atype)
        expected = _WELL_KNOWN_FLAGS.get(atype)
        if expected is not None and (flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE)) != expected:
            if atype in (ATTR_MP_REACH, ATTR_MP_UNREACH):
                raise BgpError(ERR_UPDATE, 4, bytes(data[start:end]), f"attribute flags error {atype}")
            errors.append(f"attribute {atype} flags 0x{flags:02x}: treat-as-withdraw")  # 7606 3 c
            taw = True
            continue
        if atype == ATTR_ORIGIN:
            if alen != 1 or value[0] > 2:
                errors.append("malformed ORIGIN: treat-as-withdraw")
                taw = True
            else:
                origin = Origin(value[0])
                have_origin = True
        elif atype == ATTR_AS_PATH:
            parsed = _as_path(value, width)
            if parsed is None:
                errors.append("malformed AS_PATH: treat-as-withdraw")
                taw = True
            else:
                as_path = parsed
                have_path = True
        elif atype == ATTR_NEXT_HOP:
            if alen != 4:
                errors.append("malformed NEXT_HOP: treat-as-withdraw")
                taw = True
            else:
                next_hop = socket.inet_ntoa(bytes(value))
                has_nh = True
        elif atype == ATTR_MED:
            if alen != 4:
                errors.append("malformed MED: treat-as-withdraw")
                taw = True
            else:
                med = _unpack_u32(value, 0)[0]
        elif atype == ATTR_LOCAL_PREF:
            if alen != 4:
                errors.append("malformed LOCAL_PREF: treat-as-withdraw")
                taw = True
            else:
                local_pref = _unpack_u32(value, 0)[0]
        elif atype == ATTR_ATOMIC_AGGREGATE:
            if alen != 0:
                errors.append("malformed ATOMIC_AGGREGATE discarded")  # 7606 7.6
            else:
                atomic = True
        elif atype == ATTR_AGGREGATOR:
            if alen != width + 4:
                errors.append("malformed AGGREGATOR discarded")  # 7606 7.7
            else:
                agg_as = _unpack_u32(value, 0)[0] if width == 4 else _unpack_u16(value, 0)[0]
                aggregator = (agg_as, socket.inet_ntoa(bytes(value[width:])))
        elif atype == ATTR_COMMUNITIES:
            if alen % 4:
                errors.append("malformed COMMUNITIES: treat-as-withdraw")
                taw = True
            else:
                communities = struct.unpack_from(f">{alen // 4}I", value, 0)
        elif atype == ATTR_LARGE_COMMUNITY:
            if alen % 12:
                errors.append("malformed LARGE_COMMUNITY: treat-as-withdraw")
                taw = True
            else:
                large = tuple(_III.unpack_from(value, j) for j in range(0, alen, 12))
        elif atype == ATTR_MP_REACH:
            if alen < 5:
                raise BgpError(ERR_UPDATE, 9, message="malformed MP_REACH_NLRI")
            afi, safi, nh_len = struct.unpack_from(">HBB", value, 0)
            if 4 + nh_len + 1 > alen:
                raise BgpError(ERR_UPDATE, 9, message="MP_REACH_NLRI next hop overruns")
            fam = _FAMILY_BY_AFI_SAFI.get((afi, safi))
            nh_raw = bytes(value[4 : 4 + nh_len])
            if fam is None:
                unsupported.append((afi, safi))
            elif fam is Family.IPV6 and nh_len in (16, 32):
                mp_reach = (fam, socket.inet_ntop(socket.AF_INET6, nh_raw[:16]), bytes(value[5 + nh_len :]))
            elif fam is Family.IPV4 and nh_len == 4:
                mp_reach = (fam, socket.inet_ntoa(nh_raw), bytes(value[5 + nh_len :]))
            else:
                # RFC 7606 7.11: a next hop length we cannot use; the NLRI can still be found.
                errors.append(f"MP_REACH_NLRI next hop length {nh_len}: treat-as-withdraw")
                taw = True
                mp_reach = (fam, "", bytes(value[5 + nh_len :]))
        elif atype == ATTR_MP_UNREACH:
            if alen < 3:
                raise BgpError(ERR_UPDATE, 9, message="malformed MP_UNREACH_NLRI")
            afi, safi = _U16_U8.unpack_from(value, 0)
            fam = _FAMILY_BY_AFI_SAFI.get((afi, safi))
            if fam is None:
                unsupported.append((afi, safi))
            else:
                mp_unreach = (fam, bytes(value[3:]))
        elif atype == ATTR_AS4_PATH:
            if not asn4:
                as4_path = _as_path(value, 4)
                if as4_path is None:
                    errors.append("malformed AS4_PATH discarded")  # RFC 6793 6
        elif atype == ATTR_AS4_AGGREGATOR:
            if not asn4 and alen == 8:
                as4_aggregator = (_unpack_u32(value, 0)[0], socket.inet_ntoa(bytes(value[4:])))
        elif not flags & FLAG_OPTIONAL:
            # Unrecognized well-known attribute: RFC 4271 6.3 (session reset).
            raise BgpError(
                ERR_UPDATE, 2, bytes(data[start:end]), f"unrecognized well-known attribute {atype}"
            )
        elif flags & FLAG_TRANSITIVE:
            other.append((flags & 0xE0 | FLAG_PARTIAL, atype, bytes(value)))
        # optional non-transitive attributes we do not know (ORIGINATOR_ID, CLUSTER_LIST, ...) drop.
    if not asn4:
        if as4_aggregator is not None and aggregator is not None and aggregator[0] == AS_TRANS:
            aggregator = as4_aggregator
            if as4_path is not None:
                as_path = _merge_as4_path(as_path, as4_path)
        elif as4_aggregator is None and as4_path is not None:
            as_path = _merge_as4_path(as_path, as4_path)
    if not taw and (seen - {ATTR_MP_UNREACH}) and not (have_origin and have_path):
        # Missing well-known mandatory attribute with reachability (RFC 7606 3 d).
        errors.append("missing ORIGIN or AS_PATH: treat-as-withdraw")
        taw = True
    attrs = Attributes(
        next_hop=mp_reach[1] if mp_reach is not None and mp_reach[1] else next_hop,
        origin=origin,
        as_path=as_path,
        med=med,
        local_pref=local_pref,
        communities=communities,
        large_communities=large,
        atomic_aggregate=atomic,
        aggregator=aggregator,
        other=tuple(other),
    )
    return DecodedAttributes(
        attrs=attrs,
        mp_reach=mp_reach,
        mp_unreach=mp_unreach,
        errors=tuple(errors),
        treat_as_withdraw=taw,
        unsupported=tuple(unsupported),
        has_next_hop=has_nh,
        next_hop4=next_hop,
    )


def _attr(flags: int, atype: int, value: bytes) -> bytes:
    if len(value) > 255:
        return _BBH.pack(flags | FLAG_EXTENDED, atype, len(value)) + value
    return _BBB.pack(flags, atype, len(value)) + value


def _encode_as_path(path: tuple[tuple[int, tuple[int, ...]], ...], width: int) -> bytes:
    out = bytearray()
    fmt = ">%d" + ("I" if width == 4 else "H")
    for stype, asns in path:
        for j in range(0, len(asns), 255):  # a segment holds at most 255 ASes
            chunk = asns[j : j + 255]
            if width == 2:
                chunk = tuple(a if a <= 0xFFFF else AS_TRANS for a in chunk)
            out += bytes((stype, len(chunk))) + struct.pack(fmt % len(chunk), *chunk)
    return bytes(out)


def _encode_attrs(attrs: Attributes, asn4: bool, with_next_hop: bool) -> list[bytes]:
    """Encoded attributes in type-code order, without MP_REACH (inserted by the caller)."""
    parts: list[tuple[int, bytes]] = [
        (ATTR_ORIGIN, _attr(FLAG_TRANSITIVE, ATTR_ORIGIN, bytes((int(attrs.origin),)))),
        (
            ATTR_AS_PATH,
            _attr(FLAG_TRANSITIVE, ATTR_AS_PATH, _encode_as_path(attrs.as_path, 4 if asn4 else 2)),
        ),
    ]
    if with_next_hop and attrs.next_hop:
        parts.append((ATTR_NEXT_HOP, _attr(FLAG_TRANSITIVE, ATTR_NEXT_HOP, socket.inet_aton(attrs.next_hop))))
    if attrs.med is not None:
        parts.append((ATTR_MED, _attr(FLAG_OPTIONAL, ATTR_MED, _U32.pack(attrs.med))))
    if attrs.local_pref is not None:
        parts.append((ATTR_LOCAL_PREF, _attr(FLAG_TRANSITIVE, ATTR_LOCAL_PREF, _U32.pack(attrs.local_pref))))
    if attrs.atomic_aggregate:
        parts.append((ATTR_ATOMIC_AGGREGATE, _attr(FLAG_TRANSITIVE, ATTR_ATOMIC_AGGREGATE, b"")))
    if attrs.aggregator is not None:
        agg_as, agg_ip = attrs.aggregator
        ip = socket.inet_aton(agg_ip)
        value = _U32.pack(agg_as) + ip if asn4 else _U16.pack(agg_as if agg_as <= 65535 else AS_TRANS) + ip
        parts.append((ATTR_AGGREGATOR, _attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_AGGREGATOR, value)))
        if not asn4 and agg_as > 0xFFFF:
            parts.append(
                (
                    ATTR_AS4_AGGREGATOR,
                    _attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_AS4_AGGREGATOR, _U32.pack(agg_as) + ip),
                )
            )
    if attrs.communities:
        value = struct.pack(f">{len(attrs.communities)}I", *attrs.communities)
        parts.append((ATTR_COMMUNITIES, _attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_COMMUNITIES, value)))
    if not asn4 and any(a > 0xFFFF for _, asns in attrs.as_path for a in asns):
        value = _encode_as_path(attrs.as_path, 4)
        parts.append((ATTR_AS4_PATH, _attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_AS4_PATH, value)))
    if attrs.large_communities:
        value = b"".join(_III.pack(*lc) for lc in attrs.large_communities)
        parts.append(
            (ATTR_LARGE_COMMUNITY, _attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_LARGE_COMMUNITY, value))
        )
    for flags, atype, raw in attrs.other:
        parts.append((atype, _attr((flags & 0xE0) | FLAG_OPTIONAL | FLAG_TRANSITIVE, atype, raw)))
    parts.sort(key=lambda p: p[0])
    return [p[1] for p in parts]


_ORIGIN: Final = tuple(bytes((0x40, 1, 1, o)) for o in range(3))
_U32_ATTR = struct.Struct(">BBBI")  # flags, type, length 4, value
_AGGREGATOR = struct.Struct(">BBBI4s")
_SEGMENTS: Final = tuple(struct.Struct(f">BB{n}I") for n in range(256))
# The whole AS_PATH attribute of a one-segment path (the common shape): flags, type, length, segment
# type, count, ASes in one pack; extended length from 64 ASes (2 + 4 * 64 > 255).
_PATH1: Final = tuple(struct.Struct(f">BBBBB{n}I" if n < 64 else f">BBHBB{n}I").pack for n in range(256))
_WORDS: dict[int, struct.Struct] = {}
# Component caches (bounded, emptied when full). A full table has a new attribute *set* in almost
# every UPDATE (89,642 sets in 89,678 UPDATEs of the PCH table) but few distinct next hops (3,771) and
# very few distinct tails (MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES, LARGE_COMMUNITY:
# a few thousand, mostly through AGGREGATOR): caching those leaves the AS_PATH pack as the only
# per-set work (~1.9 -> ~0.9 us per set).
_NH_ATTR: dict[str, bytes] = {}
_TAILS: dict[tuple[object, ...], bytes] = {}
_COMPONENT_CACHE_MAX: Final = 65_536


def _attr_head(flags: int, atype: int, length: int) -> bytes:
    if length > 255:
        return _BBH.pack(flags | FLAG_EXTENDED, atype, length)
    return _BBB.pack(flags, atype, length)


def _fast_block(attrs: Attributes, with_next_hop: bool) -> bytes | None:
    """``_encode_attrs(attrs, asn4=True, with_next_hop)`` joined, byte for byte, for the common
    shapes: straight-line packing with precompiled structs and cached components (next hop,
    everything after NEXT_HOP), ~6x faster. None (the general encoder decides) for unknown
    attributes that sort before NEXT_HOP and AS_PATH segments of more than 255 ASes. A full table
    has a new attribute set in almost every UPDATE, so this sets the cost of encoding one (route
    collection, RIB dumps)."""
    other = attrs.other
    if other and min(o[1] for o in other) <= ATTR_NEXT_HOP:  # it would go before NEXT_HOP
        return None
    as_path = attrs.as_path
    if len(as_path) == 1:
        stype, asns = as_path[0]
        n = len(asns)
        if n > 255:
            return None
        path = _PATH1[n](0x40 if n < 64 else 0x50, 2, 2 + 4 * n, stype, n, *asns)
    else:
        segs = []
        for stype, asns in as_path:
            if len(asns) > 255:
                return None
            segs.append(_SEGMENTS[len(asns)].pack(stype, len(asns), *asns))
        value = b"".join(segs)
        path = _attr_head(0x40, 2, len(value)) + value
    nh = b""
    if with_next_hop and attrs.next_hop:
        found = _NH_ATTR.get(attrs.next_hop)
        if found is None:
            if len(_NH_ATTR) >= _COMPONENT_CACHE_MAX:
                _NH_ATTR.clear()
            found = _NH_ATTR[attrs.next_hop] = b"\x40\x03\x04" + socket.inet_aton(attrs.next_hop)
        nh = found
    key = (attrs.med, attrs.local_pref, attrs.atomic_aggregate, attrs.aggregator, attrs.communities,
           attrs.large_communities, other)
    tail = _TAILS.get(key)
    if tail is None:
        if len(_TAILS) >= _COMPONENT_CACHE_MAX:
            _TAILS.clear()
        tail = _TAILS[key] = _tail(attrs)
    return b"".join((_ORIGIN[attrs.origin], path, nh, tail))


def _tail(attrs: Attributes) -> bytes:
    """MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES, LARGE_COMMUNITY and the unknown
    attributes (``other``, optional transitive as the codec re-exports them), in type-code order
    (the codec's stable sort)."""
    parts: list[tuple[int, bytes]] = []
    if attrs.med is not None:
        parts.append((4, _U32_ATTR.pack(0x80, 4, 4, attrs.med)))
    if attrs.local_pref is not None:
        parts.append((5, _U32_ATTR.pack(0x40, 5, 4, attrs.local_pref)))
    if attrs.atomic_aggregate:
        parts.append((6, b"\x40\x06\x00"))
    if attrs.aggregator is not None:
        asn, ip = attrs.aggregator
        parts.append((7, _AGGREGATOR.pack(0xC0, 7, 8, asn, socket.inet_aton(ip))))
    comms = attrs.communities
    if comms:
        n = len(comms)
        words = _WORDS.get(n)
        if words is None:
            words = _WORDS[n] = struct.Struct(f">{n}I")
        parts.append((8, _attr_head(0xC0, 8, 4 * n) + words.pack(*comms)))
    if attrs.large_communities:
        value = b"".join(struct.pack(">III", *lc) for lc in attrs.large_communities)
        parts.append((32, _attr_head(0xC0, 32, len(value)) + value))
    if attrs.other:
        for flags, atype, raw in attrs.other:
            parts.append((atype, _attr_head((flags & 0xE0) | 0xC0, atype, len(raw)) + raw))
        parts.sort(key=lambda p: p[0])
    return b"".join([p[1] for p in parts])


def encode_path_attributes(
    attrs: Attributes, *, asn4: bool = True, with_next_hop: bool | None = None
) -> bytes:
    """Encode ``attrs`` as a path attribute block. NEXT_HOP is included when ``with_next_hop`` (by
    default: when ``attrs.next_hop`` is an IPv4 address; an IPv6 next hop travels in MP_REACH_NLRI,
    see ``encode_updates``)."""
    if with_next_hop is None:
        with_next_hop = ":" not in attrs.next_hop
    if asn4:
        block = _fast_block(attrs, with_next_hop)
        if block is not None:
            return block
    return b"".join(_encode_attrs(attrs, asn4, with_next_hop))


def _pack_nlri(keys: Iterable[int], room: int) -> list[bytes]:
    """Greedy packing: NLRI byte strings, each at most ``room`` bytes."""
    chunks: list[bytes] = []
    cur: list[bytes] = []
    size = 0
    for key in keys:
        raw = key.to_bytes((key.bit_length() + 7) >> 3, "big") if key else b"\x00"
        if size + len(raw) > room:
            chunks.append(b"".join(cur))
            cur = []
            size = 0
        cur.append(raw)
        size += len(raw)
    if cur:
        chunks.append(b"".join(cur))
    return chunks


def _mp_next_hop(next_hop: str, family: Family) -> bytes:
    if family is Family.IPV6:
        return socket.inet_pton(socket.AF_INET6, next_hop)
    return socket.inet_aton(next_hop)


def encode_updates(
    family: Family, attrs: Attributes, keys: Iterable[int], *, asn4: bool = True, max_size: int = MAX_MESSAGE
) -> list[bytes]:
    """UPDATE messages announcing ``keys`` with ``attrs``, as many prefixes per message as fit.

    IPv4 uses the NLRI field and NEXT_HOP; IPv6 uses MP_REACH_NLRI (RFC 4760) with ``attrs.next_hop``.
    Raises ValueError when the attributes alone do not fit, or the next hop is not of the family.
    """
    if family is Family.IPV4:
        block = encode_path_attributes(attrs, asn4=asn4, with_next_hop=True)
        head_room = max_size - HEADER_LEN - 4 - len(block)
        if head_room < 5:
            raise ValueError("path attributes too large for one UPDATE")
        prefix = _U16.pack(0) + _U16.pack(len(block)) + block
        out = []
        for nlri in _pack_nlri(keys, head_room):
            body_len = len(prefix) + len(nlri)
            out.append(_header(HEADER_LEN + body_len, MSG_UPDATE) + prefix + nlri)
        return out
    parts = _encode_attrs(attrs, asn4, False)
    before = b"".join(parts[:2])  # ORIGIN, AS_PATH, then MP_REACH (conventional early place), rest
    after = b"".join(parts[2:])
    mp_fixed = struct.pack(">HB", family.afi, _SAFI_UNICAST)
    nh = _mp_next_hop(attrs.next_hop, family)
    mp_fixed += bytes((len(nh),)) + nh + b"\x00"
    # Attribute header of MP_REACH is 4 bytes (extended length) so the NLRI may exceed 255 bytes.
    room = max_size - HEADER_LEN - 4 - len(before) - len(after) - 4 - len(mp_fixed)
    if room < 17:
        raise ValueError("path attributes too large for one UPDATE")
    out = []
    for nlri in _pack_nlri(keys, room):
        value_len = len(mp_fixed) + len(nlri)
        mp = _BBH.pack(FLAG_OPTIONAL | FLAG_EXTENDED, ATTR_MP_REACH, value_len) + mp_fixed + nlri
        attr_len = len(before) + len(mp) + len(after)
        body_len = 4 + attr_len
        out.append(
            _header(HEADER_LEN + body_len, MSG_UPDATE)
            + b"\x00\x00"
            + _U16.pack(attr_len)
            + before
            + mp
            + after
        )
    return out


def encode_withdraws(family: Family, keys: Iterable[int], max_size: int = MAX_MESSAGE) -> list[bytes]:
    """UPDATE messages withdrawing ``keys`` (IPv4: withdrawn routes field; IPv6: MP_UNREACH_NLRI)."""
    out = []
    if family is Family.IPV4:
        for nlri in _pack_nlri(keys, max_size - HEADER_LEN - 4):
            body = _U16.pack(len(nlri)) + nlri + b"\x00\x00"
            out.append(_header(HEADER_LEN + len(body), MSG_UPDATE) + body)
        return out
    fixed = _U16_U8.pack(family.afi, _SAFI_UNICAST)
    for nlri in _pack_nlri(keys, max_size - HEADER_LEN - 4 - 4 - len(fixed)):
        mp = _BBH.pack(FLAG_OPTIONAL | FLAG_EXTENDED, ATTR_MP_UNREACH, len(fixed) + len(nlri)) + fixed + nlri
        body = b"\x00\x00" + _U16.pack(len(mp)) + mp
        out.append(_header(HEADER_LEN + len(body), MSG_UPDATE) + body)
    return out


def encode_end_of_rib(family: Family) -> bytes:
    """End-of-RIB marker (RFC 4724 2): an empty UPDATE for IPv4, an empty MP_UNREACH otherwise."""
    if family is Family.IPV4:
        return _header(HEADER_LEN + 4, MSG_UPDATE) + b"\x00\x00\x00\x00"
    mp = _attr(FLAG_OPTIONAL, ATTR_MP_UNREACH, _U16_U8.pack(family.afi, _SAFI_UNICAST))
    body = b"\x00\x00" + _U16.pack(len(mp)) + mp
    return _header(HEADER_LEN + len(body), MSG_UPDATE) + body


# --- UPDATE ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FamilyUpdate:
    """One family's part of an UPDATE: maps one-to-one onto ``speakers.events.Update``."""

    family: Family
    attrs: Attributes | None
    announce: list[int]
    withdraw: list[int]
    announce_path_ids: list[int] = field(default_factory=list)  # filled with ADD-PATH only
    withdraw_path_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class DecodedUpdate:
    """A decoded UPDATE, grouped by family (at most one ``FamilyUpdate`` each).

    With ``treat_as_withdraw`` (RFC 7606), announced prefixes were already moved into ``withdraw``.
    ``unsupported`` lists (AFI, SAFI) pairs whose NLRI were skipped.
    """

    families: list[FamilyUpdate]
    end_of_rib: Family | None = None
    treat_as_withdraw: bool = False
    errors: tuple[str, ...] = ()
    unsupported: tuple[tuple[int, int], ...] = ()


# Interning cache, shared by every session so peers carrying the same attributes share one
# Attributes object: raw attribute block (without MP attributes, whose NLRI differs per UPDATE) →
# decoded result. Blocks with MP attributes are parsed each time and their Attributes interned by
# value. Bounded, and small: a table load brings a new set in almost every UPDATE, so a repeat is
# a recent set (a set split over UPDATEs, churn) and a few thousand entries catch it, while
# holding all of a table's sets cost ~700 bytes each (106 B/path on the lab's 200k table, more
# than the RIB's own containers). When full, the older half goes (``_trim``).
_CACHE_LIMIT: Final = 8192
_CACHE: dict[bool, dict[bytes, Attributes | DecodedAttributes]] = {True: {}, False: {}}


def clear_attribute_cache() -> None:
    for cache in _CACHE.values():
        cache.clear()
    for other in (_INTERN, _PATH_CACHE, _COMM_CACHE, _NH4_CACHE):
        other.clear()


_ORIGINS: Final = (Origin.IGP, Origin.EGP, Origin.INCOMPLETE)
_PART_CACHE_LIMIT: Final = 16_384  # AS paths, communities, next hops (the PCH table: 13.5k next hops)


def _trim(cache: dict[Any, Any]) -> None:
    """Drop the older half of a full cache (dicts keep insertion order): the recent entries,
    which are the ones that repeat, stay; amortised O(1) per insertion."""
    for key in list(islice(cache, len(cache) >> 1)):
        del cache[key]


_NH4_CACHE: dict[int, str] = {}
_PATH_CACHE: dict[bytes, tuple[tuple[int, tuple[int, ...]], ...]] = {}
_COMM_CACHE: dict[bytes, tuple[int, ...]] = {}
_INTERN: dict[Attributes, Attributes] = {}
_make_attrs = Attributes.fast
_MP_TYPES: Final = (1 << ATTR_MP_REACH) | (1 << ATTR_MP_UNREACH)


def _nh4_text(value: int) -> str:
    text = _NH4_CACHE.get(value)
    if text is None:
        if len(_NH4_CACHE) >= _PART_CACHE_LIMIT:
            _trim(_NH4_CACHE)
        text = _NH4_CACHE[value] = socket.inet_ntoa(_U32.pack(value))
    return text


def _as_path4(key: bytes) -> tuple[tuple[int, tuple[int, ...]], ...] | None:
    """``_as_path(key, 4)`` memoised by the attribute's bytes (None when malformed)."""
    cached = _PATH_CACHE.get(key)
    if cached is None:
        cached = _as_path(key, 4)
        if cached is None:
            return None
        if len(_PATH_CACHE) >= _PART_CACHE_LIMIT:
            _trim(_PATH_CACHE)
        _PATH_CACHE[key] = cached
    return cached


def _fast_attrs(raw: bytes) -> Attributes | DecodedAttributes | None:
    """The common case on a 4-byte-ASN session: only well-formed attributes we know, no duplicates.

    Offsets instead of slices, components (AS_PATH, COMMUNITIES, next hops) memoised by their bytes.
    A *plain* block (NEXT_HOP, ORIGIN and AS_PATH present, no MP attributes: every IPv4 UPDATE of a
    table) is returned as its ``Attributes`` alone, which is what the cache keeps for it (the
    ``DecodedAttributes`` around it would say nothing more); blocks with MP attributes as
    ``DecodedAttributes``. Returns None for anything unusual; the general parser then decides (and
    reports errors).
    """
    n = len(raw)
    i = 0
    seen = 0
    origin = 0
    path: tuple[tuple[int, tuple[int, ...]], ...] = ()
    nh = ""
    med: int | None = None
    lp: int | None = None
    atomic = False
    agg: tuple[int, str] | None = None
    comms: tuple[int, ...] = ()
    large: tuple[tuple[int, int, int], ...] = ()
    mp_reach: tuple[Family, str, bytes] | None = None
    mp_unreach: tuple[Family, bytes] | None = None
    u32 = _unpack_u32
    if (
        n >= 14 and raw[0] == FLAG_TRANSITIVE and raw[1] == ATTR_ORIGIN and raw[2] == 1 and raw[3] <= 2
        and raw[4] == FLAG_TRANSITIVE and raw[5] == ATTR_AS_PATH
    ):  # fmt: skip
        # The usual head, ORIGIN, AS_PATH, NEXT_HOP in type order with plain flags, read in one go;
        # the loop goes on after it (or, when it is not that, from the start).
        e = 7 + raw[6]
        if e + 7 <= n and raw[e] == FLAG_TRANSITIVE and raw[e + 1] == ATTR_NEXT_HOP and raw[e + 2] == 4:
            head_path = _as_path4(raw[7:e])
            if head_path is not None:
                origin = raw[3]
                path = head_path
                nh = _nh4_text(u32(raw, e + 3)[0])
                seen = (1 << ATTR_ORIGIN) | (1 << ATTR_AS_PATH) | (1 << ATTR_NEXT_HOP)
                i = e + 7
    while i < n:
        if i + 3 > n:
            return None
        flags = raw[i]
        atype = raw[i + 1]
        if flags & FLAG_EXTENDED:
            s = i + 4
            if s > n:
                return None  # (an IndexError escaped decode_plain_update here)
            length = (raw[i + 2] << 8) | raw[i + 3]
        else:
            s = i + 3
            length = raw[i + 2]
        e = s + length
        bit = 1 << atype
        if e > n or seen & bit:
            return None
        seen |= bit
        kind = flags & 0xC0
        if atype == ATTR_AS_PATH:
            if kind != FLAG_TRANSITIVE:
                return None
            cached = _as_path4(raw[s:e])
            if cached is None:
                return None
            path = cached
        elif atype == ATTR_ORIGIN:
            if kind != FLAG_TRANSITIVE or length != 1 or raw[s] > 2:
                return None
            origin = raw[s]
        elif atype == ATTR_NEXT_HOP:
            if kind != FLAG_TRANSITIVE or length != 4:
                return None
            nh = _nh4_text(u32(raw, s)[0])
        elif atype == ATTR_MED:
            if kind != FLAG_OPTIONAL or length != 4:
                return None
            med = u32(raw, s)[0]
        elif atype == ATTR_LOCAL_PREF:
            if kind != FLAG_TRANSITIVE or length != 4:
                return None
            lp = u32(raw, s)[0]
        elif atype == ATTR_COMMUNITIES:
            if kind != FLAG_OPTIONAL | FLAG_TRANSITIVE or length & 3:
                return None
            key = raw[s:e]
            ccached = _COMM_CACHE.get(key)
            if ccached is None:
                ccached = struct.unpack(f">{length >> 2}I", key)
                if len(_COMM_CACHE) >= _PART_CACHE_LIMIT:
                    _trim(_COMM_CACHE)
                _COMM_CACHE[key] = ccached
            comms = ccached
        elif atype == ATTR_ATOMIC_AGGREGATE:
            if kind != FLAG_TRANSITIVE or length:
                return None
            atomic = True
        elif atype == ATTR_AGGREGATOR:
            if kind != FLAG_OPTIONAL | FLAG_TRANSITIVE or length != 8:
                return None
            agg = (u32(raw, s)[0], _nh4_text(u32(raw, s + 4)[0]))
        elif atype == ATTR_LARGE_COMMUNITY:
            if kind != FLAG_OPTIONAL | FLAG_TRANSITIVE or length % 12 or not length:
                return None
            large = tuple(_III.unpack_from(raw, j) for j in range(s, e, 12))
        elif atype == ATTR_MP_REACH:
            if kind != FLAG_OPTIONAL or length < 5:
                return None
            fam = _FAMILY_BY_AFI_SAFI.get(((raw[s] << 8) | raw[s + 1], raw[s + 2]))
            nh_len = raw[s + 3]
            if fam is Family.IPV6 and nh_len in (16, 32) and s + 5 + nh_len <= e:
                mp_reach = (
                    fam,
                    socket.inet_ntop(socket.AF_INET6, raw[s + 4 : s + 20]),
                    raw[s + 5 + nh_len : e],
                )
            elif fam is Family.IPV4 and nh_len == 4 and s + 9 <= e:
                mp_reach = (fam, _nh4_text(u32(raw, s + 4)[0]), raw[s + 9 : e])
            else:
                return None
        elif atype == ATTR_MP_UNREACH:
            if kind != FLAG_OPTIONAL or length < 3:
                return None
            fam = _FAMILY_BY_AFI_SAFI.get(((raw[s] << 8) | raw[s + 1], raw[s + 2]))
            if fam is None:
                return None
            mp_unreach = (fam, raw[s + 3 : e])
        elif kind != FLAG_OPTIONAL or atype in _WELL_KNOWN_FLAGS:
            return None
        # else: optional non-transitive we do not keep (ORIGINATOR_ID, CLUSTER_LIST, ...): skip
        i = e
    if seen & 0b110 != 0b110 and seen & ~_MP_TYPES:
        return None  # missing ORIGIN or AS_PATH: the general parser reports it
    if mp_reach is None and mp_unreach is None:
        if not nh:
            return None  # no next hop: the general parser decides (treat-as-withdraw with NLRI)
        # A plain block on a 4-byte-ASN session is valid as is in a BGP4MP_MESSAGE_AS4 record:
        # the route collector writes these bytes instead of re-encoding the set.
        return _make_attrs(nh, _ORIGINS[origin], path, med, lp, comms, large, atomic, agg, (), raw)
    attrs = _make_attrs(
        mp_reach[1] if mp_reach is not None else nh, _ORIGINS[origin], path, med, lp, comms, large, atomic,
        agg, (),
    )  # fmt: skip
    return DecodedAttributes(attrs, mp_reach, mp_unreach, (), False, (), bool(nh), nh)


def _plain(attrs: Attributes) -> DecodedAttributes:
    """What the general path makes of a plain block (see ``_fast_attrs``)."""
    return DecodedAttributes(attrs, None, None, (), False, (), True, attrs.next_hop)


def decode_plain_update(body: bytes | memoryview) -> tuple[Attributes | None, list[int], list[int]] | None:
    """The UPDATE of an IPv4 unicast table on a 4-byte-ASN session without ADD-PATH, fast:
    ``(attrs, announce, withdraw)`` with IPv4 keys (``attrs`` None when nothing is announced), the
    same that ``decode_update`` gives as its one ``FamilyUpdate``. None for anything else (no
    attributes with NLRI, MP attributes, End-of-RIB, malformed parts, RFC 7606 cases): call
    ``decode_update`` then. Never raises. Side effect: fills the shared attribute cache.

    One copy of the body into ``bytes``, then the attribute cache probe (a repeated attribute set is
    one dict lookup and shares its ``Attributes``) and one loop reading the NLRI into keys.
    """
    data = bytes(body)
    n = len(data)
    if n < 4:
        return None
    astart = 4 + ((data[0] << 8) | data[1])
    if astart > n:
        return None
    aend = astart + ((data[astart - 2] << 8) | data[astart - 1])
    if aend > n or n == 4:
        return None
    try:
        withdraw = _nlri4(data, 2, astart - 2)
        announce = _nlri4(data, aend, n)
    except BgpError:
        return None
    if not announce:
        # Withdrawals only (the attributes, if any, are not looked at); neither: the general path.
        return (None, announce, withdraw) if withdraw and aend == astart else None
    raw = data[astart:aend]
    attrs = _PLAIN_CACHE.get(raw)
    if attrs is None:
        attrs = _plain_miss(raw)
    if type(attrs) is not Attributes:
        return None
    return attrs, announce, withdraw


_PLAIN_CACHE: Final = _CACHE[True]


def _plain_miss(raw: bytes) -> Attributes | None:
    """A plain attribute block not in the cache: decoded (``_fast_attrs``) and cached when it is
    plain; None otherwise (not cached: the general path decides). The C accelerator calls it too."""
    attrs = _fast_attrs(raw)
    if type(attrs) is not Attributes:
        return None
    if len(_PLAIN_CACHE) >= _CACHE_LIMIT:
        _trim(_PLAIN_CACHE)
    _PLAIN_CACHE[raw] = attrs
    return attrs


def _nlri4(data: bytes, i: int, n: int) -> list[int]:
    """IPv4 NLRI of ``data[i:n]`` → keys (``decode_nlri``'s IPv4 case on offsets into ``bytes``)."""
    out: list[int] = []
    append = out.append
    masks = _MASK4
    unpack = _unpack_u32
    while i < n:
        length = data[i]
        if 16 < length <= 24 and i + 4 <= n:  # the common case: one unpack, one mask
            append(unpack(data, i)[0] & masks[length])
            i += 4
            continue
        if length > 32:
            raise BgpError(ERR_UPDATE, 10, message=f"IPv4 prefix length {length}")
        end = i + 1 + ((length + 7) >> 3)
        if end > n:
            raise BgpError(ERR_UPDATE, 10, message="truncated NLRI")
        append(_clear_host(int.from_bytes(data[i:end], "big"), length))
        i = end
    return out


def _intern(attrs: Attributes) -> Attributes:
    """One shared object per distinct attribute set (bounded)."""
    found = _INTERN.get(attrs)
    if found is None:
        if len(_INTERN) >= _CACHE_LIMIT:
            _trim(_INTERN)
        _INTERN[attrs] = found = attrs
    return found


def decode_update(body: bytes | memoryview, *, asn4: bool = True, add_path: bool = False) -> DecodedUpdate:
    """Decode an UPDATE body (after the 19-byte header).

    Raises ``BgpError(3, x)`` when the message must reset the session (RFC 7606 4/5); otherwise
    malformed attributes are handled as treat-as-withdraw or attribute-discard and reported in
    ``errors``. Side effect: fills the shared attribute interning cache.
    """
    try:
        return _decode_update(body, asn4, add_path)
    except BgpError:
        raise
    except (IndexError, struct.error, ValueError, OSError, UnicodeDecodeError) as exc:  # safety net
        raise BgpError(ERR_UPDATE, 1, message=f"malformed UPDATE: {exc}") from None


def _decode_update(body: bytes | memoryview, asn4: bool, add_path: bool) -> DecodedUpdate:
    n = len(body)
    if n < 4:
        raise BgpError(ERR_UPDATE, 1, message="UPDATE too short")
    wlen = _unpack_u16(body, 0)[0]
    if 4 + wlen > n:
        raise BgpError(ERR_UPDATE, 1, message="withdrawn routes length overruns")
    astart = 4 + wlen
    alen = _unpack_u16(body, astart - 2)[0]
    aend = astart + alen
    if aend > n:
        raise BgpError(ERR_UPDATE, 1, message="total path attribute length overruns")
    families: list[FamilyUpdate] = []
    if n == 4:
        return DecodedUpdate(families, end_of_rib=Family.IPV4)
    w_ids: list[int] = []
    a_ids: list[int] = []
    withdrawn = decode_nlri(body[2 : astart - 2], add_path, path_ids=w_ids) if wlen else []
    nlri = decode_nlri(body[aend:], add_path, path_ids=a_ids) if aend < n else []
    if not alen:
        if nlri:  # reachability without attributes (RFC 7606 3 d): treat-as-withdraw
            families.append(FamilyUpdate(Family.IPV4, None, [], withdrawn + nlri, [], w_ids + a_ids))
            return DecodedUpdate(families, treat_as_withdraw=True, errors=("UPDATE without attributes",))
        families.append(FamilyUpdate(Family.IPV4, None, [], withdrawn, [], w_ids))
        return DecodedUpdate(families)
    raw = bytes(body[astart:aend])
    cache = _CACHE[asn4]
    cached = cache.get(raw)
    reach_nlri = unreach_nlri = b""
    if cached is None:
        cached = (_fast_attrs(raw) if asn4 else None) or _decode_attrs(raw, asn4)
        if isinstance(cached, Attributes) or (cached.mp_reach is None and cached.mp_unreach is None):
            if len(cache) >= _CACHE_LIMIT:
                _trim(cache)
            cache[raw] = cached
    dec = _plain(cached) if isinstance(cached, Attributes) else cached
    if dec.mp_reach is not None:
        reach_nlri = dec.mp_reach[2]
    if dec.mp_unreach is not None:
        unreach_nlri = dec.mp_unreach[1]
    taw = dec.treat_as_withdraw
    errors = dec.errors
    if nlri or withdrawn:
        if nlri and not taw and not dec.has_next_hop:
            taw = True
            errors = (*errors, "missing NEXT_HOP: treat-as-withdraw")
        if taw:
            families.append(FamilyUpdate(Family.IPV4, None, [], withdrawn + nlri, [], w_ids + a_ids))
        elif not nlri:
            families.append(FamilyUpdate(Family.IPV4, None, [], withdrawn, [], w_ids))
        elif dec.mp_reach is not None:  # IPv4 NLRI beside MP_REACH: its next hop is NEXT_HOP's
            attrs4 = dataclasses.replace(dec.attrs, next_hop=dec.next_hop4)
            families.append(FamilyUpdate(Family.IPV4, attrs4, nlri, withdrawn, a_ids, w_ids))
        else:
            families.append(FamilyUpdate(Family.IPV4, dec.attrs, nlri, withdrawn, a_ids, w_ids))
    end_of_rib: Family | None = None
    if dec.mp_reach is not None:
        fam = dec.mp_reach[0]
        ids: list[int] = []
        keys = decode_nlri(reach_nlri, add_path, family=fam, path_ids=ids)
        fu = _family_entry(families, fam)
        if taw:
            fu.withdraw.extend(keys)
            fu.withdraw_path_ids.extend(ids)
        elif keys:
            fu.attrs = _intern(dec.attrs)
            fu.announce.extend(keys)
            fu.announce_path_ids.extend(ids)
    if dec.mp_unreach is not None:
        fam = dec.mp_unreach[0]
        if (
            not unreach_nlri
            and dec.mp_reach is None
            and not nlri
            and not withdrawn
            and len(raw) <= 7
            and not dec.errors
        ):
            end_of_rib = fam  # RFC 4724 2: MP_UNREACH_NLRI alone, with no withdrawn routes
        else:
            ids = []
            keys = decode_nlri(unreach_nlri, add_path, family=fam, path_ids=ids)
            fu = _family_entry(families, fam)
            fu.withdraw.extend(keys)
            fu.withdraw_path_ids.extend(ids)
    return DecodedUpdate(families, end_of_rib, taw, errors, dec.unsupported)


def _family_entry(families: list[FamilyUpdate], fam: Family) -> FamilyUpdate:
    for fu in families:
        if fu.family is fam:
            return fu
    fu = FamilyUpdate(fam, None, [], [])
    families.append(fu)
    return fu


# --- C accelerator ------------------------------------------------------------------------------------

decode_plain_update_py: Final = decode_plain_update
"""The pure-Python reference of ``decode_plain_update`` (the C accelerator is checked against it)."""

PlainUpdates = Callable[[bytearray, int, str, Family], tuple[list[Any], int]]
plain_updates: PlainUpdates | None = None
"""``_fastpath.plain_updates`` when the accelerator is built (else None): cuts the run of plain
UPDATEs at the front of a session's buffer and returns their ``Update`` events (see the C file)."""


def _load_accelerator() -> None:
    global decode_plain_update, plain_updates
    _fastpath = load("speakers.native._fastpath")
    if _fastpath is None:
        return
    from speakers.events import Update

    _fastpath.setup(_PLAIN_CACHE, _plain_miss, Attributes, Update, _ORIGINS, _trim, _CACHE_LIMIT)
    decode_plain_update = _fastpath.plain_update
    plain_updates = _fastpath.plain_updates


_load_accelerator()


__all__ = [
    "BgpError",
    "DecodedAttributes",
    "DecodedUpdate",
    "FamilyUpdate",
    "OpenMessage",
    "clear_attribute_cache",
    "decode_nlri",
    "decode_notification",
    "decode_open",
    "decode_path_attributes",
    "decode_plain_update",
    "decode_route_refresh",
    "decode_update",
    "encode_end_of_rib",
    "encode_keepalive",
    "encode_notification",
    "encode_open",
    "encode_path_attributes",
    "encode_route_refresh",
    "encode_updates",
    "encode_withdraws",
    "nlri_bytes",
    "shutdown_data",
    "split_messages",
]
