"""Route collection records from the daemon's speaker events (pure: bytes in, bytes out, no I/O).

Theory of operation
-------------------
*Updates.* A collector records what each peer sent as BGP4MP_MESSAGE_AS4 records (RFC 6396 4.4.3),
one per UPDATE. The speakers hand the daemon decoded ``Update`` events (one family, one interned
``Attributes``, integer prefix keys), not wire bytes, so ``RecordEncoder`` re-encodes each event as
the UPDATE that carries it: withdrawn routes + path attributes + NLRI for IPv4, MP_UNREACH_NLRI /
MP_REACH_NLRI (RFC 4760) for IPv6, always with 4-byte AS numbers (RFC 6793; the ``_AS4`` subtype
says so). It is built to cost little per UPDATE:

- a set decoded by the native codec's fast path (native sessions, the MRT reader) on a 4-byte-ASN
  session without MP attributes carries its attribute block as received (``Attributes.raw4``): an
  IPv4 UPDATE of it is written with those bytes, nothing encoded (sets from ExaBGP, 2-byte-ASN
  sessions, IPv6 and sets changed after decoding have none and are encoded as below);
- the encoded path attributes are cached per attribute object (keyed by ``id``, the object kept in
  the value so the id stays valid; speakers intern attribute sets, ~7 prefixes share one on a full
  table), for IPv6 with the fixed head of MP_REACH_NLRI (AFI, SAFI, next hop) beside them;
- the 12 + 20(or 44)-byte MRT and BGP4MP headers are packed once per peer and record;
- a prefix key *is* its NLRI encoding read as a big-endian integer (``orchestrator.rib.prefix``),
  so the NLRI field is one ``int.to_bytes`` per prefix and one ``b"".join``.

An UPDATE is at most ``max_message`` bytes (4096, RFC 4271 4; what a collector peer without the
extended-message capability can receive). An event too large for one (ExaBGP may group more) is cut
into several UPDATEs: withdrawals first, then announcements with the same attributes, in order.
End-of-RIB is recorded as the UPDATE that signals it (RFC 4724 2).

*State changes.* ``state_change`` writes BGP4MP_STATE_CHANGE_AS4 with the RFC 4271 8.2.2 state
numbers (Idle 1 ... Established 6). ``StateTracker`` turns speaker events into (old, new) pairs:
PeerUp → Established, PeerDown → Idle, SessionState by name; repeated states give nothing.

*RIB dumps.* ``rib_entries`` turns a snapshot of the RIB (``Rib.iter_paths`` lists) into the
``(family, key, paths)`` rows that ``MrtWriter.rib_records`` writes as TABLE_DUMP_V2, with each
peer's index in the PEER_INDEX_TABLE and, as originated time, when its session came up (peerctl
keeps no per-route time). ``merge_pre_policy`` builds the pre-policy view: paths of peers without
an import policy are the same before and after it; for the others, the attributes as received.

Raises ``ValueError`` only for an address that is not IPv4/IPv6 (``set_peer``) and ``KeyError`` for
a peer that was never ``set_peer``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from orchestrator.collector.mrt import BGP4MP_MESSAGE_AS4, BGP4MP_STATE_CHANGE_AS4, MrtType
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family
from speakers.events import PeerDown, PeerUp, SessionState, SpeakerEvent, Update
from speakers.native import codec

if TYPE_CHECKING:
    from orchestrator.rib.table import Path

__all__ = [
    "BGP_STATES",
    "RecordEncoder",
    "RibRow",
    "StateTracker",
    "merge_pre_policy",
    "rib_entries",
]

# RFC 4271 8.2.2 state numbers, by the names speakers use (native FSM states, ExaBGP's states).
BGP_STATES: Final[Mapping[str, int]] = {
    "idle": 1, "shutdown": 1, "down": 1,
    "connect": 2,
    "active": 3,
    "opensent": 4, "connected": 4,  # ExaBGP: TCP up, our OPEN sent
    "openconfirm": 5,
    "established": 6, "up": 6,
}  # fmt: skip
IDLE: Final = 1
ESTABLISHED: Final = 6
MAX_MESSAGE: Final = 4096  # RFC 4271 4.1
ATTR_CACHE_MAX: Final = 16_384  # cached attribute encodings before the cache is emptied: repeats (churn,
# a second peer with the same sets) come close together; a table load never hits, and a large table
# of ids costs cache misses to the decoder and the RIB running beside it

_MRT_HEAD = struct.Struct(">IHHI")  # timestamp, type, subtype, length (RFC 6396 2)
_BGP4MP_AS4 = struct.Struct(">IIHH")  # peer AS, local AS, interface index, AFI (RFC 6396 4.4.3)
_LEN_TYPE = struct.Struct(">HB")
_U16 = struct.Struct(">H")
_STATES = struct.Struct(">HH")
_MARKER: Final = b"\xff" * 16
_BGP4MP: Final = int(MrtType.BGP4MP)
_UPDATE: Final = 2
_MP_V6: Final = b"\x00\x02\x01"  # AFI 2, SAFI 1
_EOR_V6: Final = b"\x80\x0f\x03" + _MP_V6  # empty MP_UNREACH_NLRI (RFC 4724 2)

RibPath = tuple[int, Attributes, int]
RibRow = tuple[Family, int, list[RibPath]]


def _addr(ip: str) -> bytes:
    if ":" in ip:
        return socket.inet_pton(socket.AF_INET6, ip)
    return socket.inet_pton(socket.AF_INET, ip)


def _tlv(atype: int, value: bytes) -> bytes:
    """An optional non-transitive attribute (MP_REACH / MP_UNREACH), extended length when needed."""
    if len(value) > 255:
        return bytes((0x90, atype)) + _U16.pack(len(value)) + value
    return bytes((0x80, atype, len(value))) + value


_encode_block = codec.encode_path_attributes  # the codec's fast path for 4-byte-AS blocks

_NLRI_BYTES: Final = tuple(((bits + 7) >> 3) or 1 for bits in range(137))  # key bit length -> bytes
_NLRI4: dict[int, Callable[..., bytes]] = {}


def _nlri(keys: Iterable[int]) -> list[bytes]:
    # A key is its NLRI bytes as an int; the default route is key 0, one zero byte.
    nb = _NLRI_BYTES
    return [k.to_bytes(nb[k.bit_length()], "big") for k in keys]


def _nlri_join(keys: Sequence[int]) -> bytes:
    """The NLRI field of ``keys``. When every key is 4 bytes (/17 to /24, most of a table) it is one
    ``struct.pack`` of n big-endian words instead of n ``int.to_bytes``."""
    if len(keys) == 1:  # half the UPDATEs of a table load
        k = keys[0]
        return k.to_bytes(_NLRI_BYTES[k.bit_length()], "big")
    if min(keys) >= 0x1000000 and max(keys) <= 0xFFFFFFFF:
        pack = _NLRI4.get(len(keys))
        if pack is None:
            pack = _NLRI4[len(keys)] = struct.Struct(f">{len(keys)}I").pack
        return pack(*keys)
    nb = _NLRI_BYTES
    return b"".join([k.to_bytes(nb[k.bit_length()], "big") for k in keys])


def _cut(parts: list[bytes], room: int) -> Iterator[bytes]:
    """Join ``parts`` into pieces of at most ``room`` bytes, in order."""
    chunk: list[bytes] = []
    size = 0
    for part in parts:
        if chunk and size + len(part) > room:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(part)
        size += len(part)
    if chunk:
        yield b"".join(chunk)


class RecordEncoder:
    """Speaker events → BGP4MP record bytes. One per collector; not thread-safe (the RIB task owns it)."""

    __slots__ = ("_a4", "_a6", "_fixed", "_heads", "local_as", "max_message", "skipped")

    def __init__(self, local_as: int, *, max_message: int = MAX_MESSAGE) -> None:
        self.local_as = local_as
        self.max_message = max_message
        self._heads: dict[str, bytes] = {}  # peer name -> BGP4MP_AS4 header after the MRT header
        self._a4: dict[int, tuple[Attributes, bytes]] = {}
        self._a6: dict[int, tuple[Attributes, bytes, bytes]] = {}  # (attrs, block w/o NEXT_HOP, MP head)
        # peer name -> (pack of MRT header + BGP4MP header + BGP header + both length fields, the
        # constant middle: BGP4MP header and marker); see ``encode``.
        self._fixed: dict[str, tuple[Callable[..., bytes], bytes]] = {}
        self.skipped = 0  # Update events of peers ``encode``'s ``resolve`` could not register

    def set_peer(self, name: str, peer_ip: str, peer_as: int, local_ip: str | None) -> None:
        """Register (or re-register) a peer's addresses. ``local_ip`` None: the zero address of the
        peer's family. Raises ValueError for an address that is not IPv4/IPv6."""
        raw_peer = _addr(peer_ip)
        if local_ip is None or (":" in local_ip) != (len(raw_peer) == 16):
            raw_local = bytes(len(raw_peer))
        else:
            raw_local = _addr(local_ip)
        afi = 1 if len(raw_peer) == 4 else 2
        head = self._heads[name] = _BGP4MP_AS4.pack(peer_as, self.local_as, 0, afi) + raw_peer + raw_local
        # timestamp, type, subtype, length | BGP4MP header + marker | length, type, withdrawn length 0,
        # attributes length
        self._fixed[name] = struct.Struct(f">IHHI{len(head) + 16}sHBHH").pack, head + _MARKER

    def has_peer(self, name: str) -> bool:
        return name in self._heads

    # -- attribute cache ---------------------------------------------------------------------------

    def _attrs4(self, attrs: Attributes) -> bytes:
        if attrs.raw4:  # the block as received (native codec / MRT reader, 4-byte ASNs, no MP)
            return attrs.raw4
        hit = self._a4.get(id(attrs))
        if hit is not None:
            return hit[1]
        raw = _encode_block(attrs)
        if len(self._a4) >= ATTR_CACHE_MAX:
            self._a4.clear()
        self._a4[id(attrs)] = (attrs, raw)
        return raw

    def _attrs6(self, attrs: Attributes) -> tuple[bytes, bytes]:
        hit = self._a6.get(id(attrs))
        if hit is not None:
            return hit[1], hit[2]
        nh = _addr(attrs.next_hop) if attrs.next_hop else bytes(16)
        block = _encode_block(attrs, with_next_hop=False)
        head = _MP_V6 + bytes((len(nh),)) + nh + b"\x00"  # AFI, SAFI, next hop, reserved
        if len(self._a6) >= ATTR_CACHE_MAX:
            self._a6.clear()
        self._a6[id(attrs)] = (attrs, block, head)
        return block, head

    # -- records -----------------------------------------------------------------------------------

    def _record(self, timestamp: int, head: bytes, withdrawn: bytes, attrs: bytes, nlri: bytes) -> bytes:
        size = 23 + len(withdrawn) + len(attrs) + len(nlri)
        return b"".join((
            _MRT_HEAD.pack(timestamp, _BGP4MP, BGP4MP_MESSAGE_AS4, len(head) + size), head,
            _MARKER, _LEN_TYPE.pack(size, _UPDATE), _U16.pack(len(withdrawn)), withdrawn,
            _U16.pack(len(attrs)), attrs, nlri,
        ))  # fmt: skip

    def update(self, out: list[bytes], timestamp: int, peer: str, family: Family, attrs: Attributes | None,
               announce: Sequence[int], withdraw: Sequence[int]) -> int:
        """Append the record(s) of one ``Update`` event to ``out``; returns how many. KeyError for a
        peer never registered."""
        head = self._heads[peer]
        if attrs is None:
            announce = ()
        if family is Family.IPV4:
            wd = _nlri_join(withdraw) if withdraw else b""
            raw = self._attrs4(attrs) if announce and attrs is not None else b""
            nlri = _nlri_join(announce) if announce else b""
            if 23 + len(wd) + len(raw) + len(nlri) <= self.max_message:
                out.append(self._record(timestamp, head, wd, raw, nlri))
                return 1
            return self._split4(out, timestamp, head, raw, announce, withdraw)
        raw = b""
        if announce and attrs is not None:
            block, mp_head = self._attrs6(attrs)
            raw = block + _tlv(14, mp_head + _nlri_join(announce))
        if withdraw:
            raw += _tlv(15, _MP_V6 + _nlri_join(withdraw))
        if 23 + len(raw) <= self.max_message:
            out.append(self._record(timestamp, head, b"", raw, b""))
            return 1
        return self._split6(out, timestamp, head, attrs, announce, withdraw)

    def encode(self, items: Iterable[Update | int | bytes], out: list[bytes],
               resolve: Callable[[str], object] | None = None) -> int:
        """Append the records of a batch to ``out`` (parts to ``b"".join``, not one bytes per record);
        returns how many records. ``items`` in arrival order: an ``int`` is the timestamp of the
        events after it, an ``Update`` is encoded as ``update`` would, ``bytes`` is a record already
        encoded (state change, End-of-RIB). ``resolve(peer)`` is called once for an Update of a peer
        never registered (it may ``set_peer``); if it does not, the event is skipped and counted in
        ``skipped``. Events are queued by the loop and encoded here in batches (one per RIB batch):
        the same encoding run back to back costs about half what it does interleaved with decoding
        and RIB updates (instruction and data caches), and the plain IPv4 announcement, almost every
        UPDATE of a table load, is inlined: one pack for all headers, cached attribute bytes, one
        pack for the NLRI."""
        n = 0
        ts = 0
        fixed = self._fixed
        a4 = self._a4
        room = self.max_message - 23
        ipv4 = Family.IPV4
        for item in items:
            if type(item) is Update:
                peer = item.peer
                head = fixed.get(peer)
                if head is None:
                    if resolve is not None:
                        resolve(peer)
                    if peer not in fixed:
                        self.skipped += 1
                        continue
                    head = fixed[peer]
                attrs = item.attrs
                announce = item.announce
                if item.family is ipv4 and not item.withdraw and announce and attrs is not None:
                    raw = attrs.raw4  # as received: nothing to encode
                    if not raw:
                        hit = a4.get(id(attrs))
                        raw = self._attrs4(attrs) if hit is None else hit[1]
                    nlri = _nlri_join(announce)
                    size = len(raw) + len(nlri)
                    if size <= room:
                        pack, middle = head
                        out.append(pack(ts, _BGP4MP, BGP4MP_MESSAGE_AS4, len(middle) + 7 + size, middle,
                                        size + 23, _UPDATE, 0, len(raw)))
                        out.append(raw)
                        out.append(nlri)
                        n += 1
                        continue
                n += self.update(out, ts, peer, item.family, attrs, announce, item.withdraw)
            elif type(item) is int:
                ts = item
            else:
                assert isinstance(item, bytes)
                out.append(item)
                n += 1
        return n

    def _split4(self, out: list[bytes], ts: int, head: bytes, raw: bytes, announce: Sequence[int],
                withdraw: Sequence[int]) -> int:
        n = 0
        for wd in _cut(_nlri(withdraw), self.max_message - 23):
            out.append(self._record(ts, head, wd, b"", b""))
            n += 1
        for nlri in _cut(_nlri(announce), self.max_message - 23 - len(raw)):
            out.append(self._record(ts, head, b"", raw, nlri))
            n += 1
        return n

    def _split6(self, out: list[bytes], ts: int, head: bytes, attrs: Attributes | None,
                announce: Sequence[int], withdraw: Sequence[int]) -> int:
        n = 0
        for wd in _cut(_nlri(withdraw), self.max_message - 23 - 4 - len(_MP_V6)):
            out.append(self._record(ts, head, b"", _tlv(15, _MP_V6 + wd), b""))
            n += 1
        if announce and attrs is not None:
            block, mp_head = self._attrs6(attrs)
            for nlri in _cut(_nlri(announce), self.max_message - 23 - len(block) - 4 - len(mp_head)):
                out.append(self._record(ts, head, b"", block + _tlv(14, mp_head + nlri), b""))
                n += 1
        return n

    def end_of_rib(self, timestamp: int, peer: str, family: Family) -> bytes:
        """The End-of-RIB marker UPDATE (RFC 4724 2): empty for IPv4, empty MP_UNREACH for IPv6."""
        head = self._heads[peer]
        return self._record(timestamp, head, b"", _EOR_V6 if family is Family.IPV6 else b"", b"")

    def state_change(self, timestamp: int, peer: str, old: int, new: int) -> bytes:
        """A BGP4MP_STATE_CHANGE_AS4 record (RFC 6396 4.4.4)."""
        head = self._heads[peer]
        return b"".join((_MRT_HEAD.pack(timestamp, _BGP4MP, BGP4MP_STATE_CHANGE_AS4, len(head) + 4), head,
                         _STATES.pack(old, new)))


