"""MRT read/write speed, side by side with ``bgpdump -m`` on the same files in the same run.

    python -m benchmarks.mrt [--json] [--runs 3] [--results]

Reads the real RouteViews jinx full-table RIB (TABLE_DUMP_V2, bz2, 497k records / 504k entries) and the
PCH full table learned over one session (BGP4MP_ET, gzip, 89.7k UPDATEs / 578k prefixes) from
``../shared/data/real/mrt``: records/s, prefixes/s and MB/s (compressed file and decompressed MRT
bytes), median of ``--runs`` wall-clock runs, with the decompression thread (default) and without
it (one core). ``bgpdump -m FILE > /dev/null`` is timed the same way. Then writes the jinx table back
as a TABLE_DUMP_V2 dump with ``MrtWriter`` (cold attribute-encoding cache) and checks the dump reads
back to the same number of entries. ``--results`` rewrites the ``## MRT`` section of
``benchmarks/RESULTS.md``.

Recording cost (``--record-only`` runs just this): the PCH file's UPDATEs go through a real
``Daemon``'s ingest path (``MrtReader`` decode → ``Daemon._apply``: status, import-policy skip,
``Rib.update``), in slices of ``BATCH_PREFIXES`` prefixes with a loop yield between them as in
``_rib_loop``, once without and once with the collector on ``event_listeners`` (encoding, chunking,
the writer thread, compression, ``aclose`` inside the timing). Process CPU seconds (all threads),
median of ``--runs``; ``share`` = (with - without) / without.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orchestrator.collector.mrt import Bgp4mpUpdate, MrtReader, MrtWriter, PeerEntry, RibEntry
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family
from speakers.native import codec

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real" / "mrt"
RIB = REAL / "rib" / "routeviews.route-views.jinx.ribs.1401487200.bz2"
UPDATES = REAL / "updates" / "pch.route-collector.summary.updates.2015-10-23-0201.fulltable.et.gz"


def _median_times(fn: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """Median wall-clock and CPU seconds (this process, all threads, plus waited-for children), and
    the last result."""
    wall, cpu, result = [], [], None
    for _ in range(runs):
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        p0, t0 = time.process_time(), time.perf_counter()
        result = fn()
        t1, p1 = time.perf_counter(), time.process_time()
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall.append(t1 - t0)
        cpu.append(p1 - p0 + (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime))
    return statistics.median(wall), statistics.median(cpu), result


def _read(path: Path, thread: bool, cold: bool = True) -> dict[str, int]:
    if cold:  # the codec's attribute cache is shared process-wide: every timed read starts empty
        codec.clear_attribute_cache()
    reader = MrtReader(path, decompress_thread=thread)
    prefixes = 0
    for rec in reader:
        if type(rec) is RibEntry:
            prefixes += 1
        elif type(rec) is Bgp4mpUpdate:
            for keys in rec.announce.values():
                prefixes += len(keys)
            for keys in rec.withdraw.values():
                prefixes += len(keys)
    return {"records": reader.stats.record_count, "prefixes": prefixes, "mrt_bytes": reader.stats.bytes_read}


def _bgpdump(path: Path) -> None:
    with open(os.devnull, "wb") as null:
        subprocess.run(["bgpdump", "-m", str(path)], stdout=null, stderr=subprocess.DEVNULL, check=True)


def bench_read(path: Path, runs: int) -> dict[str, Any]:
    file_mb = path.stat().st_size / 1e6
    t_one, c_one, counts = _median_times(lambda: _read(path, False), runs)
    threaded = path.suffix == ".bz2"  # the reader uses a decompression thread for bzip2 only
    t_thread, c_thread, _ = _median_times(lambda: _read(path, True), runs) if threaded else (0.0, 0.0, None)
    t_dump, c_dump, _ = _median_times(lambda: _bgpdump(path), runs)
    t_warm, c_warm, _ = _median_times(lambda: _read(path, False, cold=False), runs)
    mrt_mb = counts["mrt_bytes"] / 1e6

    def rates(t: float, cpu: float) -> dict[str, float]:
        return {"seconds": round(t, 3), "cpu_seconds": round(cpu, 3),
                "records_per_s": round(counts["records"] / t),
                "prefixes_per_s": round(counts["prefixes"] / t),
                "file_mb_per_s": round(file_mb / t, 2), "mrt_mb_per_s": round(mrt_mb / t, 2),
                "us_per_prefix": round(t / counts["prefixes"] * 1e6, 2)}

    return {"file": path.name, "file_mb": round(file_mb, 2), "mrt_mb": round(mrt_mb, 2), **counts,
            "peerctl_one_core": rates(t_one, c_one), "peerctl_warm_codec_cache": rates(t_warm, c_warm),
            **({"peerctl": rates(t_thread, c_thread)} if threaded else {}),
            "bgpdump_m": rates(t_dump, c_dump), "speedup_vs_bgpdump": round(t_dump / t_one, 2),
            "cpu_ratio_vs_bgpdump": round(c_dump / c_one, 2)}


def codec_share(path: Path, runs: int) -> dict[str, Any]:
    """Time the codec alone (cold cache) on the calls the reader makes for ``path``
    (``decode_path_attributes`` per distinct RIB attribute block, ``decode_update`` per UPDATE),
    collected by wrapping both for one read: how much of a read is the codec's."""
    calls: list[tuple[str, bytes, bool, bool]] = []
    real_attrs, real_update = codec.decode_path_attributes, codec.decode_update

    def spy_attrs(data: bytes | memoryview, *, asn4: bool = True) -> Any:
        calls.append(("attrs", bytes(data), asn4, False))
        return real_attrs(data, asn4=asn4)

    def spy_update(body: bytes | memoryview, *, asn4: bool = True, add_path: bool = False) -> Any:
        calls.append(("update", bytes(body), asn4, add_path))
        return real_update(body, asn4=asn4, add_path=add_path)

    setattr(codec, "decode_path_attributes", spy_attrs)  # noqa: B010 - the reader calls it via the module
    setattr(codec, "decode_update", spy_update)  # noqa: B010
    try:
        _read(path, False)
    finally:
        setattr(codec, "decode_path_attributes", real_attrs)  # noqa: B010
        setattr(codec, "decode_update", real_update)  # noqa: B010

    def decode_all() -> None:
        codec.clear_attribute_cache()
        for kind, data, asn4, add_path in calls:
            if kind == "attrs":
                real_attrs(data, asn4=asn4)
            else:
                real_update(data, asn4=asn4, add_path=add_path)

    t, _, _ = _median_times(decode_all, runs)
    kinds = sorted({c[0] for c in calls})
    return {"file": path.name, "calls": len(calls), "kinds": kinds, "seconds": round(t, 3),
            "us_per_call": round(t / max(1, len(calls)) * 1e6, 2)}


