"""Offline microbenchmark of peerctl's side of ExaBGP ingest: relay bytes → session → RIB.

    python -m benchmarks.ingest_path [--prefixes 200000] [--seed 1] [--chunk 16384] [--repeat 3]
                                     [--recapture] [--profile] [--json]

The byte stream is the real one: the first run starts the native feeder and ExaBGP 5.0.15 exactly
as ``benchmarks.ingest`` does (adj-rib-in off, compact NLRI, peerctl's env), with an API program
that copies ExaBGP's output verbatim into ``benchmarks/out/exabgp-<prefixes>-<seed>.jsonl`` until
End-of-RIB (needs root: the feeder listens on port 179). Later runs reuse the file.

Then, CPU time per prefix (``time.process_time``, cyclic GC off as in the daemon, best of
``--repeat``), for the same stream cut into ``--chunk``-byte reads (the relay coalesces ~2 ms of
ExaBGP output, ~10-20 kB at ExaBGP's speed):

- ``decode``: ``Decoder.decode`` of every JSON line only.
- ``session``: ``ExaBGPSession.feed`` + draining events (line splitting, acks, state table, decode).
- ``sync``: session + the daemon's own ``_apply`` (status counters, import policy skip, ``Rib.update``)
  without asyncio: everything on our side except the event loop.
- ``asyncio``: the real plumbing. A child process plays relay and ExaBGP: it passes a pipe over the
  unix socket and writes the chunks into it (``--mode fds``, the normal case), or writes them to
  the socket (``--mode copy``, the relay's fallback), paced by ``--gap-ms``; this process runs
  ``ExaBGPSpeaker``'s accept/handshake/read loop (``_accept``) and the daemon's ``emit_many`` →
  queue → ``_rib_loop``, until End-of-RIB. The child's CPU is not counted (the real relay's is
  measured by ``benchmarks.ingest``).

``--speaker native`` measures the native speaker's side instead, on the byte stream the native
feeder sends (the same generated table encoded in-process with the feeder's encoder; no capture,
no root): ``decode`` (framing + ``decode_plain_update``, ``decode_update`` where it declines),
``session`` (an ESTABLISHED ``BgpSession``: ``receive_data`` + ``take_events``) and ``sync`` (+ the
daemon's ``_apply`` into the RIB). No ``asyncio`` case (``benchmarks.ingest`` measures it live).
With ``--updates FILE`` the stream is a real one instead: the IPv4 announcements of an MRT update
file (e.g. the PCH full table in ``../shared/data/real/mrt/updates/``), each encoded as received
(the read chunk then matters: ``--chunk 262144`` is the speaker's read size).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.ingest import FEEDER_AS, LOCAL_ADDR, LOCAL_AS, peer_config, proc_cpu_s, start_feeder, stop
from orchestrator.config import Config, FibConfig, LabConfig, LocalConfig, RuntimeConfig
from orchestrator.rib.prefix import Family

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"

CAPTURE = r"""
import os, sys
out = sys.argv[1]
families = int(sys.argv[2])
eors = 0
with open(out + ".tmp", "wb") as fh:
    for line in sys.stdin.buffer:
        fh.write(line)
        if b'"eor"' in line:
            eors += 1
            if eors >= families:
                break
os.rename(out + ".tmp", out)
for line in sys.stdin.buffer:  # keep draining so ExaBGP never blocks
    pass
"""

SENDER = r"""
import os, socket, sys, time
path, data_path, chunk, gap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000
mode = sys.argv[5]
data = open(data_path, "rb").read()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
if mode == "fds":  # as relay.py: hand over the read end of the "JSON" pipe and a command pipe
    r, w = os.pipe()
    cr, cw = os.pipe()
    import fcntl
    fcntl.fcntl(r, 1031, 1 << 20)  # F_SETPIPE_SZ, as relay.py does
    socket.send_fds(s, [b"\x00"], [r, cw])
    assert s.recv(1) == b"F"
    os.close(r)
    os.close(cw)
    for i in range(0, len(data), chunk):
        os.write(w, data[i : i + chunk])  # blocking, like ExaBGP's writes
        if gap:
            time.sleep(gap)
    os.close(w)  # EOF: "ExaBGP exited"
    s.recv(1)  # until peerctl closes the socket
else:  # copy mode: the relay's bytes on the socket
    s.sendall(b"\x01")
    assert s.recv(1) == b"C"
    for i in range(0, len(data), chunk):
        s.sendall(data[i : i + chunk])
        if gap:
            time.sleep(gap)
