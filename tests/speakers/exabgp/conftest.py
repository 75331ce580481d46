"""Fixtures for the ExaBGP speaker tests: a real BIRD 2 on loopback (127.0.50.0/24 is ours)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DATA = Path(__file__).with_name("data")
BIRD_PORT = 11179  # BIRD listens on its own address and port (strict bind): no clash on :179


@dataclass
class Bird:
    address: str
    asn: int
    port: int
    sock: Path
    proc: subprocess.Popen[bytes]

    def cmd(self, *args: str) -> str:
        out = subprocess.run(
            ["birdc", "-s", str(self.sock), *args], capture_output=True, text=True, timeout=10
        )
        return out.stdout


def bird_routes_conf(n4: int, n6: int) -> str:
    """n4 IPv4 /24s in 100.64.0.0/10 and n6 IPv6 /48s with a few attribute sets."""
    lines = ["protocol static s4 {", "  ipv4;"]
    for i in range(n4):
        attrs = f"bgp_community.add((65002,{i % 5})); bgp_large_community.add((65002,{i % 3},7));"
        if i % 7 == 0:
            attrs += " bgp_path.prepend(64600);"
        if i % 11 == 0:
            attrs += " bgp_origin = ORIGIN_INCOMPLETE;"
        lines.append(f"  route 100.{64 + (i >> 8)}.{i & 255}.0/24 blackhole {{ {attrs} }};")
    lines += ["}", "protocol static s6 {", "  ipv6;"]
    for i in range(n6):
        lines.append(f"  route 2001:db8:{i:x}::/48 blackhole {{ bgp_community.add((65002,600)); }};")
    lines.append("}")
    return "\n".join(lines)


def start_bird(tmp: Path, address: str, neighbor: str, asn: int, peer_as: int, routes: str) -> Bird:
    if shutil.which("bird") is None:
        pytest.skip("bird (BIRD 2) not installed")
    conf = tmp / "bird.conf"
    conf.write_text(
        f"""
router id {address};
protocol device {{}}
{routes}
protocol bgp peerctl {{
  local {address} port {BIRD_PORT} as {asn};
  neighbor {neighbor} as {peer_as};
  strict bind yes;
  passive yes;
  multihop 2;
  hold time 30;
  error wait time 1,5; connect retry time 2;
  ipv4 {{ import all; export all; next hop address 192.0.2.50; }};
  ipv6 {{ import all; export all; next hop address 2001:db8::50; }};
}}
"""
    )
    sock = tmp / "bird.ctl"
    proc = subprocess.Popen(
        ["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(tmp / "bird.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 5
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            err = proc.stderr.read().decode() if proc.stderr else ""
            proc.kill()
            raise RuntimeError(f"bird did not start: {err}")
        time.sleep(0.05)
    return Bird(address, asn, BIRD_PORT, sock, proc)


def stop_bird(bird: Bird) -> None:
    if bird.proc.poll() is None:
        bird.proc.send_signal(signal.SIGTERM)
        try:
            bird.proc.wait(5)
        except subprocess.TimeoutExpired:
            bird.proc.kill()
            bird.proc.wait()


@pytest.fixture
def bird_factory(tmp_path: Path) -> Iterator[object]:
    started: list[Bird] = []

    def factory(address: str, neighbor: str, asn: int, peer_as: int, routes: str) -> Bird:
        bird = start_bird(tmp_path, address, neighbor, asn, peer_as, routes)
        started.append(bird)
        return bird

    yield factory
    for bird in started:
        stop_bird(bird)
