"""Ingest benchmark: the same table through ExaBGP alone, peerctl, BIRD and GoBGP, side by side.

    python -m benchmarks.ingest [--prefixes 200000] [--ipv6 0] [--runs 3] [--json]
                                [--systems exabgp-alone,peerctl-exabgp,peerctl-native,bird,gobgp]
                                [--peers N] [--mrt FILE [--mrt-peer ADDR]]

The table is generated with a real table's shape (``orchestrator.lab.tablegen``, ``--seed``), or one
peer's view of a real MRT RIB (``--mrt``, e.g. the RouteViews jinx full table in
``../shared/data/real/mrt/rib/``).

Each system receives the table from the same kind of feeder (peerctl's native feeder, a separate
process on loopback) over a real BGP session:

- ``exabgp-alone``: ExaBGP 5.0.15 with adj-rib-in off and logging quiet; its API process only counts
  the lines (and the prefixes in them) and stops the clock at End-of-RIB.
- ``peerctl-exabgp``: the real daemon pipeline (ExaBGP speaker, relay, orjson decoding, RIB task),
  run in this process so its CPU is measured apart from ExaBGP's.

Reported per system: ``seconds`` (session up → End-of-RIB of every family, median of runs),
``prefixes_per_s``, ``cpu_s`` (the ExaBGP process; for peerctl also ``peerctl_cpu_s``, this process),
``rss_mb`` (ExaBGP peak; for peerctl also ``peerctl_rss_mb``) and for peerctl
``rib_bytes_per_path`` (what the RIB holds per path: tracemalloc over the same table loaded into a
RIB, as ``benchmarks.rib`` measures it; the interned attribute sets are shared by the paths that
carry them, so they are counted once, amortised, and reported apart in ``rib``) and
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
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from operator import countOf, itemgetter
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


# ``--mrt FILE [--mrt-peer ADDR]``: (file, peer) whose view the feeder serves instead of the generated
# table; None: the generated table.
MRT: tuple[str, str | None] | None = None


def mrt_table(next_hop4: str, next_hop6: str) -> list[Any]:
    """The (family, attrs, keys) groups the feeder serves for ``MRT`` (its own loader)."""
    from speakers.replay.mrt import table_groups

    assert MRT is not None
    path, peer = MRT
    return list(table_groups(path, next_hop4=next_hop4, next_hop6=next_hop6, peer_as=FEEDER_AS, peer=peer))


def _table_args(ipv4: int, ipv6: int, seed: int) -> list[str]:
    """The feeder's table: ``MRT``'s view, or the generated one."""
    if MRT is not None:
        return ["--mrt", MRT[0], *(["--mrt-peer", MRT[1]] if MRT[1] else [])]
    return ["--seed", str(seed), "--index", "0", "--overlap", "0", "--ipv4", str(ipv4), "--ipv6", str(ipv6)]


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
        *_table_args(ipv4, ipv6, seed),
        "--next-hop4",
        nh4,
        "--next-hop6",
        nh6,
        "--ready-file",
        str(ready),
    ]
    with (workdir / "feeder.log").open("ab") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + (120 if MRT else 30)  # an MRT RIB takes seconds to load
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"feeder did not start; see {workdir / 'feeder.log'}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
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
        while not families <= status.end_of_rib.keys():
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


def rib_footprint(rib: Any) -> dict[str, float]:
    """What a ``Rib`` holds, by walking it (``sys.getsizeof``, every object once): the per-prefix
    containers (bucket dicts, their int keys, bucket lists, index bytes, multi-path tuples) and the
    interned attribute sets (``Path`` objects, their attribute bytes and rank ints, the per-peer
    intern dicts). The sets are shared by every path that carries them: their bytes are amortised
    over the paths. Cheap enough to run after a live load (no tracemalloc); ``rib_bytes_per_path``
    checks it against tracemalloc."""
    getsizeof = sys.getsizeof
    containers = 0
    paths = 0
    seen: set[int] = set()
    for buckets in rib._buckets:
        containers += getsizeof(buckets)
        for hi, bucket in buckets.items():
            containers += getsizeof(hi) + getsizeof(bucket)
            los = bucket[0]
            if len(los) > 2:  # one entry's index is a shared object (``table._LO``)
                containers += getsizeof(los)
            for dest in bucket[1:]:
                if type(dest) is tuple:
                    containers += getsizeof(dest)
                    paths += len(dest)
                else:
                    paths += 1
    sets = 0
    set_bytes = 0
    for peer in rib._peers.values():
        set_bytes += getsizeof(peer.cache)
        for blob, path in peer.cache.items():
            if id(path) in seen:
                continue
            seen.add(id(path))
            sets += 1
            set_bytes += getsizeof(path) + getsizeof(blob) + getsizeof(path.rank)
    paths = max(paths, 1)
    return {
        "paths": paths,
        "bytes_per_path": (containers + set_bytes) / paths,
        "container_bytes_per_path": containers / paths,
        "attribute_sets": sets,
        "bytes_per_attribute_set": set_bytes / max(sets, 1),
        "attribute_set_bytes_per_path": set_bytes / paths,
    }


def rib_bytes_per_path(ipv4: int, ipv6: int, seed: int, peers: int = 1) -> dict[str, float]:
    """What the RIB holds per path: tracemalloc over the feeders' tables (``peers`` of them, with the
    benchmark's overlap) loaded straight into a RIB (the method of ``benchmarks.rib``: only what the
    RIB retains is counted; the generator's ``Attributes`` objects are a speaker's per-UPDATE
    garbage, not RIB state), with the walk of ``rib_footprint`` beside it as a cross-check and for
    the split into containers and sets."""
    from orchestrator.lab.tablegen import generate_table
    from orchestrator.rib.decide import DecisionOptions
    from orchestrator.rib.table import PeerInfo, Rib, bulk_load

    tables = []
    for i in range(peers):
        nh4, nh6 = feeder_next_hops(i)
        overlap = OVERLAP if peers > 1 else 0.0
        if MRT:
            tables.append(mrt_table(nh4, nh6))
        else:
            tables.append(list(generate_table(seed, i, ipv4, ipv6, overlap, FEEDER_AS + i, nh4, nh6)))
    gc.collect()
    tracemalloc.start()
    rib = Rib(DecisionOptions())
    for i in range(peers):
        name = f"feeder{i}"
        rib.add_peer(PeerInfo(name=name, peer_as=FEEDER_AS + i, address=feeder_addr(i), local_as=LOCAL_AS))
        rib.peer_up(name, feeder_addr(i))
    base, _ = tracemalloc.get_traced_memory()
    paths = 0
    with bulk_load():
        for i, groups in enumerate(tables):
            for family, attrs, keys in groups:
                rib.update(f"feeder{i}", family, attrs, keys, ())
                paths += len(keys)
    gc.collect()
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    walk = rib_footprint(rib)
    del rib
    return {
        "bytes_per_path": (used - base) / max(paths, 1),
        "walk_bytes_per_path": walk["bytes_per_path"],
        "container_bytes_per_path": walk["container_bytes_per_path"],
        "attribute_sets": walk["attribute_sets"],
        "bytes_per_attribute_set": walk["bytes_per_attribute_set"],
        "attribute_set_bytes_per_path": walk["attribute_set_bytes_per_path"],
    }


# --- native speaker, BIRD 2 and GoBGP as receivers (issue 5) -------------------------------------------
#
# Each system runs in its own process so CPU and peak RSS are its own: ``peerctl-native`` is this script
# re-run as a child (``--child``) holding a Daemon whose peers use ``speaker = "native"``; ``bird`` and
# ``gobgp`` are the daemons themselves, asked for their counts (cheap commands only: EXABGP.md) through
# BIRD's control socket every POLL_S, as the native child checks its own status, and GoBGP's CLI.
# ``--peers N`` starts N feeders (127.0.0.42 + i, tables with 60% overlap, the lab's generator) for memory
# per path and best-path churn.

BIRD_ADDR = "127.0.0.1"
POLL_S = 0.005  # how often each system is asked whether it has the whole table (the same for all)
OVERLAP = 0.6


def _log_file(path: Path) -> Any:
    return open(path, "ab")


def feeder_addr(i: int) -> str:
    return f"127.0.0.{42 + i}"


def start_feeders(
    workdir: Path, ipv4: int, ipv6: int, seed: int, peers: int
) -> list[subprocess.Popen[bytes]]:
    """``peers`` feeders; with one, exactly ``start_feeder``'s table. The caller stops them."""
    if peers == 1:
        return [start_feeder(workdir, ipv4, ipv6, seed)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(peers):
            nh4, nh6 = feeder_next_hops(i)
            ready = workdir / f"feeder{i}.ready"
            ready.unlink(missing_ok=True)
            argv = [
                sys.executable,
                "-m",
                "speakers.native.feeder",
                "--listen",
                feeder_addr(i),
                "--port",
                "179",
                "--asn",
                str(FEEDER_AS + i),
                "--peer-as",
                str(LOCAL_AS),
                "--router-id",
                feeder_addr(i),
                "--hold-time",
                "180",
                "--seed",
                str(seed),
                "--index",
                str(i),
                "--ipv4",
                str(ipv4),
                "--ipv6",
                str(ipv6),
                "--overlap",
                str(OVERLAP),
                "--next-hop4",
                nh4,
                "--next-hop6",
                nh6,
                "--ready-file",
                str(ready),
            ]
            procs.append(
                subprocess.Popen(
                    argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=_log_file(workdir / f"feeder{i}.log")
                )
            )
        deadline = time.monotonic() + 60
        for i, proc in enumerate(procs):
            while not (workdir / f"feeder{i}.ready").exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"feeder {i} did not start; see {workdir / f'feeder{i}.log'}")
                time.sleep(0.05)
    except BaseException:
        for proc in procs:
            stop(proc)
        raise
    return procs


