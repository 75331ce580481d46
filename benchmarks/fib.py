"""Kernel FIB benchmark: peerctl's writer vs the precompiled-netlink ceiling vs ``ip -batch``.

    python -m benchmarks.fib [--routes4 N] [--routes6 N] [--runs R] [--json]

Everything runs in network namespaces created here (``pbench-<random>``, one per method and run,
deleted at the end); the host's tables are never touched. Each method installs the same routes
(IPv4 /24s, IPv6 /48s, ascending as a BGP feed delivers them) into table 20000 with proto 201 and a
preferred source, then moves them all to another upstream (failover) and withdraws them all.

* ceiling: RTM_NEWROUTE messages encoded *before* the clock starts, thousands per ``send``, no ACK,
  a fence per batch (DESIGN.md's ceiling; gateway routes). Withdraw: precompiled RTM_DELROUTE,
  descending. Failover: precompiled replace of every route.
* ip -batch: ``ip -n NS -batch FILE`` (route add / route replace / route del, descending).
* peerctl: ``FibWriter.submit`` per prefix, then ``flush()`` (fold, encode, write, errors by seq).
  Failover: ``peer_down(a, fallback=b)`` (one nexthop replace per family; "settled" adds the RIB's
  per-prefix follow-up). Withdraw-all: ``peer_down(b)`` (nexthop delete), and per-prefix withdrawals.

CPU is process CPU (user + system, which includes the kernel's work done in our syscalls; children
for ``ip``). Medians over runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from orchestrator.config import FibConfig, FibMode, LocalConfig
from orchestrator.fib import netlink as nl
from orchestrator.fib.writer import FibWriter
from orchestrator.rib.prefix import Family, format_prefix, key_from_parts

TABLE, PROTO = 20000, 201
LOCAL = LocalConfig(asn=64500, router_id="192.0.2.1", source4="192.0.2.1", source6="2001:db8::1")
GW = {Family.IPV4: ("192.0.2.2", "192.0.2.3"), Family.IPV6: ("2001:db8::2", "2001:db8::3")}


class _Quiet:
    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def make_keys(n4: int, n6: int) -> dict[Family, list[int]]:
    v4 = [key_from_parts((1 << 24) + (i << 8), 24, Family.IPV4) for i in range(n4)]  # 1.0.0.0/24 upward
    v6 = [key_from_parts((0x2A00 << 112) + (i << 80), 48, Family.IPV6) for i in range(n6)]
    return {Family.IPV4: v4, Family.IPV6: v6}


def netns_up() -> str:
    ns = f"pbench-{secrets.token_hex(3)}"
    for cmd in (["netns", "add", ns], ["-n", ns, "link", "add", "pb0", "type", "veth", "peer", "name", "pb1"],
                ["-n", ns, "link", "set", "pb0", "up"], ["-n", ns, "link", "set", "pb1", "up"],
                ["-n", ns, "addr", "add", "192.0.2.1/24", "dev", "pb0"],
                ["-n", ns, "addr", "add", "2001:db8::1/64", "dev", "pb0", "nodad"]):
        subprocess.run(["ip", *cmd], check=True)
    return ns


def netns_down(ns: str) -> None:
    subprocess.run(["ip", "netns", "del", ns], check=False)
    time.sleep(1.0)  # let the kernel's namespace cleanup finish before the next measurement


def count_routes(ns: str) -> int:
    chan = nl.Channel(ns)
    try:
        return sum(len(nl.dump_routes(chan, nl.RouteCodec(f, TABLE, PROTO, 0, None))) for f in Family)
    finally:
        chan.close()


class Clock:
    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.cpu = time.process_time()
        self.child = resource.getrusage(resource.RUSAGE_CHILDREN)

    def stop(self) -> tuple[float, float]:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        child = (ch.ru_utime - self.child.ru_utime) + (ch.ru_stime - self.child.ru_stime)
        return time.perf_counter() - self.t, time.process_time() - self.cpu + child


# --- ceiling ----------------------------------------------------------------------------------------


def run_ceiling(keys: dict[Family, list[int]], batch: int) -> dict[str, float]:
    import socket

    ns = netns_up()
    out: dict[str, float] = {}
    try:
        chan = nl.Channel(ns)
        codecs = {f: nl.RouteCodec(f, TABLE, PROTO, 0, s) for f, s in ((Family.IPV4, LOCAL.source4),
                                                                        (Family.IPV6, LOCAL.source6))}
        af = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}

        def precompile(gw_index: int, replace: bool) -> list[bytes]:
            bufs = []
            for fam, ks in keys.items():
                gw = socket.inet_pton(af[fam], GW[fam][gw_index])
                installed: dict[int, int] = nl._ALWAYS if replace else {}
                for s in range(0, len(ks), batch):
                    chunk = [(k, gw) for k in ks[s : s + batch]]
                    bufs.append(bytes(codecs[fam].encode_gw(chunk, installed, chan.next_seq(len(chunk)))))
            return bufs

        def send_all(bufs: list[bytes]) -> int:
            return sum(len(chan.transact(b)) for b in bufs)

        adds, repl = precompile(0, False), precompile(1, True)
        dels = []
        for fam, ks in keys.items():
            desc = sorted(ks, reverse=True)
            for s in range(0, len(desc), batch):
                dels.append(bytes(codecs[fam].encode_del(desc[s : s + batch], chan.next_seq(batch))))
        c = Clock()
        errors = send_all(adds)
        out["install_s"], out["install_cpu_s"] = c.stop()
        assert errors == 0, errors
        c = Clock()
        send_all(repl)
        out["failover_s"], out["failover_cpu_s"] = c.stop()
        c = Clock()
        send_all(dels)
        out["withdraw_s"], out["withdraw_cpu_s"] = c.stop()
        chan.close()
    finally:
        netns_down(ns)
    return out


# --- ip -batch --------------------------------------------------------------------------------------


def run_ip_batch(keys: dict[Family, list[int]]) -> dict[str, float]:
    ns = netns_up()
    out: dict[str, float] = {}
    src = {Family.IPV4: LOCAL.source4, Family.IPV6: LOCAL.source6}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            def write(name: str, verb: str, gw_index: int, order: Callable[[list[int]], list[int]]) -> str:
                path = os.path.join(tmp, name)
                with open(path, "w") as f:
                    for fam, ks in keys.items():
                        tail = (f" via {GW[fam][gw_index]} src {src[fam]}" if verb != "del" else "")
                        for k in order(ks):
                            f.write(f"route {verb} {format_prefix(fam, k)}{tail} table {TABLE} "
                                    f"proto {PROTO}\n")
                return path

            files = {"add": write("add", "add", 0, list), "replace": write("replace", "replace", 1, list),
                     "del": write("del", "del", 0, lambda ks: sorted(ks, reverse=True))}
            for step, name in (("install", "add"), ("failover", "replace"), ("withdraw", "del")):
                c = Clock()
                subprocess.run(["ip", "-n", ns, "-batch", files[name]], check=True)
                out[f"{step}_s"], out[f"{step}_cpu_s"] = c.stop()
    finally:
        netns_down(ns)
    return out


# --- peerctl ----------------------------------------------------------------------------------------


def run_peerctl(keys: dict[Family, list[int]], batch: int) -> dict[str, float]:
    ns = netns_up()
    out: dict[str, float] = {}

    async def go() -> None:
        cfg = FibConfig(mode=FibMode.FULL, table=TABLE, protocol=PROTO, netns=ns)
        w = FibWriter(cfg, LOCAL, _Quiet(), batch=batch, reconcile_interval=0, stale_timeout=0)
        await w.start()
        # upstream b announces one prefix so its nexthop objects exist (a fallback is a live upstream)
        for fam in Family:
            w.submit(fam, _spare(fam), GW[fam][1], "b")
        await w.flush()
        c = Clock()
        for fam, ks in keys.items():
            gw = GW[fam][0]
            submit = w.submit
            for k in ks:
                submit(fam, k, gw, "a")
        await w.flush()
        out["install_s"], out["install_cpu_s"] = c.stop()
        assert w.status()["errors"] == 0, w.status()
        n_total = sum(len(k) for k in keys.values())
        assert w.status()["installed"]["ipv4"] + w.status()["installed"]["ipv6"] == n_total + 2
        c = Clock()
        await w.peer_down("a", fallback="b")
        out["failover_s"], out["failover_cpu_s"] = c.stop()
        c = Clock()
        for fam, ks in keys.items():  # the RIB's follow-up: every prefix now via b
            gw = GW[fam][1]
            for k in ks:
                w.submit(fam, k, gw, "b")
        await w.flush()
        out["failover_settled_s"], out["failover_settled_cpu_s"] = c.stop()
        c = Clock()
        await w.peer_down("b")
        out["withdraw_s"], out["withdraw_cpu_s"] = c.stop()
        assert w.status()["installed"] == {"ipv4": 0, "ipv6": 0}
        # withdraw-all again, per prefix (a RIB that withdraws every prefix): re-install first
        for fam, ks in keys.items():
            for k in ks:
                w.submit(fam, k, GW[fam][0], "a")
        await w.flush()
        c = Clock()
        for fam, ks in keys.items():
            for k in ks:
                w.submit(fam, k, None, None)
        await w.flush()
        out["withdraw_per_prefix_s"], out["withdraw_per_prefix_cpu_s"] = c.stop()
        await w.stop()

    try:
        asyncio.run(go())
        out["left_in_kernel"] = float(count_routes(ns))
    finally:
        netns_down(ns)
    return out


def _spare(fam: Family) -> int:
    if fam is Family.IPV4:
        return key_from_parts(0xC6336400, 24, fam)  # 198.51.100.0/24
    return key_from_parts(0x3FFF << 112, 16, fam)  # 3fff::/16


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routes4", type=int, default=1_000_000)
    ap.add_argument("--routes6", type=int, default=230_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--no-ip-batch", action="store_true", help="skip ip -batch (slowest by far)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.fib needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    keys = make_keys(args.routes4, args.routes6)
    methods: dict[str, Callable[[], dict[str, float]]] = {
        "ceiling": lambda: run_ceiling(keys, args.batch),
        "peerctl": lambda: run_peerctl(keys, args.batch),
    }
    if not args.no_ip_batch:
        methods["ip_batch"] = lambda: run_ip_batch(keys)
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    for _ in range(args.runs):
        for name, fn in methods.items():  # interleaved: same conditions for every method
            runs[name].append(fn())
    med: dict[str, dict[str, float]] = {
        m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
    n = args.routes4 + args.routes6
    ratios = {
        "install_vs_ceiling": med["peerctl"]["install_s"] / med["ceiling"]["install_s"],
    }
    if "ip_batch" in med:
        ratios["install_vs_ip_batch"] = med["peerctl"]["install_s"] / med["ip_batch"]["install_s"]
    verdict = {
        "install_within_1.3x_ceiling": ratios["install_vs_ceiling"] <= 1.3,
        "failover_le_0.5s": med["peerctl"]["failover_s"] <= 0.5,
        "withdraw_all_le_1s": med["peerctl"]["withdraw_s"] <= 1.0,
    }
    result: dict[str, Any] = {"routes4": args.routes4, "routes6": args.routes6, "runs": args.runs,
                              "median": med, "ratios": ratios, "targets": verdict, "all_runs": runs}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{n:,} routes ({args.routes4:,} IPv4 + {args.routes6:,} IPv6), median of {args.runs} run(s)")
    cols = ["install_s", "failover_s", "withdraw_s", "install_cpu_s"]
    print(f"{'method':<10}" + "".join(f"{c:>16}" for c in cols) + f"{'routes/s':>12}")
    for m, v in med.items():
        print(f"{m:<10}" + "".join(f"{v.get(c, float('nan')):>16.3f}" for c in cols)
              + f"{n / v['install_s']:>12,.0f}")
    p = med["peerctl"]
    print(f"peerctl failover settled (RIB follow-up rewritten): {p['failover_settled_s']:.3f} s; "
          f"withdraw-all per prefix: {p['withdraw_per_prefix_s']:.3f} s")
    print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    print("targets: " + ", ".join(f"{k} {'OK' if v else 'MISSED'}" for k, v in verdict.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