s.close()
"""


def capture(path: Path, ipv4: int, seed: int) -> None:
    """Record ExaBGP's API output for the generated table (feeder → ExaBGP → file)."""
    from speakers.exabgp.render import render_config, render_env

    if os.geteuid() != 0:
        raise SystemExit("benchmarks.ingest_path: capturing needs root (the feeder listens on port 179)")
    workdir = Path(tempfile.mkdtemp(prefix="peerctl-capture-"))
    try:
        feeder = start_feeder(workdir, ipv4, 0, seed)
        prog = workdir / "capture.py"
        prog.write_text(CAPTURE)
        tmp = workdir / "stream.jsonl"
        local = LocalConfig(asn=LOCAL_AS, router_id=LOCAL_ADDR)
        conf = workdir / "exabgp.conf"
        conf.write_text(render_config(peer_config(0), local, [sys.executable, str(prog), str(tmp), "1"]))
        exabgp = str(Path(sys.executable).parent / "exabgp")
        with (workdir / "exabgp.log").open("ab") as log:
            proc = subprocess.Popen(
                [exabgp, str(conf)], env={**os.environ, **render_env()}, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            deadline = time.monotonic() + 900
            while not tmp.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"capture failed; see {workdir / 'exabgp.log'}")
                time.sleep(0.1)
        finally:
            stop(proc)
            stop(feeder)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def make_config(workdir: Path) -> Config:
    return Config(
        path=workdir / "bench.toml",
        local=LocalConfig(asn=LOCAL_AS, router_id=LOCAL_ADDR),
        runtime=RuntimeConfig(dir=workdir / "run"),
        fib=FibConfig(),
        lab=LabConfig(),
        peers=(peer_config(0),),
    )


def make_daemon(workdir: Path) -> Any:
    """A daemon with the benchmark's peer registered (RIB peer + status), nothing started."""
    from orchestrator.daemon import Daemon
    from orchestrator.rib.table import PeerInfo
    from orchestrator.status import PeerStatus

    config = make_config(workdir)
    daemon = Daemon(config)
    peer = config.peers[0]
    daemon.imports.configure(peer, str(config.path))
    daemon.rib.add_peer(
        PeerInfo(name=peer.name, peer_as=peer.peer_as, address=peer.neighbor, local_as=LOCAL_AS)
    )
    daemon.status[peer.name] = PeerStatus(state="connect", since=time.monotonic())
    return daemon


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _session() -> Any:
    import structlog

    from speakers.exabgp.session import ExaBGPSession

    return ExaBGPSession("feeder", (Family.IPV4,), None, 200, structlog.get_logger().bind(peer="feeder"))


def run_decode(data: bytes, chunks: list[bytes], workdir: Path) -> int:
    from speakers.exabgp.decode import Decoder

    decoder = Decoder("feeder", (Family.IPV4,))
    decode = decoder.decode
    n = 0
    for line in data.split(b"\n"):
        if line[:1] == b"{":
            for ev in decode(line):
                n += len(getattr(ev, "announce", ()))
    return n


def run_session(data: bytes, chunks: list[bytes], workdir: Path) -> int:
    session = _session()
    n = 0
    for chunk in chunks:
        session.feed(chunk)
        for ev in session.events():
            n += len(getattr(ev, "announce", ()))
    return n


def _session_batches(session: Any) -> Callable[[], Any]:
    """The session's drain: a batch API if it has one, else events()."""
    return session.events  # type: ignore[no-any-return]


def run_sync(data: bytes, chunks: list[bytes], workdir: Path) -> int:
    daemon = make_daemon(workdir)
    session = _session()
    drain = _session_batches(session)
    apply = daemon._apply
    for chunk in chunks:
        session.feed(chunk)
        changes: list[Any] = []
        for ev in drain():
            apply(ev, changes)
        if changes:
            daemon._publish(changes)
    paths: int = daemon.rib.counts()["families"]["ipv4"]["paths"]
    return paths


