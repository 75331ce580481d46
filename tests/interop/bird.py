"""BIRD 2 instances for the interop tests: start/stop, birdc queries, ``show route all`` parsing,
and a peerctl Daemon (+ API) run in-process from a generated config.

Addresses: these tests own 127.0.80.0/24 and 127.0.81.0/24 only. Each BIRD binds its BGP sockets to
its own address on port 179 (``strict bind``), so instances never clash on the port.
Loopback pitfalls (``/work/shared/EXABGP.md``): eBGP needs ``multihop``; two protocols to the same
neighbor IP in one BIRD instance don't both come up (so the judge and ExaBGP use different addresses);
BIRD holds its last batch back 1.3-3 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BIRD_TIMING = "hold time 30; error wait time 1,5; connect retry time 2;"


@dataclass
class Bird:
    name: str
    dir: Path
    sock: Path
    proc: subprocess.Popen[bytes]

    def cmd(self, *args: str, timeout: float = 10) -> str:
        out = subprocess.run(
            ["birdc", "-s", str(self.sock), *args], capture_output=True, text=True, timeout=timeout
        )
        return out.stdout

    def established(self, protocol: str) -> bool:
        return "Established" in self.cmd("show", "protocols", protocol)

    def imported(self, protocol: str) -> int:
        """Routes imported by ``protocol`` over all its channels (``show protocols all``)."""
        text = self.cmd("show", "protocols", "all", protocol)
        return sum(int(m) for m in re.findall(r"Routes:\s+(\d+) imported", text))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_bird(base: Path, name: str, conf: str) -> Bird:
    """Run ``bird -f -c conf -s sock -P pid`` in ``base/name``; RuntimeError if it does not come up."""
    if shutil.which("bird") is None or shutil.which("birdc") is None:
        pytest.skip("bird/birdc (BIRD 2) not installed")
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "bird.conf").write_text(conf)
    sock = d / "bird.ctl"
    proc = subprocess.Popen(
        ["bird", "-f", "-c", str(d / "bird.conf"), "-s", str(sock), "-P", str(d / "bird.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 5
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"bird {name} did not start: {err}\n{conf[:2000]}")
        time.sleep(0.02)
    return Bird(name, d, sock, proc)


@pytest.fixture
def birds(tmp_path: Path) -> Iterator[Callable[[str, str], Bird]]:
    """Factory ``birds(name, conf) -> Bird``; every instance is stopped at teardown."""
    started: list[Bird] = []

    def factory(name: str, conf: str) -> Bird:
        bird = start_bird(tmp_path / "bird", name, conf)
        started.append(bird)
        return bird

    yield factory
    for bird in started:
        bird.stop()


# ---- config snippets ---------------------------------------------------------------------------


def bgp_protocol(
    name: str,
    *,
    local: str,
    local_as: int,
    neighbor: str,
    peer_as: int,
    passive: bool,
    export: str = "none",
    import_: str = "all",
    next_hop4: str | None = None,
    next_hop6: str | None = None,
) -> str:
    """One ``protocol bgp`` carrying IPv4 and IPv6 unicast over an IPv4 session on port 179."""
    nh4 = f" next hop address {next_hop4};" if next_hop4 else ""
    nh6 = f" next hop address {next_hop6};" if next_hop6 else ""
    multihop = "" if local_as == peer_as else " multihop 2;"  # iBGP is multihop in BIRD anyway
    return f"""
