"""API latency while a full table is being ingested (DESIGN.md: status and one prefix lookup answer in
≤ 50 ms p99), against the anchor of the same daemon once idle.

    python -m benchmarks.api [--ipv4 N] [--ipv6 N] [--runs R] [--rate HZ] [--json]

Each run starts the shipped lab (`config.toml`: two feeders, one ExaBGP process per peer, the FIB
writing into a namespace of its own, the collector on) with its own addresses, API port and
namespace, and the table size asked (default a full table per feeder: 1,000,000 IPv4 + 230,000
IPv6). From the first API answer until the RIB reports loaded, a client thread sends, at a fixed
rate, alternately `GET /api/v1/summary` and `GET /api/v1/routes/<random IPv4 address>` (longest match:
a hit or a 404, both a whole lookup) on one keep-alive connection, and records each latency. Then the
same number of requests on the idle daemon. Reported per phase and endpoint: count, p50/p90/p99/max
in ms; per run the p99 ratio loading/idle. Medians over runs. The host's tables are never touched;
everything listens on loopback.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.ingest import stop

REPO = Path(__file__).resolve().parents[1]
TARGET_P99_MS = 50.0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab_config(tmp: Path, ipv4: int, ipv6: int, port: int, netns: str) -> Path:
    text = (REPO / "config.toml").read_text()
    for old, new in {
        'listen = "127.0.0.1:8179"': f'listen = "127.0.0.1:{port}"',
        'netns = "peerctl-lab"': f'netns = "{netns}"',
        "ipv4_prefixes = 200000": f"ipv4_prefixes = {ipv4}",
        "ipv6_prefixes = 50000": f"ipv6_prefixes = {ipv6}",
        'neighbor = "127.0.0.2"': 'neighbor = "127.0.97.2"',
        'neighbor = "127.0.0.3"': 'neighbor = "127.0.97.3"',
    }.items():
        if old not in text:
            raise SystemExit(f"benchmarks.api: the shipped config.toml no longer has {old!r}")
        text = text.replace(old, new)
    path = tmp / "config.toml"
    path.write_text(text)
    return path


class Client:
    """One keep-alive HTTP connection; each request's latency in ms, by endpoint."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.rng = random.Random(7)

    def get(self, path: str) -> tuple[int, float, bytes]:
        t0 = time.perf_counter()
        try:
            self.conn.request("GET", path)
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise
        return resp.status, (time.perf_counter() - t0) * 1000, body

    def lookup_path(self) -> str:
        a = self.rng.randrange(1 << 24, 224 << 24)
        return f"/api/v1/routes/{a >> 24}.{(a >> 16) & 255}.{(a >> 8) & 255}.{a & 255}"


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"n": len(values), "p50_ms": round(q[49], 2), "p90_ms": round(q[89], 2),
            "p99_ms": round(q[98], 2), "max_ms": round(max(values), 2)}  # fmt: skip


def one_run(ipv4: int, ipv6: int, rate: float, log_dir: Path) -> dict[str, Any]:
    netns = f"pbench-api-{secrets.token_hex(3)}"
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="peerctl-apibench-") as tmp_s:
        tmp = Path(tmp_s)
        config = lab_config(tmp, ipv4, ipv6, port, netns)
        log = log_dir / f"peerctl-{netns}.log"
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "-c", str(config), "run",
                                 "--no-progress"], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=log.open("wb"))  # fmt: skip
        try:
            return _measure(proc, port, rate, log)
        finally:
            stop(proc, 60)  # a full table's daemon takes a while to stop
            subprocess.run(["pkill", "-9", "-f", str(tmp)], check=False)
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)


