"""`peerctl ... | head`: a reader that leaves early is not an error (no traceback, exit 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_closed_stdout_is_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[local]\nasn = 64500\nrouter_id = "192.0.2.1"\n')
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before we write: every write gets EPIPE
    try:
        res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "-c", str(config), "check"], cwd=REPO,
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)  # fmt: skip
    finally:
        os.close(write_end)
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr, res.stderr
    assert res.returncode == 0
