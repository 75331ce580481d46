"""The shipped lab, end to end, as a user runs it: ``peerctl run`` on (a small copy of) config.toml.

Real feeders, real ExaBGP speakers, the real RIB, the kernel FIB in a namespace this test creates
(and deletes), the CLI and the HTTP API. The expected best path of every prefix is computed here
independently from the generated tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator.lab.runner import feeder_next_hops
from orchestrator.lab.tablegen import generate_table
from orchestrator.rib.prefix import format_prefix

REPO = Path(__file__).resolve().parents[1]
PEERCTL = [sys.executable, "-m", "orchestrator.cli"]
IPV4, IPV6 = 3000, 800

pytestmark = [pytest.mark.interop, pytest.mark.netns]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shipped_config() -> str:
    """config.toml as committed (a user's local edits, e.g. ``min_interval = 0`` as the README suggests,
    must not fail the tests of the shipped lab); the file itself outside a git checkout."""
    out = subprocess.run(["git", "-C", str(REPO), "show", "HEAD:config.toml"], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 and out.stdout else (REPO / "config.toml").read_text()


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.netns = f"ptest-lab-{uuid.uuid4().hex[:6]}"
        self.port = free_port()
        text = shipped_config()
        replacements = {
            'listen = "127.0.0.1:8179"': f'listen = "127.0.0.1:{self.port}"',
            'netns = "peerctl-lab"': f'netns = "{self.netns}"',
            "ipv4_prefixes = 200000": f"ipv4_prefixes = {IPV4}",
            "ipv6_prefixes = 50000": f"ipv6_prefixes = {IPV6}",
            'neighbor = "127.0.0.2"': 'neighbor = "127.0.90.2"',
            'neighbor = "127.0.0.3"': 'neighbor = "127.0.90.3"',
        }
        self.config = tmp / "config.toml"
        self.config.write_text(text)
        self.patch_config(replacements)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "peerctl.log"

    def patch_config(self, replacements: dict[str, str]) -> None:
        """Replace text in the lab's copy of the shipped config; each old text must be there."""
        text = self.config.read_text()
        for old, new in replacements.items():
            assert old in text, f"the lab config no longer has {old!r}"
            text = text.replace(old, new)
        self.config.write_text(text)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*PEERCTL, "-c", str(self.config), *args], capture_output=True, text=True,
                             timeout=60, cwd=REPO)
        if check:
            assert res.returncode == 0, res.stderr
        return res

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1{path}", timeout=10) as resp:
            return json.loads(resp.read())

    def start(self) -> None:
        self.proc = subprocess.Popen([*PEERCTL, "-c", str(self.config), "run"], cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))

    def wait_loaded(self, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                last = self.api("/summary")
                if not last["loading"]:
                    return dict(last)
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"lab did not load in {timeout} s: {last}\n{self.log.read_text()[-3000:]}")

    def kernel_routes(self, family: str) -> list[str]:
        out = subprocess.run(["ip", "-n", self.netns, f"-{family[-1]}", "route", "show", "table", "20000",
                              "proto", "201"], capture_output=True, text=True, check=True).stdout
        return out.splitlines()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(30)
        self.proc = None
        return code


LabT = TypeVar("LabT", bound=Lab)


@contextlib.contextmanager
def running(lab: LabT) -> Iterator[LabT]:
    """``lab``, killed with everything it started (feeders, ExaBGP) and its namespace deleted after."""
    try:
        yield lab
    finally:
        if lab.proc is not None and lab.proc.poll() is None:
            lab.proc.kill()
            lab.proc.wait()
        subprocess.run(["pkill", "-9", "-f", str(lab.dir)], check=False)
        subprocess.run(["ip", "netns", "del", lab.netns], check=False, capture_output=True)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with running(Lab(tmp_path)) as lab:
        yield lab


def expected_best() -> dict[str, str]:
    """Best peer per prefix, from the generated tables and RFC 4271 9.1 done by hand here.

    Both feeders are eBGP with the default local-pref 100 and different neighbor ASes (so MED is
    not compared): shorter AS path, then lower origin, then lower router id (lab-a's 127.0.90.2).
    """
    best: dict[str, tuple[tuple[int, int, int], str]] = {}
    for index, (name, peer_as) in enumerate((("lab-a", 65001), ("lab-b", 65002))):
        nh4, nh6 = feeder_next_hops(index)
        table = generate_table(seed=1, index=index, ipv4=IPV4, ipv6=IPV6, overlap=0.6, peer_as=peer_as,
                               next_hop4=nh4, next_hop6=nh6)
        for family, attrs, keys in table:
            rank = (attrs.as_path_length, int(attrs.origin), index)
            for key in keys:
                prefix = format_prefix(family, key)
                if prefix not in best or rank < best[prefix][0]:
                    best[prefix] = (rank, name)
    return {p: name for p, (_, name) in best.items()}