def _vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _run_native_child(workdir: Path, ipv4: int, ipv6: int, seed: int, peers: int) -> dict[str, Any]:
    """In the child process: a Daemon with ``peers`` native-speaker peers; feeders already listen."""
    from orchestrator.config import SpeakerKind
    from orchestrator.daemon import Daemon
    from orchestrator.rib.table import BestChange

    peer_cfgs = tuple(
        PeerConfig(
            name=f"feeder{i}",
            kind=PeerKind.UPSTREAM,
            neighbor=feeder_addr(i),
            peer_as=FEEDER_AS + i,
            local_address=LOCAL_ADDR,
            families=families_of(ipv6),
            hold_time=180,
            speaker=SpeakerKind.NATIVE,
        )
        for i in range(peers)
    )
    config = Config(
        path=workdir / "bench.toml",
        local=LocalConfig(asn=LOCAL_AS, router_id=LOCAL_ADDR),
        runtime=RuntimeConfig(dir=workdir / "run"),
        fib=FibConfig(),
        lab=LabConfig(),
        peers=peer_cfgs,
    )
    daemon = Daemon(config)
    churn = {"changes": 0, "replaced": 0}

    def count(changes: list[BestChange]) -> None:  # C-level counting: this runs in the measured CPU
        churn["changes"] += len(changes)
        gone = countOf(map(_new_of, changes), None)  # without a list per count (round 5)
        fresh = countOf(map(_old_of, changes), None)
        churn["replaced"] += len(changes) - gone - fresh  # never both None

    daemon.subscribers.append(count)
    families = set(families_of(ipv6))
    rss0 = _vm_rss_mb()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.monotonic()
    await daemon.start()
    deadline = time.monotonic() + 1800
    statuses = [daemon.status[p.name] for p in peer_cfgs]
    while not all(st.established_at is not None for st in statuses):
        if time.monotonic() > deadline:
            raise SystemExit("peerctl-native: sessions never came up")
        await asyncio.sleep(POLL_S)
    t_up = min(st.established_at for st in statuses if st.established_at is not None)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)  # from the sessions up, as for the others
    while not all(families <= st.end_of_rib.keys() for st in statuses):
        if time.monotonic() > deadline:
            raise SystemExit("peerctl-native: no End-of-RIB")
        await asyncio.sleep(POLL_S)
    # When the last End-of-RIB was applied, as the daemon records it (its start, established_at, is
    # exact too; BIRD's start and end are both polled, so their poll delays cancel on average).
    t_end = max(st.end_of_rib[f] for st in statuses for f in families)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    rss1 = _vm_rss_mb()
    counts = daemon.rib.counts()
    paths = sum(counts["families"][f.short]["paths"] for f in Family)
    prefixes = sum(counts["families"][f.short]["prefixes"] for f in Family)
    churn_at_end = dict(churn)  # before stop(): stopping withdraws everything
    held = rib_footprint(daemon.rib)
    await daemon.stop()
    seconds = t_end - t_up
    return {
        "seconds": seconds,
        "prefixes": paths,
        "prefixes_per_s": paths / seconds,
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "bytes_per_path": (rss1 - rss0) * 1024 * 1024 / max(paths, 1),
        "rib_bytes_per_path": held["bytes_per_path"],
        "rib_container_bytes_per_path": held["container_bytes_per_path"],
        "rib_attribute_sets": held["attribute_sets"],
        "rib_attribute_set_bytes_per_path": held["attribute_set_bytes_per_path"],
        "distinct_prefixes": prefixes,
        "best_changes": churn_at_end["changes"],
        "best_replaced": churn_at_end["replaced"],
        "connect_s": t_up - t_start,
    }


