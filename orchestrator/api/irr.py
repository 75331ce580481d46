"""``POST /api/v1/irr/reload`` ``{"peers": [..]}`` (default: every peer with an ``irr`` source):
rebuild those peers' import chains from their IRR list files (``peerctl irr refresh`` calls it after
writing new lists). The files are read in a worker thread; each chain is then swapped in place,
keeping the peer's filtered routes and dampening state, and each established peer is asked for
its routes again (ROUTE-REFRESH), so the new list applies to what it already sent. Answers
``{"reloaded": {peer: entries}, "route_refresh": {peer: [families asked]}}`` (entries ``null``: no
list file yet, so no IRR filter). A list that does not parse leaves that peer's chain as
it was and answers 400 naming the file (ConfigError).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from orchestrator.api.app import DAEMON, json_object, json_response, register
from orchestrator.errors import ApiError


async def irr_reload(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    body: dict[str, Any] = {}
    if request.can_read_body and request.content_length != 0:
        body = await json_object(request)
    wanted = body.get("peers") or []
    if not isinstance(wanted, list) or not all(isinstance(p, str) for p in wanted):
        raise ApiError(400, "peers: expected a list of peer names")
    async with d._reload_lock:  # a config reload must not interleave with the chain swaps
        return await _reload_lists(d, wanted)


async def _reload_lists(d: Any, wanted: list[str]) -> web.Response:
    config = d.config
    with_irr = {p.name: p for p in config.peers if p.policy is not None and p.policy.irr is not None}
    unknown = [n for n in wanted if n not in with_irr]
    if unknown:
        raise ApiError(404, f"no peer with an irr source named {', '.join(unknown)}")
    out: dict[str, int | None] = {}
    refreshed: dict[str, list[str]] = {}
    for name in wanted or list(with_irr):
        peer = with_irr[name]
        built = await asyncio.to_thread(d.imports.build, peer, str(config.path))
        d.imports.refresh(peer, built)
        out[name] = built.irr_entries() if built is not None else None
        d.log.info("irr_reloaded", peer=name, entries=out[name])
        # the new list applies to what the peer already sent once it sends it again
        refreshed[name] = await d.request_refresh(name)
    return json_response({"reloaded": out, "route_refresh": refreshed})


def _setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/irr/reload", irr_reload)


register(_setup)
