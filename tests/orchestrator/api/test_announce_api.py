"""POST/DELETE /api/v1/announcements: request validation (a typed, explicit target or a 400; nothing
sent on a refusal). The manager's rules themselves are tested in tests/orchestrator/test_announce.py."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import orchestrator.api.announce  # noqa: F401  (registers its routes on import)
from orchestrator.api.app import build_app
from orchestrator.daemon import Daemon
from policies.safety import SafetyRules

from .conftest import make_daemon

ALLOCATED = ("198.51.100.0/24",)


def daemon_with_safety(tmp_path: Path) -> Daemon:
    d = make_daemon(tmp_path)
    d.config = dataclasses.replace(
        d.config, safety=SafetyRules(d.config.local.asn, SafetyRules.allocation(ALLOCATED), min_interval=0))
    return d


def call(tmp_path: Path, method: str, body: dict[str, Any]) -> tuple[int, Any]:
    return asyncio.run(_call(tmp_path, method, body))


async def _call(tmp_path: Path, method: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with TestClient(TestServer(build_app(daemon_with_safety(tmp_path)))) as client:
        resp = await client.request(method, "/api/v1/announcements", json=body)
        return resp.status, await resp.json()


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"prefix": "198.51.100.0/24", "all": "false"}, 400, "all: expected true or false"),
    ({"prefix": "198.51.100.0/24", "all": 1}, 400, "all: expected true or false"),
    ({"prefix": "198.51.100.0/24", "all": True, "peers": ["up1"]}, 400, "give one of them"),
    ({"prefix": "198.51.100.0/24"}, 400, "no target peers"),
    ({"prefix": "198.51.100.0/24", "all": True, "communities": "64500:1"}, 400,
     "communities: expected a list of strings"),
    ({"prefix": "198.51.100.0/24", "all": True, "large_communities": ["1:2"]}, 400, "large_communities:"),
    ({"prefix": "198.51.100.0/33", "all": True}, 400, "prefix:"),
])
def test_bad_requests_are_400_naming_the_member(tmp_path: Path, body: dict[str, Any], status: int,
                                                       message: str) -> None:
    got, answer = call(tmp_path, "POST", body)
    assert got == status and message in answer["error"], answer


def test_a_peer_named_twice_is_one_target(tmp_path: Path) -> None:
    status, answer = call(tmp_path, "POST", {"prefix": "198.51.100.0/24", "peers": ["up1", "up1"]})
    assert status == 200, answer
    assert answer["peers"] == ["up1"]


def test_per_peer_attribute_sets(tmp_path: Path) -> None:
    body = {"prefix": "198.51.100.0/24", "peers": ["up1"], "prepend": 1,
            "per_peer": {"rs": {"communities": ["64512:7"]}}}
    status, answer = call(tmp_path, "POST", body)
    assert status == 200, answer
    assert answer["peers"] == ["up1", "rs"] and answer["as_path"] == [64512, 64512]
    assert answer["per_peer"]["rs"]["as_path"] == [64512] and answer["per_peer"]["rs"]["communities"] == ["64512:7"]
    for per_peer, code, says in (({"nobody": {}}, 422, "no peer named 'nobody'"),
                                 ({"rs": {"prefix": "x"}}, 400, "per_peer.rs: unknown keys ['prefix']"),
                                 ({"rs": {"prepend": -1}}, 400, "per_peer.rs.prepend")):
        status, answer = call(tmp_path, "POST", {**body, "per_peer": per_peer})
        assert status == code and says in answer["error"], answer