_old_of = itemgetter(2)  # BestChange.old, without the field descriptor
_new_of = itemgetter(3)  # BestChange.new


def run_native(workdir: Path, ipv4: int, ipv6: int, seed: int, peers: int) -> dict[str, Any]:
    feeders = start_feeders(workdir, ipv4, ipv6, seed, peers)
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.ingest",
                "--child",
                "peerctl-native",
                "--prefixes",
                str(ipv4),
                "--ipv6",
                str(ipv6),
                "--seed",
                str(seed),
                "--peers",
                str(peers),
                "--workdir",
                str(workdir),
            ],
            cwd=REPO,
            capture_output=True,
            timeout=1800,
        )
    finally:
        for proc in feeders:
            stop(proc)
    if out.returncode != 0:
        raise SystemExit(f"peerctl-native child failed: {out.stderr.decode()[-2000:]}")
    result: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
    return result


BIRD_BENCH_CONF = """
router id {router_id};
protocol device {{}}
{protocols}
"""
BIRD_BENCH_PROTO = """
protocol bgp feeder{i} {{
  local {local} port 17900 as {local_as};
  neighbor {neighbor} as {peer_as};
  strict bind yes; multihop; hold time 180;
  error wait time 1,5; connect retry time 1;
  ipv4 {{ import all; export none; }};
  ipv6 {{ import all; export none; }};
}}
"""


