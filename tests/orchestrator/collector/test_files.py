"""Rotating MRT files: names, .partial + rename, nothing lost on rotation or shutdown, loop not blocked."""

from __future__ import annotations

import asyncio
import calendar
import time
from pathlib import Path

import pytest

from orchestrator.collector.files import UpdateFileWriter, dump_rib, file_name, period_start
from orchestrator.collector.mrt import Bgp4mpUpdate, MrtWriter, RibEntry, read_mrt
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family

from .mrt_samples import PEERS, sample_table

T0 = calendar.timegm((2024, 1, 1, 0, 0, 0))
ATTRS = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (64500, 1)),))


def _update(ts: float, i: int) -> bytes:
    key = (24 << 24) | (10 << 16) | (i & 0xFFFF)
    return MrtWriter.update(ts, "192.0.2.1", 64500, "192.0.2.254", 65000, Family.IPV4, [key], [], ATTRS)


def test_names() -> None:
    assert file_name("updates", T0 + 15 * 60, "gz") == "updates.20240101.0015.gz"
    assert file_name("rib", T0, None) == "rib.20240101.0000"
    assert period_start(T0 + 899.9, 900) == T0 and period_start(T0 + 900, 900) == T0 + 900


def test_rotation_and_shutdown_lose_nothing(tmp_path: Path) -> None:
    async def main() -> UpdateFileWriter:
        w = UpdateFileWriter(tmp_path, interval=900, compression="gz")
        for i in range(3000):  # 3000 records over 45 minutes: three files
            w.write(_update(T0 + i * 0.9, i), T0 + i * 0.9)
        await w.flush()
        assert [p.name for p in w.completed] == ["updates.20240101.0000.gz", "updates.20240101.0015.gz"]
        assert (tmp_path / "updates.20240101.0030.gz.partial").exists()  # still being written
        await w.aclose()
        return w

    w = asyncio.run(main())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["updates.20240101.0000.gz", "updates.20240101.0015.gz", "updates.20240101.0030.gz"]
    seen = []
    for name in names:
        ups = [r for r in read_mrt(tmp_path / name) if isinstance(r, Bgp4mpUpdate)]
        start = T0 + 900 * names.index(name)
        assert all(start <= u.timestamp < start + 900 for u in ups)
        seen += [u.announce[Family.IPV4][0] & 0xFFFF for u in ups]
    assert seen == list(range(3000)) and w.records_written == 3000


def test_write_does_not_block_the_loop(tmp_path: Path) -> None:
    async def main() -> float:
        w = UpdateFileWriter(tmp_path, interval=60, compression="bz2")  # bz2 level 9: slow on purpose
        record = _update(T0, 1)
        worst = 0.0
        for i in range(20_000):
            t = time.perf_counter()
            w.write(record, T0 + i * 0.01)
            worst = max(worst, time.perf_counter() - t)
        await w.aclose()
        return worst

    # A writer that compressed on the caller's side blocks ~0.1 s at every bz2 block, every time;
    # a shared machine can also deschedule us once in a while: so the best of three runs counts.
    worst = asyncio.run(main())
    for _ in range(2):
        if worst < 0.05:
            break
        for f in tmp_path.glob("updates.*"):
            f.unlink()
        worst = min(worst, asyncio.run(main()))
    assert worst < 0.05
    files = sorted(tmp_path.glob("updates.*"))
    assert [p.name for p in files] == [f"updates.20240101.000{i}.bz2" for i in range(4)]
    assert sum(1 for p in files for _ in read_mrt(p)) == 20_000


def test_errors_surface_on_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        w = UpdateFileWriter(tmp_path / "d")
        (tmp_path / "d").rmdir()  # the thread cannot create its file now
        w.write(_update(T0, 1), T0)
        with pytest.raises(OSError):
            await w.flush()

    asyncio.run(main())


def test_dump_rib(tmp_path: Path) -> None:
    table = sample_table(300, seed=8)
    writer = MrtWriter(PEERS, timestamp=T0 + 7200)
    path = asyncio.run(dump_rib(tmp_path, T0 + 7200 + 5, list(writer.rib_records(table))))
    assert path.name == "rib.20240101.0200.bz2" and not list(tmp_path.glob("*.partial"))
    assert sum(1 for r in read_mrt(path) if isinstance(r, RibEntry)) == sum(len(p) for _, _, p in table)


def test_a_partial_left_by_a_dead_run_is_kept_not_truncated(tmp_path: Path) -> None:
    """kill -9, restart inside the same period: the dead run's records stay on disk under a final
    name of their own; the new run writes the next free one."""
    import gzip
    import os

    left = tmp_path / "updates.20240101.0000.gz.partial"
    with open(left, "wb") as raw:  # a gzip stream cut mid-way, as a killed writer leaves it
        z = gzip.GzipFile(fileobj=raw, mode="wb")
        z.write(b"".join(_update(T0 + i, i) for i in range(50)))
        z.flush()
        os.fsync(raw.fileno())

    async def main() -> UpdateFileWriter:
        w = UpdateFileWriter(tmp_path, interval=900, compression="gz")
        for i in range(50, 60):
            w.write(_update(T0 + i, i), T0 + i)
        await w.aclose()
        return w

    w = asyncio.run(main())
    kept, new_file = "updates.20240101.0000.gz", "updates.20240101.0000.1.gz"
    assert sorted(p.name for p in tmp_path.iterdir()) == [new_file, kept]
    assert [p.name for p in w.completed] == [kept, new_file]
    dead = [r for r in read_mrt(tmp_path / "updates.20240101.0000.gz", errors="count")
            if isinstance(r, Bgp4mpUpdate)]
    assert len(dead) == 50
    new = [r for r in read_mrt(tmp_path / "updates.20240101.0000.1.gz") if isinstance(r, Bgp4mpUpdate)]
    assert len(new) == 10
