"""Prometheus metrics: ``GET /metrics`` in the text exposition format 0.0.4.

Theory of operation
-------------------
Everything is read at scrape time from what the daemon already keeps (peer status, RIB counters,
the FIB writer's status, the speakers' restart counts), so a scrape costs O(peers), never O(routes).
The one derived value, ``peerctl_updates_per_second``, is a rate over the last ~10 s: a small task
(started and stopped through ``cleanup_ctx``) samples every peer's ``updates`` counter once a second
into a ``RateWindow``; a scrape takes one more sample and reports (newest - oldest) / elapsed.

The formatter is ours (a few dozen lines, no dependency): ``MetricFamily`` → ``render``. It escapes
label values and HELP text as the format requires and refuses invalid metric and label names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final, Literal

from aiohttp import web

from orchestrator.api.app import DAEMON, register
from orchestrator.rib.prefix import Family

if TYPE_CHECKING:
    from orchestrator.daemon import Daemon

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
RATE_WINDOW_S: Final = 10.0
SAMPLE_INTERVAL_S: Final = 1.0
KNOWN_STATES: Final = (
    "idle",
    "connect",
    "active",
    "opensent",
    "openconfirm",
    "established",
    "down",
    "stopped",
)

_clock = time.monotonic  # for the rate window; replaced in tests

_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# -- text format ------------------------------------------------------------------------------------


@dataclass(slots=True)
class MetricFamily:
    """One metric name with its HELP, TYPE and samples (label dict, value)."""

    name: str
    type: Literal["gauge", "counter", "untyped"]
    help: str
    samples: list[tuple[Mapping[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(families: Iterable[MetricFamily]) -> str:
    """Text exposition format 0.0.4. Raises ValueError on an invalid metric or label name."""
    lines: list[str] = []
    for fam in families:
        if not _NAME_RE.fullmatch(fam.name):
            raise ValueError(f"invalid metric name {fam.name!r}")
        lines.append(f"# HELP {fam.name} {escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        for labels, value in fam.samples:
            if labels:
                parts = []
                for k, v in labels.items():
                    if not _LABEL_RE.fullmatch(k) or k.startswith("__"):
                        raise ValueError(f"invalid label name {k!r} on {fam.name}")
                    parts.append(f'{k}="{escape_label_value(v)}"')
                lines.append(f"{fam.name}{{{','.join(parts)}}} {format_value(value)}")
            else:
                lines.append(f"{fam.name} {format_value(value)}")
    return "\n".join(lines) + "\n"


# -- rates ------------------------------------------------------------------------------------------


class RateWindow:
    """Per-key counter samples over a sliding window; ``rate`` is the slope across it. Pure."""

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, now: float, counters: Mapping[str, int]) -> None:
        """Record one sample per key; keys no longer present are forgotten; a counter that went
        down (the peer was re-created by a reload) restarts its window."""
        for key in list(self._samples):
            if key not in counters:
                del self._samples[key]
        for key, value in counters.items():
            samples = self._samples.get(key)
            if samples is None or (samples and value < samples[-1][1]):
                samples = self._samples[key] = deque()
            samples.append((now, value))
            # Keep one sample at or before the window start so the rate spans the whole window.
            while len(samples) > 2 and samples[1][0] <= now - self.window:
                samples.popleft()

    def rate(self, key: str) -> float:
        samples = self._samples.get(key)
        if not samples or len(samples) < 2:
            return 0.0
        (t0, v0), (t1, v1) = samples[0], samples[-1]
        return (v1 - v0) / (t1 - t0) if t1 > t0 else 0.0


# -- process ----------------------------------------------------------------------------------------


def resident_memory_bytes() -> int | None:
    """Current RSS from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def build_version() -> str:
    try:
        return metadata.version("peerctl")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- collection -------------------------------------------------------------------------------------


def _families_counts(counts: Mapping[str, Any]) -> Mapping[str, Any]:
    # Rib.counts() puts the per-family totals either at the top level or under "families".
    fams = counts.get("families")
    return fams if isinstance(fams, Mapping) else counts


