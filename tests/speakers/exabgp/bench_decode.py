"""Decode cost per prefix (not a test): ``python tests/speakers/exabgp/bench_decode.py``.

Synthetic ExaBGP 5.0.15 update lines shaped like DESIGN.md's benchmark (attributes change every 4
prefixes, so nearly every UPDATE misses the attribute cache: the worst case) in compact and
non-compact form. CPU time (``process_time``), best of 5, with orjson.loads alone as the floor.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from speakers.exabgp.decode import Decoder

HEAD = (
    '{ "exabgp": "5.0.0", "time": 1795324097.12, "host" : "vm", "pid" : 6223, "ppid" : 1, "counter": %d, '
    '"type": "update", "neighbor": { "address": { "local": "127.0.50.1", "peer": "127.0.50.2" }, '
    '"asn": { "local": 65001, "peer": 65002 }, "router-id": "127.0.50.1" , "direction": "receive", '
    '"message": { "update": { "attribute": { "origin": "igp", "as-path": {"0": {"element": '
    '"as-sequence", "value": [65002, %d, %d]}}, "med": %d, "community": [ [ 65002, %d ], '
    '[ 65535, 65281 ] ] }, "announce": { "ipv4 unicast": { "192.0.2.2": [ %s ] } } } } } }'
)


def make(updates: int, per: int, compact: bool, distinct: int) -> tuple[list[bytes], int]:
    rnd = random.Random(1)
    lines, n = [], 0
    for i in range(updates):
        pfx = []
        for _ in range(per):
            n += 1
            p = f"{(n >> 16) + 20}.{(n >> 8) & 255}.{n & 255}.0/24"
            pfx.append(f'"{p}"' if compact else f'{{ "nlri": "{p}" }}')
        a = i % distinct
        lines.append((HEAD % (i + 1, 100 + a % 60000, rnd.randint(1, 65000) if distinct > updates // 2 else 7,
                              a % 7, a % 100, ", ".join(pfx))).encode())  # fmt: skip
    return lines, n


def bench(lines: list[bytes], n: int) -> tuple[float, float]:
    best = best_loads = 1e9
    for _ in range(5):
        d = Decoder("p")
        gc.disable()
        t = time.process_time()
        for line in lines:
            d.decode(line)
        best = min(best, time.process_time() - t)
        t = time.process_time()
        for line in lines:
            orjson.loads(line)
        best_loads = min(best_loads, time.process_time() - t)
        gc.enable()
    return best / n * 1e6, best_loads / n * 1e6


if __name__ == "__main__":
    for compact in (True, False):
        for per, distinct in ((4, 10**9), (4, 500), (1, 10**9)):
            lines, n = make(25_000, per, compact, distinct)
            us, floor = bench(lines, n)
            kind = "unique attrs" if distinct > 25_000 else f"{distinct} attr sets"
            print(f"compact={compact!s:5} {per} pfx/update {kind:13}: decode {us:5.2f} us/prefix "
                  f"(orjson.loads alone {floor:4.2f})")  # fmt: skip
