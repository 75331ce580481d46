"""The lab's feeder processes: a start that fails says why in the error, and a peerctl killed with
SIGKILL leaves no feeder behind holding the lab's addresses."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator.config import Config, LabConfig, LocalConfig, PeerConfig, PeerKind
from orchestrator.lab.runner import LabError, LabRunner
from orchestrator.log import get_logger

ROOT = Path(__file__).resolve().parents[3]
ADDRESS = "127.0.96.2"


def free_port() -> int:
    """A port free on ADDRESS now (tests of other sessions may run beside these)."""
    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return int(s.getsockname()[1])


def config(tmp_path: Path, port: int) -> Config:
    peer = PeerConfig("lab-x", PeerKind.UPSTREAM, ADDRESS, 65001, port=port)
    return Config(path=tmp_path / "c.toml", local=LocalConfig(64500, "127.0.0.1"), peers=(peer,),
                  lab=LabConfig(enabled=True, feeders=("lab-x",), ipv4_prefixes=10, ipv6_prefixes=0))


def test_a_feeder_that_cannot_listen_is_named_with_its_reason(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((ADDRESS, 0))
        taken.listen()
        runner = LabRunner(config(tmp_path, taken.getsockname()[1]), tmp_path / "lab", get_logger())

        async def main() -> None:
            try:
                await runner.start()
            finally:
                await runner.stop()

        with pytest.raises(LabError, match=r"lab feeder lab-x did not start \(exit code 2\): listen_failed: "
                                           r".*address already in use"):
            asyncio.run(main())


def test_feeders_die_with_a_killed_peerctl(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_runner import config
        from orchestrator.lab.runner import LabRunner
        from orchestrator.log import get_logger

        async def main():
            tmp = Path({str(tmp_path)!r})
            runner = LabRunner(config(tmp, {free_port()}), tmp / "lab", get_logger())
            await runner.start()
            print("PID", runner.procs["lab-x"].pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        assert parent.stdout is not None
        feeder_pid = next((int(line.split()[1]) for line in parent.stdout if line.startswith(b"PID ")), None)
        assert feeder_pid is not None, "the lab runner did not start its feeder (see the captured log)"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(feeder_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(feeder_pid, signal.SIGKILL)
            pytest.fail("the feeder outlived its killed parent")
    finally:
        parent.kill()