protocol bgp {name} {{
  local {local} port 179 as {local_as};
  neighbor {neighbor} port 179 as {peer_as};
  strict bind yes;{multihop}
  {"passive yes;" if passive else ""}
  {BIRD_TIMING}
  ipv4 {{ import {import_}; export {export};{nh4} }};
  ipv6 {{ import {import_}; export {export};{nh6} }};
}}
"""


def static_blackholes(v4: list[str], v6: list[str]) -> str:
    lines = ["protocol static static4 {", "  ipv4;"]
    lines += [f"  route {p} blackhole;" for p in v4]
    lines += ["}", "protocol static static6 {", "  ipv6;"]
    lines += [f"  route {p} blackhole;" for p in v6]
    lines.append("}")
    return "\n".join(lines)


# ---- show route all ----------------------------------------------------------------------------

_ROUTE_RE = re.compile(
    r"^(?P<prefix>\S+)?\s+(?P<dest>unicast|unreachable|blackhole|prohibit)\s+\[(?P<proto>\S+)\s[^\]]*\]"
    r"(?P<primary>\s\*)?"
)


@dataclass
class BirdRoute:
    prefix: str
    proto: str
    primary: bool
    attrs: dict[str, str] = field(default_factory=dict)

    @property
    def next_hop(self) -> str:
        return self.attrs.get("BGP.next_hop", "").split()[0] if self.attrs.get("BGP.next_hop") else ""


def parse_show_route_all(text: str) -> dict[str, list[BirdRoute]]:
    """``birdc show route all`` → prefix → routes (primary flagged). Attribute lines ``\\tBGP.x: v``
    belong to the route line before them."""
    routes: dict[str, list[BirdRoute]] = {}
    current: BirdRoute | None = None
    prefix = ""
    for line in text.splitlines():
        m = _ROUTE_RE.match(line)
        if m:
            prefix = m.group("prefix") or prefix
            current = BirdRoute(prefix, m.group("proto"), bool(m.group("primary")))
            routes.setdefault(prefix, []).append(current)
            continue
        if current is not None and ":" in line and line.startswith(("\t", " ")):
            key, _, value = line.strip().partition(":")
            current.attrs[key.strip()] = value.strip()
    return routes


def judge_best(bird: Bird) -> dict[str, BirdRoute]:
    """The selected (primary) route of every prefix in the BIRD's master4 and master6 tables."""
    text = bird.cmd("show", "route", "all", "table", "all", timeout=30)
    best: dict[str, BirdRoute] = {}
    for prefix, rs in parse_show_route_all(text).items():
        primaries = [r for r in rs if r.primary]
        assert len(primaries) == 1, f"{prefix}: {len(primaries)} primary routes in BIRD output"
        best[prefix] = primaries[0]
    return best


# ---- peerctl in-process ------------------------------------------------------------------------


def free_port(host: str = "127.0.81.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def peer_toml(name: str, neighbor: str, peer_as: int, local_address: str) -> str:
    return f"""
[[peers]]
name = "{name}"
kind = "upstream"
neighbor = "{neighbor}"
peer_as = {peer_as}
local_address = "{local_address}"
hold_time = 30
"""


def daemon_toml(asn: int, router_id: str, api_port: int, peers: str) -> str:
    return f"""
[local]
asn = {asn}
router_id = "{router_id}"

[api]
listen = "127.0.81.1:{api_port}"

[runtime]
dir = "run"
log_level = "warning"

[fib]
mode = "off"

[lab]
enabled = false
{peers}
"""


async def wait_until(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_until_blocking(
    pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    """``wait_until`` for predicates that block (birdc): run them in a thread."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(pred):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_daemon(config_path: Path, *, api: bool = True) -> Any:
    """Load ``config_path``, start the Daemon (and its API), stop both on the way out."""
    from orchestrator.api.app import ApiServer
    from orchestrator.config import load_config
    from orchestrator.daemon import Daemon

    daemon = Daemon(load_config(config_path))
    server = ApiServer(daemon) if api else None
    try:
        if server is not None:
            await server.start()
        await daemon.start()
        yield daemon
    finally:
        await daemon.stop()
        if server is not None:
            await server.stop()


async def api_get(daemon: Any, path: str) -> Any:
    """GET the daemon's API (``config.api``), JSON-decoded."""
    import aiohttp

    url = f"http://{daemon.config.api.host}:{daemon.config.api.port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()


def process_children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out.append(int(entry))
    return out