def test_lab_end_to_end(lab: Lab) -> None:
    assert lab.cli("check").stdout.startswith(str(lab.config))
    lab.start()
    summary = lab.wait_loaded()
    want = expected_best()
    v4 = sum(1 for p in want if ":" not in p)
    assert summary["peers"] == {"total": 2, "established": 2}
    assert summary["rib"]["ipv4"] == {"prefixes": v4, "paths": 2 * IPV4}
    assert summary["rib"]["ipv6"] == {"prefixes": len(want) - v4, "paths": 2 * IPV6}

    # Every prefix's best path is the one computed independently above.
    got = {r["prefix"]: r["paths"][0]["peer"] for r in lab.api("/routes?limit=100000")}
    assert got == want

    # One prefix in detail, through the CLI as a person reads it.
    prefix = next(p for p in want if ":" not in p)
    detail = json.loads(lab.cli("routes", prefix, "--json").stdout)
    assert detail["prefix"] == prefix and detail["paths"][0]["best"] and detail["paths"][0]["reason"]
    assert "best [" in lab.cli("routes", prefix).stdout

    # The kernel table in the lab namespace holds exactly the best routes, with our source addresses.
    deadline = time.monotonic() + 30
    while lab.api("/fib")["installed"] != {"ipv4": v4, "ipv6": len(want) - v4} and time.monotonic() < deadline:
        time.sleep(0.2)
    routes4, routes6 = lab.kernel_routes("ipv4"), lab.kernel_routes("ipv6")
    assert len(routes4) == v4 and len(routes6) == len(want) - v4
    assert all("src 192.0.2.1" in r for r in routes4) and all("src 2001:db8::1" in r for r in routes6)
    assert lab.api("/fib")["errors"] == 0

    # kill -9 one ExaBGP: its paths leave, the speaker comes back and the table is complete again.
    status_before = lab.api("/peers/lab-a")
    run_dir = lab.dir / "run" / "lab-a"
    pids = subprocess.run(["pgrep", "-f", f"exabgp.*{run_dir}"], capture_output=True, text=True).stdout.split()
    assert pids, "no ExaBGP process found for lab-a"
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 20
    while lab.api("/peers/lab-a")["families"]["ipv4"]["received"] != 0:
        assert time.monotonic() < deadline, "lab-a's paths never left the RIB"
        time.sleep(0.1)
    assert lab.api("/summary")["rib"]["ipv4"]["paths"] == IPV4  # lab-b's only
    summary = lab.wait_loaded()
    assert summary["rib"]["ipv4"]["paths"] == 2 * IPV4
    after = lab.api("/peers/lab-a")
    assert after["speaker_restarts"] == status_before["speaker_restarts"] + 1

    # After the flap, the kernel again forwards every prefix to its best path's next hop.
    gateways = {"lab-a": feeder_next_hops(0)[0], "lab-b": feeder_next_hops(1)[0]}
    deadline = time.monotonic() + 30
    while True:
        kernel = {line.split()[0]: line.split(" via ")[1].split()[0] for line in lab.kernel_routes("ipv4")}
        expected = {p: gateways[peer] for p, peer in want.items() if ":" not in p}
        if kernel == expected or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    wrong = {p: (kernel.get(p), gw) for p, gw in expected.items() if kernel.get(p) != gw}
    assert not wrong, f"{len(wrong)} kernel routes disagree with the RIB, e.g. {list(wrong.items())[:3]}"

    # A reload of an unchanged config touches nobody.
    reload = json.loads(lab.cli("reload", "--json").stdout)
    assert reload["unchanged"] == ["lab-a", "lab-b"] and not reload["changed"]

    # Graceful stop: the kernel keeps the routes (a restart must not blackhole).
    assert lab.stop() == 0
    assert len(lab.kernel_routes("ipv4")) == v4

    # Restart: routes never all gone while sessions come back, and the kernel ends equal to the RIB.
    lab.start()
    minimum = v4
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        minimum = min(minimum, len(lab.kernel_routes("ipv4")))
        try:
            if not lab.api("/summary")["loading"]:
                break
        except OSError:
            pass
        time.sleep(0.2)
    assert minimum > 0, "the kernel table was emptied during restart"
    lab.wait_loaded()
    deadline = time.monotonic() + 30
    while len(lab.kernel_routes("ipv4")) != v4 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert len(lab.kernel_routes("ipv4")) == v4
    assert lab.stop() == 0


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[local]\nasn = "x"\nrouter_id = "127.0.0.1"\n')
    res = subprocess.run([*PEERCTL, "-c", str(bad), "check"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "local.asn" in res.stderr and ":2:" in res.stderr
    port = free_port()
    res = subprocess.run([*PEERCTL, "--api", f"http://127.0.0.1:{port}", "status"], capture_output=True,
                         text=True, cwd=REPO)
    assert res.returncode == 1 and "cannot reach the daemon" in res.stderr and "Traceback" not in res.stderr
