"""Ingest benchmark: the same generated table through ExaBGP alone and through peerctl, side by side.

    python -m benchmarks.ingest [--prefixes 200000] [--ipv6 0] [--runs 3] [--json]

Each system receives the table from the same kind of feeder (peerctl's native feeder, a separate
process on loopback) over a real BGP session:

- ``exabgp-alone``: ExaBGP 5.0.15 with adj-rib-in off and logging quiet; its API process only counts
  the lines (and the prefixes in them) and stops the clock at End-of-RIB.
- ``peerctl-exabgp``: the real daemon pipeline (ExaBGP speaker, relay, orjson decoding, RIB task),
  run in this process so its CPU is measured apart from ExaBGP's.

Reported per system: ``seconds`` (session up → End-of-RIB of every family, median of runs),
``prefixes_per_s``, ``cpu_s`` (the ExaBGP process; for peerctl also ``peerctl_cpu_s``, this process),
``rss_mb`` (ExaBGP peak; for peerctl also ``peerctl_rss_mb``) and for peerctl
``rib_bytes_per_path`` (tracemalloc over the same table loaded into the RIB) and
``peerctl_cpu_share`` = peerctl CPU / ExaBGP CPU (target ≤ 0.10).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson

from orchestrator.config import Config, FibConfig, LabConfig, LocalConfig, PeerConfig, PeerKind, RuntimeConfig
from orchestrator.lab.runner import feeder_next_hops
from orchestrator.rib.prefix import Family

REPO = Path(__file__).resolve().parents[1]
FEEDER_ADDR = "127.0.0.42"
LOCAL_ADDR = "127.0.0.1"
LOCAL_AS = 64500
FEEDER_AS = 65001

COUNTER = r"""
import os, sys, time
out = sys.argv[1]
families = int(sys.argv[2])
lines = prefixes = eors = 0
t_up = None
for line in sys.stdin:
    lines += 1
    if t_up is None and '"state": "up"' in line:
        t_up = time.monotonic()
    if '"update"' in line:
        prefixes += line.count("/")  # compact NLRI: one "a.b.c.d/n" string per prefix
    if '"eor"' in line:
        eors += 1
        if eors >= families:
            break
t_end = time.monotonic()
with open(out + ".tmp", "w") as fh:
    fh.write(f"{lines} {prefixes} {t_up or t_end} {t_end}\n")
os.rename(out + ".tmp", out)
for line in sys.stdin:  # keep draining so ExaBGP never blocks
    pass
