"""Feeder → BIRD 2 and feeder → ExaBGP 5.0.15 on loopback (127.0.60.0/24): every prefix arrives."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
N4, N6 = 3000, 700


def _wait(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def feeder(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    port, peer_as, record = request.param
    ready = tmp_path / "ready"
    log = tmp_path / "feeder.log"
    cmd = [sys.executable, "-m", "speakers.native.feeder", "--listen", "127.0.60.1", "--port", str(port),
           "--asn", "65010", "--router-id", "127.0.60.1", "--peer-as", str(peer_as), "--hold-time", "30",
           "--ipv4", str(N4), "--ipv6", str(N6), "--seed", "5", "--ready-file", str(ready)]  # fmt: skip
    if record:
        cmd += ["--record", str(tmp_path / "record.jsonl")]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait(lambda: ready.exists() or proc.poll() is not None, 30, "feeder ready")
        assert proc.poll() is None, log.read_text()
        yield proc, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


BIRD_CONF = """
log "{log}" all;
router id 127.0.60.2;
protocol device {{}}
ipv4 table t4; ipv6 table t6;
protocol static s4 {{ ipv4 {{ table t4; }}; route 198.51.100.0/24 blackhole; }}
protocol bgp feeder {{
  local 127.0.60.2 as 65001;
  neighbor 127.0.60.1 port {port} as 65010;
  strict bind yes; multihop; hold time 30;  # listen on 127.0.60.2 only, never 0.0.0.0:179
  error wait time 1,5; connect retry time 2;
  ipv4 {{ table t4; import all; export where source = RTS_STATIC; next hop self; }};
  ipv6 {{ table t6; import all; export none; }};
}}
"""


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 not installed")
@pytest.mark.parametrize("feeder", [(17960, 65001, True)], indirect=True)
def test_feeder_to_bird(tmp_path: Path, feeder: tuple[subprocess.Popen[bytes], Path]) -> None:
    proc, log = feeder
    conf, sock, pid = tmp_path / "bird.conf", tmp_path / "bird.ctl", tmp_path / "bird.pid"
    conf.write_text(BIRD_CONF.format(port=17960, log=tmp_path / "bird.log"))
    subprocess.run(["bird", "-c", conf, "-s", sock, "-P", pid], check=True)
    try:

        def counts() -> str:
            out = subprocess.run(["birdc", "-s", sock, "show", "protocols", "all", "feeder"],
                                 capture_output=True, text=True).stdout  # fmt: skip
            return " ".join(line.strip() for line in out.splitlines() if "Routes:" in line)

        want = (
            f"Routes: {N4} imported, 1 exported, {N4} preferred "
            f"Routes: {N6} imported, 0 exported, {N6} preferred"
        )
        _wait(
            lambda: " ".join(counts().split()) == " ".join(want.split()),
            40,
            f"BIRD to hold the table ({want})",
        )
        # What BIRD announced back was recorded by the feeder ("what the other side saw").
        record = tmp_path / "record.jsonl"
        _wait(lambda: record.exists() and record.stat().st_size > 0, 15, "recorded route")
        (route,) = [json.loads(line) for line in record.read_text().splitlines()]
        assert route["prefix"] == "198.51.100.0/24" and route["as_path"] == [65001]
        events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
        assert "established" in events and "table_sent" in events
    finally:
        subprocess.run(["kill", pid.read_text().strip()], check=False)
    # After BIRD goes away the feeder keeps listening (it serves again).
    time.sleep(0.5)
    assert proc.poll() is None


RELAY = """#!{python}
import json, sys
counts = {{"ipv4 unicast": 0, "ipv6 unicast": 0, "eor": 0}}
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    upd = msg.get("neighbor", {{}}).get("message", {{}})
    if "eor" in upd:
        counts["eor"] += 1
    for fam, by_nh in upd.get("update", {{}}).get("announce", {{}}).items():
        for nlris in by_nh.values():
            counts[fam] = counts.get(fam, 0) + len(nlris)
    with open("{out}.tmp", "w") as f:
        json.dump(counts, f)
    import os
    os.replace("{out}.tmp", "{out}")
"""

EXABGP_CONF = """
process relay {{
    run {relay};
    encoder json;
}}
neighbor 127.0.60.1 {{
    router-id 127.0.60.3; local-address 127.0.60.3;
    local-as 65003; peer-as 65010; hold-time 30;
    adj-rib-in false;
    connect 17961;
    family {{ ipv4 unicast; ipv6 unicast; }}
    api {{ processes [ relay ]; receive {{ parsed; update; }} }}
}}
"""


@pytest.mark.skipif(not (VENV_BIN / "exabgp").exists(), reason="exabgp not in the venv")
@pytest.mark.parametrize("feeder", [(17961, 65003, False)], indirect=True)
def test_feeder_to_exabgp(tmp_path: Path, feeder: tuple[subprocess.Popen[bytes], Path]) -> None:
    tmp_path.chmod(0o777)  # ExaBGP runs its API process as nobody
    out = tmp_path / "counts.json"
    relay = tmp_path / "relay.py"
    relay.write_text(RELAY.format(python=sys.executable, out=out))
    relay.chmod(0o755)
    conf = tmp_path / "exabgp.conf"
    conf.write_text(EXABGP_CONF.format(relay=relay))
    env = {
        **os.environ,
        "exabgp_log_enable": "false",
        "exabgp_api_cli": "false",
        "exabgp_daemon_drop": "false",
    }
    with open(tmp_path / "exabgp.log", "wb") as err:
        exa = subprocess.Popen([str(VENV_BIN / "exabgp"), str(conf)], stdout=err, stderr=err, env=env)
    try:

        def done() -> bool:
            try:
                c = json.loads(out.read_text())
            except (OSError, ValueError):
                return False
            return c["ipv4 unicast"] == N4 and c["ipv6 unicast"] == N6 and c["eor"] == 2  # type: ignore[no-any-return]

        _wait(done, 60, "ExaBGP to receive the table and both End-of-RIBs")
    finally:
        exa.terminate()
        try:
            exa.wait(10)
        except subprocess.TimeoutExpired:
            exa.kill()


def test_listen_on_a_taken_port_is_one_clear_error() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.60.9", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "speakers.native.feeder", "--listen", "127.0.60.9", "--port", str(port),
             "--asn", "65010", "--router-id", "127.0.60.9", "--ipv4", "10", "--ipv6", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = json.loads(proc.stderr.strip().splitlines()[-1])
    assert last["event"] == "listen_failed" and last["port"] == port
    assert "in use" in last["detail"]
