"""Routes of issue 4: announcements, what each peer was sent, and the lab's view of the other side.

``POST /api/v1/announcements`` ``{"prefix", "peers": [..] | "all": true | "kind": "mux", "prepend",
"origin", "poison": [..], "communities": ["A:B"], "large_communities": ["A:B:C"], "next_hop",
"per_peer": {NAME: {same attribute keys}}}`` (``per_peer``: peers sent an attribute set of their own,
as PEERING's per-mux announcements),
``DELETE /api/v1/announcements`` ``{"prefix", "peers"?, "all"?, "kind"?}``, ``GET
/api/v1/announcements``, ``GET /api/v1/announcements/allowed`` → ``{"prefixes": [...]}``, ``GET
/api/v1/peers/{name}/adv``, ``GET /api/v1/lab/received?peer=NAME``.

A safety or export-policy refusal answers 422 (429 for the rate rule, with ``retry_after``) and
``{"error", "rule", "status"}``; nothing was sent. Group members (``all``, ``kind``) whose export
policy refuses are left out and listed in the answer's ``refused`` (peer → rule).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from orchestrator.announce import ATTR_KEYS, AnnouncementManager, parse_per_peer, parse_targets
from orchestrator.api.app import DAEMON, json_object, json_response, register
from orchestrator.errors import ApiError, PolicyError
from orchestrator.rib.attrs import parse_community, parse_large_community
from orchestrator.rib.prefix import parse_prefix
from policies.safety import Announcement

T = TypeVar("T")
ANNOUNCER: web.AppKey[AnnouncementManager] = web.AppKey("announcer")
_BODY_KEYS = frozenset({"prefix", "peers", "all", "kind", "per_peer", *ATTR_KEYS})


def refusal(exc: PolicyError) -> web.Response:
    status = 429 if exc.rule == "rate" else 404 if exc.rule == "not-announced" else 422
    body: dict[str, Any] = {"error": str(exc), "rule": exc.rule, "status": status}
    if exc.rule == "rate" and (m := re.search(r"wait (\d+) s", str(exc))):
        body["retry_after"] = int(m.group(1))
    return json_response(body, status)


async def _body(request: web.Request) -> dict[str, Any]:
    body = await json_object(request)
    unknown = set(body) - _BODY_KEYS
    if unknown:
        raise ApiError(400, f"body: unknown keys {sorted(unknown)} (expected {sorted(_BODY_KEYS)})")
    if not isinstance(body.get("prefix"), str):
        raise ApiError(400, "prefix: required, a string")
    return body


def _ints(body: dict[str, Any], key: str) -> tuple[int, ...]:
    v = body.get(key) or []
    if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32
                                          for x in v):
        raise ApiError(400, f"{key}: expected a list of ASNs")
    return tuple(v)


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ApiError(400, f"{key}: expected an integer {lo}..{hi}")
    return v


def _each(body: dict[str, Any], key: str, parse: Callable[[str], T]) -> list[T]:
    """``body[key]``, a list of community strings (``"A:B"``; large ``"A:B:C"``), parsed."""
    items = body.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ApiError(400, f"{key}: expected a list of strings, e.g. [\"64500:1\"]")
    try:
        return [parse(i) for i in items]
    except (ValueError, TypeError) as exc:
        raise ApiError(400, f"{key}: {exc}") from None


def parse_request(body: dict[str, Any]) -> Announcement:
    """The JSON body → an Announcement (its prefix/attributes only; targets are resolved apart)."""
    comms = tuple(_each(body, "communities", parse_community))
    large = tuple(_each(body, "large_communities", parse_large_community))
    nh = body.get("next_hop") or ""
    if not isinstance(nh, str):
        raise ApiError(400, "next_hop: expected an address or 'self'")
    if nh and nh != "self":
        import ipaddress

        try:
            nh = str(ipaddress.ip_address(nh))
        except ValueError:
            raise ApiError(400, f"next_hop: not an IP address: {nh!r}") from None
    return Announcement(prefix=body["prefix"], prepend=_int(body, "prepend", 0, 64) or 0,
                        origin=_int(body, "origin", 1, 2**32 - 1), poison=_ints(body, "poison"),
                        communities=comms, large_communities=large, next_hop=nh)  # fmt: skip


def _targets(mgr: AnnouncementManager, body: dict[str, Any], default_all: bool = False) -> tuple[str, ...]:
    peers, every, kind = parse_targets(body)
    try:
        family = parse_prefix(body["prefix"])[0]
    except ValueError as exc:
        raise ApiError(400, f"prefix: {exc}") from None
    if not peers and not every and kind is None:
        if default_all:
            return ()
        raise ApiError(400, "no target peers: give \"peers\": [NAME, ...], \"kind\": KIND or \"all\": true")
    return mgr.resolve(peers, every, kind, family)


async def post_announcement(request: web.Request) -> web.Response:
    mgr = request.app[ANNOUNCER]
    body = await _body(request)
    try:
        ann = parse_request(body)
        # Explicit peers must all accept (else nothing is sent); a group skips its refusing members.
        targets = _targets(mgr, body)
        variants = parse_per_peer(body.get("per_peer") or {}, body["prefix"], mgr.resolve, parse_request)
        wanted = await mgr.announce(ann, targets, group=not body.get("peers"), variants=variants)
    except PolicyError as exc:
        return refusal(exc)
    states = await mgr.settle(wanted.announcement.prefix)
    item = next(i for i in mgr.wanted_json() if i["prefix"] == wanted.announcement.prefix)
    return json_response({**item, "states": states})


async def delete_announcement(request: web.Request) -> web.Response:
    mgr = request.app[ANNOUNCER]
    body: dict[str, Any] = await _body(request) if request.can_read_body else dict(request.query)
    if "prefix" not in body:
        raise ApiError(400, "prefix: required")
    if isinstance(body.get("peers"), str):
        body["peers"] = body["peers"].split(",")
    if isinstance(body.get("all"), str):  # ?all=true in a query string
        word = body["all"].lower()
        body["all"] = {"true": True, "1": True, "false": False, "0": False}.get(word, body["all"])
    try:
        done = await mgr.withdraw(body["prefix"], _targets(mgr, body, default_all=True))
    except PolicyError as exc:
        return refusal(exc)
    return json_response({"prefix": body["prefix"], "withdrawn_from": list(done)})


async def list_announcements(request: web.Request) -> web.Response:
    return json_response(request.app[ANNOUNCER].wanted_json())


async def allowed(request: web.Request) -> web.Response:
    return json_response({"prefixes": request.app[ANNOUNCER].allowed()})


async def adv(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    d = request.app[DAEMON]
    if name not in d.status:
        raise ApiError(404, f"no peer named {name!r}")
    return json_response(request.app[ANNOUNCER].adv_json(name))


LAB_FIELDS = ("prefix", "as_path", "communities", "large_communities", "next_hop", "med")


async def lab_received(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    name = request.query.get("peer", "")
    if d.lab is None:
        raise ApiError(404, "the lab is not running ([lab] enabled = false)")
    if not name:
        raise ApiError(400, f"peer: required, one of {', '.join(d.config.lab.feeders)} (?peer=NAME)")
    if name not in d.config.lab.feeders:
        raise ApiError(404, f"no lab feeder named {name!r} (feeders: {', '.join(d.config.lab.feeders)})")
    current: dict[str, dict[str, Any]] = {}
    for rec in d.lab.received(name):  # a log of updates: the last word per prefix wins
        prefix = rec.get("prefix")
        if not isinstance(prefix, str):
            continue
        if rec.get("withdrawn"):
            current.pop(prefix, None)
        else:
            current[prefix] = {k: rec.get(k) for k in LAB_FIELDS}
    return json_response(list(current.values()))


def _setup(app: web.Application) -> None:
    d = app[DAEMON]

    def established(name: str) -> bool:
        st = d.status.get(name)
        return st is not None and st.state == "established"

    mgr = AnnouncementManager(lambda: d.config, lambda: d.speakers, d.runtime_dir,
                              d.log.bind(component="announce"), established=established)  # fmt: skip
    mgr.load()
    d.event_listeners.append(mgr.on_event)
    d.reload_hooks.append(mgr.reexport)
    app[ANNOUNCER] = mgr
    r = app.router
    r.add_get("/api/v1/announcements", list_announcements)
    r.add_post("/api/v1/announcements", post_announcement)
    r.add_delete("/api/v1/announcements", delete_announcement)
    r.add_get("/api/v1/announcements/allowed", allowed)
    r.add_get("/api/v1/peers/{name}/adv", adv)
    r.add_get("/api/v1/lab/received", lab_received)


register(_setup)