def bench_write(path: Path, runs: int) -> dict[str, Any]:
    reader = MrtReader(path)
    table: list[tuple[Family, int, list[tuple[int, Attributes, int]]]] = []
    peers: Sequence[PeerEntry] = ()
    last: tuple[Family, int] | None = None
    for rec in reader:
        if type(rec) is RibEntry:
            if (rec.family, rec.key) != last:
                table.append((rec.family, rec.key, []))
                last = (rec.family, rec.key)
            table[-1][2].append((rec.peer_index, rec.attrs, rec.originated_time))
    assert reader.peer_index is not None
    peers = reader.peer_index.peers
    entries = sum(len(p) for _, _, p in table)

    collector = reader.peer_index.collector_id

    def write() -> bytes:
        return MrtWriter(peers, collector_id=collector, timestamp=1_401_487_200).rib_dump(table)

    t, _, data = _median_times(write, runs)
    back = sum(1 for r in MrtReader(data) if type(r) is RibEntry)
    assert back == entries, (back, entries)
    mb = len(data) / 1e6
    return {"file": path.name, "records": len(table) + 1, "entries": entries, "mrt_mb": round(mb, 2),
            "seconds": round(t, 3), "entries_per_s": round(entries / t), "mrt_mb_per_s": round(mb / t, 2),
            "read_back_entries": back}


