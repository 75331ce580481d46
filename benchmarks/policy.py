"""Import-chain cost per prefix on a generated full table and on a real one.

``python -m benchmarks.policy [--prefixes N] [--repeat N] [--real FILE | --no-real] [--json]``

Generates a seeded IPv4 table (default 1,000,000 prefixes, real length mix, ~7 prefixes per attribute
set, ~6.4 prefixes per UPDATE), an IRR list of 100k entries (a third with ``le``) and 500k VRPs
(~1% of routes RPKI-invalid), then runs the realistic upstream chain (bogons, prefix length, bogon
ASNs, local AS, AS-path length, first AS, next hop, RPKI, IRR, max-prefix, local-pref + communities)
UPDATE by UPDATE through ``ImportChain.evaluate_update``. Also times the same chain without IRR/RPKI,
an accept-all chain, and the reference ``Policy.evaluate`` per prefix, so the fast path's gain shows.

The generated table hands out its prefixes in random order (each UPDATE's keys are unrelated), the
worst case for the IRR/RPKI lookups. A real peer sends its table clustered: the PCH full-table
UPDATE file (``--real``, one peer, 577k IPv4 prefixes in 89.7k UPDATEs with 89.6k distinct
attribute sets and 76.8k distinct AS paths) has 72% of consecutive prefixes of an UPDATE in the same
/16. So the same chains also run over that file's UPDATEs, as sent (IRR list and VRPs generated from
its prefixes and origins the same way). The collector peer relays paths of many IXP members, so on
that table the first-AS and next-hop rules are off (they would reject everything).
Times are CPU seconds, median of ``--repeat`` (2 cores shared with other benchmarks).
The chains use the C accelerators of ``policies/_match.c`` when they are built (the report says which);
``PEERCTL_PURE=1`` measures the pure-Python path.
The target (issue 4): the chain adds <= 20% to peerctl's own per-prefix ingest CPU (4.5 µs per prefix
on the default ExaBGP path, benchmarks/ingest, RESULTS.md "Ingest (ExaBGP)"), i.e. <= 0.90 µs per prefix.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.config import PeerKind
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, key_from_parts, key_length
from policies import accel
from policies.model import Direction, ImportChain, PeerContext, Policy, Route, Statement, Verdict
from policies.prefixset import PrefixEntry, PrefixList
from policies.rpki import Vrp, VrpTable
from policies.rules import ImportRules, build_import_chain

# Share of IPv4 prefixes by length in a 2020s table (rough, sums to ~1).
LENGTH_MIX = {24: 0.60, 23: 0.08, 22: 0.12, 21: 0.04, 20: 0.04, 19: 0.03, 18: 0.02, 17: 0.015,
              16: 0.035, 15: 0.005, 14: 0.004, 13: 0.003, 12: 0.002, 11: 0.001, 10: 0.001, 25: 0.004}

# 20% of 4.5 µs/prefix, peerctl's own CPU on the default (ExaBGP) path: 0.90 CPU-s per 200k prefixes
# from `python -m benchmarks.ingest --systems exabgp-alone,peerctl-exabgp --prefixes 200000 --runs 3`
# (2026-11-27).
BUDGET_US = 0.90
PEER_AS = 3356
LOCAL_AS = 65001
NEIGHBOR = "198.18.0.1"
REAL = (Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "mrt" / "updates"
        / "pch.route-collector.summary.updates.2015-10-23-0201.fulltable.et.gz")


def gen_table(n: int, seed: int) -> list[tuple[Attributes, list[int]]]:
    """UPDATE-shaped groups: (attrs, keys). Prefixes are unique, from 1.0.0.0-223.255.255.255."""
    rng = random.Random(seed)
    lengths = list(LENGTH_MIX)
    weights = list(LENGTH_MIX.values())
    seen: set[int] = set()
    keys: list[int] = []
    while len(keys) < n:
        length = rng.choices(lengths, weights)[0]
        first = rng.randrange(1, 224)
        if first in (10, 127):
            continue
        addr = (first << 24) | rng.getrandbits(24)
        key = key_from_parts(addr, length, Family.IPV4)
        if key not in seen:
            seen.add(key)
            keys.append(key)
    n_sets = max(1, n // 7)
    sets = []
    for _ in range(n_sets):
        plen = rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5, 6))
        path = (PEER_AS, *(rng.randrange(1000, 64000) for _ in range(plen)))
        comms = tuple(sorted((PEER_AS << 16) | rng.randrange(65536) for _ in range(rng.randrange(4))))
        sets.append(Attributes(next_hop=NEIGHBOR, as_path=((AS_SEQUENCE, path),), communities=comms))
    updates: list[tuple[Attributes, list[int]]] = []
    i = 0
    while i < n:
        size = max(1, min(int(rng.expovariate(1 / 6.4)) + 1, 200))
        updates.append((rng.choice(sets), keys[i:i + size]))
        i += size
    return updates


def gen_irr(updates: list[tuple[Attributes, list[int]]], n: int, seed: int) -> PrefixList:
    rng = random.Random(seed + 1)
    all_keys = [k for _, ks in updates for k in ks]
    entries = []
    for key in rng.sample(all_keys, min(n, len(all_keys))):
        length = key_length(key)
        le = min(24, length + rng.choice((0, 0, 1, 2))) if length <= 24 else length
        entries.append(PrefixEntry(Family.IPV4, key, length, max(le, length)))
    return PrefixList(entries)


def gen_vrps(updates: list[tuple[Attributes, list[int]]], n: int, seed: int) -> VrpTable:
    rng = random.Random(seed + 2)
    pairs = [(k, a.origin_as or 0) for a, ks in updates for k in ks]
    vrps = []
    for key, origin in rng.sample(pairs, min(n, len(pairs))):
        length = key_length(key)
        asn = origin if rng.random() > 0.02 else origin + 1  # ~1% of routes end up invalid
        vrps.append(Vrp(Family.IPV4, key, min(32, length + rng.choice((0, 0, 0, 2))), asn))
    return VrpTable(vrps)


def read_real(path: Path) -> tuple[list[tuple[Attributes, list[int]]], int, str]:
    """IPv4 announcements of the file's first peer, UPDATE by UPDATE as sent: (updates, peer AS, peer IP)."""
    from orchestrator.collector.mrt import Bgp4mpUpdate, MrtReader

    updates: list[tuple[Attributes, list[int]]] = []
    peer: tuple[str, int] | None = None
    for rec in MrtReader(path):
        if type(rec) is not Bgp4mpUpdate:
            continue
        assert isinstance(rec, Bgp4mpUpdate)
        if peer is None:
            peer = (rec.peer_ip, rec.peer_as)
        if (rec.peer_ip, rec.peer_as) != peer:
            continue
        keys = rec.announce.get(Family.IPV4)
        attrs = rec.attrs_for(Family.IPV4)
        if keys and attrs is not None:
            updates.append((attrs, list(keys)))
    if peer is None:
        raise ValueError(f"{path}: no BGP4MP UPDATE")
    return updates, peer[1], peer[0]


