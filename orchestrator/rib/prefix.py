"""Prefix keys: one small int per prefix, collision-free in a dict.

Theory of operation
-------------------
A prefix is stored as the big-endian integer of its NLRI encoding: one length byte followed by the
``ceil(length / 8)`` significant bytes of the network (RFC 4271 4.3). ``10.1.0.0/16`` is the bytes
``10 0a 01`` and the key ``0x100a01``. Because the length byte leads and is non-zero (except for the
default route, key ``0``), the encoding is injective across lengths, and the low bits of the key are
the last significant prefix byte, which varies, so CPython's int hash spreads keys well; the obvious
``(network << 8) | length`` does not (DESIGN.md "Prefix keys"). IPv4 and IPv6 live in separate
tables, so a key does not carry its family. Host bits are always zero in a key.

A key fits in one 30-bit CPython digit for IPv4 prefixes up to /24 (28 bytes per int object).
"""

from __future__ import annotations

import enum
import ipaddress
import socket


class Family(enum.Enum):
    """Address family (AFI/SAFI); only unicast is carried today."""

    IPV4 = "ipv4 unicast"
    IPV6 = "ipv6 unicast"

    @property
    def afi(self) -> int:
        return 1 if self is Family.IPV4 else 2

    @property
    def short(self) -> str:
        return "ipv4" if self is Family.IPV4 else "ipv6"

    @property
    def max_length(self) -> int:
        return 32 if self is Family.IPV4 else 128

    @classmethod
    def from_short(cls, name: str) -> Family:
        """``"ipv4"`` / ``"ipv6"`` (also the ``"ipv4 unicast"`` form) → Family; ValueError otherwise."""
        for fam in cls:
            if name in (fam.short, fam.value):
                return fam
        raise ValueError(f"unknown family {name!r} (expected ipv4 or ipv6)")


_ADDR_BYTES = {Family.IPV4: 4, Family.IPV6: 16}


def key_from_nlri(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """Read one NLRI at ``offset``; return ``(key, next_offset)``. No validation of the length byte."""
    length = data[offset]
    end = offset + 1 + ((length + 7) >> 3)
    return int.from_bytes(data[offset:end], "big"), end


def key_from_parts(network: int, length: int, family: Family) -> int:
    """Key of ``network/length`` where ``network`` is the address as an int (host bits are cleared)."""
    total = _ADDR_BYTES[family]
    nbytes = (length + 7) >> 3
    network >>= (total - nbytes) * 8  # keep the significant bytes only
    if length & 7:
        network &= ~((1 << (8 - (length & 7))) - 1)  # clear host bits in the last byte
    return (length << (8 * nbytes)) | network


def parse_prefix(text: str) -> tuple[Family, int]:
    """``"10.0.0.0/8"`` or ``"2001:db8::/32"`` → ``(family, key)``.

    Raises ValueError naming the text when it is not a prefix or has host bits set.
    """
    addr, sep, length_text = text.partition("/")
    try:
        if ":" in addr:
            family = Family.IPV6
            raw = socket.inet_pton(socket.AF_INET6, addr)
        else:
            family = Family.IPV4
            raw = socket.inet_aton(addr) if addr.count(".") == 3 else b""
            if not raw:
                raise OSError
        length = int(length_text) if sep else family.max_length
    except (OSError, ValueError):
        raise ValueError(f"not a prefix: {text!r}") from None
    if not 0 <= length <= family.max_length:
        raise ValueError(f"prefix length out of range: {text!r}")
    network = int.from_bytes(raw, "big")
    host_mask = (1 << (family.max_length - length)) - 1
    if network & host_mask:
        raise ValueError(f"host bits set in prefix: {text!r}")
    return family, key_from_parts(network, length, family)


def key_length(key: int) -> int:
    """Prefix length of a key."""
    if key == 0:
        return 0
    nbytes = (key.bit_length() + 7) >> 3
    return key >> (8 * (nbytes - 1))


def key_network(key: int, family: Family) -> int:
    """Network address of a key, as an int of the family's width."""
    if key == 0:
        return 0
    nbytes = (key.bit_length() + 7) >> 3
    significant = key & ((1 << (8 * (nbytes - 1))) - 1)
    return significant << (8 * (_ADDR_BYTES[family] - (nbytes - 1)))


def format_prefix(family: Family, key: int) -> str:
    """Key → ``"a.b.c.d/n"`` or compressed IPv6 text."""
    network = key_network(key, family)
    length = key_length(key)
    if family is Family.IPV4:
        return f"{socket.inet_ntoa(network.to_bytes(4, 'big'))}/{length}"
    return f"{socket.inet_ntop(socket.AF_INET6, network.to_bytes(16, 'big'))}/{length}"


def nlri_bytes(key: int) -> bytes:
    """Key → its NLRI wire encoding (length byte + significant bytes)."""
    if key == 0:
        return b"\x00"
    return key.to_bytes((key.bit_length() + 7) >> 3, "big")


def covering_keys(family: Family, address: int) -> list[int]:
    """Keys of every prefix containing ``address``, longest first (for longest-match lookups)."""
    width = family.max_length
    return [key_from_parts(address, length, family) for length in range(width, -1, -1)]


def parse_address(text: str) -> tuple[Family, int]:
    """``"192.0.2.1"`` → ``(Family.IPV4, int)``; ValueError when not an address."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None
    return (Family.IPV4 if ip.version == 4 else Family.IPV6), int(ip)