def _ingest(path: Path, compression: str | None, directory: Path) -> dict[str, int]:
    """One ingest of ``path`` through a Daemon; with the collector when ``compression`` is given."""
    import asyncio

    from orchestrator.config import CollectorConfig, Config, LocalConfig, PeerConfig, PeerKind
    from orchestrator.daemon import BATCH_PREFIXES, Daemon
    from orchestrator.rib.table import DISCARD, PeerInfo
    from orchestrator.status import PeerStatus
    from speakers.events import PeerUp, Update

    codec.clear_attribute_cache()
    reader = MrtReader(path)
    first = next(r for r in MrtReader(path) if type(r) is Bgp4mpUpdate)
    assert isinstance(first, Bgp4mpUpdate)
    peer = PeerConfig(name="pch", kind=PeerKind.COLLECTOR, neighbor=first.peer_ip, peer_as=first.peer_as,
                      local_address=first.local_ip)
    collector = CollectorConfig(enabled=compression is not None, dir=directory, rib_interval=0,
                                compression=compression or "none")
    local = LocalConfig(asn=first.local_as, router_id="10.0.0.1")
    daemon = Daemon(Config(path=directory / "c.toml", local=local, peers=(peer,), collector=collector))
    daemon.rib.add_peer(PeerInfo(name="pch", peer_as=peer.peer_as, address=peer.neighbor,
                                 local_as=first.local_as))
    daemon.status["pch"] = PeerStatus()

    async def run() -> int:
        await daemon.start_collector()
        apply = daemon._apply
        apply(PeerUp("pch", peer.peer_as, "10.0.0.2"), DISCARD)
        n = done = 0
        for rec in reader:
            if type(rec) is not Bgp4mpUpdate:
                continue
            for family in (Family.IPV4, Family.IPV6):
                ann = rec.announce.get(family, ())
                wd = rec.withdraw.get(family, ())
                if ann or wd:
                    apply(Update("pch", family, rec.attrs_for(family) if ann else None, ann, wd), DISCARD)
                    n += 1
                    done += len(ann) + len(wd) + 1
                    if done >= BATCH_PREFIXES:  # the daemon's RIB slices
                        done = 0
                        await asyncio.sleep(0)
        await daemon.stop_collector()
        return n

    import gc

    gc.disable()  # as the daemon runs (its _gc_loop)
    try:
        events = asyncio.run(run())
    finally:
        gc.enable()
    size = sum(f.stat().st_size for f in directory.glob("updates.*"))
    return {"events": events, "file_bytes": size}


