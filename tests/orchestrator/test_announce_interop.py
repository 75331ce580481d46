"""`peerctl run` against real BIRD 2 peers on 127.0.85.x: announced attributes arrive exactly as
requested (checked with `birdc show route all`), and a max-prefix violation tears the session down
and restarts it after the configured delay."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PEERCTL = [sys.executable, "-m", "orchestrator.cli"]
BIRD_PORT = 11185
pytestmark = pytest.mark.interop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_bird(tmp: Path, name: str, address: str, asn: int, export: str, routes: str) -> tuple[Any, Path]:
    conf = tmp / f"{name}.conf"
    conf.write_text(f"""
router id {address};
protocol device {{}}
{routes}
protocol bgp peerctl {{
  local {address} port {BIRD_PORT} as {asn};
  neighbor 127.0.85.1 as 64500;
  strict bind yes; passive yes; multihop 2; hold time 30;
  error wait time 1,5; connect retry time 2;
  ipv4 {{ import all; export {export}; next hop address 192.0.2.85; }};
  ipv6 {{ import all; export none; }};
}}
""")
    return run_bird(tmp, name, conf)


def run_bird(tmp: Path, name: str, conf: Path) -> tuple[Any, Path]:
    sock = tmp / f"{name}.ctl"
    proc = subprocess.Popen(["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(tmp / f"{name}.pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not sock.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "bird did not start"
        time.sleep(0.05)
    return proc, sock


def birdc(sock: Path, *args: str) -> str:
    res = subprocess.run(["birdc", "-s", str(sock), *args], capture_output=True, text=True, timeout=10)
    return res.stdout


CONFIG = """
[local]
asn = 64500
router_id = "127.0.85.1"
[api]
listen = "127.0.0.1:{port}"
[runtime]
dir = "run"
[[peers]]
name = "mux"
kind = "mux"
neighbor = "127.0.85.2"
peer_as = 65085
local_address = "127.0.85.1"
port = {bird_port}
multihop = 2
families = ["ipv4"]
import = "none"
[[peers]]
name = "greedy"
kind = "upstream"
neighbor = "127.0.85.3"
peer_as = 65086
local_address = "127.0.85.1"
port = {bird_port}
multihop = 2
families = ["ipv4"]
import = {{ bogon_prefixes = false, bogon_asns = false, next_hop = false }}
max_prefix = {{ ipv4 = 5, action = "restart", restart_after = 4 }}
[safety]
allocated = ["184.164.224.0/23"]
allow_poisoning = true
"""


class Run:
    def __init__(self, tmp: Path, config: str = CONFIG, bird_port: int = BIRD_PORT) -> None:
        self.port = free_port()
        self.config = tmp / "config.toml"
        self.config.write_text(config.format(port=self.port, bird_port=bird_port))
        self.log = tmp / "peerctl.log"
        self.proc = subprocess.Popen([*PEERCTL, "-c", str(self.config), "run"], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1{path}", timeout=10) as resp:
            return json.loads(resp.read())

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PEERCTL, "-c", str(self.config), *args], capture_output=True, text=True,
                              timeout=60, cwd=REPO)

    def wait(self, pred: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                got = pred()
                if got:
                    return got
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out: {what}\n{self.log.read_text()[-3000:]}")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Run, Path, Path]]:
    if shutil.which("bird") is None:
        pytest.skip("bird (BIRD 2) not installed")
    routes = "protocol static s4 { ipv4;\n" + "".join(
        f"  route 16.{i}.0.0/16 blackhole;\n" for i in range(12)) + "}"
    mux, mux_sock = start_bird(tmp_path, "mux", "127.0.85.2", 65085, "none", "")
    greedy, greedy_sock = start_bird(tmp_path, "greedy", "127.0.85.3", 65086, "all", routes)
    run = Run(tmp_path)
    try:
        yield run, mux_sock, greedy_sock
    finally:
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGTERM)
            try:
                run.proc.wait(20)
            except subprocess.TimeoutExpired:
                run.proc.kill()
        for p in (mux, greedy):
            p.terminate()
            p.wait(5)
        subprocess.run(["pkill", "-9", "-f", str(tmp_path)], check=False)


def test_bird_receives_exact_attributes_and_max_prefix_restarts(setup: tuple[Run, Path, Path]) -> None:
    run, mux_sock, _ = setup
    run.wait(lambda: run.api("/peers/mux")["state"] == "established", 30, "mux up")
    res = run.cli("announce", "184.164.224.0/24", "--peer", "mux", "--prepend", "1", "--poison", "3356",
                  "--community", "47065:1", "65000:2", "--large-community", "64500:1:2",
                  "--next-hop", "127.0.85.1", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["as_path"] == [64500, 64500, 3356, 64500]
    out = run.wait(lambda: (o := birdc(mux_sock, "show", "route", "all", "184.164.224.0/24"))
                   and "BGP.as_path" in o and o, 20, "BIRD has the route")
    assert "BGP.as_path: 64500 64500 3356 64500" in out, out
    assert "BGP.next_hop: 127.0.85.1" in out, out
    assert "BGP.community: (47065,1) (65000,2)" in out, out
    assert "BGP.large_community: (64500, 1, 2)" in out, out
    adv = json.loads(run.cli("adv", "mux", "--json").stdout)
    assert adv[0]["prefix"] == "184.164.224.0/24" and adv[0]["state"] == "acked" and adv[0]["on_wire"]

    # refused: outside the allocation, too soon; nothing reaches BIRD
    res = run.cli("announce", "10.0.0.0/24", "--peer", "mux")
    assert res.returncode == 1 and "allocated" in res.stderr
    res = run.cli("withdraw", "184.164.224.0/24")
    assert res.returncode == 1 and "wait" in res.stderr
    assert run.api("/announcements/allowed")["prefixes"] == ["184.164.224.0/23"]

    # the mux's own routes: import none keeps nothing; the greedy peer trips max-prefix 5 → restart
    run.wait(lambda: "max-prefix" in run.api("/peers/greedy")["last_error"], 30, "max-prefix teardown")
    assert run.api("/peers/greedy")["families"]["ipv4"]["accepted"] == 0
    run.wait(lambda: "max_prefix_restart" in run.log.read_text(), 20, "restart after the delay")


IBGP_CONFIG = """
[local]
asn = 47065
router_id = "127.0.86.1"
[api]
listen = "127.0.0.1:{port}"
[runtime]
dir = "run"
[[peers]]
name = "mux"
kind = "mux"
neighbor = "127.0.86.2"
peer_as = 47065
local_address = "127.0.86.1"
port = {bird_port}
multihop = 2
families = ["ipv4"]
import = "none"
[safety]
allocated = ["184.164.224.0/23"]
allow_poisoning = true
min_interval = 0
"""


def test_an_internal_mux_gets_the_path_without_our_as(tmp_path: Path) -> None:
    """A PEERING mux session is iBGP: BIRD (as the mux) sees the path without 47065 in front,
    which it adds itself when it exports over eBGP; poisoning and prepends are kept."""
    if shutil.which("bird") is None:
        pytest.skip("bird (BIRD 2) not installed")
    port = BIRD_PORT + 1
    conf = tmp_path / "mux.conf"
    conf.write_text(f"""
