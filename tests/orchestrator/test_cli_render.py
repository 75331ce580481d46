"""How the CLI prints API answers (no daemon needed)."""

from __future__ import annotations

from typing import Any

from orchestrator.cli import _peer_table, _route_lines


def peer(state: str, last_error: str) -> dict[str, Any]:
    return {"name": "a", "kind": "upstream", "address": "192.0.2.2", "peer_as": 65001, "state": state,
            "uptime_s": 5, "families": {"ipv4": {"received": 1234, "best": 1000}}, "last_error": last_error}


def test_the_info_column_shows_the_last_error_only_while_the_peer_is_not_up() -> None:
    assert "speaker-exited" in _peer_table([peer("connect", "speaker-exited: code -9")])
    assert "speaker-exited" not in _peer_table([peer("established", "speaker-exited: code -9")])


def test_a_filtered_route_without_local_pref_prints_a_dash() -> None:
    route = {"prefix": "10.0.0.0/25", "paths": [
        {"best": False, "next_hop": "192.0.2.2", "peer": "a", "local_pref": None, "origin": "igp",
         "as_path": [65001], "filtered": True, "rule": "max-length"}]}
    (line,) = _route_lines(route)
    assert "lp - igp" in line and "filtered [max-length]" in line and "None" not in line