def run(chain: ImportChain, ctx: PeerContext,
        updates: list[tuple[Attributes, list[int]]]) -> tuple[float, int]:
    gc.disable()
    try:
        accepted = 0
        count = 0
        t0 = time.process_time()  # CPU time: the 2 cores are shared with other benchmarks
        for attrs, keys in updates:
            res = chain.evaluate_update(ctx, Family.IPV4, attrs, keys, count)
            for _, ks in res.accepted:
                accepted += len(ks)
            count = accepted
        return time.process_time() - t0, accepted
    finally:
        gc.enable()


def run_reference(chain: ImportChain, ctx: PeerContext, updates: list[tuple[Attributes, list[int]]],
                  limit: int) -> tuple[float, int]:
    gc.disable()
    try:
        n = 0
        t0 = time.process_time()
        for attrs, keys in updates:
            for k in keys:
                chain.policy.evaluate(Route(Family.IPV4, k, attrs), ctx)
                n += 1
            if n >= limit:
                break
        return time.process_time() - t0, n
    finally:
        gc.enable()


def measure(updates: list[tuple[Attributes, list[int]]], ctx: PeerContext, rules: ImportRules,
            irr: PrefixList, vrps: VrpTable, repeat: int) -> dict[str, Any]:
    """The three chains over ``updates``: median CPU of ``repeat`` runs, each with a cold program
    cache as a fresh session would have, and the reference evaluator on up to 100k prefixes."""
    n = sum(len(k) for _, k in updates)
    full = build_import_chain(rules, ctx, irr=irr, vrps=vrps)
    basic = build_import_chain(rules, ctx)
    accept_all = ImportChain(Policy("all", Direction.IMPORT, Verdict.REJECT,
                                    (Statement("accept", (), (), Verdict.ACCEPT),)))
    results: dict[str, Any] = {"prefixes": n, "updates": len(updates),
                               "attr_sets": len({id(a) for a, _ in updates}),
                               "irr_entries": len(irr), "vrps": len(vrps)}
    chains = (("accept_all", accept_all), ("basic", basic), ("full", full))
    times: dict[str, list[float]] = {name: [] for name, _ in chains}
    accepted: dict[str, int] = {}
    for _ in range(repeat):  # interleaved: a burst of load from others hits every chain alike
        for name, chain in chains:
            chain._cache.clear()
            secs, accepted[name] = run(chain, ctx, updates)
            times[name].append(secs)
    for name, _ in chains:
        secs = statistics.median(times[name])
        results[name] = {"cpu_seconds": round(secs, 3), "us_per_prefix": round(secs / n * 1e6, 3),
                         "min_us_per_prefix": round(min(times[name]) / n * 1e6, 3),
                         "prefixes_per_s": round(n / secs), "accepted": accepted[name]}
    secs, done = run_reference(full, ctx, updates, min(n, 100_000))
    results["reference_per_prefix"] = {"us_per_prefix": round(secs / done * 1e6, 3), "sampled": done}
    return results


