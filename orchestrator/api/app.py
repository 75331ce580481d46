"""HTTP API (aiohttp), JSON under ``/api/v1``.

Handlers read the RIB directly: they run on the event loop between RIB batches, so what they see is
consistent. Errors are raised as ``ApiError`` (or any ``OrchestratorError``) and mapped to JSON with
the right status by one middleware.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from orchestrator.api.views import path_json, peer_json, routes_for
from orchestrator.errors import ApiError, ConfigError, OrchestratorError
from orchestrator.rib.prefix import Family, format_prefix

if TYPE_CHECKING:
    from orchestrator.daemon import Daemon

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
MAX_LIMIT = 100_000


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, else ApiError(400) saying what it is instead."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"body: not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "body: expected a JSON object")
    return body


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response({"error": str(exc), "status": exc.status}, exc.status)
    except ConfigError as exc:
        return json_response({"error": str(exc), "status": 400}, 400)
    except OrchestratorError as exc:
        return json_response({"error": str(exc), "status": 500}, 500)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"error": exc.reason, "status": exc.status}, exc.status)


def _daemon(request: web.Request) -> Daemon:
    return request.app[DAEMON]


async def summary(request: web.Request) -> web.Response:
    d = _daemon(request)
    counts = d.rib.counts()
    return json_response(
        {
            "local": {"asn": d.config.local.asn, "router_id": d.config.local.router_id},
            "peers": {"total": len(d.config.peers), "established": d.established()},
            "rib": {
                f.short: {
                    "prefixes": counts["families"][f.short]["prefixes"],
                    "paths": counts["families"][f.short]["paths"],
                }
                for f in Family
            },
            "loading": d.loading(),
            "uptime_s": round(time.time() - d.started_at, 1),
        }
    )


async def peers(request: web.Request) -> web.Response:
    d = _daemon(request)
    now = time.monotonic()
    return json_response([peer_json(d, p, now) for p in d.config.peers])


async def peer(request: web.Request) -> web.Response:
    d = _daemon(request)
    name = request.match_info["name"]
    for p in d.config.peers:
        if p.name == name:
            return json_response(peer_json(d, p, time.monotonic()))
    raise ApiError(404, f"no peer named {name!r}")


async def route(request: web.Request) -> web.Response:
    d = _daemon(request)
    text = request.match_info["prefix"]
    found = routes_for(d, text, request.query.get("filtered", "") not in ("", "0", "false"))
    if found is None:
        raise ApiError(404, f"no route for {text}")
    return json_response(found)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: expected an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: must be between {lo} and {hi}")
    return value


async def routes(request: web.Request) -> web.Response:
    d = _daemon(request)
    peer_name = request.query.get("peer") or None
    if peer_name is not None and peer_name not in d.status:
        raise ApiError(404, f"no peer named {peer_name!r}")
    fam_text = request.query.get("family")
    try:
        families = [Family.from_short(fam_text)] if fam_text else list(Family)
    except ValueError as exc:
        raise ApiError(400, f"family: {exc}") from None
    limit = _int_param(request, "limit", 100, 0, MAX_LIMIT)
    out: list[dict[str, Any]] = []
    for family in families:
        for key, path in d.rib.iter_best(family, peer_name):
            if len(out) >= limit:
                break
            out.append(
                {"prefix": format_prefix(family, key), "paths": [path_json(d, family, key, path, True)]}
            )
    return json_response(out)


async def fib(request: web.Request) -> web.Response:
    d = _daemon(request)
    if d.fib is None:
        cfg = d.config.fib
        return json_response(
            {
                "netns": cfg.netns,
                "table": cfg.table,
                "protocol": cfg.protocol,
                "mode": cfg.mode.value,
                "installed": {"ipv4": 0, "ipv6": 0},
                "pending": 0,
                "errors": 0,
                "last_error": "",
            }
        )
    return json_response(d.fib.status())


async def collector(request: web.Request) -> web.Response:
    d = _daemon(request)
    if d.collector is None:
        from orchestrator.collector.service import disabled_status

        return json_response(disabled_status(d.config.collector))
    status: dict[str, Any] = d.collector.status()
    return json_response(status)


async def collector_dump(request: web.Request) -> web.Response:
    """Write a RIB snapshot now: ``{"rib_file": path, "rib_files": [...]}``; 409 when disabled."""
    d = _daemon(request)
    if d.collector is None:
        raise ApiError(409, "the collector is disabled ([collector] enabled = false)")
    try:
        files = await d.collector.dump()
    except OSError as exc:
        raise ApiError(500, f"RIB dump failed: {exc}") from None
    return json_response({"rib_file": str(files[0]), "rib_files": [str(f) for f in files]})


async def reload(request: web.Request) -> web.Response:
    d = _daemon(request)
    result = await d.reload()
    return json_response(result)


async def not_found(request: web.Request) -> web.Response:
    raise ApiError(404, f"no such endpoint: {request.method} {request.path}")


def build_app(daemon: Daemon) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[DAEMON] = daemon
    r = app.router
    r.add_get("/api/v1/summary", summary)
    r.add_get("/api/v1/peers", peers)
    r.add_get("/api/v1/peers/{name}", peer)
    r.add_get("/api/v1/routes", routes)
    r.add_get("/api/v1/routes/{prefix:.+}", route)
    r.add_get("/api/v1/fib", fib)
    r.add_get("/api/v1/collector", collector)
    r.add_post("/api/v1/collector/dump", collector_dump)
    r.add_post("/api/v1/reload", reload)
    from orchestrator.api import metrics, stream  # noqa: F401  (they register their routes on import)

    for extra in _EXTENSIONS:
        extra(app)
    return app


# Feature modules (collector, announcements, metrics) register their routes here.
_EXTENSIONS: list[Callable[[web.Application], None]] = []


def register(extension: Callable[[web.Application], None]) -> None:
    _EXTENSIONS.append(extension)


class ApiServer:
    """The aiohttp runner bound to ``config.api``."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Raises OSError (e.g. address in use) before anything else has started."""
        app = build_app(self.daemon)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.daemon.config.api.host, self.daemon.config.api.port)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            self.runner = None
            raise OSError(
                exc.errno,
                f"API cannot listen on {self.daemon.config.api.host}:"
                f"{self.daemon.config.api.port}: {exc.strerror}",
            ) from None

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
