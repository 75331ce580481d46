"""GET /metrics: the text format (checked by a small strict parser) and the values after events."""

from __future__ import annotations

import asyncio
import math
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

import orchestrator.api.metrics as metrics_mod
import orchestrator.api.stream  # noqa: F401  (registers its routes on import)
from orchestrator.api.app import build_app
from orchestrator.api.metrics import MetricFamily, RateWindow, format_value, render
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, parse_prefix
from speakers.events import DownReason, PeerDown, Update

_SAMPLE_RE = re.compile(
    r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\n]|\\[\\\"n])*\",?)*)\})?"
    r" (?P<value>[-+]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|Inf|NaN))$"
)
_LABEL_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"((?:[^\"\\\n]|\\[\\\"n])*)\"")
_ESCAPE_RE = re.compile(r"\\(.)")
_UNESCAPE = {"n": "\n", '"': '"', "\\": "\\"}


def parse(text: str) -> dict[str, dict[str, Any]]:
    """A strict reader of the 0.0.4 text format: HELP then TYPE before each family's samples, no
    family twice, every sample line well formed. Returns {name: {"type", "help", "samples":
    {frozenset(labels): value}}}."""
    assert text.endswith("\n")
    out: dict[str, dict[str, Any]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in out, f"{name} twice"
            out[name] = {"help": help_text, "type": None, "samples": {}}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is not None and name == current and kind in ("gauge", "counter", "untyped"), line
            out[name]["type"] = kind
        else:
            m = _SAMPLE_RE.fullmatch(line)
            assert m is not None, f"bad sample line {line!r}"
            assert current is not None and m["name"] == current, f"{m['name']} outside its family"
            labels = frozenset(
                (k, _ESCAPE_RE.sub(lambda e: _UNESCAPE[e[1]], v))
                for k, v in _LABEL_RE.findall(m["labels"] or "")
            )
            assert labels not in out[current]["samples"], f"duplicate series {line!r}"
            out[current]["samples"][labels] = float(m["value"])
    return out


def value(parsed: dict[str, dict[str, Any]], name: str, **labels: str) -> float:
    result: float = parsed[name]["samples"][frozenset(labels.items())]
    return result


def test_render_escapes_and_formats() -> None:
    fam = MetricFamily("x_total", "counter", 'help with \\ and\nnewline "quotes" kept')
    fam.add(3, peer='we"ird\\na\nme')
    fam.add(0.5, peer="b")
    text = render([fam])
    assert text == (
        '# HELP x_total help with \\\\ and\\nnewline "quotes" kept\n'
        "# TYPE x_total counter\n"
        'x_total{peer="we\\"ird\\\\na\\nme"} 3\n'
        'x_total{peer="b"} 0.5\n'
    )
    assert value(parse(text), "x_total", peer='we"ird\\na\nme') == 3
    assert [format_value(v) for v in (1.0, 2.5, math.nan, math.inf, -math.inf, 7)] == [
        "1",
        "2.5",
        "NaN",
        "+Inf",
        "-Inf",
        "7",
    ]
    with pytest.raises(ValueError, match="invalid metric name"):
        render([MetricFamily("bad-name", "gauge", "")])
    with pytest.raises(ValueError, match="invalid label name"):
        bad = MetricFamily("ok", "gauge", "")
        bad.add(1, **{"1x": "v"})
        render([bad])


def test_rate_window() -> None:
    w = RateWindow(window=10.0)
    for t in range(0, 21):
        w.observe(float(t), {"a": t * 5, "b": 100})
    assert w.rate("a") == pytest.approx(5.0)
    assert w.rate("b") == 0.0
    w.observe(21.0, {"a": 3})  # went down: the peer was re-created, start over
    assert w.rate("a") == 0.0
    w.observe(23.0, {"a": 13})
    assert w.rate("a") == pytest.approx(5.0)
    assert w.rate("gone") == 0.0
    w.observe(24.0, {})
    assert w.rate("a") == 0.0


def _ann(peer: str, prefixes: list[str], path: tuple[int, ...]) -> Update:
    family = parse_prefix(prefixes[0])[0]
    attrs = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, path),))
    return Update(peer, family, attrs, [parse_prefix(p)[1] for p in prefixes], [])


