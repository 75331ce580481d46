"""Raw rtnetlink for the FIB hot path: precompiled route and nexthop messages, errors by sequence.

Why not pyroute2 here: it encodes a route in ~70 µs (≤ 14k routes/s), has no nexthop-object API and
loses the identity of failing messages in a batch (DESIGN.md "Kernel FIB"). This module packs each
message with one ``struct.Struct.pack_into`` call into a preallocated buffer, sends thousands per
``send``, and ends every batch with an ``NLMSG_NOOP`` + ``NLM_F_ACK`` fence. Routes are sent without
``NLM_F_ACK``: the kernel answers only *failing* messages, with an ``NLMSG_ERROR`` carrying the
failing message's sequence number and (``NETLINK_EXT_ACK``) a reason string, so a batch costs one
syscall plus one reply per error, and every error is matched back to its prefix.

pyroute2 is still used for the rare, non-hot operations (namespaces, links, addresses).

Side effects: everything here talks to the kernel of the network namespace the socket was opened in.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_mod
import os
import socket
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from orchestrator.rib.prefix import Family

# --- constants (linux/netlink.h, linux/rtnetlink.h, linux/nexthop.h) --------------------------------
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_ACK_TLVS = 0x200  # in an NLMSG_ERROR header
NLMSGERR_ATTR_MSG = 1

RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWADDR = 20
RTM_GETADDR = 22
RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105
RTM_GETNEXTHOP = 106

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6
RTA_PREFSRC = 7
RTA_TABLE = 15
RTA_NH_ID = 30

NHA_ID = 1
NHA_BLACKHOLE = 4
NHA_OIF = 5
NHA_GATEWAY = 6

IFA_ADDRESS = 1
IFA_LOCAL = 2

RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_TABLE_COMPAT = 252
RTNH_F_ONLINK = 4
IP6_RT_PRIO_USER = 1024  # the kernel's metric for IPv6 routes added with metric 0

ADD_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
REPLACE_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE
DEL_FLAGS = NLM_F_REQUEST

_AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}
_ALEN = {Family.IPV4: 4, Family.IPV6: 16}
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_NHMSG = struct.Struct("=BBBBI")

# key → (prefix length, network): shift of the length byte, indexed by key.bit_length()
_SH4 = [8 * (((bl + 7) >> 3) - 1) if bl else 0 for bl in range(41)]
_SH6 = [8 * (((bl + 7) >> 3) - 1) if bl else 0 for bl in range(137)]


class NetlinkError(OSError):
    """A netlink request failed as a whole (not a per-route error)."""


@dataclass(frozen=True, slots=True)
class RouteError:
    """The kernel refused one message: ``errno`` and its extended-ACK reason (may be empty)."""

    errno: int
    message: str

    def describe(self) -> str:
        name = errno_mod.errorcode.get(self.errno, str(self.errno))
        text = f"{os.strerror(self.errno)} ({name})"
        return f"{text}: {self.message}" if self.message else text


# --- sockets ----------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _in_netns(netns: str, fn: object) -> object:
    """Run ``fn()`` in a helper thread that has joined ``netns`` (setns is per thread)."""
    result: list[object] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            if netns:
                fd = os.open(os.path.join(NETNS_RUN_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    if _libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"setns({netns}): {os.strerror(err)}")
                finally:
                    os.close(fd)
            result.append(fn())  # type: ignore[operator]
        except BaseException as exc:  # handed back to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def open_route_socket(netns: str = "", rcvbuf: int = 64 << 20, sndbuf: int = 8 << 20) -> socket.socket:
    """A NETLINK_ROUTE socket living in ``netns`` ("" = ours), with big buffers and extended ACKs.

    Raises OSError (FileNotFoundError when the namespace does not exist, PermissionError without
    CAP_SYS_ADMIN/CAP_NET_ADMIN).
    """

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)
        except PermissionError:  # not root: take what the sysctl limits allow
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK, NETLINK_GET_STRICT_CHK):
            with contextlib.suppress(OSError):  # older kernels: fewer features, same protocol
                sock.setsockopt(SOL_NETLINK, opt, 1)
        sock.bind((0, 0))
        return sock

    return _in_netns(netns, make)  # type: ignore[return-value]


def parse_error(data: bytes | bytearray | memoryview, off: int, length: int, flags: int) -> RouteError:
    """Decode the NLMSG_ERROR at ``off`` (``length`` bytes long, header ``flags``)."""
    err = -_I32.unpack_from(data, off + 16)[0]
    message = ""
    if flags & NLM_F_ACK_TLVS:
        inner_len = _U32.unpack_from(data, off + 20)[0]
        # NETLINK_CAP_ACK: only the original header is echoed unless the kernel says otherwise
        pos = off + 20 + (16 if flags & 0x100 else (inner_len + 3) & ~3)
        end = off + length
        while pos + 4 <= end:
            alen, atype = _RTA.unpack_from(data, pos)
            if alen < 4:
                break
            if atype == NLMSGERR_ATTR_MSG:
                message = bytes(data[pos + 4 : pos + alen]).rstrip(b"\0").decode("utf-8", "replace")
            pos += (alen + 3) & ~3
    return RouteError(err, message)


class Channel:
    """One rtnetlink socket and its sequence numbers; synchronous, not thread-safe (one user at a time)."""

    def __init__(self, netns: str = "") -> None:
        self.netns = netns
        self.sock = open_route_socket(netns)
        self._seq = 1
        self._buf = bytearray(1 << 20)

    def close(self) -> None:
        self.sock.close()

    def next_seq(self, count: int) -> int:
        """Reserve ``count`` consecutive sequence numbers; return the first."""
        seq = self._seq
        if seq + count + 2 >= 1 << 31:
            seq = 1
        self._seq = seq + count + 1
        return seq

    def transact(self, data: bytes | bytearray | memoryview) -> dict[int, RouteError]:
        """Send a batch of messages (no NLM_F_ACK on them) plus a fence; return errors by seq.

        All messages' replies are queued by the time ``send`` returns (rtnetlink runs in the sender's
        context), so reading up to the fence's ACK does not wait on the kernel.
        Raises NetlinkError if the socket loses replies (ENOBUFS) or the fence fails.
        """
        fence_seq = self.next_seq(1)
        fence = _HDR.pack(16, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, fence_seq, 0)
        sock = self.sock
        view = memoryview(data)
        step = 1 << 20
        pos = 0
        while pos < len(view):  # messages never straddle: callers keep batches far below the step
            end = min(pos + step, len(view))
            if end < len(view):
                end = _message_boundary(view, pos, end)
            sock.send(view[pos:end])
            pos = end
        sock.send(fence)
        errors: dict[int, RouteError] = {}
        buf = self._buf
        while True:
            try:
                n = sock.recv_into(buf)
            except OSError as exc:
                if exc.errno == errno_mod.ENOBUFS:
                    raise NetlinkError(exc.errno, "netlink receive buffer overflow: replies lost") from None
                raise
            off = 0
            while off + 16 <= n:
                length, mtype, flags, seq, _pid = _HDR.unpack_from(buf, off)
                if length < 16:
                    break
                if mtype == NLMSG_ERROR:
                    if seq == fence_seq:
                        code = -_I32.unpack_from(buf, off + 16)[0]
                        if code:
                            raise NetlinkError(code, "netlink fence failed")
                        return errors
                    errors[seq] = parse_error(buf, off, length, flags)
                off += (length + 3) & ~3

    def request(self, msg: bytes) -> RouteError | None:
        """Send one message with NLM_F_ACK semantics through the fence; return its error or None."""
        seq = _HDR.unpack_from(msg, 0)[3]
        return self.transact(msg).get(seq)

    def dump(self, msg: bytes) -> Iterable[tuple[memoryview, int, int, int]]:
        """Send a dump request; yield ``(buffer, offset, length, type)`` per reply message.

        The buffer view is only valid until the next iteration. Raises NetlinkError on a dump error.
        """
        sock = self.sock
        sock.send(msg)
        seq = _HDR.unpack_from(msg, 0)[3]
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while True:
            n = sock.recv_into(buf)
            off = 0
            while off + 16 <= n:
                length, mtype, _flags, mseq, _pid = _HDR.unpack_from(buf, off)
                if length < 16:
                    break
                if mseq == seq:
                    if mtype == NLMSG_DONE:
                        return
                    if mtype == NLMSG_ERROR:
                        err = parse_error(buf, off, length, _flags)
                        if err.errno:
                            raise NetlinkError(err.errno, f"dump failed: {err.describe()}")
                    else:
                        yield view, off, length, mtype
                off += (length + 3) & ~3


def _message_boundary(view: memoryview, start: int, limit: int) -> int:
    pos = start
    while True:
        length = _U32.unpack_from(view, pos)[0]
        nxt = pos + ((length + 3) & ~3)
        if nxt > limit:
            return pos
        pos = nxt


# --- route messages ---------------------------------------------------------------------------------


def _attr(atype: int, payload: bytes) -> bytes:
    raw = _RTA.pack(4 + len(payload), atype) + payload
    return raw + b"\0" * (-len(raw) % 4)


class RouteCodec:
    """Precompiled route messages of one family for one (table, protocol, metric, prefsrc).

    Layout of every route message: nlmsghdr, rtmsg, RTA_DST, then RTA_NH_ID (or RTA_GATEWAY [+ RTA_OIF])
    and the constant attributes (RTA_TABLE, RTA_PRIORITY, RTA_PREFSRC) as one precomputed block, so
    one ``pack_into`` writes a whole message.
    """

    def __init__(self, family: Family, table: int, protocol: int, metric: int, prefsrc: str | None) -> None:
        self.family = family
        self.table = table
        self.protocol = protocol
        self.metric = metric
        self.af = _AF[family]
        alen = _ALEN[family]
        self.alen = alen
        self.rtm_table = table if table < 256 else RT_TABLE_COMPAT
        consts = _attr(RTA_TABLE, _U32.pack(table)) + _attr(RTA_PRIORITY, _U32.pack(metric))
        self.prefsrc = socket.inet_pton(self.af, prefsrc) if prefsrc else b""
        if self.prefsrc:
            consts += _attr(RTA_PREFSRC, self.prefsrc)
        self.consts = consts
        del_consts = _attr(RTA_TABLE, _U32.pack(table)) + _attr(RTA_PRIORITY, _U32.pack(metric))
        self.del_consts = del_consts
        dst_fmt = "I" if family is Family.IPV4 else "16s"
        head = "=IHHIIBBBBBBBBI"  # nlmsghdr + rtmsg
        # routes via a nexthop object
        self.s_nh = struct.Struct(f"{head}HH{dst_fmt}HHI{len(consts)}s")
        # routes via a gateway (when no nexthop object could be made: the kernel judges each route)
        self.s_gw = struct.Struct(f"{head}HH{dst_fmt}HH{alen}s{len(consts)}s")
        self.s_del = struct.Struct(f"{head}HH{dst_fmt}{len(del_consts)}s")
        self._sh = _SH4 if family is Family.IPV4 else _SH6
        self._width = 32 if family is Family.IPV4 else 128

    def split(self, key: int) -> tuple[int, int]:
        """key → (prefix length, network int)."""
        sh = self._sh[key.bit_length()]
        length = key >> sh
        return length, (key ^ (length << sh)) << (self._width - sh)

    def encode_nh(self, items: Sequence[tuple[int, int]], installed: dict[int, int], seq: int) -> bytearray:
        """Messages for ``(key, nhid)`` items: REPLACE when ``key`` is installed, else ADD (EXCL).

        EXCL on first install means a route someone else put at the same prefix, table and metric is
        reported (EEXIST) instead of silently overwritten.
        """
        s = self.s_nh
        size = s.size
        buf = bytearray(size * len(items))
        pack_into = s.pack_into
        af, tbl, proto, consts = self.af, self.rtm_table, self.protocol, self.consts
        sh_tab = self._sh
        off = 0
        if self.family is Family.IPV4:
            htonl = socket.htonl
            for key, nh in items:
                sh = sh_tab[key.bit_length()]
                ln = key >> sh
                pack_into(buf, off, size, RTM_NEWROUTE, REPLACE_FLAGS if key in installed else ADD_FLAGS,
                          seq, 0, af, ln, 0, 0, tbl, proto, 0, RTN_UNICAST, 0,
                          8, RTA_DST, htonl((key ^ (ln << sh)) << (32 - sh)), 8, RTA_NH_ID, nh, consts)
                off += size
                seq += 1
        else:
            for key, nh in items:
                sh = sh_tab[key.bit_length()]
                ln = key >> sh
                pack_into(buf, off, size, RTM_NEWROUTE, REPLACE_FLAGS if key in installed else ADD_FLAGS,
                          seq, 0, af, ln, 0, 0, tbl, proto, 0, RTN_UNICAST, 0,
                          20, RTA_DST, ((key ^ (ln << sh)) << (128 - sh)).to_bytes(16, "big"),
                          8, RTA_NH_ID, nh, consts)
                off += size
                seq += 1
        return buf

    def encode_nh_fixed(self, items: Sequence[tuple[int, int]], flags: int, seq: int) -> bytearray:
        """Like ``encode_nh`` with the same netlink flags on every message (benchmarks, repairs)."""
        return self.encode_nh(items, {} if flags == ADD_FLAGS else _ALWAYS, seq)

    def encode_gw(self, items: Sequence[tuple[int, bytes]], installed: dict[int, int], seq: int) -> bytearray:
        """Messages for ``(key, gateway bytes)`` items (no nexthop object)."""
        s = self.s_gw
        size = s.size
        buf = bytearray(size * len(items))
        pack_into = s.pack_into
        v4 = self.family is Family.IPV4
        glen = 4 + self.alen
        off = 0
        for key, gw in items:
            ln, net = self.split(key)
            dst: int | bytes = socket.htonl(net) if v4 else net.to_bytes(16, "big")
            pack_into(buf, off, size, RTM_NEWROUTE, REPLACE_FLAGS if key in installed else ADD_FLAGS,
                      seq, 0, self.af, ln, 0, 0, self.rtm_table, self.protocol, 0, RTN_UNICAST, 0,
                      4 + self.alen, RTA_DST, dst, glen, RTA_GATEWAY, gw, self.consts)
            off += size
            seq += 1
        return buf

    def encode_del(self, keys: Sequence[int], seq: int) -> bytearray:
        """RTM_DELROUTE for ``keys`` (our table, protocol and metric only). Order is the caller's."""
        s = self.s_del
        size = s.size
        buf = bytearray(size * len(keys))
        pack_into = s.pack_into
        v4 = self.family is Family.IPV4
        af, tbl, proto, consts, alen = self.af, self.rtm_table, self.protocol, self.del_consts, 4 + self.alen
        sh_tab = self._sh
        width = self._width
        off = 0
        htonl = socket.htonl
        for key in keys:
            sh = sh_tab[key.bit_length()]
            ln = key >> sh
            net = (key ^ (ln << sh)) << (width - sh)
            pack_into(buf, off, size, RTM_DELROUTE, DEL_FLAGS, seq, 0, af, ln, 0, 0, tbl, proto,
                      RT_SCOPE_UNIVERSE, RTN_UNICAST, 0, alen, RTA_DST,
                      htonl(net) if v4 else net.to_bytes(16, "big"), consts)
            off += size
            seq += 1
        return buf

    def encode_del_metric(self, key: int, metric: int, seq: int) -> bytes:
        """One RTM_DELROUTE of our protocol at another metric (reconcile after a metric change)."""
        ln, net = self.split(key)
        dst = net.to_bytes(self.alen, "big")
        body = _RTMSG.pack(self.af, ln, 0, 0, self.rtm_table, self.protocol, 0, RTN_UNICAST, 0)
        body += _attr(RTA_DST, dst) + _attr(RTA_TABLE, _U32.pack(self.table))
        body += _attr(RTA_PRIORITY, _U32.pack(metric))
        return _HDR.pack(16 + len(body), RTM_DELROUTE, DEL_FLAGS, seq, 0) + body

    def dump_request(self, seq: int) -> bytes:
        """RTM_GETROUTE dump filtered (strict checking) to our table and protocol."""
        body = _RTMSG.pack(self.af, 0, 0, 0, self.rtm_table, self.protocol, 0, 0, 0)
        body += _attr(RTA_TABLE, _U32.pack(self.table))
        return _HDR.pack(16 + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


class _Always(dict[int, int]):
    def __contains__(self, key: object) -> bool:
        return True


_ALWAYS = _Always()


class KernelRoute(NamedTuple):
    """One route of our table and protocol as the kernel reports it."""

    nhid: int
    gateway: bytes
    prefsrc: bytes
    metric: int


def dump_routes(chan: Channel, codec: RouteCodec) -> dict[int, KernelRoute]:
    """Every route of ``codec``'s family in our table with our protocol, keyed by prefix key.

    Raw parsing (no pyroute2 objects, no per-attribute objects): a million routes read in seconds.
    Routes at other metrics than ours are included (``metric`` says which).
    """
    seq = chan.next_seq(1)
    out: dict[int, KernelRoute] = {}
    want_table, want_proto, af = codec.table, codec.protocol, codec.af
    unpack_rta = _RTA.unpack_from
    unpack_u32 = _U32.unpack_from
    unpack_hdr = _HDR.unpack_from
    unpack_rtm = _RTMSG.unpack_from
    sock = chan.sock
    sock.send(codec.dump_request(seq))
    buf = bytearray(1 << 20)
    frombytes = int.from_bytes
    while True:
        n = sock.recv_into(buf)
        off = 0
        while off + 16 <= n:
            length, mtype, flags, mseq, _pid = unpack_hdr(buf, off)
            if length < 16:
                break
            nxt = off + ((length + 3) & ~3)
            if mseq != seq:
                off = nxt
                continue
            if mtype == NLMSG_DONE:
                return out
            if mtype == NLMSG_ERROR:
                err = parse_error(buf, off, length, flags)
                if err.errno:
                    raise NetlinkError(err.errno, f"route dump failed: {err.describe()}")
                off = nxt
                continue
            fam, dst_len, _s, _t, table, proto, _sc, rtype, _f = unpack_rtm(buf, off + 16)
            if fam != af or proto != want_proto or rtype != RTN_UNICAST:
                off = nxt
                continue
            pos = off + 28
            end = off + length
            dst: bytes | bytearray = b""
            nhid = 0
            gw = b""
            src = b""
            metric = 0
            while pos < end:
                alen, atype = unpack_rta(buf, pos)
                if alen < 4:
                    break
                if atype == RTA_DST:
                    dst = buf[pos + 4 : pos + 4 + ((dst_len + 7) >> 3)]
                elif atype == RTA_NH_ID:
                    nhid = unpack_u32(buf, pos + 4)[0]
                elif atype == RTA_TABLE:
                    table = unpack_u32(buf, pos + 4)[0]
                elif atype == RTA_PRIORITY:
                    metric = unpack_u32(buf, pos + 4)[0]
                elif atype == RTA_PREFSRC:
                    src = bytes(buf[pos + 4 : pos + alen])
                elif atype == RTA_GATEWAY:
                    gw = bytes(buf[pos + 4 : pos + alen])
                pos += (alen + 3) & ~3
            off = nxt
            if table != want_table:
                continue
            key = frombytes(bytes((dst_len,)) + dst, "big") if dst_len else 0
            out[key] = KernelRoute(nhid, gw, src, metric)


# --- nexthop objects --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KernelNexthop:
    nhid: int
    family: Family
    gateway: bytes
    oif: int
    protocol: int


def nexthop_msg(seq: int, nhid: int, family: Family, gateway: bytes, oif: int, protocol: int,
                replace: bool = False, onlink: bool = False) -> bytes:
    """RTM_NEWNEXTHOP for a gateway nexthop (``replace`` re-points an existing id in one operation)."""
    body = _NHMSG.pack(_AF[family], RT_SCOPE_UNIVERSE, protocol, 0, RTNH_F_ONLINK if onlink else 0)
    body += _attr(NHA_ID, _U32.pack(nhid)) + _attr(NHA_OIF, _U32.pack(oif)) + _attr(NHA_GATEWAY, gateway)
    flags = NLM_F_REQUEST | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
    return _HDR.pack(16 + len(body), RTM_NEWNEXTHOP, flags, seq, 0) + body


def del_nexthop_msg(seq: int, nhid: int) -> bytes:
    body = _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _attr(NHA_ID, _U32.pack(nhid))
    return _HDR.pack(16 + len(body), RTM_DELNEXTHOP, NLM_F_REQUEST, seq, 0) + body


def dump_nexthops(chan: Channel, protocol: int) -> dict[int, KernelNexthop]:
    """Every gateway nexthop object of ``protocol``."""
    seq = chan.next_seq(1)
    req = _HDR.pack(24, RTM_GETNEXTHOP, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    req += _NHMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    out: dict[int, KernelNexthop] = {}
    for buf, off, length, mtype in chan.dump(req):
        if mtype != RTM_NEWNEXTHOP:
            continue
        af, _scope, proto, _r, _flags = _NHMSG.unpack_from(buf, off + 16)
        if proto != protocol or af not in (socket.AF_INET, socket.AF_INET6):
            continue
        pos, end = off + 24, off + length
        nhid, oif, gw = 0, 0, b""
        while pos + 4 <= end:
            alen, atype = _RTA.unpack_from(buf, pos)
            if alen < 4:
                break
            if atype == NHA_ID:
                nhid = _U32.unpack_from(buf, pos + 4)[0]
            elif atype == NHA_OIF:
                oif = _U32.unpack_from(buf, pos + 4)[0]
            elif atype == NHA_GATEWAY:
                gw = bytes(buf[pos + 4 : pos + alen])
            pos += (alen + 3) & ~3
        if nhid and gw:
            fam = Family.IPV4 if af == socket.AF_INET else Family.IPV6
            out[nhid] = KernelNexthop(nhid, fam, gw, oif, proto)
    return out


def resolve_oif(chan: Channel, family: Family, gateway: bytes) -> tuple[int, bool] | RouteError:
    """Which interface reaches ``gateway`` directly: ``(oif, connected)`` or the kernel's error.

    ``connected`` is False when the kernel's route to the gateway itself has a gateway (the next hop is
    not on-link); a nexthop object cannot use it then.
    """
    seq = chan.next_seq(1)
    body = _RTMSG.pack(_AF[family], _ALEN[family] * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, gateway)
    msg = _HDR.pack(16 + len(body), RTM_GETROUTE, NLM_F_REQUEST, seq, 0) + body
    sock = chan.sock
    sock.send(msg)
    buf = bytearray(65536)
    while True:
        n = sock.recv_into(buf)
        off = 0
        while off + 16 <= n:
            length, mtype, flags, mseq, _pid = _HDR.unpack_from(buf, off)
            if length < 16:
                break
            if mseq == seq:
                if mtype == NLMSG_ERROR:
                    return parse_error(buf, off, length, flags)
                if mtype == RTM_NEWROUTE:
                    pos, end = off + 28, off + length
                    oif, via = 0, False
                    while pos + 4 <= end:
                        alen, atype = _RTA.unpack_from(buf, pos)
                        if alen < 4:
                            break
                        if atype == RTA_OIF:
                            oif = _U32.unpack_from(buf, pos + 4)[0]
                        elif atype == RTA_GATEWAY:
                            via = True
                        pos += (alen + 3) & ~3
                    return oif, not via
            off += (length + 3) & ~3


def local_addresses(chan: Channel) -> set[bytes]:
    """Every address (IFA_LOCAL / IFA_ADDRESS) configured on an interface of the namespace."""
    out: set[bytes] = set()
    for af in (socket.AF_INET, socket.AF_INET6):
        seq = chan.next_seq(1)
        req = _HDR.pack(24, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + struct.pack("=BBBBI", af, 0, 0,
                                                                                          0, 0)
        for buf, off, length, mtype in chan.dump(req):
            if mtype != RTM_NEWADDR:
                continue
            pos, end = off + 24, off + length
            while pos + 4 <= end:
                alen, atype = _RTA.unpack_from(buf, pos)
                if alen < 4:
                    break
                if atype in (IFA_LOCAL, IFA_ADDRESS):
                    out.add(bytes(buf[pos + 4 : pos + alen]))
                pos += (alen + 3) & ~3
    return out