async def _run_asyncio(
    data_path: Path, chunk: int, gap_ms: float, workdir: Path, mode: str
) -> tuple[int, float]:
    import socket

    import structlog

    from speakers.exabgp.process import ExaBGPSpeaker

    daemon = make_daemon(workdir)
    peer = daemon.config.peers[0]
    speaker = ExaBGPSpeaker(
        peer,
        daemon.config.local,
        workdir / "run",
        daemon.emit,
        structlog.get_logger(),
        emit_many=daemon.emit_many,
    )
    speaker.session.process_started()
    sock_path = workdir / "api.sock"
    sock_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    listener.setblocking(False)
    accept = asyncio.create_task(speaker._accept(listener))
    rib_task = asyncio.create_task(daemon._rib_loop())
    status = daemon.status[peer.name]
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, str(sock_path), str(data_path), str(chunk), str(gap_ms), mode]
    )
    t0 = time.process_time()
    try:
        while Family.IPV4 not in status.end_of_rib:
            await asyncio.sleep(0.01)
        cpu = time.process_time() - t0
    finally:
        while sender.poll() is None:
            await asyncio.sleep(0.01)
        rib_task.cancel()
        accept.cancel()
        listener.close()
    paths: int = daemon.rib.counts()["families"]["ipv4"]["paths"]
    return paths, cpu


def native_stream(prefixes: int, seed: int) -> bytes:
    """The native feeder's UPDATE stream for its table (``start_feeder``'s arguments), End-of-RIB last."""
    from orchestrator.lab.runner import feeder_next_hops
    from orchestrator.lab.tablegen import generate_table
    from speakers.native.codec import encode_end_of_rib, encode_updates

    nh4, nh6 = feeder_next_hops(0)
    msgs = [
        msg
        for family, attrs, keys in generate_table(seed, 0, prefixes, 0, 0.0, FEEDER_AS, nh4, nh6)
        for msg in encode_updates(family, attrs, keys)
    ]
    return b"".join(msgs) + encode_end_of_rib(Family.IPV4)


def updates_stream(path: str) -> bytes:
    """The IPv4 announcements of an MRT update file as UPDATE messages, End-of-RIB last."""
    from orchestrator.collector.mrt import Bgp4mpUpdate, read_mrt
    from speakers.native.codec import encode_end_of_rib, encode_updates

    msgs: list[bytes] = []
    for rec in read_mrt(path):
        if not isinstance(rec, Bgp4mpUpdate):
            continue
        keys = rec.announce.get(Family.IPV4)
        attrs = rec.attrs_for(Family.IPV4)
        if keys and attrs is not None:
            msgs += encode_updates(Family.IPV4, attrs, keys)
    return b"".join(msgs) + encode_end_of_rib(Family.IPV4)


def _native_session() -> Any:
    from benchmarks.ingest import FEEDER_ADDR
    from speakers.native import codec
    from speakers.native.session import BgpSession, SessionConfig, State

    codec.clear_attribute_cache()  # cold, as on a table load
    config = SessionConfig(peer="feeder", local_as=LOCAL_AS, peer_as=FEEDER_AS, router_id=LOCAL_ADDR,
                           hold_time=180, families=(Family.IPV4,))  # fmt: skip
    session = BgpSession(config)
    session.start(0.0)
    session.connection_made(0.0)
    session.receive_data(codec.encode_open(FEEDER_AS, 180, FEEDER_ADDR, [Family.IPV4]), 0.0)
    session.receive_data(codec.encode_keepalive(), 0.0)
    assert session.state is State.ESTABLISHED
    session.data_to_send()
    session.take_events(1 << 30)  # PeerUp
    return session


def run_native_decode(data: bytes, chunks: list[bytes], workdir: Path) -> int:
    from speakers.native import codec

    codec.clear_attribute_cache()
    buf = bytearray()
    n = 0
    for chunk in chunks:
        buf += chunk
        for mtype, body in codec.split_messages(buf):
            if mtype == codec.MSG_UPDATE:
                fast = codec.decode_plain_update(body)
                if fast is not None:
                    n += len(fast[1])
                else:
                    n += sum(len(fu.announce) for fu in codec.decode_update(body).families)
    return n


def run_native_session(data: bytes, chunks: list[bytes], workdir: Path) -> int:
    session = _native_session()
    n = 0
    for chunk in chunks:
        session.receive_data(chunk, 0.0)
        for ev in session.take_events(1 << 30):
            n += len(getattr(ev, "announce", ()))
    return n


