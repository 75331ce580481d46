"""ExaBGP 5.0.15 JSON lines → ``SpeakerEvent``s (pure, no I/O).

Theory of operation
-------------------
ExaBGP writes one JSON object per line (format ``"exabgp": "5.0.0"``). ``Decoder.decode(line)``
parses one line with orjson and returns the events it carries, in order:

* ``type: state`` — ``connected`` → ``SessionState``; ``up`` → ``PeerUp`` (router-id from the
  ``open`` ExaBGP sends just before ``up``: the envelope's ``router-id`` is *ours*); ``down`` →
  ``PeerDown`` with a ``DownReason`` mapped from ExaBGP's reason text. Whether a ``down`` matters
  (was the session up?) is the session's business, not ours.
* ``type: open`` (direction receive) — remembered for the next ``up``; no event.
* ``type: update`` — announce/withdraw of ``ipv4 unicast`` / ``ipv6 unicast`` become one
  ``Update`` per (family, next hop) and one per family for withdrawals; ``eor`` → ``EndOfRib``.
  Other families are counted in ``ignored`` and dropped.
* ``type: notification`` — ``Notification``; ExaBGP's own ``"notification": "shutdown"`` (no
  neighbor, no counter) → ``SessionState("shutdown")``.

The first line must carry the pinned format version; ``counter`` (per neighbor, from 1 in each
ExaBGP process) is tracked and gaps are counted in ``counter_gaps`` (logged by the session).

Speed: the fast path does no per-key validation. Any exception inside it is caught once and the line
is re-walked by ``_locate`` (slow, only on error) to name the JSON path; callers only ever see
``SpeakerProtocolError``. UPDATE lines parse only their ``message`` object (read in place). ``Attributes``
are cached per (next hop, the attribute object's text in the line) so that a repeated set costs
dict probes (bounded to recent sets: on a table load nearly every line has a new one), and each
prefix costs a ``parse_prefix``-equivalent conversion inlined below (about 0.6 µs; bulk
conversions of the list's text measured slower at ~6 prefixes per line). ``Update`` events are
built with their slots set directly.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from functools import partial
from itertools import islice
from typing import Any, Final

import orjson

from orchestrator.errors import ErrorAction, SpeakerProtocolError
from orchestrator.rib.attrs import (
    AS_CONFED_SEQUENCE,
    AS_CONFED_SET,
    AS_SEQUENCE,
    AS_SET,
    AsPath,
    Attributes,
    Origin,
)
from orchestrator.rib.prefix import Family, parse_prefix
from speakers.events import (
    DownReason,
    EndOfRib,
    Notification,
    PeerDown,
    PeerUp,
    SessionState,
    SpeakerEvent,
    Update,
)

FORMAT_VERSION: Final = "5.0.0"
TEXT_LIMIT: Final = 200
# Attribute cache entries (~700 bytes each with the attribute text): a table load brings a new set
# in almost every line (29,391 sets in the lab's 31,210), so a repeat is a recent set; when full,
# the older half goes.
ATTR_CACHE_LIMIT: Final = 8192
_EMPTY: Final[dict[str, Any]] = {}

_FAMILIES: Final[Mapping[str, Family]] = {f.value: f for f in Family}
_EOR_FAMILIES: Final[Mapping[tuple[str, str], Family]] = {
    ("ipv4", "unicast"): Family.IPV4,
    ("ipv6", "unicast"): Family.IPV6,
}
_ORIGINS: Final[Mapping[str, Origin]] = {
    "igp": Origin.IGP,
    "egp": Origin.EGP,
    "incomplete": Origin.INCOMPLETE,
}
_SEGMENTS: Final[Mapping[str, int]] = {
    "as-sequence": AS_SEQUENCE,
    "as-set": AS_SET,
    "confed-sequence": AS_CONFED_SEQUENCE,
    "confed-set": AS_CONFED_SET,
}
_MP_FAMILIES: Final[Mapping[str, Family]] = {"ipv4/unicast": Family.IPV4, "ipv6/unicast": Family.IPV6}

_MESSAGE: Final = b'"message": '
_MESSAGE_LEN: Final = len(_MESSAGE)
_CLOSE: Final = b"} } }"  # message, neighbor, root
_CLOSE_LEN: Final = len(_CLOSE) - 1  # the message's own "}" stays
_TYPE_UPDATE: Final = b'"type": "update"'
_COUNTER: Final = b'"counter": '
_COUNTER_LEN: Final = len(_COUNTER)
_ATTRIBUTE: Final = b'"attribute": '
_ANNOUNCE: Final = b'"announce"'

_make_attributes = Attributes.fast
_make_update = Update.fast


_inet_pton = socket.inet_pton
_AF_INET = socket.AF_INET


class _Malformed(Exception):
    """Internal: raised by the slow walk with the JSON path of the first problem."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def down_reason(text: str) -> DownReason:
    """ExaBGP's ``down`` reason text (reactor/peer.py) → DownReason."""
    if text.startswith("notification received"):
        return DownReason.NOTIFICATION_RECEIVED
    if text.startswith("notification sent (4,"):
        return DownReason.HOLD_TIMER_EXPIRED  # ExaBGP raises Notify(4, 0) when the hold timer expires
    if text.startswith("notification sent"):
        return DownReason.NOTIFICATION_SENT
    if text.startswith("stop") or text == "removed":
        return DownReason.ADMIN_SHUTDOWN
    if text.startswith("process problem"):
        return DownReason.SPEAKER_EXITED
    return DownReason.CONNECTION_LOST


