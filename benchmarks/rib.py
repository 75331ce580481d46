"""RIB full-table benchmark: memory per path and ingest speed, one peer and several overlapping peers.

    python -m benchmarks.rib --prefixes 1000000 --peers 1 --json
    python -m benchmarks.rib --prefixes 1000000 --peers 4 --json

The table is synthetic but shaped like a real IPv4 table (seeded, reproducible): the prefix-length
mix of the PCH full table in DESIGN.md (mostly /24, then /22-/23 and /16-/21), prefixes clustered in
the same /16s as announced space is, ~7 prefixes per attribute set, AS paths of 1-10 hops,
0-6 communities, some MEDs. Every peer announces every prefix with its own attribute sets (its own
AS first, path lengths varying per peer), in UPDATE-sized batches (one attribute set per
``Rib.update`` call, at most 64 prefixes), as a speaker delivers them.

Memory is what tracemalloc sees retained after the load, with UPDATEs (and their fresh Attributes,
tuples and ints, as a decoder would build them) generated inside the traced region, so everything
the RIB keeps is counted. Speed runs feed pre-built UPDATEs without tracemalloc and report the
median of ``--runs``; ``gc`` is disabled during loads (``bulk_load``) as the daemon does.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from array import array
from collections.abc import Iterator

from orchestrator.rib.attrs import AS_SEQUENCE, Attributes, Origin
from orchestrator.rib.decide import DecisionOptions
from orchestrator.rib.prefix import Family, key_from_parts
from orchestrator.rib.table import PeerInfo, Rib, bulk_load

# Prefix-length share of a real IPv4 table (PCH 2015, 578k prefixes; /24 ~54%).
LENGTH_MIX = {24: 0.54, 22: 0.11, 23: 0.094, 21: 0.068, 20: 0.064, 19: 0.044, 18: 0.022, 16: 0.023,
              17: 0.013, 15: 0.003, 14: 0.002, 13: 0.001, 12: 0.001, 25: 0.001, 28: 0.001,
              30: 0.003, 32: 0.0063}  # fmt: skip
LOCAL_AS = 65000

Batch = tuple[
    int, "array[int]", "array[int]", int | None, int, "array[int]"
]  # (set id, as tail, comms, med, origin, keys)


def generate_prefixes(count: int, rng: random.Random) -> list[int]:
    """``count`` distinct IPv4 prefix keys, clustered in /16 blocks like a real table."""
    total = sum(LENGTH_MIX.values())
    blocks = [(a << 8) | b for a in range(1, 224) if a not in (10, 127) for b in range(256)]
    keys: set[int] = set()
    for length, share in LENGTH_MIX.items():
        want = round(count * share / total)
        made = 0
        while made < want:
            if length >= 16:
                per_block = 1 << (length - 16)
                block = rng.choice(blocks)
                take = min(per_block, want - made, max(1, int(rng.expovariate(1 / 12))))
                subs = rng.sample(range(per_block), take) if take < per_block else range(per_block)
                for s in subs:
                    net = (block << 16) | (s << (32 - length))
                    key = key_from_parts(net, length, Family.IPV4)
                    if key not in keys:
                        keys.add(key)
                        made += 1
            else:
                net = rng.getrandbits(32) & ~((1 << (32 - length)) - 1)
                key = key_from_parts(net, length, Family.IPV4)
                if key not in keys:
                    keys.add(key)
                    made += 1
    out = sorted(keys)[:count]
    rng.shuffle(out)
    return out


def generate_batches(count: int, seed: int) -> list[Batch]:
    """Attribute sets (~7 prefixes each) and their prefixes, split into UPDATE-sized batches."""
    rng = random.Random(seed)
    keys = generate_prefixes(count, rng)
    asns = [rng.randrange(1000, 400_000) for _ in range(20_000)]
    comm_pool = [(rng.choice(asns[:200]) & 0xFFFF) << 16 | rng.randrange(1, 1000) for _ in range(3000)]
    batches: list[Batch] = []
    i = 0
    set_id = 0
    while i < len(keys):
        size = min(len(keys) - i, 1 + int(rng.expovariate(1 / 6)))
        hops = min(10, max(1, round(rng.gauss(4, 1.6))))
        tail = array("I", (rng.choice(asns) for _ in range(hops - 1)))
        comms = array("I", sorted(rng.sample(comm_pool, rng.choice((0, 0, 1, 2, 3, 4, 6)))))
        med = rng.choice((None, None, None, 0, 10, 100, 2000))
        origin = rng.choice((0, 0, 0, 0, 2))
        for start in range(i, i + size, 64):
            chunk = array("Q", keys[start : min(i + size, start + 64)])
            batches.append((set_id, tail, comms, med, origin, chunk))
        i += size
        set_id += 1
    return batches


def peer_infos(peers: int) -> list[PeerInfo]:
    return [
        PeerInfo(
            name=f"peer{n}",
            peer_as=64600 + n,
            address=f"192.0.2.{n + 1}",
            local_as=LOCAL_AS,
            router_id=f"10.0.0.{n + 1}",
        )
        for n in range(peers)
    ]


def updates(batches: list[Batch], info: PeerInfo, n: int) -> Iterator[tuple[Attributes, array[int]]]:
    """One peer's UPDATEs; fresh objects each time, as a decoder builds them."""
    for set_id, tail, comms, med, origin, chunk in batches:
        extra = (set_id * 7 + n * 13) % 5 == 0  # peers differ: some paths one hop longer
        path = (info.peer_as, *tail) if not extra else (info.peer_as, info.peer_as, *tail)
        attrs = Attributes(
            next_hop="".join(info.address),
            origin=Origin(origin),
            as_path=((AS_SEQUENCE, tuple(array("I", path))),),
            med=med,
            communities=tuple(comms),
        )
        yield attrs, chunk