def _timeable(t_up: float, t_end: float, system: str) -> None:
    """A table seen whole at the poll that first saw the session up took less than a poll: no time."""
    if t_end <= t_up:
        raise SystemExit(f"{system}: the whole table arrived within one poll ({POLL_S * 1000:.0f} ms); "
                         "too small to time, use more --prefixes")


class BirdControl:
    """BIRD's control socket, kept open: a query is ~0.2 ms, where a ``birdc`` process per query took
    ~20 ms and made BIRD's measured time jump in steps of a poll (0.07 or 0.09 s for the same load)."""

    def __init__(self, sock: Path) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(30)
        self._sock.connect(str(sock))
        self._file = self._sock.makefile("rb")
        self._reply()  # "0001 BIRD 2.x ready."

    def _reply(self) -> str:
        lines = []
        while True:
            line = self._file.readline()
            if not line:
                raise ConnectionError("BIRD closed its control socket")
            lines.append(line.decode(errors="replace"))
            if line[:4].isdigit() and line[4:5] == b" ":  # "NNNN " ends a reply; "NNNN-" continues it
                return "".join(lines)

    def query(self, command: str) -> str:
        self._sock.sendall(command.encode() + b"\n")
        return self._reply()

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def run_bird(workdir: Path, ipv4: int, ipv6: int, seed: int, peers: int) -> dict[str, Any]:
    """BIRD 2 receiving the same table(s): time from Established to every route imported."""
    if shutil.which("bird") is None:
        raise SystemExit("bird (BIRD 2) is not installed")
    feeders = start_feeders(workdir, ipv4, ipv6, seed, peers)
    conf, sock = workdir / "bird.conf", workdir / "bird.ctl"
    protocols = "".join(
        BIRD_BENCH_PROTO.format(
            i=i, local=BIRD_ADDR, local_as=LOCAL_AS, neighbor=feeder_addr(i), peer_as=FEEDER_AS + i
        )
        for i in range(peers)
    )
    conf.write_text(BIRD_BENCH_CONF.format(router_id=BIRD_ADDR, protocols=protocols))
    sock.unlink(missing_ok=True)
    bird = subprocess.Popen(
        ["bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(workdir / "bird.pid")],
        stdout=subprocess.DEVNULL,
        stderr=_log_file(workdir / "bird.log"),
    )
    try:
        want = ipv4 + ipv6  # per peer (every feeder serves this many)
        t_up: float | None = None
        t_99: float | None = None
        deadline = time.monotonic() + 1800
        ctl: BirdControl | None = None
        while True:
            if bird.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bird failed; see {workdir / 'bird.log'}")
            if ctl is None:
                try:
                    ctl = BirdControl(sock)
                except OSError:  # not listening yet
                    time.sleep(0.02)
                    continue
            out = ctl.query("show protocols all")
            now = time.monotonic()
            established = sum(
                1 for line in out.splitlines() if "BGP state:" in line and "Established" in line
            )
            if t_up is None and established:
                t_up = now
            # Routes BIRD has processed, kept or not: the "received" column of "Import updates" and
            # "Import withdraws". An UPDATE BIRD drops (RFC 4271 loop detection: a real table can carry
            # its AS, 64500, in a path; RFC 7606 treat-as-withdraw) counts as a withdraw received,
            # never as imported, so waiting for imported routes could wait for ever.
            imported = sum(
                int(line.split()[2])
                for line in out.splitlines()
                if line.strip().startswith(("Import updates:", "Import withdraws:"))
            )
            if t_99 is None and imported >= 0.99 * want * peers:
                t_99 = now
            if imported >= want * peers and established == peers:
                t_end = now
                break
            time.sleep(POLL_S)
        cpu = proc_cpu_s(bird.pid)
        rss = proc_peak_rss_mb(bird.pid)
    finally:
        if ctl is not None:
            ctl.close()
        stop(bird)
        for proc in feeders:
            stop(proc)
    assert t_up is not None and t_99 is not None
    _timeable(t_up, t_end, "bird")
    paths = want * peers
    return {
        "seconds": t_end - t_up,
        "seconds_99": t_99 - t_up,
        "prefixes": paths,
        "prefixes_per_s": paths / (t_end - t_up),
        "cpu_s": cpu,
        "rss_mb": rss,
    }


GOBGP_BENCH_CONF = """
[global.config]
  as = {local_as}
  router-id = "{router_id}"
  port = 17901
  local-address-list = ["{router_id}"]
{neighbors}
"""
GOBGP_BENCH_NEIGHBOR = """
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{neighbor}"
    peer-as = {peer_as}
  [neighbors.transport.config]
    local-address = "{local}"
  [neighbors.timers.config]
    hold-time = 180
  [neighbors.ebgp-multihop.config]
    enabled = true
    multihop-ttl = 5
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"""


def run_gobgp(workdir: Path, ipv4: int, ipv6: int, seed: int, peers: int) -> dict[str, Any]:
    """GoBGP receiving the same table(s); polled with ``gobgp neighbor -j`` (the list: cheap)."""
    if shutil.which("gobgpd") is None:
        raise SystemExit("gobgpd is not installed")
    feeders = start_feeders(workdir, ipv4, ipv6, seed, peers)
    conf = workdir / "gobgp.toml"
    neighbors = "".join(
        GOBGP_BENCH_NEIGHBOR.format(neighbor=feeder_addr(i), peer_as=FEEDER_AS + i, local=BIRD_ADDR)
        for i in range(peers)
    )
    conf.write_text(GOBGP_BENCH_CONF.format(local_as=LOCAL_AS, router_id=BIRD_ADDR, neighbors=neighbors))
    api = [f"{BIRD_ADDR}:17902"]
    gobgpd = subprocess.Popen(
        ["gobgpd", "-f", str(conf), "--api-hosts", api[0], "--pprof-disable"],
        stdout=subprocess.DEVNULL,
        stderr=_log_file(workdir / "gobgpd.log"),
    )
    try:
        want = (ipv4 + ipv6) * peers
        t_up: float | None = None
        t_99: float | None = None
        deadline = time.monotonic() + 1800
        while True:
            if gobgpd.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gobgpd failed; see {workdir / 'gobgpd.log'}")
            out = subprocess.run(
                ["gobgp", "-u", BIRD_ADDR, "-p", "17902", "neighbor", "-j"], capture_output=True, timeout=30
            ).stdout
            now = time.monotonic()
            try:
                neigh = orjson.loads(out) if out.strip() else []
            except orjson.JSONDecodeError:
                neigh = []
            if not isinstance(neigh, list):
                neigh = [neigh]
            neigh = [n for n in neigh if isinstance(n, dict)]
            up = sum(1 for n in neigh if n.get("state", {}).get("session_state") == 6)
            if t_up is None and up:
                t_up = now
            accepted = sum(
                max(a.get("state", {}).get("received", 0), a.get("state", {}).get("accepted", 0))
                for n in neigh
                for a in n.get("afi_safis", [])  # received: processed, kept or not (as for BIRD)
            )
            if t_99 is None and accepted >= 0.99 * want:
                t_99 = now
            if accepted >= want:
                t_end = now
                break
            time.sleep(0.05)
        cpu = proc_cpu_s(gobgpd.pid)
        rss = proc_peak_rss_mb(gobgpd.pid)
    finally:
        stop(gobgpd)
        for proc in feeders:
            stop(proc)
    assert t_up is not None and t_99 is not None
    _timeable(t_up, t_end, "gobgp")
    return {
        "seconds": t_end - t_up,
        "seconds_99": t_99 - t_up,
        "prefixes": want,
        "prefixes_per_s": want / (t_end - t_up),
        "cpu_s": cpu,
        "rss_mb": rss,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefixes", type=int, default=200_000, help="IPv4 prefixes (default 200000)")
    ap.add_argument("--ipv6", type=int, default=0, help="IPv6 prefixes (default 0)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--systems", default="exabgp-alone,peerctl-exabgp")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--peers",
        type=int,
        default=1,
        help="feeders with overlapping tables (peerctl-native, bird, gobgp only)",
    )
    ap.add_argument(
        "--mrt",
        metavar="FILE",
        help="serve one peer's view of this MRT RIB (TABLE_DUMP_V2 or v1; e.g. ../shared/data/real/mrt/rib/"
        "routeviews.route-views.jinx.ribs.1401487200.bz2) instead of the generated table; --prefixes and"
        " --ipv6 become its counts; one peer only",
    )
    ap.add_argument("--mrt-peer", metavar="ADDR", help="with --mrt: the collector peer (default: most)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mrt and not args.child:
        if args.peers != 1:
            ap.error("--mrt serves one peer's view: one peer only")
        global MRT
        MRT = (args.mrt, args.mrt_peer)
        try:
            groups = mrt_table(*feeder_next_hops(0))
        except (OSError, ValueError) as exc:  # the MRT reader's errors name the file and the record
            ap.error(f"--mrt {args.mrt}: {exc}")
        args.prefixes = sum(len(keys) for family, _, keys in groups if family is Family.IPV4)
        args.ipv6 = sum(len(keys) for family, _, keys in groups if family is Family.IPV6)
        del groups
    if args.child == "peerctl-native":  # the measured process of run_native
        from orchestrator.log import configure_logging as _configure

        _configure("warning", json=True)
        result = asyncio.run(
            _run_native_child(Path(args.workdir), args.prefixes, args.ipv6, args.seed, args.peers)
        )
        print(orjson.dumps(result).decode())
        return 0
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
                elif system == "peerctl-native":
                    r = run_native(workdir, args.prefixes, args.ipv6, args.seed, args.peers)
                elif system == "bird":
                    r = run_bird(workdir, args.prefixes, args.ipv6, args.seed, args.peers)
                elif system == "gobgp":
                    r = run_gobgp(workdir, args.prefixes, args.ipv6, args.seed, args.peers)
                else:
                    raise SystemExit(f"unknown system {system!r}")
                runs[system].append(r)
                if not args.json:
                    print(
                        f"run {i + 1} {system}: {r['seconds']:.3f} s, {r['prefixes_per_s']:,.0f} prefixes/s",
                        file=sys.stderr,
                    )
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    out: dict[str, Any] = {
        "table": {
            "ipv4": args.prefixes,
            "ipv6": args.ipv6,
            **({"mrt": args.mrt, "mrt_peer": args.mrt_peer} if args.mrt else {"seed": args.seed}),
            "runs": args.runs,
            **({"peers": args.peers, "overlap": OVERLAP} if args.peers > 1 else {}),
        },
        "systems": {},
    }
    for system, rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0] if isinstance(rs[0][k], (int, float))}
        out["systems"][system] = med
    if {"peerctl-exabgp", "peerctl-native"} & out["systems"].keys():
        rib = rib_bytes_per_path(args.prefixes, args.ipv6, args.seed, args.peers)
        if "peerctl-exabgp" in out["systems"]:
            out["systems"]["peerctl-exabgp"]["rib_bytes_per_path"] = rib["bytes_per_path"]
        out["rib"] = {
            **rib,
            "note": "what the RIB holds per path (tracemalloc, as benchmarks.rib); interned attribute "
            "sets are shared by their paths and counted once, amortised (attribute_set_bytes_per_path)",
        }
    if {"exabgp-alone", "peerctl-native"} <= out["systems"].keys():
        a, p = out["systems"]["exabgp-alone"], out["systems"]["peerctl-native"]
        out.setdefault("ratios", {})["native_vs_exabgp_prefixes_per_s"] = (
            p["prefixes_per_s"] / a["prefixes_per_s"]
        )
    if {"bird", "peerctl-native"} <= out["systems"].keys():
        b, p = out["systems"]["bird"], out["systems"]["peerctl-native"]
        # Issue 5's target is on time ("within 2x of BIRD's time"): the ratio of the medians, and
        # run by run (the two take turns, so each pair saw the same machine).
        pairs = zip(runs["peerctl-native"], runs["bird"], strict=True)
        per_run = [n["seconds"] / d["seconds"] for n, d in pairs]
        out.setdefault("ratios", {}).update(
            {
                "native_vs_bird_prefixes_per_s": p["prefixes_per_s"] / b["prefixes_per_s"],
                "native_vs_bird_seconds": p["seconds"] / b["seconds"],
                "native_vs_bird_seconds_per_run": per_run,
            }
        )
    if {"exabgp-alone", "peerctl-exabgp"} <= out["systems"].keys():
        a, p = out["systems"]["exabgp-alone"], out["systems"]["peerctl-exabgp"]
        out.setdefault("ratios", {}).update(
            {
                "peerctl_vs_exabgp_seconds": p["seconds"] / a["seconds"],
                "peerctl_cpu_share": p["peerctl_cpu_share"],
            }
        )
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        source = f"{Path(args.mrt).name} (one peer's view)" if args.mrt else "generated"
        print(f"table: {args.prefixes:,} IPv4 + {args.ipv6:,} IPv6, {source}, median of {args.runs}")
        for system, m in out["systems"].items():
            extra = ""
            if "peerctl_cpu_s" in m:
                extra = (
                    f", peerctl {m['peerctl_cpu_s']:.1f} CPU-s ({m['peerctl_cpu_share']:.1%} of ExaBGP), "
                    f"RIB {m.get('rib_bytes_per_path', 0):.0f} B/path"
                )
            who = "ExaBGP " if system.endswith("exabgp") or system == "exabgp-alone" else ""
            if "bytes_per_path" in m:
                extra += (
                    f", RIB {m['rib_bytes_per_path']:.0f} B/path held ({m['bytes_per_path']:.0f} RSS),"
                    f" {m['best_changes']:,.0f} best changes"
                )
            print(
                f"  {system:15} {m['seconds']:8.3f} s {m['prefixes_per_s']:>10,.0f} prefixes/s "
                f"{who}{m['cpu_s']:.2f} CPU-s {m['rss_mb']:.0f} MB{extra}"
            )
        ratios = out.get("ratios", {})
        if "native_vs_exabgp_prefixes_per_s" in ratios:
            print(f"  peerctl-native: {ratios['native_vs_exabgp_prefixes_per_s']:.1f}x ExaBGP's prefixes/s")
        if "native_vs_bird_seconds" in ratios:
            each = ", ".join(f"{r:.2f}" for r in ratios["native_vs_bird_seconds_per_run"])
            ratio = ratios["native_vs_bird_seconds"]
            print(f"  peerctl-native: {ratio:.2f}x BIRD's time (run by run: {each})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