def _length_table(width: int) -> dict[str, tuple[int, int, int]]:
    """``"24"`` → (length tag, right shift, host mask) for the key layout of ``prefix.py``."""
    table = {}
    for length in range(width + 1):
        nbytes = (length + 7) >> 3
        table[str(length)] = (length << (8 * nbytes), width - 8 * nbytes, (1 << (width - length)) - 1)
    return table


_LEN4: Final = _length_table(32)


def _prefix_key(text: str) -> int:
    """IPv4 fast path of ``parse_prefix`` (strict: inet_pton, length and host-bit checks).

    Same key as ``key_from_parts`` (checked against ``parse_prefix`` in the tests); a table keyed
    by the length text replaces ``int()`` and the shifts: ~0.35 µs instead of ~1.4 µs.
    """
    addr, _, length_text = text.partition("/")
    tag, shift, host = _LEN4[length_text]
    network = int.from_bytes(_inet_pton(_AF_INET, addr), "big")
    if network & host:
        raise ValueError(text)
    return tag | (network >> shift)


def _keys4(nlris: list[Any]) -> list[int]:
    """``_prefix_key`` over a list, inlined (no call per prefix)."""
    out: list[int] = []
    append = out.append
    table = _LEN4
    pton = _inet_pton
    af = _AF_INET
    from_bytes = int.from_bytes
    for n in nlris:
        addr, _, length_text = (n if type(n) is str else n["nlri"]).partition("/")
        tag, shift, host = table[length_text]
        network = from_bytes(pton(af, addr), "big")
        if network & host:
            raise ValueError(addr)
        append(tag | (network >> shift))
    return out


def _prefix_key6(text: str) -> int:
    family, key = parse_prefix(text)
    if family is not Family.IPV6:
        raise ValueError(text)
    return key


_KEY_FUNCS: Final[Mapping[Family, Callable[[str], int]]] = {
    Family.IPV4: _prefix_key,
    Family.IPV6: _prefix_key6,
}


_CONVERSIONS: Final[Mapping[str, tuple[Family, Callable[[str], int]]]] = {
    f.value: (f, conv) for f, conv in _KEY_FUNCS.items()
}


