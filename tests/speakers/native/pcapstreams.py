"""BGP byte streams out of classic pcap captures, for tests: the TCP payload of each flow (one
direction of one connection) in sequence order, retransmissions dropped. Ethernet (with VLAN tags),
Cisco HDLC, Linux SLL, BSD loopback and raw IP frames; MPLS label stacks; IPv4 and IPv6. A flow is
BGP when its payload starts with the 16-byte marker, whatever the port (some captures use 1179)."""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Iterator

Flow = tuple[bytes, int, bytes, int]  # (source address, port, destination address, port)


def frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        e = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        e = ">"
    else:
        raise ValueError(f"not a classic pcap file (magic {magic.hex()})")
    link = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(e + "I", data[off + 8:off + 12])[0]
        yield link, data[off + 16:off + 16 + incl]
        off += 16 + incl


def _network(link: int, frame: bytes) -> tuple[int, bytes]:
    if link == 1:  # Ethernet
        ethertype, p = struct.unpack(">H", frame[12:14])[0], 14
        while ethertype in (0x8100, 0x88A8):
            ethertype, p = struct.unpack(">H", frame[p + 2:p + 4])[0], p + 4
        return ethertype, frame[p:]
    if link == 104:  # Cisco HDLC
        return struct.unpack(">H", frame[2:4])[0], frame[4:]
    if link == 113:  # Linux cooked
        return struct.unpack(">H", frame[14:16])[0], frame[16:]
    if link == 0:  # BSD loopback
        return (0x0800 if struct.unpack("<I", frame[:4])[0] == 2 else 0x86DD), frame[4:]
    if link in (12, 14, 101):  # raw IP
        return (0x0800 if frame[0] >> 4 == 4 else 0x86DD), frame
    raise ValueError(f"link type {link} not supported")


def _below_mpls(ethertype: int, packet: bytes) -> tuple[int, bytes]:
    """An MPLS label stack (as in a VPN capture) popped down to the IP packet under it."""
    while ethertype in (0x8847, 0x8848):
        bottom = packet[2] & 1
        packet = packet[4:]
        if bottom:
            ethertype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
    return ethertype, packet


def tcp_segments(data: bytes) -> Iterator[tuple[Flow, int, bytes]]:
    for link, frame in frames(data):
        ethertype, ip = _below_mpls(*_network(link, frame))
        if ethertype == 0x0800 and ip[9] == 6:
            ihl, total = (ip[0] & 15) * 4, struct.unpack(">H", ip[2:4])[0]
            src, dst, seg = ip[12:16], ip[16:20], ip[ihl:total]
        elif ethertype == 0x86DD and ip[6] == 6:
            src, dst, seg = ip[8:24], ip[24:40], ip[40:40 + struct.unpack(">H", ip[4:6])[0]]
        else:
            continue
        sport, dport, seq = struct.unpack(">HHI", seg[:8])
        payload = seg[(seg[12] >> 4) * 4:]
        if payload:
            yield (src, sport, dst, dport), seq, payload


def bgp_streams(data: bytes) -> dict[Flow, bytes]:
    """Each BGP flow's bytes, in capture order of the flows."""
    segments: dict[Flow, dict[int, bytes]] = defaultdict(dict)
    for flow, seq, payload in tcp_segments(data):
        segments[flow].setdefault(seq, payload)  # a retransmission repeats a sequence number
    out: dict[Flow, bytes] = {}
    for flow, by_seq in segments.items():
        buf = bytearray()
        end: int | None = None
        for seq in sorted(by_seq):
            payload = by_seq[seq]
            if end is not None and seq < end:  # overlaps what we have
                payload = payload[end - seq:]
            buf += payload
            end = max(end or 0, seq + len(by_seq[seq]))
        if buf[:16] == b"\xff" * 16:
            out[flow] = bytes(buf)
    return out