def test_metrics_after_events(lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(metrics_mod, "_clock", lambda: clock[0])

    async def run() -> None:
        client = TestClient(TestServer(build_app(lab.daemon)))
        await client.start_server()
        try:
            lab.bring_up()
            lab.feed(
                _ann("up1", ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"], (64501, 64999)),
                _ann("rs", ["10.0.0.0/24"], (64502, 64999)),
                _ann("up1", ["2001:db8::/32"], (64501,)),
            )
            resp = await client.get("/metrics")
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            clock[0] += 10.0
            lab.feed(*(_ann("up1", [f"10.1.{i}.0/24"], (64501,)) for i in range(20)))
            lab.feed(PeerDown("rs", DownReason.HOLD_TIMER_EXPIRED))
            resp = await client.get("/metrics")
            p = parse(await resp.text())
        finally:
            await client.close()

        expected = {
            "peerctl_peer_up",
            "peerctl_peer_state",
            "peerctl_peer_prefixes_received",
            "peerctl_peer_prefixes_accepted",
            "peerctl_peer_prefixes_best",
            "peerctl_peer_updates_total",
            "peerctl_peer_flaps_total",
            "peerctl_speaker_restarts_total",
            "peerctl_updates_per_second",
            "peerctl_rib_prefixes",
            "peerctl_rib_paths",
            "peerctl_process_resident_memory_bytes",
            "peerctl_process_cpu_seconds_total",
            "peerctl_fib_installed_routes",
            "peerctl_fib_errors_total",
            "peerctl_fib_pending",
            "peerctl_build_info",
        }
        assert expected <= set(p)
        for name, fam in p.items():
            assert fam["type"] == ("counter" if name.endswith("_total") else "gauge"), name
        assert value(p, "peerctl_peer_up", peer="up1", kind="upstream") == 1
        assert value(p, "peerctl_peer_up", peer="rs", kind="route-server") == 0
        assert value(p, "peerctl_peer_state", peer="rs", state="down") == 1
        assert value(p, "peerctl_peer_state", peer="rs", state="established") == 0
        assert (
            sum(v for labels, v in p["peerctl_peer_state"]["samples"].items() if ("peer", "up1") in labels)
            == 1
        )
        assert value(p, "peerctl_peer_prefixes_received", peer="up1", family="ipv4") == 23
        assert value(p, "peerctl_peer_prefixes_accepted", peer="up1", family="ipv4") == 23
        assert value(p, "peerctl_peer_prefixes_received", peer="up1", family="ipv6") == 1
        assert value(p, "peerctl_peer_prefixes_best", peer="up1", family="ipv4") == 23
        assert value(p, "peerctl_peer_prefixes_received", peer="rs", family="ipv4") == 0
        assert ("peer", "rs") not in {
            lbl
            for s in p["peerctl_peer_prefixes_received"]["samples"]
            for lbl in s
            if ("family", "ipv6") in s
        }  # rs is IPv4 only
        assert value(p, "peerctl_peer_updates_total", peer="up1") == 22
        assert value(p, "peerctl_peer_updates_total", peer="rs") == 1
        assert value(p, "peerctl_peer_flaps_total", peer="rs") == 1
        assert value(p, "peerctl_speaker_restarts_total", peer="rs") == 0
        assert value(p, "peerctl_updates_per_second", peer="up1") == pytest.approx(2.0)  # 20 in 10 s
        assert value(p, "peerctl_updates_per_second", peer="rs") == 0
        assert value(p, "peerctl_rib_prefixes", family="ipv4") == 23
        assert value(p, "peerctl_rib_paths", family="ipv4") == 23
        assert value(p, "peerctl_rib_prefixes", family="ipv6") == 1
        assert value(p, "peerctl_process_resident_memory_bytes") > 1 << 20
        assert value(p, "peerctl_process_cpu_seconds_total") > 0
        assert value(p, "peerctl_fib_installed_routes", family="ipv4") == 0
        assert value(p, "peerctl_fib_errors_total") == 0
        assert value(p, "peerctl_fib_pending") == 0
        ((labels, one),) = p["peerctl_build_info"]["samples"].items()
        assert one == 1 and dict(labels)["version"]

    asyncio.run(run())


class _FakeFib:
    def status(self) -> dict[str, Any]:
        return {"installed": {"ipv4": 7, "ipv6": 2}, "pending": 3, "errors": 4, "last_error": ""}


class _FakeSpeaker:
    restarts = 5


def test_fib_and_speaker_values(lab: Any) -> None:
    lab.daemon.fib = _FakeFib()
    lab.daemon.speakers["up1"] = _FakeSpeaker()
    p = parse(render(metrics_mod.collect(lab.daemon, RateWindow())))
    assert value(p, "peerctl_fib_installed_routes", family="ipv4") == 7
    assert value(p, "peerctl_fib_installed_routes", family="ipv6") == 2
    assert value(p, "peerctl_fib_pending") == 3
    assert value(p, "peerctl_fib_errors_total") == 4
    assert value(p, "peerctl_speaker_restarts_total", peer="up1") == 5
    assert Family.IPV4.short == "ipv4"


def test_prometheus_client_parser_accepts_it(lab: Any) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    lab.bring_up()
    text = render(metrics_mod.collect(lab.daemon, RateWindow()))
    names = {fam.name for fam in parser.text_string_to_metric_families(text)}
    assert "peerctl_peer_up" in names