class Decoder:
    """Decode one peer's ExaBGP JSON lines. Holds only what spans lines (version, counter, open).

    ``families`` are the families we configured; ``PeerUp.families`` is their intersection with
    the multiprotocol capability of the peer's OPEN.
    """

    def __init__(self, peer: str, families: tuple[Family, ...] = (Family.IPV4, Family.IPV6)) -> None:
        self.peer = peer
        self.families = families
        self.lines = 0
        self.counter: int | None = None
        self.counter_gaps = 0
        self.ignored = 0  # NLRI / EoR of families we do not carry
        self._open_router_id = ""
        self._open_families: tuple[Family, ...] | None = None
        self._attr_cache: dict[tuple[str, bytes], Attributes] = {}

    # -- entry point -----------------------------------------------------------------------------

    def decode(self, line: bytes | str) -> list[SpeakerEvent]:
        """Events of one JSON line (without its newline).

        Raises SpeakerProtocolError (and nothing else) when the line is not valid JSON, has the wrong
        format version, or lacks/mistypes a key we need; the error names the JSON path.
        """
        if self.lines and type(line) is bytes:
            events = self._update_fast(line)
            if events is not None:
                return events
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise self._error("$", f"not JSON: {exc}", line) from None
        if type(obj) is not dict:
            raise self._error("$", "not a JSON object", line)
        self.lines += 1
        if self.lines == 1 and obj.get("exabgp") != FORMAT_VERSION:
            raise self._error(
                "$.exabgp",
                f"ExaBGP JSON format {obj.get('exabgp')!r}, expected {FORMAT_VERSION!r} (pinned ExaBGP)",
                line,
                ErrorAction.RESTART_SPEAKER,
            )
        try:
            return self._dispatch(obj)
        except SpeakerProtocolError:
            raise
        except Exception:  # the fast path does not validate; find out where, slowly
            path, message = self._locate(obj)
            raise self._error(path, message, line) from None

    def _error(
        self, path: str, message: str, line: bytes | str, action: ErrorAction = ErrorAction.IGNORE
    ) -> SpeakerProtocolError:
        text = line if isinstance(line, str) else line[: TEXT_LIMIT * 4].decode("utf-8", "replace")
        return SpeakerProtocolError(self.peer, path, message, action, text=text[:TEXT_LIMIT])

    # -- fast path -------------------------------------------------------------------------------

    def _update_fast(self, line: bytes) -> list[SpeakerEvent] | None:
        """An UPDATE line without parsing its envelope; None when the line does not have the
        exact shape (the caller then parses all of it and reports any error).

        ExaBGP 5.0.15 (pinned; the first line's format version is checked in full) writes
        ``{ ..., "counter": N, "type": "update", "neighbor": { ..., "message": {...} } }`` with the
        message last: only the message object is parsed (the envelope is ~half the bytes and
        most of the objects) and the counter is read as an int from its slice.
        """
        m = line.find(_MESSAGE)
        if m < 0 or line.find(_TYPE_UPDATE, 0, m) < 0:
            return None
        if line.endswith(_CLOSE):  # ExaBGP's own spacing: the message's text read in place
            text: bytes | memoryview = memoryview(line)[m + _MESSAGE_LEN : -_CLOSE_LEN]
        else:
            tail = line[m + _MESSAGE_LEN :].rstrip()  # message } (neighbor) } (root)
            if tail[-1:] != b"}":
                return None
            tail = tail[:-1].rstrip()
            if tail[-1:] != b"}":
                return None
            text = tail[:-1]
        c = line.find(_COUNTER, 0, m)
        try:
            message = orjson.loads(text)
            counter = int(line[c + _COUNTER_LEN : line.index(b",", c)]) if c >= 0 else None
            if type(message) is not dict:
                return None
            events = self._update(message, line)
        except SpeakerProtocolError:
            raise
        except Exception:  # not the shape we expect, or malformed: the full path says what
            return None
        self.lines += 1
        if counter is not None:
            if self.counter is not None and counter != self.counter + 1:
                self.counter_gaps += 1
            self.counter = counter
        return events

    def _dispatch(self, obj: dict[str, Any]) -> list[SpeakerEvent]:
        counter = obj.get("counter")
        if counter is not None:
            if self.counter is not None and counter != self.counter + 1:
                self.counter_gaps += 1
            self.counter = counter
        kind = obj["type"]
        if kind == "update":
            return self._update(obj["neighbor"]["message"], None)
        if kind == "state":
            return self._state(obj["neighbor"])
        if kind == "open":
            self._open(obj["neighbor"])
            return []
        if kind == "notification":
            return self._notification(obj)
        if type(kind) is not str:
            raise TypeError(kind)
        return []  # negotiated, keepalive, refresh, operational: not used

    def _state(self, neighbor: dict[str, Any]) -> list[SpeakerEvent]:
        state = neighbor["state"]
        if not isinstance(state, str):
            raise TypeError(state)
        if state == "up":
            peer_as = neighbor["asn"]["peer"]
            if type(peer_as) is not int:
                raise TypeError(peer_as)
            families = self.families
            if self._open_families is not None:
                families = tuple(f for f in self.families if f in self._open_families)
            return [PeerUp(self.peer, peer_as, self._open_router_id, families)]
        if state == "down":
            reason = neighbor.get("reason", "")
            if not isinstance(reason, str):
                raise TypeError(reason)
            self._open_router_id = ""
            self._open_families = None
            return [PeerDown(self.peer, down_reason(reason), reason)]
        return [SessionState(self.peer, state)]

    def _open(self, neighbor: dict[str, Any]) -> None:
        if neighbor.get("direction", "receive") != "receive":
            return
        message = neighbor["open"]
        router_id = message["router_id"]
        if not isinstance(router_id, str):
            raise TypeError(router_id)
        self._open_router_id = router_id
        mp = message.get("capabilities", {}).get("1")
        if mp is None:
            self._open_families = (Family.IPV4,)  # RFC 4760 8: no MP capability = IPv4 unicast only
        else:
            self._open_families = tuple(_MP_FAMILIES[f] for f in mp["families"] if f in _MP_FAMILIES)

    def _notification(self, obj: dict[str, Any]) -> list[SpeakerEvent]:
        if obj.get("notification") == "shutdown" and "neighbor" not in obj:
            return [SessionState(self.peer, "shutdown")]
        neighbor = obj["neighbor"]
        n = neighbor["notification"]
        code, subcode, message = n["code"], n["subcode"], n.get("message", "")
        if type(code) is not int or type(subcode) is not int or not isinstance(message, str):
            raise TypeError(n)
        return [Notification(self.peer, code, subcode, message, sent=neighbor.get("direction") == "send")]

    def _update(self, message: dict[str, Any], line: bytes | None) -> list[SpeakerEvent]:
        update = message.get("update")
        if update is None:
            eor = message["eor"]
            family = _EOR_FAMILIES.get((eor["afi"], eor["safi"]))
            if family is None:
                self.ignored += 1
                return []
            return [EndOfRib(self.peer, family)]
        events: list[SpeakerEvent] = []
        peer = self.peer
        withdraw = update.get("withdraw")
        if withdraw:
            for fam_name, nlris in withdraw.items():
                family = _FAMILIES.get(fam_name)
                if family is None:
                    self.ignored += len(nlris)
                    continue
                events.append(Update(peer, family, None, (), _keys(_KEY_FUNCS[family], nlris)))
        announce = update.get("announce")
        if announce:
            attribute = update.get("attribute", _EMPTY)
            # Cache key: the attribute object's own text in the line (ExaBGP writes it before
            # "announce", and no attribute's text can contain that key); else its re-encoding.
            raw = None
            if line is not None:
                i = line.find(_ATTRIBUTE)
                j = line.find(_ANNOUNCE, i)
                if 0 <= i < j and line.count(_ANNOUNCE) == 1:
                    raw = line[i:j]
            if raw is None:
                raw = orjson.dumps(attribute)
            cache = self._attr_cache
            for fam_name, by_next_hop in announce.items():
                family_conv = _CONVERSIONS.get(fam_name)  # (not _KEY_FUNCS[family]: Enum.__hash__ is Python)
                if family_conv is None:
                    self.ignored += sum(len(v) for v in by_next_hop.values())
                    continue
                family, conv = family_conv
                for next_hop, nlris in by_next_hop.items():
                    attrs = cache.get((next_hop, raw))
                    if attrs is None:
                        if len(cache) >= ATTR_CACHE_LIMIT:
                            for key in list(islice(cache, ATTR_CACHE_LIMIT >> 1)):
                                del cache[key]
                        attrs = cache[next_hop, raw] = _attributes(attribute, next_hop)
                    events.append(_make_update(peer, family, attrs, _keys(conv, nlris), ()))
        return events

    # -- slow path: only when the fast path failed -----------------------------------------------

    def _locate(self, obj: dict[str, Any]) -> tuple[str, str]:
        try:
            _walk(obj)
        except _Malformed as exc:
            return exc.path, exc.message
        except Exception as exc:  # the walk is defensive, but an error report must never fail
            return "$", f"unusable message ({type(exc).__name__})"
        return "$", "unusable message"  # the walk found nothing the fast path choked on