def run_native_sync(data: bytes, chunks: list[bytes], workdir: Path) -> int:
    from benchmarks.ingest import FEEDER_ADDR
    from orchestrator.rib.table import DISCARD
    from speakers.events import PeerUp
    from speakers.native.speaker import EMIT_BATCH

    daemon = make_daemon(workdir)
    apply = daemon._apply
    apply(PeerUp("feeder", FEEDER_AS, FEEDER_ADDR, (Family.IPV4,)), DISCARD)
    session = _native_session()
    backlog = daemon._backlog
    for chunk in chunks:
        session.receive_data(chunk, 0.0)
        while session.pending_events:
            backlog.extend(session.take_events(EMIT_BATCH))  # one queue item, as the speaker emits
            while backlog:
                daemon._apply_slice(DISCARD)  # _rib_loop's slices, without the loop
    paths: int = daemon.rib.counts()["families"]["ipv4"]["paths"]
    return paths


def timed(fn: Callable[[bytes, list[bytes], Path], int], *args: Any, repeat: int) -> tuple[int, float]:
    best = float("inf")
    n = 0
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        gc.freeze()
        t0 = time.process_time()
        n = fn(*args)
        best = min(best, time.process_time() - t0)
        gc.unfreeze()
        gc.enable()
        gc.collect()
    return n, best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefixes", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=16384, help="bytes per relay read (default 16384)")
    ap.add_argument("--gap-ms", type=float, default=0.5, help="pause between relay writes (asyncio case)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--mode",
        choices=("fds", "copy"),
        default="fds",
        help="asyncio case: read the pipe passed by the relay (default) or the relay's socket",
    )
    ap.add_argument("--only", default="decode,session,sync,asyncio")
    ap.add_argument("--recapture", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile the sync path (top 25 by tottime)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--speaker", choices=("exabgp", "native"), default="exabgp")
    ap.add_argument("--updates", metavar="FILE", help="--speaker native: an MRT update file's stream")
    args = ap.parse_args(argv)
    from orchestrator.log import configure_logging

    configure_logging("warning", json=True)
    native = args.speaker == "native"
    path = OUT / (f"{args.speaker}-{args.prefixes}-{args.seed}" + (".bgp" if native else ".jsonl"))
    if native:
        data = updates_stream(args.updates) if args.updates else native_stream(args.prefixes, args.seed)
    else:
        if args.recapture or not path.exists():
            print(f"capturing {path} ...", file=sys.stderr)
            capture(path, args.prefixes, args.seed)
        data = path.read_bytes()
    chunks = chunks_of(data, args.chunk)
    lines = data.count(b"\n")
    workdir = Path(tempfile.mkdtemp(prefix="peerctl-ingest-path-"))
    results: dict[str, Any] = {"stream": str(path), "bytes": len(data), "lines": lines, "chunk": args.chunk}
    if native:
        stream = args.updates or "native feeder UPDATEs (in memory)"
        results = {"stream": stream, "bytes": len(data), "chunk": args.chunk}
    try:
        if args.profile:
            prof = cProfile.Profile()
            gc.disable()
            prof.runcall(run_native_sync if native else run_sync, data, chunks, workdir)
            gc.enable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return 0
        only = {s.strip() for s in args.only.split(",")}
        cases: dict[str, Callable[[bytes, list[bytes], Path], int]] = {
            "decode": run_native_decode if native else run_decode,
            "session": run_native_session if native else run_session,
            "sync": run_native_sync if native else run_sync,
        }
        prefixes = 0
        for name, fn in cases.items():
            if name in only:
                prefixes, cpu = timed(fn, data, chunks, workdir, repeat=args.repeat)
                results[name] = {"prefixes": prefixes, "cpu_s": cpu, "us_per_prefix": cpu / prefixes * 1e6}
        if "asyncio" in only and not native:
            best = float("inf")
            for _ in range(args.repeat):
                gc.collect()
                gc.disable()
                gc.freeze()
                prefixes, cpu = asyncio.run(_run_asyncio(path, args.chunk, args.gap_ms, workdir, args.mode))
                gc.unfreeze()
                gc.enable()
                best = min(best, cpu)
            results["asyncio"] = {"prefixes": prefixes, "cpu_s": best, "us_per_prefix": best / prefixes * 1e6}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"stream: {results['stream']}, {len(data):,} bytes, read chunk {args.chunk:,} B")
        for name in ("decode", "session", "sync", "asyncio"):
            if name in results:
                r = results[name]
                print(
                    f"  {name:8} {r['us_per_prefix']:6.2f} µs/prefix  "
                    f"({r['cpu_s']:.3f} CPU-s, {r['prefixes']:,} prefixes)"
                )
    return 0


__all__ = ["FEEDER_AS", "capture", "main", "proc_cpu_s"]

if __name__ == "__main__":
    sys.exit(main())
