"""peerctl's decision process against BIRD 2's on the same two feeds, prefix by prefix.

Feeders A (iBGP, our own AS: its LOCAL_PREF is carried) and B (eBGP) announce overlapping prefixes
whose attributes their export filters set per class (``CLASSES``), so that each class is decided at a
known step of RFC 4271 9.1.2.2. A third BIRD, the judge, peers with both exactly as peerctl does
(iBGP to A, eBGP to B, default LOCAL_PREF 100 for eBGP), and peerctl (two ExaBGP peers) receives the
same feeds. For every prefix, peerctl's best (peer and next hop) must be the judge's primary route;
for the designed classes, peerctl's ``Reason`` must be the designed step.

Between A (iBGP) and B (eBGP) the steps after d) (eBGP over iBGP) are never reached, so two more
eBGP feeders share a few prefixes with B only: C has a lower BGP identifier than B (step f), D the
same identifier as B and a higher address (step g). Every prefix has at most two paths, so BIRD's
pairwise comparison (``deterministic med`` off) equals peerctl's set elimination. BIRD defaults match
peerctl's: ``med metric off`` (MED only within a neighbor AS), missing MED = 0 (``default bgp_med
0``), ``prefer older off``; the judge cannot resolve any next hop, so its resolvability and IGP
metric steps tie.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path

import pytest

from orchestrator.log import configure_logging
from orchestrator.rib.decide import Reason
from orchestrator.rib.prefix import Family, format_prefix

from .bird import (
    Bird,
    api_get,
    bgp_protocol,
    daemon_toml,
    free_port,
    judge_best,
    peer_toml,
    running_daemon,
    static_blackholes,
    wait_until,
    wait_until_blocking,
)

pytestmark = pytest.mark.interop

OUR_AS, B_AS = 65080, 65081
A_ADDR, B_ADDR, JUDGE_ADDR, PEERCTL_ADDR = "127.0.80.1", "127.0.80.2", "127.0.80.3", "127.0.80.4"
NH = {"feed_a": ("192.0.2.1", "2001:db8:ffff::1"), "feed_b": ("192.0.2.2", "2001:db8:ffff::2")}
V4_PER_CLASS, V6_PER_CLASS = 16, 4
ONLY = 20  # prefixes announced by one feeder only, per feeder


@dataclass(frozen=True)
class Side:
    """What one feeder's export filter sets for a class (None: leave BIRD's default)."""

    local_pref: int | None = None  # iBGP only (A); BIRD sends 100 by default on iBGP
    prepend: tuple[int, ...] = ()
    origin: str | None = None  # ORIGIN_IGP / ORIGIN_EGP / ORIGIN_INCOMPLETE
    med: int | None = None

    def statements(self) -> str:
        out = []
        if self.local_pref is not None:
            out.append(f"bgp_local_pref = {self.local_pref};")
        for asn in reversed(self.prepend):  # prepend() puts each in front: reverse keeps the order
            out.append(f"bgp_path.prepend({asn});")
        if self.origin is not None:
            out.append(f"bgp_origin = {self.origin};")
        if self.med is not None:
            out.append(f"bgp_med = {self.med};")
        return " ".join(out)


@dataclass(frozen=True)
class Class:
    name: str
    a: Side
    b: Side
    winner: str  # feed_a | feed_b
    reason: Reason
    v4: list[str] = field(default_factory=list)
    v6: list[str] = field(default_factory=list)


# A's AS path is only what it prepends (iBGP, our AS is not added); B's starts with 65081.
CLASSES = [
    Class("lp-a", Side(local_pref=200, prepend=(64601, 64602, 64603)), Side(), "feed_a", Reason.LOCAL_PREF),
    Class("lp-b", Side(local_pref=50), Side(), "feed_b", Reason.LOCAL_PREF),
    Class("lp-equal-path-a", Side(local_pref=100), Side(prepend=(65081,)), "feed_a", Reason.AS_PATH),
    Class("path-b", Side(prepend=(64601, 64602)), Side(), "feed_b", Reason.AS_PATH),
    Class("origin-a", Side(prepend=(64601,)), Side(origin="ORIGIN_INCOMPLETE"), "feed_a", Reason.ORIGIN),
    Class("origin-b", Side(prepend=(64601,), origin="ORIGIN_EGP"), Side(), "feed_b", Reason.ORIGIN),
    Class(
        "origin-over-med", Side(prepend=(B_AS,), med=100), Side(origin="ORIGIN_EGP", med=0),
        "feed_a", Reason.ORIGIN,
    ),
    # MED inside one neighbor AS: A's path starts with B's AS
    Class("med-same-as-a", Side(prepend=(B_AS,), med=10), Side(med=20), "feed_a", Reason.MED),
    Class("med-same-as-b", Side(prepend=(B_AS,), med=30), Side(med=20), "feed_b", Reason.MED),
    Class("med-missing-is-0", Side(prepend=(B_AS,), med=5), Side(), "feed_b", Reason.MED),
    Class("med-missing-vs-0", Side(prepend=(B_AS,)), Side(med=1), "feed_a", Reason.MED),
    # same neighbor AS, equal MED: eBGP over iBGP
    Class("med-equal", Side(prepend=(B_AS,), med=20), Side(med=20), "feed_b", Reason.EBGP_OVER_IBGP),
    # different neighbor AS: MED (lower on A) not compared, eBGP over iBGP decides
    Class("med-other-as", Side(prepend=(64601,), med=0), Side(med=50), "feed_b", Reason.EBGP_OVER_IBGP),
    Class("med-a-no-path", Side(med=0), Side(med=50), "feed_a", Reason.AS_PATH),
    Class(
        "all-equal-but-origin-egp", Side(prepend=(64601, 64602), origin="ORIGIN_EGP"),
        Side(prepend=(65081,), origin="ORIGIN_EGP", med=7), "feed_b", Reason.EBGP_OVER_IBGP,
    ),
]  # fmt: skip


def _prefixes() -> tuple[list[str], list[str], list[str], list[str]]:
    """Fill each class's prefixes; return the A-only and B-only (v4, v6) lists flattened."""
    for k, c in enumerate(CLASSES, start=1):
        # class k: 198.18.(16k .. 16k+15).0/24 and 2001:db8:kk00::/40 split into /48s
        c.v4[:] = [f"198.{18 + (16 * k) // 256}.{(16 * k) % 256 + i}.0/24" for i in range(V4_PER_CLASS)]
        c.v6[:] = [str(ip_network(f"2001:db8:{k:02x}{i:02x}::/48")) for i in range(V6_PER_CLASS)]
    a_only4 = [f"198.51.100.{4 * i}/30" for i in range(ONLY)]
    b_only4 = [f"203.0.113.{4 * i}/30" for i in range(ONLY)]
    a_only6 = [str(ip_network(f"2001:db8:f0{i:02x}::/48")) for i in range(ONLY // 4)]
    b_only6 = [str(ip_network(f"2001:db8:f1{i:02x}::/48")) for i in range(ONLY // 4)]
    return a_only4 + a_only6, b_only4 + b_only6, a_only4 + b_only4, a_only6 + b_only6


def _class_set(prefixes: list[str]) -> str:
    return "[" + ", ".join(prefixes) + "]"


# Tie-breaks need two paths of the same session type: eBGP feeders C and D share prefixes with B only.
# C's BGP identifier is lower than B's; D's equals B's, so the peer address decides (B's is lower).
TIEBREAKS = {  # name: (feeder paired with B, winner, reason, first octet-3 of 198.19.x.0/24)
    "router-id": ("feed_c", "feed_c", Reason.ROUTER_ID, 0),
    "peer-address": ("feed_d", "feed_b", Reason.PEER_ADDRESS, 16),
}
FEEDERS = {  # name: (address, AS, router id)
    "feed_a": (A_ADDR, OUR_AS, A_ADDR),
    "feed_b": (B_ADDR, B_AS, B_ADDR),
    "feed_c": ("127.0.80.5", 65082, "10.0.0.1"),
    "feed_d": ("127.0.80.6", 65083, B_ADDR),
}
NH.update({"feed_c": ("192.0.2.3", "2001:db8:ffff::3"), "feed_d": ("192.0.2.4", "2001:db8:ffff::4")})


def _tiebreak_prefixes(name: str) -> list[str]:
    third = TIEBREAKS[name][3]
    return [f"198.19.{third + i}.0/24" for i in range(V4_PER_CLASS)]


def _feeder_conf(me: str, side_of: Callable[[Class], Side] | None, only: list[str]) -> str:
    address, asn, router_id = FEEDERS[me]
    classes = CLASSES if side_of is not None else []
    v4 = [p for c in classes for p in c.v4] + [p for p in only if ":" not in p]
    v6 = [p for c in classes for p in c.v6] + [p for p in only if ":" in p]
    body = []
    for c in classes:
        assert side_of is not None
        stmts = side_of(c).statements()
        if stmts:
            body.append(f"  if net.type = NET_IP4 then {{ if net ~ {_class_set(c.v4)} then {{ {stmts} }} }}")
            body.append(f"  if net.type = NET_IP6 then {{ if net ~ {_class_set(c.v6)} then {{ {stmts} }} }}")
    export = "filter attrs_" + me + " {\n" + "\n".join(body) + "\n  accept;\n}\n"
    nh4, nh6 = NH[me]
    common = dict(local=address, local_as=asn, passive=True, export=f"filter attrs_{me}",
                  import_="none", next_hop4=nh4, next_hop6=nh6)  # fmt: skip
    return (
        f"router id {router_id};\nprotocol device {{}}\n{static_blackholes(v4, v6)}\n{export}"
        + bgp_protocol("judge", neighbor=JUDGE_ADDR, peer_as=OUR_AS, **common)  # type: ignore[arg-type]
        + bgp_protocol("peerctl", neighbor=PEERCTL_ADDR, peer_as=OUR_AS, **common)  # type: ignore[arg-type]
    )


def _judge_conf() -> str:
    return f"router id {JUDGE_ADDR};\nprotocol device {{}}\n" + "".join(
        bgp_protocol(name, local=JUDGE_ADDR, local_as=OUR_AS, neighbor=addr, peer_as=asn, passive=False)
        for name, (addr, asn, _rid) in FEEDERS.items()
    )


def test_best_paths_match_bird(birds: Callable[[str, str], Bird], tmp_path: Path) -> None:
    configure_logging("warning")
    a_only, b_only, _only4, _only6 = _prefixes()
    tie = {name: _tiebreak_prefixes(name) for name in TIEBREAKS}
    birds("feed_a", _feeder_conf("feed_a", lambda c: c.a, a_only))
    birds("feed_b", _feeder_conf("feed_b", lambda c: c.b, b_only + [p for ps in tie.values() for p in ps]))
    birds("feed_c", _feeder_conf("feed_c", None, tie["router-id"]))
    birds("feed_d", _feeder_conf("feed_d", None, tie["peer-address"]))
    judge = birds("judge", _judge_conf())
    config = tmp_path / "peerctl.toml"
    peers = "".join(peer_toml(name, addr, asn, PEERCTL_ADDR) for name, (addr, asn, _rid) in FEEDERS.items())
    config.write_text(daemon_toml(OUR_AS, PEERCTL_ADDR, free_port(), peers))
    n_class4 = len(CLASSES) * V4_PER_CLASS
    n_class6 = len(CLASSES) * V6_PER_CLASS
    expected = {
        "feed_a": (n_class4 + ONLY, n_class6 + ONLY // 4),
        "feed_b": (n_class4 + ONLY + len(TIEBREAKS) * V4_PER_CLASS, n_class6 + ONLY // 4),
        "feed_c": (V4_PER_CLASS, 0),
        "feed_d": (V4_PER_CLASS, 0),
    }
    asyncio.run(_scenario(config, judge, expected))


async def _scenario(config: Path, judge: Bird, expected: dict[str, tuple[int, int]]) -> None:
    async with running_daemon(config) as daemon:
        t0 = time.monotonic()

        def loaded() -> bool:
            return all(
                (daemon.rib.peer_counts(p, Family.IPV4)[0], daemon.rib.peer_counts(p, Family.IPV6)[0]) == n
                for p, n in expected.items()
            )

        await wait_until(loaded, 40, f"peerctl to receive {expected}")
        total = sum(sum(n) for n in expected.values())
        await wait_until_blocking(
            lambda: sum(judge.imported(name) for name in FEEDERS) == total, 20, "the judge's tables"
        )
        load_s = time.monotonic() - t0

        # the same attributes reach both: one A path and one B path as peerctl decodes them
        best = judge_best(judge)
        ours: dict[str, tuple[str, str, Reason | None]] = {}
        for family in Family:
            for key, path in daemon.rib.iter_best(family):
                ours[format_prefix(family, key)] = (path.peer, path.next_hop, daemon.rib.reason(family, key))
        assert set(ours) == set(best), (
            f"prefix sets differ: only peerctl {sorted(set(ours) - set(best))[:5]}, "
            f"only BIRD {sorted(set(best) - set(ours))[:5]}"
        )
        disagree = [
            (prefix, ours[prefix][:2], (r.proto, r.next_hop), r.attrs)
            for prefix, r in sorted(best.items())
            if ours[prefix][:2] != (r.proto, r.next_hop)
        ]
        assert not disagree, f"{len(disagree)} prefixes where peerctl and BIRD disagree, e.g. {disagree[:3]}"

        # the designed step decides each class (and the designed winner wins)
        wrong = []
        for c in CLASSES:
            for prefix in (*c.v4, *c.v6):
                peer, _nh, reason = ours[prefix]
                if (peer, reason) != (c.winner, c.reason):
                    wrong.append((c.name, prefix, peer, reason, c.winner, c.reason))
        assert not wrong, f"{len(wrong)} prefixes decided differently than designed, e.g. {wrong[:3]}"
        for name, (_other, winner, reason, _third) in TIEBREAKS.items():
            for prefix in _tiebreak_prefixes(name):
                assert ours[prefix][::2] == (winner, reason), (name, prefix, ours[prefix])
        for prefix in ("198.51.100.0/30", "203.0.113.4/30", "2001:db8:f000::/48", "2001:db8:f101::/48"):
            assert ours[prefix][2] is Reason.ONLY_PATH

        # the API says the same: both paths, the best first, with the step that decided
        med_class = next(c for c in CLASSES if c.name == "med-same-as-a")
        got = await api_get(daemon, f"/api/v1/routes/{med_class.v6[1]}")
        assert [(p["peer"], p["med"], p["best"]) for p in got["paths"]] == [
            ("feed_a", 10, True),
            ("feed_b", 20, False),
        ]
        assert got["paths"][0]["reason"] == "med"
        assert got["paths"][0]["as_path"] == [B_AS] and got["paths"][1]["as_path"] == [B_AS]
        assert load_s < 30, f"tables took {load_s:.1f} s to load"