def _keys(conv: Callable[[str], int], nlris: list[Any]) -> list[int]:
    """Prefix keys of an NLRI list: strings (``exabgp.api.compact``) or ``{"nlri": ...}`` objects."""
    if conv is _prefix_key:
        return _keys4(nlris)
    if nlris and type(nlris[0]) is str:
        return [conv(n) for n in nlris]
    return [conv(n["nlri"]) for n in nlris]


def _int(value: object, bits: int = 32) -> int:
    if type(value) is not int or not 0 <= value < (1 << bits):
        raise ValueError(value)
    return value


def _ints(values: list[Any], bits: int = 32) -> tuple[int, ...]:
    """Validated tuple of unsigned ints, in C: ``sum`` raises on non-numbers and turns float."""
    out = tuple(values)
    if out and (type(sum(out)) is not int or min(out) < 0 or max(out) >> bits):
        raise ValueError(out)
    return out


def _pairs(values: tuple[tuple[Any, ...], ...], bits: int) -> None:
    """Range/type check of a sequence of int tuples (large communities), in C."""
    if type(sum(map(sum, values))) is not int or min(map(min, values)) < 0 or max(map(max, values)) >> bits:
        raise ValueError(values)


def _as_path(value: object) -> AsPath:
    if type(value) is dict:  # 5.x: {"0": {"element": "as-sequence", "value": [..]}, ...}
        if len(value) == 1:
            seg = value["0"]
            return ((_SEGMENTS[seg["element"]], _ints(seg["value"])),)
        return tuple(
            (_SEGMENTS[value[i]["element"]], _ints(value[i]["value"])) for i in sorted(value, key=int)
        )
    if type(value) is list:  # 4.x flat list: one AS_SEQUENCE
        return ((AS_SEQUENCE, _ints(value)),) if value else ()
    raise TypeError(value)


