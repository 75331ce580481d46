"""The one validated configuration model, loaded from TOML.

``load_config(path) -> Config`` is the only entry point. ``Config`` is a tree of frozen, slotted
dataclasses; every problem raises ``ConfigError`` naming the file, the line where it can be found,
and the key path (``config.toml:27: peers[2].peer_as: expected an integer``).

CONTRACT (fields below are what the rest of peerctl reads; loading/validation is implemented below).
Public: ``load_config``, ``dump_config``, ``diff_peers`` / ``PeerDiff``.
"""

from __future__ import annotations

import difflib
import enum
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar, cast

from orchestrator.errors import ConfigError
from orchestrator.rib.prefix import Family

if TYPE_CHECKING:  # policies.config imports this module (PeerKind): parsed lazily in _load_peer
    from policies.config import PeerPolicy
    from policies.safety import SafetyRules


class PeerKind(enum.Enum):
    MUX = "mux"
    UPSTREAM = "upstream"
    ROUTE_SERVER = "route-server"
    IXP_PEER = "ixp-peer"
    COLLECTOR = "collector"


class SpeakerKind(enum.Enum):
    EXABGP = "exabgp"
    NATIVE = "native"


class FibMode(enum.Enum):
    OFF = "off"
    DEFAULT = "default"
    FULL = "full"


DEFAULT_LOCAL_PREF: dict[PeerKind, int] = {
    PeerKind.UPSTREAM: 100,
    PeerKind.MUX: 100,
    PeerKind.ROUTE_SERVER: 140,
    PeerKind.IXP_PEER: 150,
    PeerKind.COLLECTOR: 100,
}


@dataclass(frozen=True, slots=True)
class LocalConfig:
    asn: int
    router_id: str
    source4: str | None = None
    source6: str | None = None


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8179


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    dir: Path = Path("run")  # resolved relative to the config file
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class DecisionConfig:
    always_compare_med: bool = False


@dataclass(frozen=True, slots=True)
class FibConfig:
    mode: FibMode = FibMode.OFF
    table: int = 254
    protocol: int = 201
    metric: int = 0
    netns: str = ""
    source_interface: str = ""
    per_upstream_tables: bool = False
    upstream_table_base: int = 20100
    """With per_upstream_tables: peers[i] of kind upstream or mux gets table base + i unless it sets
    its own ``table`` (resolved into ``PeerConfig.table`` by load_config)."""
    stale_timeout: float = 120.0
    """After a restart, routes found in the kernel are kept (forwarding) until every peer sent
    End-of-RIB; a peer that does not come back has its routes deleted after this many seconds
    (0 = keep them until it does). 120 s: RFC 4724's suggested restart time."""


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    kind: PeerKind
    neighbor: str
    peer_as: int
    local_address: str | None = None
    families: tuple[Family, ...] = (Family.IPV4, Family.IPV6)
    hold_time: int = 90
    passive: bool = False
    multihop: int | None = None  # TTL; None = directly connected (ExaBGP/BIRD default)
    password: str | None = None  # TCP-MD5
    speaker: SpeakerKind = SpeakerKind.EXABGP
    local_pref: int = 100  # resolved from DEFAULT_LOCAL_PREF by kind unless set
    port: int = 179
    description: str = ""
    template: str | None = None
    allow_own_as: bool = False
    """Keep paths whose AS_PATH holds our AS (BIRD's ``allow local as``); by default they are AS
    loops, applied as withdrawals (RFC 4271 9.1.2)."""
    table: int | None = None
    """The peer's own kernel table (fib.per_upstream_tables): its accepted routes, not just best paths.
    None: no table of its own."""
    policy: PeerPolicy | None = None
    """Import/export policy (issue 4); None when the peer sets no policy key: accept all, no
    max-prefix (the import fast path)."""


@dataclass(frozen=True, slots=True)
class LabConfig:
    enabled: bool = False
    feeders: tuple[str, ...] = ()
    seed: int = 1
    ipv4_prefixes: int = 200_000
    ipv6_prefixes: int = 50_000
    overlap: float = 0.6


@dataclass(frozen=True, slots=True)
class AnnounceConfig:
    """``[announce]``: how our own prefixes are sent (``orchestrator.announce``)."""

    next_hop: str = "self"
    """Next hop when an announcement names none (``self`` = the session's local address)."""
    persist: bool = True
    """Keep announcements in ``runtime.dir/announcements.json`` across restarts."""