def _measure(proc: subprocess.Popen[bytes], port: int, rate: float, log: Path) -> dict[str, Any]:
    client: Client | None = None
    deadline = time.monotonic() + 60
    while client is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"peerctl did not start; see {log}")
        try:
            c = Client(port)
            c.get("/api/v1/summary")
            client = c
        except OSError:
            time.sleep(0.1)
    phases: dict[str, dict[str, list[float]]] = {"loading": {"summary": [], "lookup": []},
                                                 "idle": {"summary": [], "lookup": []}}  # fmt: skip
    errors = 0
    period = 1.0 / rate
    load_start = time.monotonic()
    loaded_at: float | None = None
    n = 0
    stop_at: float | None = None
    next_at = time.monotonic()
    while True:
        now = time.monotonic()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += period
        phase = "loading" if loaded_at is None else "idle"
        endpoint = "summary" if n % 2 == 0 else "lookup"
        n += 1
        try:
            status, ms, body = client.get(
                "/api/v1/summary" if endpoint == "summary" else client.lookup_path()
            )
        except OSError:
            errors += 1
            continue
        if status not in (200, 404):
            errors += 1
            continue
        phases[phase][endpoint].append(ms)
        if endpoint == "summary" and loaded_at is None and not json.loads(body)["loading"]:
            loaded_at = time.monotonic()
            count = sum(len(v) for v in phases["loading"].values())
            stop_at = float(max(count, 200))
        if (
            loaded_at is not None
            and stop_at is not None
            and sum(len(v) for v in phases["idle"].values()) >= stop_at
        ):
            break
        if time.monotonic() - load_start > 1800:
            raise SystemExit("benchmarks.api: the table did not load in 30 minutes")
    assert loaded_at is not None
    out: dict[str, Any] = {"load_seconds": round(loaded_at - load_start, 1), "errors": errors}
    for phase, by in phases.items():
        out[phase] = {ep: _stats(v) for ep, v in by.items()}
        out[phase]["all"] = _stats(by["summary"] + by["lookup"])
    out["p99_ratio_loading_idle"] = round(
        out["loading"]["all"]["p99_ms"] / max(out["idle"]["all"]["p99_ms"], 1e-3), 2
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ipv4", type=int, default=1_000_000, help="IPv4 prefixes per feeder")
    ap.add_argument("--ipv6", type=int, default=230_000, help="IPv6 prefixes per feeder")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second (bounded)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "benchmarks.api: needs root (the lab installs routes in a namespace it creates)", file=sys.stderr
        )
        return 2
    rate = min(max(args.rate, 1.0), 500.0)
    log_dir = Path(tempfile.gettempdir())
    runs = [one_run(args.ipv4, args.ipv6, rate, log_dir) for _ in range(args.runs)]
    med = {
        phase: {ep: round(statistics.median(r[phase][ep]["p99_ms"] for r in runs), 2)
                for ep in ("summary", "lookup", "all")}
        for phase in ("loading", "idle")
    }  # fmt: skip
    result = {
        "table": {"ipv4_per_feeder": args.ipv4, "ipv6_per_feeder": args.ipv6, "feeders": 2, "rate_hz": rate},
        "runs": runs,
        "median_p99_ms": med,
        "median_p99_ratio_loading_idle": round(
            statistics.median(r["p99_ratio_loading_idle"] for r in runs), 2
        ),
        "targets": {
            "p99_le_50ms_while_loading": "OK" if med["loading"]["all"] <= TARGET_P99_MS else "MISSED"
        },
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for i, r in enumerate(runs):
            print(f"run {i + 1}: load {r['load_seconds']} s, errors {r['errors']}")
            for phase in ("loading", "idle"):
                for ep in ("summary", "lookup"):
                    s = r[phase][ep]
                    print(
                        f"  {phase:8} {ep:8} n={s['n']:6} p50 {s.get('p50_ms')} p90 {s.get('p90_ms')} "
                        f"p99 {s.get('p99_ms')} max {s.get('max_ms')} ms"
                    )
        print(
            f"median p99 (ms): {med}; loading/idle {result['median_p99_ratio_loading_idle']}x; "
            f"target p99 <= {TARGET_P99_MS:g} ms while loading: "
            f"{result['targets']['p99_le_50ms_while_loading']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
