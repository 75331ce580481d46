"""Routes for scheduled experiments (``orchestrator.experiments``).

``POST /api/v1/experiments`` ``{"name", "start" | "delay", "description", "steps": [{"at", "action",
"prefix", ...announcement keys}]}`` (``?dry_run=1`` plans and answers without scheduling),
``GET /api/v1/experiments``, ``GET /api/v1/experiments/{name}``,
``DELETE /api/v1/experiments/{name}`` (``?withdraw=1`` also withdraws what it announced;
``?forget=1`` removes a finished one from the list).

A step the rules would refuse answers 422 (429 for the rate rule) with ``{"error", "rule"}``, as
``/announcements`` does; nothing is scheduled.
"""

from __future__ import annotations

from aiohttp import web

from orchestrator.api.announce import ANNOUNCER, parse_request, refusal
from orchestrator.api.app import DAEMON, json_object, json_response, register
from orchestrator.errors import ApiError, PolicyError
from orchestrator.experiments import ExperimentRunner

EXPERIMENTS: web.AppKey[ExperimentRunner] = web.AppKey("experiments")


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "") not in ("", "0", "false", "no")


async def post_experiment(request: web.Request) -> web.Response:
    runner = request.app[EXPERIMENTS]
    body = await json_object(request)
    try:
        exp = runner.dry_run(body) if _flag(request, "dry_run") else runner.start(body)
    except PolicyError as exc:
        return refusal(exc)
    return json_response(exp.json(), 200 if _flag(request, "dry_run") else 201)


async def list_experiments(request: web.Request) -> web.Response:
    return json_response([e.json() for e in request.app[EXPERIMENTS].experiments.values()])


async def get_experiment(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    exp = request.app[EXPERIMENTS].experiments.get(name)
    if exp is None:
        raise ApiError(404, f"no experiment named {name!r}")
    return json_response(exp.json())


async def delete_experiment(request: web.Request) -> web.Response:
    runner = request.app[EXPERIMENTS]
    name = request.match_info["name"]
    if _flag(request, "forget"):
        runner.forget(name)
        return json_response({"name": name, "forgotten": True})
    exp, problems = await runner.cancel(name, withdraw=_flag(request, "withdraw"))
    return json_response({**exp.json(), "problems": problems})


def _setup(app: web.Application) -> None:
    d = app[DAEMON]
    runner = ExperimentRunner(app[ANNOUNCER], d.runtime_dir,
                              d.log.bind(component="experiments"), parse_request)  # fmt: skip
    app[EXPERIMENTS] = runner

    async def resume(app: web.Application) -> None:
        runner.load()

    async def stop(app: web.Application) -> None:
        await runner.stop()

    app.on_startup.append(resume)
    app.on_cleanup.append(stop)
    r = app.router
    r.add_get("/api/v1/experiments", list_experiments)
    r.add_post("/api/v1/experiments", post_experiment)
    r.add_get("/api/v1/experiments/{name}", get_experiment)
    r.add_delete("/api/v1/experiments/{name}", delete_experiment)


register(_setup)