def _attributes(attribute: dict[str, Any], next_hop: str) -> Attributes:
    """Attributes of an UPDATE's ``attribute`` object and one next hop. Raises on bad input."""
    if type(next_hop) is not str:
        raise TypeError(next_hop)
    get = attribute.get
    path = get("as-path")
    as_path = () if path is None else _as_path(path)
    confed = get("confederation-path")  # 4.x only
    if confed:
        as_path = ((AS_CONFED_SEQUENCE, _ints(confed)), *as_path)
    med = get("med")
    if med is not None and (type(med) is not int or med < 0 or med >> 32):
        raise ValueError(med)
    local_pref = get("local-preference")
    if local_pref is not None and (type(local_pref) is not int or local_pref < 0 or local_pref >> 32):
        raise ValueError(local_pref)
    aggregator = get("aggregator")
    agg: tuple[int, str] | None = None
    if aggregator is not None:
        asn_text, sep, address = aggregator.partition(":")
        if not sep:
            raise ValueError(aggregator)
        agg = (_int(int(asn_text)), address)
    atomic = get("atomic-aggregate", False)
    if type(atomic) is not bool:
        raise TypeError(atomic)
    communities = get("community")
    if communities:
        # ``<<`` and ``|`` raise TypeError for anything but ints; the parts' 16-bit ranges are only
        # checked as a whole (ExaBGP decodes them from fixed-width wire fields): cheap, in C.
        communities = tuple([(a << 16) | b for a, b in communities])
        if min(communities) < 0 or max(communities) >> 32:
            raise ValueError(communities)
    large = get("large-community")
    if large:
        large = tuple([(a, b, c) for a, b, c in large])
        _pairs(large, 32)
    return _make_attributes(  # Attributes(...) without the frozen dataclass __init__
        next_hop,
        _ORIGINS[get("origin", "igp")],
        as_path,
        med,
        local_pref,
        communities or (),
        large or (),
        atomic,
        agg,
    )