def report(title: str, r: dict[str, Any]) -> None:
    print(f"{title}: {r['prefixes']:,} prefixes in {r['updates']:,} UPDATEs, {r['attr_sets']:,} attribute "
          f"sets; IRR {r['irr_entries']:,} entries, {r['vrps']:,} VRPs")
    for name in ("accept_all", "basic", "full"):
        c = r[name]
        print(f"  {name:<11} {c['us_per_prefix']:6.3f} µs/prefix (min {c['min_us_per_prefix']:.3f})"
              f"  {c['prefixes_per_s']:>10,} prefixes/s  accepted {c['accepted']:,}")
    ref = r["reference_per_prefix"]
    print(f"  reference   {ref['us_per_prefix']:6.3f} µs/prefix (Policy.evaluate per prefix, "
          f"{ref['sampled']:,} sampled)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--prefixes", type=int, default=1_000_000)
    ap.add_argument("--irr", type=int, default=100_000)
    ap.add_argument("--vrps", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--real", type=Path, default=REAL, help="MRT UPDATE file of a full table (one peer)")
    ap.add_argument("--no-real", action="store_true", help="only the generated table")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    results: dict[str, Any] = {"budget_us_per_prefix": BUDGET_US, "accelerated": accel.MODULE is not None}
    updates = gen_table(args.prefixes, args.seed)
    ctx = PeerContext.for_kind("upstream", PeerKind.UPSTREAM, PEER_AS, LOCAL_AS, NEIGHBOR)
    rules = ImportRules.for_kind(PeerKind.UPSTREAM, max_path_length=50)
    results["generated"] = measure(updates, ctx, rules, gen_irr(updates, args.irr, args.seed),
                                   gen_vrps(updates, args.vrps, args.seed), args.repeat)
    if not args.no_real:
        real, peer_as, peer_ip = read_real(args.real)
        ctx = PeerContext.for_kind("real", PeerKind.UPSTREAM, peer_as, LOCAL_AS, peer_ip)
        rules = ImportRules.for_kind(PeerKind.UPSTREAM, max_path_length=50, first_as=False, next_hop=False)
        results["real"] = measure(real, ctx, rules, gen_irr(real, args.irr, args.seed),
                                  gen_vrps(real, args.vrps, args.seed), args.repeat)
        results["real"]["file"] = args.real.name
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        report("generated table, random prefix order", results["generated"])
        if "real" in results:
            report(f"real table as sent ({results['real']['file']})", results["real"])
        print(f"  target      {BUDGET_US:6.3f} µs/prefix (20% of 4.5 µs ingest)")
        path = "C accelerators (policies._match)" if results["accelerated"] else "pure Python"
        print(f"  path        {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
