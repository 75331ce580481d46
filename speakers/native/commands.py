"""ExaBGP API command lines → announcements and withdrawals (pure; no I/O).

The daemon talks to every speaker in ExaBGP's command language (``Speaker.send(command)``), so the
native speaker accepts the same lines that ``speakers.exabgp.session.announce_command`` /
``withdraw_command`` write:

``[neighbor ADDR] announce route P next-hop NH|self [origin igp|egp|incomplete] [as-path [ A B ]
[( C D )]] [med N] [local-preference N] [community [ X:Y ... ]] [large-community [ A:B:C ... ]]
[atomic-aggregate] [aggregator ( AS:IP )]`` and ``[neighbor ADDR] withdraw route P [next-hop NH]``.

``speakers/exabgp`` only renders these lines (it never parses them), so this is the one parser.
Bracketed lists may also be a single bare value (``community 65000:1``), as ExaBGP allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from orchestrator.rib.attrs import (
    AS_SEQUENCE,
    AS_SET,
    Attributes,
    Origin,
    parse_community,
    parse_large_community,
)
from orchestrator.rib.prefix import Family, parse_prefix

NEXT_HOP_SELF: Final = "self"

_ORIGINS: Final[Mapping[str, Origin]] = {
    "igp": Origin.IGP,
    "egp": Origin.EGP,
    "incomplete": Origin.INCOMPLETE,
}
# RFC 1997 / 3765 / 7999 well-known communities, as ExaBGP names them.
_WELL_KNOWN: Final[Mapping[str, int]] = {
    "no-export": 0xFFFFFF01,
    "no-advertise": 0xFFFFFF02,
    "no-export-subconfed": 0xFFFFFF03,
    "nopeer": 0xFFFFFF04,
    "blackhole": 0xFFFF029A,
}


@dataclass(frozen=True, slots=True)
class RouteCommand:
    """One parsed command: ``attrs`` is None for a withdrawal. ``attrs.next_hop`` may be ``"self"``."""

    action: str  # "announce" | "withdraw"
    family: Family
    key: int
    attrs: Attributes | None
    neighbor: str | None = None


def _tokens(line: str) -> list[str]:
    for ch in "[]()":
        line = line.replace(ch, f" {ch} ")
    return line.split()


def _group(tokens: list[str], i: int, what: str) -> tuple[list[str], int, str]:
    """Values at ``tokens[i]``: a ``[ ... ]`` / ``( ... )`` list or one bare value."""
    if i >= len(tokens):
        raise ValueError(f"{what}: missing value")
    opener = tokens[i]
    if opener in ("[", "("):
        closer = "]" if opener == "[" else ")"
        try:
            end = tokens.index(closer, i + 1)
        except ValueError:
            raise ValueError(f"{what}: missing {closer!r}") from None
        return tokens[i + 1 : end], end + 1, opener
    return [opener], i + 1, ""


def _int(text: str, what: str, bits: int = 32) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{what}: not an integer: {text!r}") from None
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{what}: out of range: {text!r}")
    return value


def parse_command(line: str) -> RouteCommand:
    """Parse one command line. Raises ValueError naming the problem (unknown keyword, bad value)."""
    tokens = _tokens(line.strip())
    neighbor: str | None = None
    if len(tokens) >= 2 and tokens[0] == "neighbor":
        neighbor = tokens[1]
        tokens = tokens[2:]
    if len(tokens) < 3 or tokens[0] not in ("announce", "withdraw") or tokens[1] != "route":
        raise ValueError(f"not an announce/withdraw route command: {line!r}")
    action = tokens[0]
    family, key = parse_prefix(tokens[2])
    next_hop = ""
    origin = Origin.IGP
    as_path: list[tuple[int, tuple[int, ...]]] = []
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[int, ...] = ()
    large: tuple[tuple[int, int, int], ...] = ()
    atomic = False
    aggregator: tuple[int, str] | None = None
    i = 3
    while i < len(tokens):
        word = tokens[i]
        i += 1
        if word == "next-hop":
            if i >= len(tokens):
                raise ValueError("next-hop: missing value")
            next_hop = tokens[i]
            i += 1
            if next_hop != NEXT_HOP_SELF:
                nh_family = Family.IPV6 if ":" in next_hop else Family.IPV4
                parse_prefix(next_hop)  # validates the address (a /32 or /128)
                if nh_family is not family and family is Family.IPV4:
                    raise ValueError(f"next-hop {next_hop} is not an IPv4 address")
        elif word == "origin":
            if i >= len(tokens) or tokens[i] not in _ORIGINS:
                raise ValueError("origin: expected igp, egp or incomplete")
            origin = _ORIGINS[tokens[i]]
            i += 1
        elif word == "as-path":
            values, i, _ = _group(tokens, i, "as-path")
            if values:
                as_path.append((AS_SEQUENCE, tuple(_int(v, "as-path") for v in values)))
            while i < len(tokens) and tokens[i] == "(":
                values, i, _ = _group(tokens, i, "as-path set")
                as_path.append((AS_SET, tuple(_int(v, "as-path set") for v in values)))
        elif word == "med":
            med = _int(tokens[i] if i < len(tokens) else "", "med")
            i += 1
        elif word == "local-preference":
            local_pref = _int(tokens[i] if i < len(tokens) else "", "local-preference")
            i += 1
        elif word == "community":
            values, i, _ = _group(tokens, i, "community")
            communities = tuple(_WELL_KNOWN.get(v) or parse_community(v) for v in values)
        elif word == "large-community":
            values, i, _ = _group(tokens, i, "large-community")
            large = tuple(parse_large_community(v) for v in values)
        elif word == "atomic-aggregate":
            atomic = True
        elif word == "aggregator":
            values, i, _ = _group(tokens, i, "aggregator")
            text = " ".join(values).replace(" ", "")
            agg_as, sep, agg_ip = text.partition(":")
            if not sep:
                raise ValueError(f"aggregator: expected ( AS:IP ), got {text!r}")
            parse_prefix(agg_ip)
            aggregator = (_int(agg_as, "aggregator"), agg_ip)
        else:
            raise ValueError(f"unknown keyword {word!r} in {line!r}")
    if action == "withdraw":
        return RouteCommand(action, family, key, None, neighbor)
    if not next_hop:
        raise ValueError(f"announce needs a next-hop: {line!r}")
    attrs = Attributes(
        next_hop=next_hop,
        origin=origin,
        as_path=tuple(as_path),
        med=med,
        local_pref=local_pref,
        communities=communities,
        large_communities=large,
        atomic_aggregate=atomic,
        aggregator=aggregator,
    )
    return RouteCommand(action, family, key, attrs, neighbor)


__all__ = ["NEXT_HOP_SELF", "RouteCommand", "parse_command"]
