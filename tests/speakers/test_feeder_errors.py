"""``python -m speakers.native.feeder --mrt FILE``: an unreadable, wrong or damaged file is one clear
log line (exit 2) or a warning with the table served, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from speakers.replay.mrt import table_groups

ROOT = Path(__file__).resolve().parents[2]


def feeder(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "speakers.native.feeder", "--listen", "127.0.97.1", "--port", "11797",
         "--asn", "65001", "--router-id", "192.0.2.1", *args],
        cwd=ROOT, capture_output=True, timeout=60,
    )


def test_missing_or_non_rib_file_is_one_error_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mrt"
    junk.write_bytes(b"\x00" * 5 + b"not mrt at all" * 10)
    for path, says in ((tmp_path / "absent.mrt", "cannot open"), (junk, "junk.mrt")):
        out = feeder("--mrt", str(path))
        assert out.returncode == 2
        assert b"Traceback" not in out.stderr
        last = orjson.loads(out.stderr.splitlines()[-1])
        assert last["event"] == "table_failed" and says in last["detail"], last


def test_truncated_rib_is_served_with_a_warning(real_data: Path) -> None:
    path = real_data / "mrt/rib/routeviews6.rib.20151101.0600_firstMB.bz2"  # the first MB only
    damage: list[str] = []
    groups = list(table_groups(path, next_hop4="192.0.2.2", next_hop6="2001:db8::2", peer_as=65001,
                               damage=damage))
    assert sum(len(keys) for _, _, keys in groups) > 1000
    assert len(damage) == 1 and "damaged record" in damage[0] and path.name in damage[0]