def bench_record(path: Path, runs: int) -> dict[str, Any]:
    """CPU of ingesting ``path`` without and with recording (uncompressed, gzip, bzip2). The cases
    take turns within each round (off, none, gz, bz2, off, ...), so load from other processes on a
    shared machine falls on all of them alike."""
    import shutil
    import tempfile

    cases = (("without", None), ("none", "none"), ("gz", "gz"), ("bz2", "bz2"))
    cpu: dict[str, list[float]] = {label: [] for label, _ in cases}
    info: dict[str, dict[str, int]] = {}
    for _ in range(runs):
        for label, compression in cases:
            directory = Path(tempfile.mkdtemp(prefix="peerctl-mrt-bench-"))
            try:
                p0 = time.process_time()
                info[label] = _ingest(path, compression, directory)
                cpu[label].append(time.process_time() - p0)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
    out: dict[str, Any] = {"file": path.name}
    base = statistics.median(cpu["without"])
    for label, _ in cases:
        med = statistics.median(cpu[label])
        row: dict[str, Any] = {"cpu_seconds": round(med, 3), "runs": [round(c, 3) for c in cpu[label]],
                               "events": info[label]["events"],
                               "file_mb": round(info[label]["file_bytes"] / 1e6, 2)}
        if label != "without":
            row["share"] = round((med - base) / base, 3)
        out[label] = row
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## MRT",
        "",
        f"`python -m benchmarks.mrt --runs {result['runs']} --results` ({result['when']}, Python "
        f"{result['python']}, 2 shared cores with other sessions running, so wall clock is noisy: CPU "
        f"seconds are shown too; median of {result['runs']}). "
        "Reader = `MrtReader` iterated to the end, every record decoded into typed "
        "records with interned `Attributes` (the codec's `decode_path_attributes` once per distinct "
        "attribute block); `bgpdump -m FILE > /dev/null` (Debian bgpdump 1.6.2, C, also formats text) "
        "timed in the same run.",
        "",
        "| file | reader | wall s | CPU s | records/s | prefixes/s | file MB/s | MRT MB/s | µs/prefix |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["read"]:
        for label, key in (("peerctl (default, one thread)", "peerctl_one_core"),
                           ("peerctl (bz2 in a 2nd thread, opt-in)", "peerctl"),
                           ("peerctl, codec cache warm (re-read)", "peerctl_warm_codec_cache"),
                           ("bgpdump -m", "bgpdump_m")):
            if key not in r:
                continue
            x = r[key]
            lines.append(f"| {r['file']} | {label} | {x['seconds']} | {x['cpu_seconds']} | "
                         f"{x['records_per_s']:,} | {x['prefixes_per_s']:,} | {x['file_mb_per_s']} | "
                         f"{x['mrt_mb_per_s']} | "
                         f"{x['us_per_prefix']} |")
    w = result["write"]
    lines += [
        "",
        f"Write: `MrtWriter.rib_dump` of the jinx table ({w['entries']:,} entries, {w['records']:,} records, "
        f"{w['mrt_mb']} MB uncompressed, cold attribute-encoding cache): **{w['seconds']} s, "
        f"{w['entries_per_s']:,} entries/s, {w['mrt_mb_per_s']} MB/s**; read back: "
        f"{w['read_back_entries']:,} entries.",
        "",
    ]
    for r in result["read"]:
        lines.append(f"- {r['file']}: {r['records']:,} records, {r['prefixes']:,} prefixes; peerctl runs at "
                     f"**{r['speedup_vs_bgpdump']} x** bgpdump's wall-clock speed "
                     f"({r['cpu_ratio_vs_bgpdump']} x per CPU second).")
    lines += ["", "Codec share: the reader's calls into `speakers.native.codec` replayed alone, cold:", ""]
    for c in result["codec"]:
        read = next(r for r in result["read"] if r["file"] == c["file"])
        one_core = read["peerctl_one_core"]["seconds"]
        fn = " + ".join("decode_path_attributes" if k == "attrs" else "decode_update" for k in c["kinds"])
        lines.append(f"- {c['file']}: {c['calls']:,} calls of {fn}, {c['seconds']} s "
                     f"({c['us_per_call']} µs each) of the {one_core} s read.")
    rec = result.get("record")
    if rec:
        lines += [
            "",
            f"Recording cost (route collector, issue 6): the {rec['file']} UPDATEs "
            f"({rec['without']['events']:,} Update events) through a real `Daemon` (`MrtReader` decode → "
            "`Daemon._apply` → `Rib.update`, loop yield every 64 events), without and with the collector "
            "on `event_listeners` (BGP4MP encoding from the decoded events, chunks to the writer "
            "thread, compression, close inside the timing); process CPU s, all threads, median of "
            f"{result['runs']}:",
            "",
            "| recording | CPU s | extra CPU, share of ingest | updates file MB |",
            "|---|---|---|---|",
            f"| off | {rec['without']['cpu_seconds']} | - | - |",
        ]
        for label in ("none", "gz", "bz2"):
            x = rec[label]
            lines.append(f"| on, compression {label} | {x['cpu_seconds']} | **{x['share']:.1%}** | "
                         f"{x['file_mb']} |")
    lines += [
        "",
        "RIB dumps: attribute blocks are interned per raw bytes in the reader (79,837 decodes for 503,590 "
        "entries), so the per-entry loop and bz2 (~0.8 s here) set the speed; bz2 releases the GIL, so "
        "a second thread can take it off the parser's core, which pays only when that core is idle. "
        "Update files: UPDATEs go through `codec.decode_update` (its fast path and its process-wide "
        "interning cache), so reading is codec-bound when cold (a full table has a new attribute block "
        "in 89,641 of 89,679 UPDATEs) and ~2x faster once the codec has seen the attribute sets (a "
        "second peer with the same routes, a re-read): the 'warm' row. Cold, the codec's per-block "
        "cost is what stands between us and bgpdump on this file.",
        "",
    ]
    return "\n".join(lines)


def write_results(section: str, path: Path = REPO / "benchmarks" / "RESULTS.md") -> None:
    """Replace (or append) the ``## MRT`` section, leaving the others alone."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "## MRT"), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        new = "".join(lines[:start]) + section + ("\n" if end < len(lines) else "") + "".join(lines[end:])
    path.write_text(new)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", action="store_true", help="rewrite the ## MRT section of RESULTS.md")
    parser.add_argument("--record-only", action="store_true", help="only the recording-cost case (JSON)")
    args = parser.parse_args(argv)
    if not RIB.exists() or not UPDATES.exists():
        print(f"real MRT files not found under {REAL}", file=sys.stderr)
        return 2
    if args.record_only:
        print(json.dumps(bench_record(UPDATES, args.runs), indent=2))
        return 0
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "runs": args.runs,
        "read": [bench_read(RIB, args.runs), bench_read(UPDATES, args.runs)],
        "write": bench_write(RIB, args.runs),
        "codec": [codec_share(RIB, args.runs), codec_share(UPDATES, args.runs)],
        "record": bench_record(UPDATES, args.runs),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result))
    if args.results:
        write_results(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