class StateTracker:
    """Each peer's last recorded BGP state; ``move`` says which state change an event is, if any."""

    __slots__ = ("states",)

    def __init__(self) -> None:
        self.states: dict[str, int] = {}

    def move(self, event: SpeakerEvent) -> tuple[int, int] | None:
        """(old, new) RFC 4271 states for a PeerUp / PeerDown / SessionState that changes the state."""
        if type(event) is PeerUp:
            new = ESTABLISHED
        elif type(event) is PeerDown:
            new = IDLE
        elif type(event) is SessionState:
            found = BGP_STATES.get(event.state)
            if found is None:
                return None
            new = found
        else:
            return None
        old = self.states.get(event.peer, IDLE)
        if old == new:
            return None
        self.states[event.peer] = new
        return old, new


def rib_entries(snapshot: Iterable[tuple[Family, int, Sequence[Path]]], peer_index: Mapping[str, int],
                originated: Mapping[str, int]) -> Iterator[RibRow]:
    """Rows for ``MrtWriter.rib_records`` from ``(family, key, paths)`` of the RIB. Paths of peers
    not in ``peer_index`` (removed meanwhile) are left out, and so are prefixes left with none.
    Each ``Path``'s attributes are decoded once (paths are shared by ~7 prefixes)."""
    attrs_of: dict[int, Attributes] = {}
    for family, key, paths in snapshot:
        row: list[RibPath] = []
        for path in paths:
            name = path.peer
            index = peer_index.get(name)
            if index is None:
                continue
            attrs = attrs_of.get(id(path))
            if attrs is None:
                attrs = attrs_of[id(path)] = path.attrs
            row.append((index, attrs, originated.get(name, 0)))
        if row:
            yield family, key, row


def merge_pre_policy(post: Iterable[RibRow], received: Mapping[str, Mapping[int, Attributes]],
                     family: Family, peer_index: Mapping[str, int],
                     originated: Mapping[str, int]) -> Iterator[RibRow]:
    """The pre-policy rows of one family: ``post`` rows without the paths of the peers in
    ``received`` (peers with an import policy), plus those peers' paths as received (``received``:
    peer → key → attributes). Prefixes only such peers sent come after the others."""
    replaced = {peer_index[name] for name in received if name in peer_index}
    extra: dict[int, list[RibPath]] = {}
    for name, table in received.items():
        index = peer_index.get(name)
        if index is None:
            continue
        orig = originated.get(name, 0)
        for key, attrs in table.items():
            extra.setdefault(key, []).append((index, attrs, orig))
    for fam, key, paths in post:
        if fam is not family:
            continue
        row = [p for p in paths if p[0] not in replaced] if replaced else paths
        row += extra.pop(key, ())
        if row:
            yield fam, key, row
    for key, row in extra.items():
        yield family, key, row