def load(rib: Rib, batches: list[Batch], infos: list[PeerInfo], prebuilt: bool) -> float:
    """Feed every peer's table; return the seconds spent in ``Rib.update``."""
    family = Family.IPV4
    spent = 0.0
    changes: list[object] = []
    for n, info in enumerate(infos):
        rib.peer_up(info.name, info.router_id)
        stream = list(updates(batches, info, n)) if prebuilt else updates(batches, info, n)
        update = rib.update
        name = info.name
        start = time.perf_counter()
        with bulk_load():
            for attrs, chunk in stream:
                update(name, family, attrs, chunk, (), changes)  # type: ignore[arg-type]
                changes.clear()
        spent += time.perf_counter() - start
    return spent


def new_rib(infos: list[PeerInfo]) -> Rib:
    rib = Rib(DecisionOptions())
    for info in infos:
        rib.add_peer(info)
    return rib


def measure_memory(batches: list[Batch], infos: list[PeerInfo]) -> int:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    rib = new_rib(infos)
    load(rib, batches, infos, prebuilt=False)
    rib.sweep()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del rib
    return used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, default=1_000_000)
    parser.add_argument("--peers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    batches = generate_batches(args.prefixes, args.seed)
    infos = peer_infos(args.peers)
    prefixes = len({k for b in batches for k in b[5]})
    paths = prefixes * args.peers

    times = []
    down = []
    for _ in range(args.runs):
        rib = new_rib(infos)
        times.append(load(rib, batches, infos, prebuilt=True))
        assert rib.counts()["families"]["ipv4"] == {"prefixes": prefixes, "paths": paths}
        with bulk_load():
            start = time.perf_counter()
            rib.peer_down(infos[0].name)
            down.append(time.perf_counter() - start)
        del rib
        gc.collect()
    seconds = statistics.median(times)
    used = measure_memory(batches, infos)
    result = {
        "benchmark": "rib",
        "prefixes": prefixes,
        "peers": args.peers,
        "paths": paths,
        "updates_per_peer": len(batches),
        "seconds": round(seconds, 3),
        "paths_per_s": round(paths / seconds),
        "us_per_path": round(seconds / paths * 1e6, 3),
        "peer_down_s": round(statistics.median(down), 3),
        "bytes_per_path": round(used / paths, 1),
        "bytes_total": used,
        "runs": args.runs,
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>18}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