router id 127.0.86.2;
protocol device {{}}
protocol bgp peerctl {{
  local 127.0.86.2 port {port} as 47065;
  neighbor 127.0.86.1 as 47065;
  strict bind yes; passive yes; multihop 2; hold time 30;
  allow local as 2;  # poisoning puts 47065 at the path's end: a mux must accept its own AS there
  ipv4 {{ import all; export none; next hop keep; }};
}}
""")
    bird, sock = run_bird(tmp_path, "mux", conf)
    run = Run(tmp_path, IBGP_CONFIG, port)
    try:
        run.wait(lambda: run.api("/peers/mux")["state"] == "established", 30, "mux up")
        res = run.cli("announce", "184.164.224.0/24", "--peer", "mux", "--next-hop", "127.0.86.1")
        assert res.returncode == 0, res.stderr
        assert run.cli("announce", "184.164.225.0/24", "--peer", "mux", "--prepend", "1", "--poison", "3356",
                       "--next-hop", "127.0.86.1").returncode == 0
        plain = run.wait(lambda: (o := birdc(sock, "show", "route", "all", "184.164.224.0/24"))
                         and "BGP.as_path" in o and o, 20, "BIRD has the plain route")
        assert "BGP.as_path: \n" in plain, plain  # empty: locally originated, to an internal peer
        poisoned = run.wait(lambda: (o := birdc(sock, "show", "route", "all", "184.164.225.0/24"))
                            and "BGP.as_path" in o and o, 20, "BIRD has the poisoned route")
        assert "BGP.as_path: 47065 3356 47065\n" in poisoned, poisoned
    finally:
        run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(20)
        except subprocess.TimeoutExpired:
            run.proc.kill()
        bird.terminate()
        bird.wait(5)
        subprocess.run(["pkill", "-9", "-f", str(tmp_path)], check=False)