class RibPolicy(enum.Enum):
    """Which Adj-RIB-In the collector's RIB dumps hold."""

    POST = "post"  # after import policy: the RIB's paths, attributes as the policy left them
    PRE = "pre"  # as received, including routes the import policy refused
    BOTH = "both"


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    """``[collector]``: MRT files of what peers send (``orchestrator.collector.service``)."""

    enabled: bool = False
    dir: Path = Path("run/mrt")
    """Where ``updates.*`` and ``rib.*`` go; relative to the config file. Default: ``runtime.dir/mrt``."""
    updates_interval: int = 900
    """Seconds per ``updates.YYYYMMDD.HHMM`` file (RouteViews 900, RIS 300)."""
    rib_interval: int = 7200
    """Seconds between ``rib.YYYYMMDD.HHMM`` TABLE_DUMP_V2 dumps (aligned to the epoch); 0 = only on
    request (``POST /api/v1/collector/dump``)."""
    compression: str = "gz"
    """``gz``, ``bz2`` or ``none``."""
    rib_policy: RibPolicy = RibPolicy.POST
    """``post``: ``rib.*`` holds the Adj-RIB-In after import policy; ``pre``: ``rib-pre.*`` holds it as
    received (refused routes included; costs a copy of the table of each peer with a policy);
    ``both``: both files."""


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    local: LocalConfig
    api: ApiConfig = field(default_factory=ApiConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    fib: FibConfig = field(default_factory=FibConfig)
    peers: tuple[PeerConfig, ...] = ()
    lab: LabConfig = field(default_factory=LabConfig)
    safety: SafetyRules | None = None
    """``[safety]``: PEERING announcement rules; None = no allocation, announcements refused."""
    announce: AnnounceConfig = field(default_factory=AnnounceConfig)
    collector: CollectorConfig = field(default_factory=CollectorConfig)

    def peer(self, name: str) -> PeerConfig:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)


# --------------------------------------------------------------------------------------------------
# Loading and validation
#
# Theory of operation: ``tomllib`` turns the file into plain dicts and lists. Each TOML table is read
# through a ``_Section``, which first rejects unknown keys (with a difflib suggestion) and then
# converts keys one by one with small pure converters (``_int(lo, hi)``, ``_ip(4)``, ...). A converter
# raises ``_Invalid(message)``; the section turns that into a ``ConfigError`` carrying the file, the
# key path (``peers[2].peer_as``, 0-based array indices) and the line, which ``_LineIndex`` finds
# best-effort by scanning the raw text once. Cross-field rules run after every table is converted.
# --------------------------------------------------------------------------------------------------

ASN_MAX: Final = 4_294_967_295
U32_MAX: Final = 4_294_967_295
MULTIHOP_TRUE_TTL: Final = 64
"""``multihop = true`` means this TTL (BIRD's default for a bare ``multihop``)."""
LAB_MAX_IPV4: Final = 2_000_000
"""Lab sizes: up to twice today's full IPv4 table (~1.0M) so benchmarks can look ahead."""
LAB_MAX_IPV6: Final = 500_000
"""Up to about twice today's full IPv6 table (~230k)."""
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
TCP_MD5_MAX_KEY: Final = 80  # TCP_MD5SIG_MAXKEYLEN (linux/tcp.h)
IFNAMSIZ: Final = 16  # linux/if.h; names are at most 15 bytes plus NUL
KERNEL_PROTOS: Final = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static"}
REDACTED: Final = "<redacted>"

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)
_Converter = Callable[[object], _T]

_NAME_RE: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_TOML_POS_RE: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
_TOML_EOF_RE: Final = re.compile(r"\s*\(at end of document\)\s*$")


