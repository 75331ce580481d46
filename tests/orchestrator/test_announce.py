"""Announcements: safety rules before the wire, exact commands, groups, re-send, persistence, API."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.announce import AnnouncementManager
from orchestrator.config import AnnounceConfig, Config, LocalConfig, PeerConfig, PeerKind
from orchestrator.errors import PolicyError
from orchestrator.log import get_logger
from orchestrator.rib.prefix import Family, parse_prefix
from policies.prefixset import PrefixList
from policies.safety import Announcement, SafetyRules
from speakers.events import DownReason, PeerDown, PeerUp

LOCAL = 64500
ALLOCATED = ("184.164.224.0/23", "2001:db8:100::/40")
PEERS = (
    PeerConfig("mux1", PeerKind.MUX, "127.0.85.2", 47065),
    PeerConfig("mux2", PeerKind.MUX, "127.0.85.3", 47065),
    PeerConfig("rs", PeerKind.ROUTE_SERVER, "127.0.85.4", 65100, families=(Family.IPV4,)),
)


class FakeSpeaker:
    def __init__(self, wire: list[tuple[float, str]], clock: list[float]) -> None:
        self.wire, self.clock = wire, clock

    async def send(self, command: str) -> None:
        self.wire.append((self.clock[0], command))


Wire = list[tuple[float, str]]


def make(tmp_path: Path | None = None, *, poisoning: bool = False,
         clock: list[float] | None = None) -> tuple[AnnouncementManager, Wire, list[float]]:
    rules = SafetyRules(LOCAL, SafetyRules.allocation(ALLOCATED), allow_poisoning=poisoning)
    local = LocalConfig(LOCAL, "10.0.0.1", source6="2001:db8::1")
    cfg = Config(path=Path("c.toml"), local=local, peers=PEERS, safety=rules, announce=AnnounceConfig())
    now = clock if clock is not None else [1000.0]
    wire: list[tuple[float, str]] = []
    speakers = {p.name: FakeSpeaker(wire, now) for p in PEERS}
    mgr = AnnouncementManager(lambda: cfg, lambda: speakers, tmp_path, get_logger(), clock=lambda: now[0])
    return mgr, wire, now


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_announce_sends_exactly_the_checked_attributes() -> None:
    mgr, wire, _ = make(poisoning=True)
    ann = Announcement("184.164.224.0/24", prepend=1, poison=(3356,), communities=(47065 << 16 | 1,),
                       large_communities=((64500, 1, 2),), next_hop="192.0.2.1")
    run(mgr.announce(ann, mgr.resolve(["mux1"])))
    assert [c for _, c in wire] == [
        "neighbor 127.0.85.2 announce route 184.164.224.0/24 next-hop 192.0.2.1 origin igp "
        "as-path [ 64500 64500 3356 64500 ] community [ 47065:1 ] large-community [ 64500:1:2 ]"
    ]
    assert mgr.adv_json("mux1")[0]["as_path"] == [64500, 64500, 3356, 64500]


@pytest.mark.parametrize(("ann", "rule"), [
    (Announcement("10.0.0.0/24"), "allocated"),
    (Announcement("184.164.224.0/25"), "allocated"),  # longer than /24
    (Announcement("184.164.224.0/24", prepend=5), "path-length"),
    (Announcement("184.164.224.0/24", poison=(3356,)), "poisoning"),
    (Announcement("184.164.224.0/24", origin=3356), "origin"),
    (Announcement("184.164.224.0/24", communities=tuple(range(6))), "communities"),
    (Announcement("184.164.224.0/24", communities=(1, 2, 3), large_communities=((1, 1, 1), (1, 1, 2),
                                                                                  (1, 1, 3))), "communities"),
])  # fmt: skip
def test_refusal_sends_nothing(ann: Announcement, rule: str) -> None:
    mgr, wire, _ = make()
    with pytest.raises(PolicyError) as err:
        run(mgr.announce(ann, mgr.resolve(all_peers=True)))
    assert err.value.rule == rule and wire == [] and mgr.wanted == {}


def test_rate_rule_says_how_long_to_wait_and_withdraw_counts() -> None:
    mgr, wire, now = make()
    run(mgr.announce(Announcement("184.164.225.0/24"), ("mux1",)))
    now[0] += 120
    with pytest.raises(PolicyError, match=r"wait 480 s") as err:
        run(mgr.announce(Announcement("184.164.225.0/24", prepend=1), ("mux1",)))
    assert err.value.rule == "rate"
    with pytest.raises(PolicyError, match="rate"):
        run(mgr.withdraw("184.164.225.0/24"))
    assert len(wire) == 1
    run(mgr.announce(Announcement("184.164.225.0/24"), ("mux1",)))  # identical: a no-op, allowed
    assert len(wire) == 1
    now[0] += 480
    assert run(mgr.withdraw("184.164.225.0/24")) == ("mux1",)
    assert wire[-1][1] == "neighbor 127.0.85.2 withdraw route 184.164.225.0/24"
    assert mgr.wanted == {} and mgr.adv_json("mux1") == []


def test_groups_and_families() -> None:
    mgr, _, _ = make()
    assert mgr.resolve(kind="mux") == ("mux1", "mux2")
    assert mgr.resolve(kind="route-server") == ("rs",)
    assert mgr.resolve(all_peers=True, family=Family.IPV6) == ("mux1", "mux2")  # rs is IPv4 only
    with pytest.raises(PolicyError, match="does not carry ipv6"):
        mgr.resolve(["rs"], family=Family.IPV6)
    with pytest.raises(PolicyError, match="no peer named"):
        mgr.resolve(["nope"])


def test_resent_on_peer_up_pending_on_down_and_persisted(tmp_path: Path) -> None:
    mgr, wire, now = make(tmp_path)

    async def go() -> None:
        ann = Announcement("2001:db8:100::/48", communities=(65000 << 16 | 7,))
        await mgr.announce(ann, ("mux1", "mux2"))
        mgr.on_event(now[0], PeerDown("mux1", DownReason.CONNECTION_LOST))
        assert mgr.adv_json("mux1")[0]["state"] == "pending"
        wire.clear()
        mgr.on_event(now[0], PeerUp("mux1", 47065, "1.1.1.1"))
        for _ in range(10):
            await asyncio.sleep(0)

    run(go())
    assert [c for _, c in wire] == ["neighbor 127.0.85.2 announce route 2001:db8:100::/48 "
                                    "next-hop 2001:db8::1 origin igp as-path [ 64500 ] community [ 65000:7 ]"]
    again, _wire2, _now2 = make(tmp_path, clock=[now[0] + 10])
    assert again.load() == 1
    assert again.wanted_json()[0]["peers"] == ["mux1", "mux2"]
    with pytest.raises(PolicyError, match="rate"):  # the history survives the restart too
        run(again.withdraw("2001:db8:100::/48"))


# -- property: nothing outside the allocation or breaking a rule ever reaches the wire ---------------

PREFIXES = ["184.164.224.0/24", "184.164.225.0/24", "184.164.224.0/23", "184.164.226.0/24", "10.0.0.0/8",
            "184.164.224.128/25", "2001:db8:100::/48", "2001:db8:1ff::/48", "2001:db8::/32", "::/0"]
op = st.one_of(
    st.tuples(st.just("announce"), st.sampled_from(PREFIXES), st.integers(0, 6),
              st.lists(st.sampled_from([3356, 174, LOCAL]), max_size=3),
              st.lists(st.integers(0, 2**32 - 1), max_size=4), st.lists(st.just((1, 2, 3)), max_size=3),
              st.sampled_from([None, LOCAL, 3356]), st.lists(st.sampled_from(["mux1", "mux2", "rs"]),
                                                             min_size=1, max_size=3, unique=True)),
    st.tuples(st.just("withdraw"), st.sampled_from(PREFIXES)),
    st.tuples(st.just("wait"), st.sampled_from([1.0, 60.0, 599.0, 600.0, 3600.0])),
    st.tuples(st.just("flap"), st.sampled_from(["mux1", "mux2", "rs"])),
)
ANN_RE = re.compile(r"neighbor (\S+) (announce|withdraw) route (\S+)(?: next-hop \S+ origin \S+ as-path "
                    r"\[ ([\d ]*) \](?: community \[ ([\d: ]*) \])?(?: large-community \[ ([\d: ]*) \])?)?$")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=25), poisoning=st.booleans())
def test_no_api_sequence_puts_a_rule_breaking_route_on_the_wire(ops: list[Any], poisoning: bool) -> None:
    mgr, wire, now = make(poisoning=poisoning)
    allocated = PrefixList(SafetyRules.allocation(ALLOCATED))

    async def go() -> None:
        for o in ops:
            try:
                if o[0] == "announce":
                    _, prefix, prepend, poison, comms, large, origin, peers = o
                    ann = Announcement(prefix, prepend=prepend, poison=tuple(poison), origin=origin,
                                       communities=tuple(comms), large_communities=tuple(large))
                    fam = parse_prefix(prefix)[0]
                    await mgr.announce(ann, mgr.resolve(peers, family=fam))
                elif o[0] == "withdraw":
                    await mgr.withdraw(o[1])
                elif o[0] == "wait":
                    now[0] += o[1]
                else:
                    mgr.on_event(now[0], PeerDown(o[1], DownReason.CONNECTION_LOST))
                    mgr.on_event(now[0], PeerUp(o[1], 1, "1.1.1.1"))
                    for _ in range(5):
                        await asyncio.sleep(0)
            except PolicyError:
                pass

    run(go())
    last_line: dict[tuple[str, str], str] = {}
    change_times: dict[str, list[float]] = {}
    for t, line in wire:
        m = ANN_RE.match(line)
        assert m, line
        peer, action, prefix, path, comms, large = m.groups()
        assert allocated.matches(*parse_prefix(prefix)), line
        if action == "announce":
            asns = [int(a) for a in path.split()]
            assert 1 <= len(asns) <= 5 and asns[0] == LOCAL, line
            assert len((comms or "").split()) + len((large or "").split()) <= 5, line
            if not poisoning:
                assert set(asns) == {LOCAL}, line
        # a change to the prefix on the wire: anything but the identical re-send after a flap
        if last_line.get((peer, prefix)) != line:
            last_line[(peer, prefix)] = line
            times = change_times.setdefault(prefix, [])
            if not times or times[-1] != t:
                times.append(t)
    for prefix, times in change_times.items():
        assert all(b - a >= 600 for a, b in itertools.pairwise(times)), (prefix, times)


def _with(peers: tuple[PeerConfig, ...], local: LocalConfig) -> tuple[AnnouncementManager, Wire]:
    rules = SafetyRules(local.asn, SafetyRules.allocation(ALLOCATED), allow_poisoning=True)
    cfg = Config(path=Path("c.toml"), local=local, peers=peers, safety=rules, announce=AnnounceConfig())
    wire: Wire = []
    speakers = {p.name: FakeSpeaker(wire, [0.0]) for p in peers}
    return AnnouncementManager(lambda: cfg, lambda: speakers, None, get_logger(), clock=lambda: 1000.0), wire


def test_next_hop_self_across_families_uses_our_source_address() -> None:
    """An IPv6 prefix over an IPv4 session (PEERING muxes, the lab): 'self' is source6; ExaBGP
    refuses 'next-hop self' across families, so sending it would fail after the fact."""
    mgr, wire = _with(PEERS[:1], LocalConfig(LOCAL, "10.0.0.1", source6="2001:db8::1"))
    run(mgr.announce(Announcement("2001:db8:100::/48"), ["mux1"]))
    run(mgr.announce(Announcement("184.164.224.0/24"), ["mux1"]))
    assert [c.split(" origin")[0] for _, c in wire] == [
        "neighbor 127.0.85.2 announce route 2001:db8:100::/48 next-hop 2001:db8::1",
        "neighbor 127.0.85.2 announce route 184.164.224.0/24 next-hop self",
    ]


def test_next_hop_self_across_families_without_source_is_refused_before_sending() -> None:
    mgr, wire = _with(PEERS[:1], LocalConfig(LOCAL, "10.0.0.1"))
    with pytest.raises(PolicyError, match=r"set \[local\] source6 or give a next hop") as exc:
        run(mgr.announce(Announcement("2001:db8:100::/48"), ["mux1"]))
    assert exc.value.rule == "next-hop"
    assert wire == [] and mgr.last_change("2001:db8:100::/48") is None  # the rate clock did not start
    run(mgr.announce(Announcement("2001:db8:100::/48", next_hop="2001:db8::2"), ["mux1"]))
    assert "next-hop 2001:db8::2" in wire[0][1]


def test_internal_peer_gets_the_path_without_our_as() -> None:
    """A PEERING mux session is iBGP (peer_as = local AS): the mux adds 47065 on eBGP export, so
    the path sent starts after it (RFC 4271 5.1.2); prepends and poisoning stay."""
    mux = PeerConfig("mux1", PeerKind.MUX, "127.0.85.2", 47065)
    mgr, wire = _with((mux,), LocalConfig(47065, "10.0.0.1"))
    run(mgr.announce(Announcement("184.164.224.0/24"), ["mux1"]))
    run(mgr.announce(Announcement("184.164.225.0/24", prepend=1, poison=(3356,)), ["mux1"]))
    lines = [c for _, c in wire]
    assert "as-path" not in lines[0]
    assert "as-path [ 47065 3356 47065 ]" in lines[1]
    assert mgr.adv_json("mux1")[0]["as_path"] == []


class AckingSpeaker:
    """An ExaBGP-like speaker: answers each command (``ExaBGPSession.on_answer``) a bit later."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok
        self.session = self
        self.on_answer: Any = None

    async def send(self, command: str) -> None:
        asyncio.get_running_loop().call_later(0.05, lambda: self.on_answer(command, self.ok))


def test_settle_waits_for_the_speakers_answers() -> None:
    """What `peerctl announce` reports: acked, or the speaker's refusal, not just 'sent'."""
    rules = SafetyRules(LOCAL, SafetyRules.allocation(ALLOCATED))
    cfg = Config(path=Path("c.toml"), local=LocalConfig(LOCAL, "10.0.0.1"), peers=PEERS, safety=rules,
                 announce=AnnounceConfig())
    speakers: dict[str, Any] = {"mux1": AckingSpeaker(True), "mux2": AckingSpeaker(False),
                                "rs": FakeSpeaker([], [0.0])}  # no acks (native speaker): not waited for
    mgr = AnnouncementManager(lambda: cfg, lambda: speakers, None, get_logger(), clock=lambda: 1000.0)

    async def go() -> tuple[dict[str, str], float]:
        await mgr.announce(Announcement("184.164.224.0/24"), ["mux1", "mux2", "rs"])
        t0 = time.monotonic()
        return await mgr.settle("184.164.224.0/24"), time.monotonic() - t0

    states, waited = run(go())
    assert states == {"mux1": "acked", "mux2": "error", "rs": "sent"}
    assert waited < 1.0