"""


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_feeder(workdir: Path, ipv4: int, ipv6: int, seed: int) -> subprocess.Popen[bytes]:
    nh4, nh6 = feeder_next_hops(0)
    ready = workdir / "feeder.ready"
    ready.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "speakers.native.feeder",
        "--listen",
        FEEDER_ADDR,
        "--port",
        "179",
        "--asn",
        str(FEEDER_AS),
        "--peer-as",
        str(LOCAL_AS),
        "--router-id",
        FEEDER_ADDR,
        "--hold-time",
        "180",
        "--seed",
        str(seed),
        "--index",
        "0",
        "--ipv4",
        str(ipv4),
        "--ipv6",
        str(ipv6),
        "--overlap",
        "0",
        "--next-hop4",
        nh4,
        "--next-hop6",
        nh6,
        "--ready-file",
        str(ready),
    ]
    with (workdir / "feeder.log").open("ab") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"feeder did not start; see {workdir / 'feeder.log'}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def families_of(ipv6: int) -> tuple[Family, ...]:
    return (Family.IPV4, Family.IPV6) if ipv6 else (Family.IPV4,)


def peer_config(ipv6: int) -> PeerConfig:
    return PeerConfig(
        name="feeder",
        kind=PeerKind.UPSTREAM,
        neighbor=FEEDER_ADDR,
        peer_as=FEEDER_AS,
        local_address=LOCAL_ADDR,
        families=families_of(ipv6),
        hold_time=180,
    )


def run_exabgp_alone(workdir: Path, ipv4: int, ipv6: int, seed: int) -> dict[str, Any]:
    from speakers.exabgp.render import render_config, render_env

    feeder = start_feeder(workdir, ipv4, ipv6, seed)
    counter = workdir / "counter.py"
    counter.write_text(COUNTER)
    result = workdir / "counter.out"
    result.unlink(missing_ok=True)
    local = LocalConfig(asn=LOCAL_AS, router_id=LOCAL_ADDR)
    conf = workdir / "exabgp-alone.conf"
    conf.write_text(
        render_config(
            peer_config(ipv6), local, [sys.executable, str(counter), str(result), str(len(families_of(ipv6)))]
        )
    )
    env = {**os.environ, **render_env()}
    exabgp = str(Path(sys.executable).parent / "exabgp")
    t0 = time.monotonic()
    with (workdir / "exabgp-alone.log").open("ab") as log:
        proc = subprocess.Popen([exabgp, str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = t0 + 1800
        while not result.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"exabgp-alone failed; see {workdir / 'exabgp-alone.log'}")
            time.sleep(0.1)
        cpu = proc_cpu_s(proc.pid)
        rss = proc_peak_rss_mb(proc.pid)
        lines, prefixes, t_up, t_end = result.read_text().split()
    finally:
        stop(proc)
        stop(feeder)
    seconds = float(t_end) - float(t_up)
    return {
        "seconds": seconds,
        "prefixes": int(prefixes),
        "prefixes_per_s": int(prefixes) / seconds,
        "cpu_s": cpu,
        "rss_mb": rss,
        "json_lines": int(lines),
    }


async def _run_peerctl(workdir: Path, ipv4: int, ipv6: int, seed: int) -> dict[str, Any]:
    from orchestrator.daemon import Daemon
    from speakers.exabgp.process import ExaBGPSpeaker

    config = Config(
        path=workdir / "bench.toml",
        local=LocalConfig(asn=LOCAL_AS, router_id=LOCAL_ADDR),
        runtime=RuntimeConfig(dir=workdir / "run"),
        fib=FibConfig(),
        lab=LabConfig(),
        peers=(peer_config(ipv6),),
    )
    daemon = Daemon(config)
    feeder = start_feeder(workdir, ipv4, ipv6, seed)
    families = set(families_of(ipv6))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    try:
        await daemon.start()
        speaker = daemon.speakers["feeder"]
        assert isinstance(speaker, ExaBGPSpeaker)
        status = daemon.status["feeder"]
        deadline = time.monotonic() + 1800
        while status.established_at is None:
            if time.monotonic() > deadline:
                raise SystemExit("peerctl-exabgp: session never came up")
            await asyncio.sleep(0.01)
        t_up = status.established_at
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)  # peerctl's own work: session up → End-of-RIB
        relay_cpu0 = sum(proc_cpu_s(c) for c in children(speaker.pid)) if speaker.pid else 0.0
        while not families <= status.end_of_rib:
            if time.monotonic() > deadline:
                raise SystemExit("peerctl-exabgp: no End-of-RIB")
            await asyncio.sleep(0.01)
        t_end = time.monotonic()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        pid = speaker.pid
        exa_cpu = proc_cpu_s(pid) if pid else float("nan")
        relay_cpu = (sum(proc_cpu_s(c) for c in children(pid)) if pid else 0.0) - relay_cpu0
        exa_rss = proc_peak_rss_mb(pid) if pid else float("nan")
        counts = daemon.rib.counts()
        paths = sum(counts["families"][f.short]["paths"] for f in Family)
    finally:
        await daemon.stop()
        stop(feeder)
    seconds = t_end - t_up
    # The relay (ExaBGP's API process, ours) counts as peerctl's overhead.
    own_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime) + relay_cpu
    return {
        "seconds": seconds,
        "prefixes": paths,
        "prefixes_per_s": paths / seconds,
        "cpu_s": exa_cpu,
        "rss_mb": exa_rss,
        "peerctl_cpu_s": own_cpu,
        "peerctl_cpu_share": own_cpu / exa_cpu,
        "peerctl_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def rib_bytes_per_path(ipv4: int, ipv6: int, seed: int) -> float:
    """tracemalloc over the same generated table loaded straight into a RIB."""
    from orchestrator.lab.tablegen import generate_table
    from orchestrator.rib.decide import DecisionOptions
    from orchestrator.rib.table import PeerInfo, Rib

    nh4, nh6 = feeder_next_hops(0)
    groups = list(
        generate_table(
            seed=seed,
            index=0,
            ipv4=ipv4,
            ipv6=ipv6,
            overlap=0.0,
            peer_as=FEEDER_AS,
            next_hop4=nh4,
            next_hop6=nh6,
        )
    )
    gc.collect()
    tracemalloc.start()
    rib = Rib(DecisionOptions())
    rib.add_peer(PeerInfo(name="feeder", peer_as=FEEDER_AS, address=FEEDER_ADDR, local_as=LOCAL_AS))
    rib.peer_up("feeder", FEEDER_ADDR)
    base, _ = tracemalloc.get_traced_memory()
    paths = 0
    for family, attrs, keys in groups:
        rib.update("feeder", family, attrs, keys, ())
        paths += len(keys)
    gc.collect()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The Attributes objects themselves were built by the generator (as a speaker would build them
    # per UPDATE): count them too, once each.
    distinct = {id(a): a for _, a, _ in groups}
    attrs_bytes = sum(_deep_size(a) for a in distinct.values())
    del rib
    return (used - base + attrs_bytes) / max(paths, 1)


def _deep_size(obj: Any, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if id(obj) in seen or (isinstance(obj, (int, bool)) and -5 <= int(obj) <= 256):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, (tuple, list, set, frozenset)):
        size += sum(_deep_size(x, seen) for x in obj)
    elif hasattr(obj, "__slots__"):
        size += sum(_deep_size(getattr(obj, s), seen) for s in obj.__slots__ if hasattr(obj, s))
    return size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefixes", type=int, default=200_000, help="IPv4 prefixes (default 200000)")
    ap.add_argument("--ipv6", type=int, default=0, help="IPv6 prefixes (default 0)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--systems", default="exabgp-alone,peerctl-exabgp")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.ingest: needs root (the feeder listens on port 179)", file=sys.stderr)
        return 2
    from orchestrator.log import configure_logging

    configure_logging("warning", json=True)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    workdir = Path(tempfile.mkdtemp(prefix="peerctl-ingest-"))
    try:
        for i in range(args.runs):
            for system in systems:  # interleaved, so machine noise hits both alike
                if system == "exabgp-alone":
                    r = run_exabgp_alone(workdir, args.prefixes, args.ipv6, args.seed)
                elif system == "peerctl-exabgp":
                    r = asyncio.run(_run_peerctl(workdir, args.prefixes, args.ipv6, args.seed))
                else:
                    raise SystemExit(f"unknown system {system!r}")
                runs[system].append(r)
                if not args.json:
                    print(
                        f"run {i + 1} {system}: {r['seconds']:.2f} s, {r['prefixes_per_s']:,.0f} prefixes/s",
                        file=sys.stderr,
                    )
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    out: dict[str, Any] = {
        "table": {"ipv4": args.prefixes, "ipv6": args.ipv6, "seed": args.seed, "runs": args.runs},
        "systems": {},
    }
    for system, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))}
        out["systems"][system] = med
    if "peerctl-exabgp" in out["systems"]:
        out["systems"]["peerctl-exabgp"]["rib_bytes_per_path"] = rib_bytes_per_path(
            args.prefixes, args.ipv6, args.seed
        )
    if {"exabgp-alone", "peerctl-exabgp"} <= out["systems"].keys():
        a, p = out["systems"]["exabgp-alone"], out["systems"]["peerctl-exabgp"]
        out["ratios"] = {
            "peerctl_vs_exabgp_seconds": p["seconds"] / a["seconds"],
            "peerctl_cpu_share": p["peerctl_cpu_share"],
        }
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"table: {args.prefixes:,} IPv4 + {args.ipv6:,} IPv6, median of {args.runs}")
        for system, m in out["systems"].items():
            extra = ""
            if "peerctl_cpu_s" in m:
                extra = (
                    f", peerctl {m['peerctl_cpu_s']:.1f} CPU-s ({m['peerctl_cpu_share']:.1%} of ExaBGP), "
                    f"RIB {m.get('rib_bytes_per_path', 0):.0f} B/path"
                )
            print(
                f"  {system:15} {m['seconds']:7.2f} s {m['prefixes_per_s']:>10,.0f} prefixes/s "
                f"ExaBGP {m['cpu_s']:.1f} CPU-s {m['rss_mb']:.0f} MB{extra}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