def collect(daemon: Daemon, rates: RateWindow) -> list[MetricFamily]:
    """Every metric family from the daemon's current state; O(peers)."""
    peer_up = MetricFamily("peerctl_peer_up", "gauge", "1 when the BGP session is established.")
    peer_state = MetricFamily(
        "peerctl_peer_state", "gauge", "Session state: 1 for the current state, 0 for the others."
    )
    received = MetricFamily(
        "peerctl_peer_prefixes_received", "gauge", "Prefixes received from the peer (Adj-RIB-In)."
    )
    accepted = MetricFamily(
        "peerctl_peer_prefixes_accepted", "gauge", "Prefixes from the peer accepted by import policy."
    )
    best = MetricFamily("peerctl_peer_prefixes_best", "gauge", "Prefixes whose best path is from the peer.")
    updates = MetricFamily("peerctl_peer_updates_total", "counter", "UPDATE messages received from the peer.")
    flaps = MetricFamily("peerctl_peer_flaps_total", "counter", "Times the session left ESTABLISHED.")
    restarts = MetricFamily(
        "peerctl_speaker_restarts_total", "counter", "Times the peer's speaker process was restarted."
    )
    rate = MetricFamily(
        "peerctl_updates_per_second",
        "gauge",
        f"UPDATE messages per second from the peer over the last {RATE_WINDOW_S:g} s.",
    )
    rib_prefixes = MetricFamily("peerctl_rib_prefixes", "gauge", "Prefixes in the Loc-RIB.")
    rib_paths = MetricFamily("peerctl_rib_paths", "gauge", "Paths in the RIB (all peers).")
    rss = MetricFamily("peerctl_process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
    cpu = MetricFamily("peerctl_process_cpu_seconds_total", "counter", "User and system CPU time in seconds.")
    fib_installed = MetricFamily(
        "peerctl_fib_installed_routes", "gauge", "Routes installed in the kernel by peerctl."
    )
    fib_errors = MetricFamily("peerctl_fib_errors_total", "counter", "Routes the kernel refused.")
    fib_pending = MetricFamily("peerctl_fib_pending", "gauge", "Route changes waiting for the kernel.")
    build = MetricFamily("peerctl_build_info", "gauge", "Always 1; the version is a label.")
    mrt_records = MetricFamily(
        "peerctl_collector_records_total", "counter", "MRT records (updates, state changes) recorded."
    )
    mrt_bytes = MetricFamily(
        "peerctl_collector_bytes_total", "counter", "Uncompressed MRT bytes of the recorded updates."
    )
    mrt_errors = MetricFamily(
        "peerctl_collector_errors_total", "counter", "MRT records lost to write errors."
    )
    mrt_dumps = MetricFamily("peerctl_collector_rib_dumps_total", "counter", "MRT RIB dumps written.")

    counts = daemon.rib.counts()
    peer_counts: Mapping[str, Any] = counts.get("peers", {})
    rates.observe(_clock(), {name: st.updates for name, st in daemon.status.items()})
    for peer in daemon.config.peers:
        name = peer.name
        st = daemon.status.get(name)
        state = st.state if st is not None else "idle"
        peer_up.add(1 if state == "established" else 0, peer=name, kind=peer.kind.value)
        states = KNOWN_STATES if state in KNOWN_STATES else (*KNOWN_STATES, state)
        for s in states:
            peer_state.add(1 if s == state else 0, peer=name, state=s)
        pc = peer_counts.get(name, {})
        for family in peer.families:
            c = pc.get(family.short, {})
            got = int(c.get("received", 0))
            received.add(got, peer=name, family=family.short)
            accepted.add(int(c.get("accepted", got)), peer=name, family=family.short)
            best.add(int(c.get("best", 0)), peer=name, family=family.short)
        updates.add(st.updates if st is not None else 0, peer=name)
        flaps.add(st.flaps if st is not None else 0, peer=name)
        speaker = daemon.speakers.get(name)
        restarts.add(
            speaker.restarts if speaker is not None else (st.speaker_restarts if st is not None else 0),
            peer=name,
        )
        rate.add(round(rates.rate(name), 3), peer=name)

    fams = _families_counts(counts)
    for family in Family:
        fc = fams.get(family.short, {})
        rib_prefixes.add(int(fc.get("prefixes", 0)), family=family.short)
        rib_paths.add(int(fc.get("paths", 0)), family=family.short)

    memory = resident_memory_bytes()
    if memory is not None:
        rss.add(memory)
    cpu.add(round(cpu_seconds(), 3))

    fib: dict[str, Any] = daemon.fib.status() if daemon.fib is not None else {}
    installed: Mapping[str, int] = fib.get("installed", {})
    for family in Family:
        fib_installed.add(int(installed.get(family.short, 0)), family=family.short)
    fib_errors.add(int(fib.get("errors", 0)))
    fib_pending.add(int(fib.get("pending", 0)))
    build.add(1, version=build_version())
    col = daemon.collector
    mrt_records.add(col.records if col is not None else 0)
    mrt_bytes.add(col.bytes if col is not None else 0)
    mrt_errors.add(col.errors if col is not None else 0)
    mrt_dumps.add(col.dumps if col is not None else 0)

    return [
        peer_up,
        peer_state,
        received,
        accepted,
        best,
        updates,
        flaps,
        restarts,
        rate,
        rib_prefixes,
        rib_paths,
        rss,
        cpu,
        fib_installed,
        fib_errors,
        fib_pending,
        build,
        mrt_records,
        mrt_bytes,
        mrt_errors,
        mrt_dumps,
    ]


# -- aiohttp ----------------------------------------------------------------------------------------

RATES: web.AppKey[RateWindow] = web.AppKey("metrics_rates")


async def metrics(request: web.Request) -> web.Response:
    text = render(collect(request.app[DAEMON], request.app[RATES]))
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def _sampler(app: web.Application) -> AsyncIterator[None]:
    """Samples the update counters once a second for ``peerctl_updates_per_second``."""
    daemon, rates = app[DAEMON], app[RATES]

    async def loop() -> None:
        while True:
            rates.observe(_clock(), {name: st.updates for name, st in daemon.status.items()})
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    task = asyncio.create_task(loop(), name="metrics-sampler")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _setup(app: web.Application) -> None:
    app[RATES] = RateWindow()
    app.cleanup_ctx.append(_sampler)
    app.router.add_get("/metrics", metrics)


register(_setup)