class _Invalid(Exception):
    """Raised by converters; ``sub`` extends the key path (``[1]`` for the second list item)."""

    def __init__(self, message: str, sub: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.sub = sub


def _describe(value: object) -> str:
    """A value as TOML would spell it, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__} ({value})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---- converters: pure, object -> typed value, raise _Invalid ----------------------------------


def _int(lo: int, hi: int) -> _Converter[int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected an integer, got {_describe(value)}")
        if not lo <= value <= hi:
            raise _Invalid(f"must be between {lo} and {hi}, got {value}")
        return value

    return convert


def _float(lo: float, hi: float) -> _Converter[float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Invalid(f"expected a number, got {_describe(value)}")
        number = float(value)
        if not lo <= number <= hi:  # also rejects nan
            raise _Invalid(f"must be between {lo} and {hi}, got {value}")
        return number

    return convert


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _text(value: object) -> str:
    """Any string without control characters (values end up in generated ExaBGP configs)."""
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_describe(value)}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _Invalid(f"must not contain control characters, got {_describe(value)}")
    return value


def _one_of(choices: Sequence[str]) -> _Converter[str]:
    def convert(value: object) -> str:
        text = _text(value)
        if text not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got {_describe(value)}")
        return text

    return convert


def _enum(cls: type[_E]) -> _Converter[_E]:
    choices = [str(member.value) for member in cls]
    pick = _one_of(choices)

    def convert(value: object) -> _E:
        return cls(pick(value))

    return convert


def _name(value: object) -> str:
    """Peer and template names: also used as file names and CLI arguments."""
    text = _text(value)
    if not _NAME_RE.fullmatch(text):
        raise _Invalid(
            f"must be 1-64 characters of A-Z a-z 0-9 _ . - not starting with . or -, got {_describe(value)}"
        )
    return text


def _ip(version: int | None, *, unicast: bool = True) -> _Converter[str]:
    """An IP address (of ``version`` if given), returned in canonical form."""
    label = f"an IPv{version}" if version else "an IP"

    def convert(value: object) -> str:
        text = _text(value)
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise _Invalid(f"expected {label} address, got {_describe(value)}") from None
        if version is not None and ip.version != version:
            raise _Invalid(f"expected {label} address, got {_describe(value)}")
        if unicast and (ip.is_unspecified or ip.is_multicast):
            raise _Invalid(f"must be a unicast address, got {_describe(value)}")
        return str(ip)

    return convert


def _router_id(value: object) -> str:
    rid = _ip(4, unicast=False)(value)
    if rid == "0.0.0.0":
        raise _Invalid("must not be 0.0.0.0 (RFC 6286 2.1)")
    return rid


def _families(value: object) -> tuple[Family, ...]:
    if not isinstance(value, list):
        raise _Invalid(f'expected an array such as ["ipv4", "ipv6"], got {_describe(value)}')
    if not value:
        raise _Invalid("must name at least one family")
    out: list[Family] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Invalid(f"expected a string, got {_describe(item)}", f"[{i}]")
        try:
            fam = Family.from_short(item)
        except ValueError:
            raise _Invalid(f"must be ipv4 or ipv6, got {_describe(item)}", f"[{i}]") from None
        if fam in out:
            raise _Invalid(f"duplicate family {fam.short}", f"[{i}]")
        out.append(fam)
    return tuple(out)


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"expected an array of names, got {_describe(value)}")
    out: list[str] = []
    for i, item in enumerate(value):
        try:
            name = _name(item)
        except _Invalid as exc:
            raise _Invalid(exc.message, f"[{i}]") from None
        if name in out:
            raise _Invalid(f"{_describe(name)} is listed twice", f"[{i}]")
        out.append(name)
    return tuple(out)


def _hold_time(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer, got {_describe(value)}")
    if value < 0 or 0 < value < 3:  # RFC 4271 4.2: zero or at least three seconds
        raise _Invalid(f"must be 0 or >= 3, got {value}")
    if value > 65535:  # a 2-octet field in OPEN
        raise _Invalid(f"must be <= 65535, got {value}")
    return value


def _multihop(value: object) -> int | None:
    """``true`` → TTL 64 (as BIRD), ``false`` → None (directly connected), or a TTL 1..255."""
    if value is True:
        return MULTIHOP_TRUE_TTL
    if value is False:
        return None
    if not isinstance(value, int):
        raise _Invalid(f"expected a TTL (1..255) or true/false, got {_describe(value)}")
    return _int(1, 255)(value)


def _password(value: object) -> str:
    text = _text(value)
    if not 1 <= len(text.encode()) <= TCP_MD5_MAX_KEY:
        raise _Invalid(f"must be 1 to {TCP_MD5_MAX_KEY} bytes (TCP-MD5 key), got {len(text.encode())}")
    if any(c in text for c in "\"'\\") or not text.isascii():
        raise _Invalid("must be printable ASCII without quotes or backslashes")
    return text


def _fib_table(value: object) -> int:
    table = _int(1, U32_MAX)(value)
    if table == 255:
        raise _Invalid("255 is the kernel's local table; use main (254) or a table of our own")
    return table


def _fib_protocol(value: object) -> int:
    proto = _int(0, 255)(value)
    if proto in KERNEL_PROTOS:
        reserved = ", ".join(f"{n} {w}" for n, w in KERNEL_PROTOS.items())
        raise _Invalid(f"{proto} is reserved by the kernel ({reserved}); use 5..255, got {proto}")
    return proto


def _netns(value: object) -> str:
    text = _text(value)
    if text and (text in (".", "..") or "/" in text or len(text.encode()) > 255):
        raise _Invalid(f"not a network namespace name: {_describe(value)}")
    return text


def _ifname(value: object) -> str:
    """Linux ``dev_valid_name``: at most 15 bytes, no '/', ':' or whitespace, not '.' or '..'."""
    text = _text(value)
    if text and (
        len(text.encode()) >= IFNAMSIZ or text in (".", "..") or any(c in "/:" or c.isspace() for c in text)
    ):
        raise _Invalid(f"not an interface name (at most 15 bytes, no / : or spaces): {_describe(value)}")
    return text


def _listen(value: object) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6addr]:port"`` → (host, port)."""
    text = _text(value)
    usage = f'expected "host:port" or "[ipv6]:port", got {_describe(value)}'
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise _Invalid(usage)
        port_text = rest[1:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise _Invalid(f"expected an IPv6 address in brackets, got {_describe(value)}") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise _Invalid(usage)
        if ":" in host:
            raise _Invalid(f'an IPv6 address needs brackets ("[::1]:8179"), got {_describe(value)}')
        if host.replace(".", "").isdigit():
            try:
                host = str(ipaddress.IPv4Address(host))
            except ValueError:
                raise _Invalid(f"not an IPv4 address: {host!r}") from None
        elif not _HOSTNAME_RE.fullmatch(host):
            raise _Invalid(f"not a host name or address: {host!r}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _Invalid(f"port must be 1..65535, got {_describe(port_text)}")
    return host, int(port_text)


# ---- line numbers ---------------------------------------------------------------------------------

_KEY_PART: Final = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED: Final = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_ARRAY_HEADER_RE: Final = re.compile(rf"\s*\[\[\s*({_DOTTED})\s*\]\]")
_TABLE_HEADER_RE: Final = re.compile(rf"\s*\[\s*({_DOTTED})\s*\]")
_KEY_LINE_RE: Final = re.compile(rf"\s*({_DOTTED})\s*=")
_PART_RE: Final = re.compile(_KEY_PART)


def _split_key(dotted: str) -> list[str]:
    parts = []
    for raw in _PART_RE.findall(dotted):
        if raw.startswith('"'):
            try:
                parts.append(str(json.loads(raw)))
            except ValueError:
                parts.append(raw[1:-1])
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return parts


class _LineIndex:
    """Key path (``peers[1].hold_time``, ``fib.table``) → line number, found by scanning the text.

    Best effort: it follows ``[table]`` and ``[[array]]`` headers and ``key =`` lines, and skips
    multi-line strings. Keys set inside inline tables are not indexed; ``find`` then falls back to the
    nearest enclosing path that is (a missing key is reported at its table's header).
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[str, int] = {}
        arrays: dict[str, int] = {}  # array-of-tables path → number of headers seen so far
        current = ""
        in_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), 1):
            if in_multiline is not None:
                if line.count(in_multiline) % 2:
                    in_multiline = None
                continue
            if m := _ARRAY_HEADER_RE.match(line):
                parts = _split_key(m.group(1))
                base = _join(self._resolve(parts[:-1], arrays), parts[-1])
                arrays[base] = arrays.get(base, 0) + 1
                current = f"{base}[{arrays[base] - 1}]"
                self._lines.setdefault(current, number)
            elif m := _TABLE_HEADER_RE.match(line):
                current = self._resolve(_split_key(m.group(1)), arrays)
                self._lines.setdefault(current, number)
            elif m := _KEY_LINE_RE.match(line):
                path = current
                for part in _split_key(m.group(1)):
                    path = _join(path, part)
                    self._lines.setdefault(path, number)
                rest = line[m.end() :]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2:
                        in_multiline = quote
                        break

    @staticmethod
    def _resolve(parts: list[str], arrays: Mapping[str, int]) -> str:
        path = ""
        for part in parts:
            path = _join(path, part)
            if path in arrays:  # a sub-table of the latest [[array]] element
                path = f"{path}[{arrays[path] - 1}]"
        return path

    def find(self, key_path: str) -> int | None:
        path = key_path
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[: path.rindex("[")] if path.endswith("]") else path.rpartition(".")[0]
        return None


# ---- tables -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    file: str
    lines: _LineIndex

    def error(self, key_path: str, message: str) -> ConfigError:
        return ConfigError(self.file, key_path, message, self.lines.find(key_path))


def _reject_unknown(ctx: _Ctx, path: str, data: Mapping[str, object], allowed: Collection[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f" (expected one of: {', '.join(allowed)})"
            raise ctx.error(_join(path, key), f"unknown key{hint}")


def _table(ctx: _Ctx, path: str, value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ctx.error(path, f"expected a table, got {_describe(value)}")
    return cast("dict[str, object]", value)


class _Section:
    """One TOML table being read: unknown keys rejected up front, then typed reads by key."""

    def __init__(
        self,
        ctx: _Ctx,
        path: str,
        data: Mapping[str, object],
        allowed: Collection[str] | None,
        origins: Mapping[str, str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.base = path
        self.data = data
        self.origins = origins or {}
        if allowed is not None:
            _reject_unknown(ctx, path, data, allowed)

    def path(self, key: str) -> str:
        """Where ``key`` was written (a template's key path when inherited)."""
        return self.origins.get(key) or _join(self.base, key)

    def error(self, key: str, message: str) -> ConfigError:
        return self.ctx.error(self.path(key), message)

    def has(self, key: str) -> bool:
        return key in self.data

    def convert(self, key: str, conv: _Converter[_T], value: object) -> _T:
        try:
            return conv(value)
        except _Invalid as exc:
            raise self.ctx.error(self.path(key) + exc.sub, exc.message) from None

    def get(self, key: str, conv: _Converter[_T], default: _T) -> _T:
        return self.convert(key, conv, self.data[key]) if key in self.data else default

    def need(self, key: str, conv: _Converter[_T]) -> _T:
        if key not in self.data:
            raise self.ctx.error(self.base, f"missing required key {key}")
        return self.convert(key, conv, self.data[key])

    def opt(self, key: str, conv: _Converter[_T]) -> _T | None:
        return self.convert(key, conv, self.data[key]) if key in self.data else None


# ---- the model -------------------------------------------------------------------------------------

_TOP_KEYS: Final = (
    "local", "api", "runtime", "decision", "fib", "templates", "peers", "lab", "safety", "announce",
    "collector",
)  # fmt: skip
# Policy keys (issue 4), parsed by ``policies.config.parse_peer_policy``.
_POLICY_KEYS: Final = ("import", "export", "max_prefix", "irr", "rpki", "dampening")
_PEER_CONVERTERS: Final[Mapping[str, _Converter[object]]] = {
    "name": _name,
    "kind": _enum(PeerKind),
    "neighbor": _ip(None),
    "peer_as": _int(1, ASN_MAX),
    "local_address": _ip(None),
    "families": _families,
    "hold_time": _hold_time,
    "passive": _bool,
    "multihop": _multihop,
    "password": _password,
    "speaker": _enum(SpeakerKind),
    "local_pref": _int(0, U32_MAX),
    "port": _int(1, 65535),
    "description": _text,
    "template": _name,
    "allow_own_as": _bool,
    "table": _fib_table,
}
_NOT_IN_TEMPLATE: Final = ("name", "neighbor", "template", "table")
_UPSTREAM_TABLE_MAX: Final = (1 << 24) - 1  # fib.writer.UPSTREAM_TABLE_MAX: nexthop id ranges fit in 32 bits
_RESERVED_TABLES: Final = {253: "default", 254: "main", 255: "local"}


def _load_local(ctx: _Ctx, value: object) -> LocalConfig:
    sec = _Section(ctx, "local", _table(ctx, "local", value), ("asn", "router_id", "source4", "source6"))
    return LocalConfig(
        asn=sec.need("asn", _int(1, ASN_MAX)),
        router_id=sec.need("router_id", _router_id),
        source4=sec.opt("source4", _ip(4)),
        source6=sec.opt("source6", _ip(6)),
    )


def _load_api(ctx: _Ctx, value: object) -> ApiConfig:
    sec = _Section(ctx, "api", _table(ctx, "api", value), ("listen",))
    if not sec.has("listen"):
        return ApiConfig()
    host, port = sec.need("listen", _listen)
    return ApiConfig(host=host, port=port)


def _load_runtime(ctx: _Ctx, value: object, base: Path) -> RuntimeConfig:
    sec = _Section(ctx, "runtime", _table(ctx, "runtime", value), ("dir", "log_level"))
    d = RuntimeConfig()
    raw_dir = sec.get("dir", _text, str(d.dir))
    if not raw_dir:
        raise sec.error("dir", "must not be empty")
    return RuntimeConfig(
        dir=Path(os.path.normpath(base / Path(raw_dir).expanduser())),
        log_level=sec.get("log_level", _one_of(LOG_LEVELS), d.log_level),
    )


def _load_decision(ctx: _Ctx, value: object) -> DecisionConfig:
    sec = _Section(ctx, "decision", _table(ctx, "decision", value), ("always_compare_med",))
    return DecisionConfig(always_compare_med=sec.get("always_compare_med", _bool, False))


def _load_fib(ctx: _Ctx, value: object) -> FibConfig:
    keys = ("mode", "table", "protocol", "metric", "netns", "source_interface", "per_upstream_tables",
            "upstream_table_base", "stale_timeout")
    sec = _Section(ctx, "fib", _table(ctx, "fib", value), keys)
    d = FibConfig()
    return FibConfig(
        mode=sec.get("mode", _enum(FibMode), d.mode),
        table=sec.get("table", _fib_table, d.table),
        protocol=sec.get("protocol", _fib_protocol, d.protocol),
        metric=sec.get("metric", _int(0, U32_MAX), d.metric),
        netns=sec.get("netns", _netns, d.netns),
        source_interface=sec.get("source_interface", _ifname, d.source_interface),
        per_upstream_tables=sec.get("per_upstream_tables", _bool, d.per_upstream_tables),
        upstream_table_base=sec.get(
            "upstream_table_base", _int(1, _UPSTREAM_TABLE_MAX), d.upstream_table_base
        ),
        stale_timeout=sec.get("stale_timeout", _float(0, 86400), d.stale_timeout),
    )


def _resolve_upstream_tables(
    ctx: _Ctx, fib: FibConfig, peers: tuple[PeerConfig, ...]
) -> tuple[PeerConfig, ...]:
    """Give each upstream/mux peer its per-upstream table (its own ``table`` or upstream_table_base + its
    index), check they are distinct, usable and not fib.table; ``table`` needs per_upstream_tables."""
    out: list[PeerConfig] = []
    used: dict[int, int] = {}
    for i, peer in enumerate(peers):
        if peer.table is not None and not fib.per_upstream_tables:
            raise ctx.error(f"peers[{i}].table", "needs fib.per_upstream_tables = true")
        if not fib.per_upstream_tables:
            out.append(peer)
            continue
        own = peer.table is not None
        table = peer.table
        if table is None and peer.kind in (PeerKind.UPSTREAM, PeerKind.MUX):
            table = fib.upstream_table_base + i
        if table is None:
            out.append(peer)
            continue
        where = f"peers[{i}].table" if own else "fib.upstream_table_base"
        who = "" if own else f"peers[{i}] ({peer.name}) would get table {table}: "
        if table > _UPSTREAM_TABLE_MAX:
            raise ctx.error(where, f"{who}per-upstream tables must be at most {_UPSTREAM_TABLE_MAX}")
        if table in _RESERVED_TABLES:
            raise ctx.error(where, f"{who}{table} is the kernel's {_RESERVED_TABLES[table]} table")
        if table == fib.table:
            raise ctx.error(where, f"{who}{table} is fib.table (the best routes' table)")
        if table in used:
            j = used[table]
            raise ctx.error(where, f"{who}table {table} is also peers[{j}] ({peers[j].name})'s")
        used[table] = i
        out.append(replace(peer, table=table))
    return tuple(out)


def _load_templates(ctx: _Ctx, value: object) -> dict[str, Mapping[str, object]]:
    templates: dict[str, Mapping[str, object]] = {}
    for name, raw in _table(ctx, "templates", value).items():
        path = f"templates.{name}"
        try:
            _name(name)
        except _Invalid as exc:
            raise ctx.error(path, f"template name {exc.message}") from None
        data = _table(ctx, path, raw)
        for key in data:
            if key in _NOT_IN_TEMPLATE:
                raise ctx.error(_join(path, key), f"a template may not set {key}")
        allowed = [k for k in _PEER_CONVERTERS if k not in _NOT_IN_TEMPLATE] + list(_POLICY_KEYS)
        sec = _Section(ctx, path, data, allowed)
        for key, item in data.items():  # type-check now, so an unused template is checked too
            if key not in _POLICY_KEYS:
                sec.convert(key, _PEER_CONVERTERS[key], item)
        if any(k in data for k in _POLICY_KEYS):
            kind = sec.get("kind", _enum(PeerKind), PeerKind.UPSTREAM)
            _load_policy(ctx, path, data, kind, {})
        templates[name] = data
    return templates


def _load_peer(
    ctx: _Ctx, path: str, value: object, templates: Mapping[str, Mapping[str, object]]
) -> PeerConfig:
    own = _table(ctx, path, value)
    _reject_unknown(ctx, path, own, [*_PEER_CONVERTERS, *_POLICY_KEYS])
    merged: dict[str, object] = dict(own)
    origins: dict[str, str] = {}
    if "template" in own:
        tname = _Section(ctx, path, own, None).need("template", _name)
        if tname not in templates:
            close = difflib.get_close_matches(tname, list(templates), n=1)
            defined = ", ".join(templates) or "none"
            hint = f" (did you mean {close[0]}?)" if close else f" (defined: {defined})"
            raise ctx.error(_join(path, "template"), f"unknown template {_describe(tname)}{hint}")
        for key, item in templates[tname].items():
            if key not in own:  # the peer's own keys win (as Pathvector)
                merged[key] = item
                origins[key] = f"templates.{tname}.{key}"
    sec = _Section(ctx, path, merged, None, origins)
    kind = sec.need("kind", _enum(PeerKind))
    neighbor = sec.need("neighbor", _ip(None))
    local_address = sec.opt("local_address", _ip(None))
    if local_address is not None and (":" in local_address) != (":" in neighbor):
        raise sec.error(
            "local_address", f"{local_address} is not the same address family as neighbor {neighbor}"
        )
    d = PeerConfig(name="", kind=kind, neighbor="", peer_as=0)
    return PeerConfig(
        name=sec.need("name", _name),
        kind=kind,
        neighbor=neighbor,
        peer_as=sec.need("peer_as", _int(1, ASN_MAX)),
        local_address=local_address,
        families=sec.get("families", _families, d.families),
        hold_time=sec.get("hold_time", _hold_time, d.hold_time),
        passive=sec.get("passive", _bool, d.passive),
        multihop=sec.get("multihop", _multihop, d.multihop),
        password=sec.opt("password", _password),
        speaker=sec.get("speaker", _enum(SpeakerKind), d.speaker),
        local_pref=sec.get("local_pref", _int(0, U32_MAX), DEFAULT_LOCAL_PREF[kind]),
        port=sec.get("port", _int(1, 65535), d.port),
        description=sec.get("description", _text, d.description),
        template=sec.opt("template", _name),
        allow_own_as=sec.get("allow_own_as", _bool, d.allow_own_as),
        table=sec.opt("table", _fib_table),
        policy=_load_policy(ctx, path, merged, kind, origins)
        if any(k in merged for k in _POLICY_KEYS)
        else None,
    )


def _load_policy(
    ctx: _Ctx, path: str, table: Mapping[str, object], kind: PeerKind, origins: Mapping[str, str]
) -> PeerPolicy:
    """The policy keys of a peer (or template) table; errors re-keyed to where each key was written."""
    from policies.config import parse_peer_policy

    try:
        return parse_peer_policy(table, kind=kind, file=ctx.file, key_path=path, root=_root(ctx))
    except ConfigError as exc:
        raise ctx.error(_rebase(exc.key_path, path, origins), exc.message) from None


def _root(ctx: _Ctx) -> Path:
    return Path(ctx.file).absolute().parent


def _rebase(key_path: str, base: str, origins: Mapping[str, str]) -> str:
    """``peers[0].import.max4`` → ``templates.t.import.max4`` when ``import`` came from template t."""
    if base and key_path.startswith(base + "."):
        rest = key_path[len(base) + 1 :]
        head, dot, tail = rest.partition(".")
        if head in origins:
            return origins[head] + dot + tail
    return key_path


def _load_safety(ctx: _Ctx, value: object, local_asn: int) -> SafetyRules:
    from policies.config import parse_safety

    try:
        return parse_safety(_table(ctx, "safety", value), local_asn=local_asn, file=ctx.file, root=_root(ctx))
    except ConfigError as exc:
        raise ctx.error(exc.key_path, exc.message) from None


def _load_announce(ctx: _Ctx, value: object) -> AnnounceConfig:
    sec = _Section(ctx, "announce", _table(ctx, "announce", value), ("next_hop", "persist"))
    d = AnnounceConfig()

    def next_hop(v: object) -> str:
        return "self" if v == "self" else _ip(None)(v)

    return AnnounceConfig(
        next_hop=sec.get("next_hop", next_hop, d.next_hop), persist=sec.get("persist", _bool, d.persist)
    )


COLLECTOR_MAX_INTERVAL: Final = 7 * 86_400


def _load_collector(ctx: _Ctx, value: object, base: Path, runtime: RuntimeConfig) -> CollectorConfig:
    keys = ("enabled", "dir", "updates_interval", "rib_interval", "compression", "rib_policy")
    sec = _Section(ctx, "collector", _table(ctx, "collector", value), keys)
    d = CollectorConfig()
    raw_dir = sec.get("dir", _text, "")
    if sec.has("dir") and not raw_dir:
        raise sec.error("dir", "must not be empty")
    rib_interval = sec.get("rib_interval", _int(0, COLLECTOR_MAX_INTERVAL), d.rib_interval)
    if 0 < rib_interval < 60:
        raise sec.error("rib_interval", f"must be 0 (dumps on request only) or >= 60, got {rib_interval}")
    return CollectorConfig(
        enabled=sec.get("enabled", _bool, d.enabled),
        dir=Path(os.path.normpath(base / Path(raw_dir).expanduser())) if raw_dir else runtime.dir / "mrt",
        updates_interval=sec.get("updates_interval", _int(1, COLLECTOR_MAX_INTERVAL), d.updates_interval),
        rib_interval=rib_interval,
        compression=sec.get("compression", _one_of(("gz", "bz2", "none")), d.compression),
        rib_policy=sec.get("rib_policy", _enum(RibPolicy), d.rib_policy),
    )


def _load_peers(
    ctx: _Ctx, value: object, templates: Mapping[str, Mapping[str, object]]
) -> tuple[PeerConfig, ...]:
    if not isinstance(value, list):
        raise ctx.error("peers", f"expected an array of tables ([[peers]]), got {_describe(value)}")
    peers: list[PeerConfig] = []
    by_name: dict[str, int] = {}
    by_address: dict[tuple[str, int], int] = {}
    for i, raw in enumerate(cast("list[object]", value)):
        path = f"peers[{i}]"
        peer = _load_peer(ctx, path, raw, templates)
        if peer.name in by_name:
            first = by_name[peer.name]
            raise ctx.error(
                f"{path}.name", f"duplicate peer name {_describe(peer.name)} (also peers[{first}])"
            )
        by_name[peer.name] = i
        where = (peer.neighbor, peer.port)
        if where in by_address:
            j = by_address[where]
            raise ctx.error(
                f"{path}.neighbor",
                f"duplicate neighbor {peer.neighbor} port {peer.port} (also peers[{j}] {peers[j].name})",
            )
        by_address[where] = i
        peers.append(peer)
    return tuple(peers)


def _load_lab(ctx: _Ctx, value: object, peers: Sequence[PeerConfig]) -> LabConfig:
    keys = ("enabled", "feeders", "seed", "ipv4_prefixes", "ipv6_prefixes", "overlap")
    sec = _Section(ctx, "lab", _table(ctx, "lab", value), keys)
    d = LabConfig()
    feeders = sec.get("feeders", _names, d.feeders)
    known = [p.name for p in peers]
    for i, name in enumerate(feeders):
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ctx.error(f"lab.feeders[{i}]", f"no peer named {_describe(name)}{hint}")
    return LabConfig(
        enabled=sec.get("enabled", _bool, d.enabled),
        feeders=feeders,
        seed=sec.get("seed", _int(0, 2**64 - 1), d.seed),
        ipv4_prefixes=sec.get("ipv4_prefixes", _int(0, LAB_MAX_IPV4), d.ipv4_prefixes),
        ipv6_prefixes=sec.get("ipv6_prefixes", _int(0, LAB_MAX_IPV6), d.ipv6_prefixes),
        overlap=sec.get("overlap", _float(0.0, 1.0), d.overlap),
    )


def _check_lab_contained(ctx: _Ctx, lab: LabConfig, fib: FibConfig, peers: Sequence[PeerConfig]) -> None:
    """The lab stays on loopback and out of this host's routing tables."""
    if fib.mode is not FibMode.OFF and not fib.netns:
        raise ctx.error("fib.netns", "the lab's generated routes would go into this host's table "
                        f'{fib.table}: set fib.netns (the shipped config uses "peerctl-lab") '
                        'or fib.mode = "off"')
    by_name = {p.name: p for p in peers}
    for i, name in enumerate(lab.feeders):
        if not ipaddress.ip_address(by_name[name].neighbor).is_loopback:
            raise ctx.error(f"lab.feeders[{i}]", f"peer {name}'s neighbor {by_name[name].neighbor} is not a "
                            "loopback address: a lab feeder listens there (use 127.0.0.0/8 or ::1)")


def config_warnings(config: Config) -> list[str]:
    """What is valid but risky: ``peerctl check`` prints these and ``peerctl run`` logs them."""
    out = []
    try:
        loopback = ipaddress.ip_address(config.api.host).is_loopback
    except ValueError:  # a host name
        loopback = config.api.host == "localhost"
    if not loopback:
        out.append(f"api.listen: {config.api.host} is not a loopback address, and the API has no "
                   "authentication: anyone who reaches it can announce and withdraw prefixes")
    return out


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve ``path`` into a ``Config``.

    ``runtime.dir`` is made absolute relative to the file's directory; IP addresses are returned in
    canonical form; ``local_pref`` defaults by peer kind (``DEFAULT_LOCAL_PREF``); ``multihop = true``
    means TTL 64. Reads the file and nothing else.

    Raises ConfigError (``file:line: key.path: message``) for an unreadable file, a TOML syntax error,
    an unknown key, a wrong type or value, or a broken cross-field rule; the first problem found wins.
    """
    file = str(path)
    source = Path(path).absolute()
    try:
        text = source.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "", f"not UTF-8 (byte {exc.start})") from None
    try:
        data: dict[str, object] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line: int | None = None
        if m := _TOML_POS_RE.search(message):
            line = int(m.group(1))
            message = f"{message[: m.start()]} (column {m.group(2)})"
        else:
            message = _TOML_EOF_RE.sub(" (at end of file)", message)
        raise ConfigError(file, "", f"TOML syntax error: {message}", line) from None
    ctx = _Ctx(file, _LineIndex(text))
    _reject_unknown(ctx, "", data, _TOP_KEYS)
    if "local" not in data:
        raise ctx.error("local", "missing required table [local]")
    # In file order, so the first error reported is usually the first one in the file.
    local = _load_local(ctx, data["local"])
    api = _load_api(ctx, data.get("api", {}))
    runtime = _load_runtime(ctx, data.get("runtime", {}), source.parent)
    decision = _load_decision(ctx, data.get("decision", {}))
    fib = _load_fib(ctx, data.get("fib", {}))
    templates = _load_templates(ctx, data.get("templates", {}))
    peers = _resolve_upstream_tables(ctx, fib, _load_peers(ctx, data.get("peers", []), templates))
    lab = _load_lab(ctx, data.get("lab", {}), peers)
    if lab.enabled:
        _check_lab_contained(ctx, lab, fib, peers)
    safety = _load_safety(ctx, data["safety"], local.asn) if "safety" in data else None
    announce = _load_announce(ctx, data.get("announce", {}))
    collector = _load_collector(ctx, data.get("collector", {}), source.parent, runtime)
    return Config(source, local, api, runtime, decision, fib, peers, lab, safety, announce, collector)


# ---- views and diffs --------------------------------------------------------------------------------


def _plain(value: object) -> object:
    if isinstance(value, Family):
        return value.short
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    if isinstance(value, tuple | list | frozenset):
        return [_plain(item) for item in value]
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, object] = {}
        for f in fields(value):
            if f.name.startswith("_"):  # derived indexes (SafetyRules._allocated)
                continue
            item = getattr(value, f.name)
            out[f.name] = (REDACTED if item is not None else None) if f.name == "password" else _plain(item)
        return out
    return value


def dump_config(config: Config) -> dict[str, object]:
    """A JSON-friendly view of ``config`` for the API: enums as their TOML spelling, families as
    ``"ipv4"``/``"ipv6"``, paths as strings, and every peer password replaced by ``"<redacted>"``."""
    view = _plain(config)
    assert isinstance(view, dict)
    return view


@dataclass(frozen=True, slots=True)
class PeerDiff:
    """How the peers of two configs differ, matched by name (order follows the new config)."""

    added: tuple[PeerConfig, ...] = ()
    """Peers only in the new config."""
    removed: tuple[str, ...] = ()
    """Names of peers only in the old config."""
    changed: tuple[PeerConfig, ...] = ()
    """New settings of peers whose PeerConfig differs in any field (their speakers restart)."""
    unchanged: tuple[str, ...] = ()
    """Names of peers that are equal in both."""


def diff_peers(old: Config, new: Config) -> PeerDiff:
    """Compare the peers of ``old`` and ``new`` by name. Pure; raises nothing."""
    before = {p.name: p for p in old.peers}
    after = {p.name for p in new.peers}
    return PeerDiff(
        added=tuple(p for p in new.peers if p.name not in before),
        removed=tuple(p.name for p in old.peers if p.name not in after),
        changed=tuple(p for p in new.peers if p.name in before and before[p.name] != p),
        unchanged=tuple(p.name for p in new.peers if p.name in before and before[p.name] == p),
    )