# -- slow validating walk (error reporting only) --------------------------------------------------


def _need(obj: Any, key: str, path: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict):
        raise _Malformed(path, "expected an object")
    if key not in obj:
        raise _Malformed(f"{path}.{key}", "missing")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(f"{path}.{key}", f"expected {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", bool: "a boolean"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _check(path: str, func: Callable[[], object]) -> None:
    try:
        func()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OSError) as exc:
        raise _Malformed(path, f"invalid value ({type(exc).__name__}: {exc})"[:TEXT_LIMIT]) from None


def _walk(obj: dict[str, Any]) -> None:
    if "counter" in obj:
        _need(obj, "counter", "$", int)
    kind = _need(obj, "type", "$", str)
    if kind == "notification" and "neighbor" not in obj:
        return
    neighbor = _need(obj, "neighbor", "$", dict)
    p = "$.neighbor"
    if kind == "state":
        state = _need(neighbor, "state", p, str)
        if state == "up":
            _need(_need(neighbor, "asn", p, dict), "peer", f"{p}.asn", int)
        if "reason" in neighbor:
            _need(neighbor, "reason", p, str)
    elif kind == "open":
        message = _need(neighbor, "open", p, dict)
        _need(message, "router_id", f"{p}.open", str)
        caps = message.get("capabilities", {})
        _check(f"{p}.open.capabilities", lambda: [c for c in caps.get("1", {"families": []})["families"]])
    elif kind == "notification":
        n = _need(neighbor, "notification", p, dict)
        _need(n, "code", f"{p}.notification", int)
        _need(n, "subcode", f"{p}.notification", int)
        if "message" in n:
            _need(n, "message", f"{p}.notification", str)
    elif kind == "update":
        message = _need(neighbor, "message", p, dict)
        p += ".message"
        if "update" not in message:
            eor = _need(message, "eor", p, dict)
            _need(eor, "afi", f"{p}.eor", str)
            _need(eor, "safi", f"{p}.eor", str)
            return
        update = _need(message, "update", p, dict)
        p += ".update"
        if "attribute" in update:
            attribute = _need(update, "attribute", p, dict)
            for key in attribute:
                _check(f"{p}.attribute.{key}", partial(_attributes, {key: attribute[key]}, ""))
        if "withdraw" in update:
            withdraw = _need(update, "withdraw", p, dict)
            for fam_name in withdraw:
                nlris = _need(withdraw, fam_name, f"{p}.withdraw", list)
                _walk_nlris(fam_name, nlris, f"{p}.withdraw[{fam_name!r}]")
        if "announce" in update:
            announce = _need(update, "announce", p, dict)
            for fam_name in announce:
                by_nh = _need(announce, fam_name, f"{p}.announce", dict)
                for nh in by_nh:
                    nlris = _need(by_nh, nh, f"{p}.announce[{fam_name!r}]", list)
                    _walk_nlris(fam_name, nlris, f"{p}.announce[{fam_name!r}][{nh!r}]")


def _walk_nlris(fam_name: str, nlris: list[Any], path: str) -> None:
    family = _FAMILIES.get(fam_name)
    if family is None:
        return
    conv = _KEY_FUNCS[family]
    for i, n in enumerate(nlris):
        text = n if isinstance(n, str) else _need(n, "nlri", f"{path}[{i}]", str)
        _check(f"{path}[{i}]", partial(conv, text))


__all__ = ["FORMAT_VERSION", "Decoder", "down_reason"]
