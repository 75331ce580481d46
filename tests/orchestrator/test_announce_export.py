"""Export policies on our announcements: per-peer refusals with the rule, per-peer attributes, the
safety rules re-checked on each peer's result, groups that skip refusing members, reloads, the API."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import replace
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
from policies.config import parse_peer_policy
from policies.prefixset import PrefixList, parse_entry
from policies.safety import Announcement, SafetyRules
from speakers.events import DownReason, PeerDown, PeerUp

LOCAL = 64500
ALLOCATED = ("184.164.224.0/23", "2001:db8:100::/40")
EXPORTS: dict[str, Any] = {
    "open": None,  # no policy key at all
    "all": "all",
    "none": "none",
    "only225": {"prefixes": ["184.164.225.0/24"]},
    "clean": {"allow_poisoning": False},
    "pad": {"prepend": 2, "communities": ["65000:9"], "max_path_length": 4},
}
ADDR = {name: f"127.77.4.{i + 2}" for i, name in enumerate(EXPORTS)}


def peers(exports: dict[str, Any]) -> tuple[PeerConfig, ...]:
    out = []
    for name, export in exports.items():
        pol = None if export is None else parse_peer_policy({"export": export}, kind=PeerKind.MUX)
        out.append(PeerConfig(name, PeerKind.MUX, ADDR[name], 47065, policy=pol))
    return tuple(out)


class Wire:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def speaker(self) -> Any:
        wire = self

        class Speaker:
            async def send(self, command: str) -> None:
                wire.lines.append(command)

        return Speaker()


def make(exports: dict[str, Any] = EXPORTS, *, poisoning: bool = True,
         tmp_path: Path | None = None) -> tuple[AnnouncementManager, Wire, list[Config]]:
    rules = SafetyRules(LOCAL, SafetyRules.allocation(ALLOCATED), allow_poisoning=poisoning)
    cfg = [Config(path=Path("c.toml"), local=LocalConfig(LOCAL, "10.0.0.1"), peers=peers(exports),
                  safety=rules, announce=AnnounceConfig())]
    wire = Wire()
    speakers = {name: wire.speaker() for name in exports}
    mgr = AnnouncementManager(lambda: cfg[0], lambda: speakers, tmp_path, get_logger(), clock=lambda: 1000.0)
    return mgr, wire, cfg


def run(coro: Any) -> Any:
    return asyncio.run(coro)


BASE = Announcement("184.164.224.0/24", next_hop="192.0.2.1")
POISONED = Announcement("184.164.224.0/24", poison=(3356,), next_hop="192.0.2.1")

# peer, announcement → refusing rule, or the exact line sent
TABLE = [
    ("open", BASE, "announce route 184.164.224.0/24 next-hop 192.0.2.1 origin igp as-path [ 64500 ]"),
    ("all", POISONED, "announce route 184.164.224.0/24 next-hop 192.0.2.1 origin igp "
                      "as-path [ 64500 3356 64500 ]"),
    ("none", BASE, "export-none"),
    ("only225", BASE, "export-prefix"),
    ("only225", replace(BASE, prefix="184.164.225.0/24"),
     "announce route 184.164.225.0/24 next-hop 192.0.2.1 origin igp as-path [ 64500 ]"),
    ("clean", POISONED, "export-poisoning"),
    ("clean", BASE, "announce route 184.164.224.0/24 next-hop 192.0.2.1 origin igp as-path [ 64500 ]"),
    ("pad", BASE, "announce route 184.164.224.0/24 next-hop 192.0.2.1 origin igp "
                  "as-path [ 64500 64500 64500 ] community [ 65000:9 ]"),
    ("pad", replace(BASE, prepend=2), "export-as-path-length"),  # 1 + 2 + 2 prepends > 4
    # the per-peer communities push the total over PEERING's 5: the safety rule, on that peer's result
    ("pad", replace(BASE, communities=(1, 2, 3, 4, 5)), "communities"),
    # poisoning allowed globally (path 64500 3356 64500), two prepends make 5 hops: still allowed
    ("pad", POISONED, "export-as-path-length"),
]  # fmt: skip


@pytest.mark.parametrize(("peer", "ann", "want"), TABLE)
def test_export_table(peer: str, ann: Announcement, want: str) -> None:
    mgr, wire, _ = make()
    if want.startswith("announce"):
        run(mgr.announce(ann, (peer,)))
        assert wire.lines == [f"neighbor {ADDR[peer]} {want}"]
        assert mgr.adv_json(peer)[0]["command"] == wire.lines[0]
    else:
        with pytest.raises(PolicyError) as err:
            run(mgr.announce(ann, (peer,)))
        assert err.value.rule == want and peer in str(err.value)
        assert wire.lines == [] and mgr.wanted == {} and mgr.adv_json(peer) == []


def test_explicit_targets_are_all_or_nothing() -> None:
    mgr, wire, _ = make()
    with pytest.raises(PolicyError) as err:
        run(mgr.announce(BASE, ("open", "none")))
    assert err.value.rule == "export-none" and wire.lines == [] and mgr.wanted == {}


def test_group_skips_refusing_members() -> None:
    mgr, wire, _ = make()
    w = run(mgr.announce(BASE, mgr.resolve(kind="mux"), group=True))
    assert w.targets == ("open", "all", "clean", "pad")
    assert dict(w.refused) == {"none": "export-none", "only225": "export-prefix"}
    assert sorted(line.split()[1] for line in wire.lines) == sorted(ADDR[n] for n in w.targets)
    assert mgr.wanted_json()[0]["refused"] == {"none": "export-none", "only225": "export-prefix"}
    assert mgr.adv_json("pad")[0]["as_path"] == [LOCAL, LOCAL, LOCAL]  # what that peer was sent
    assert mgr.adv_json("open")[0]["as_path"] == [LOCAL]
    with pytest.raises(PolicyError, match="export-"):  # every member refuses: the request fails
        run(mgr.announce(replace(BASE, prefix="184.164.225.0/24", poison=(3356,), prepend=1),
                         ("none", "clean"), group=True))


def test_reload_to_export_none_stops_the_resend(tmp_path: Path) -> None:
    mgr, wire, cfg = make(tmp_path=tmp_path)

    async def go() -> None:
        await mgr.announce(BASE, ("open",))
        cfg[0] = replace(cfg[0], peers=peers({**EXPORTS, "open": "none"}))  # a reload
        mgr.on_event(1000.0, PeerDown("open", DownReason.CONNECTION_LOST))
        wire.lines.clear()
        mgr.on_event(1000.0, PeerUp("open", 47065, "1.1.1.1"))
        for _ in range(10):
            await asyncio.sleep(0)

    run(go())
    assert wire.lines == []
    adv = mgr.adv_json("open")
    assert adv[0]["state"] == "refused" and adv[0]["rule"] == "export-none" and not adv[0]["on_wire"]
    again, _, _ = make({**EXPORTS, "open": "none"}, tmp_path=tmp_path)  # restart with that config
    assert again.load() == 1 and again.adv_json("open")[0]["state"] == "refused"


# -- property: every line on the wire passes its peer's export policy and the safety rules ----------

op = st.tuples(st.sampled_from(["184.164.224.0/24", "184.164.225.0/24", "2001:db8:100::/48"]),
               st.integers(0, 3), st.lists(st.sampled_from([3356, 174]), max_size=2),
               st.lists(st.integers(0, 2**32 - 1), max_size=5),
               st.lists(st.sampled_from(list(EXPORTS)), min_size=1, max_size=3, unique=True), st.booleans())
LINE = re.compile(r"neighbor (\S+) announce route (\S+) next-hop \S+ origin \S+ as-path \[ ([\d ]*) \]"
                  r"(?: community \[ ([\d: ]*) \])?$")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=12), poisoning=st.booleans())
def test_the_wire_obeys_each_peers_export_policy(ops: list[Any], poisoning: bool) -> None:
    mgr, wire, _ = make(poisoning=poisoning)
    only225 = PrefixList([parse_entry("184.164.225.0/24")])
    by_addr = {a: n for n, a in ADDR.items()}

    now = [1000.0]
    mgr.clock = lambda: now[0]

    async def go() -> None:
        for prefix, prepend, poison, comms, targets, group in ops:
            ann = Announcement(prefix, prepend=prepend, poison=tuple(poison), communities=tuple(comms))
            with contextlib.suppress(PolicyError):
                await mgr.announce(ann, tuple(targets), group=group)
            now[0] += 600.0

    run(go())
    for line in wire.lines:
        if " withdraw route " in line:  # a peer no longer targeted
            continue
        m = LINE.match(line)
        assert m, line
        addr, prefix, path, comms = m.groups()
        peer = by_addr[addr]
        asns = [int(a) for a in path.split()]
        assert peer != "none", line
        assert peer != "only225" or only225.matches(*parse_prefix(prefix)), line
        assert peer != "clean" or set(asns) == {LOCAL}, line
        if peer == "pad":
            assert asns[:3] == [LOCAL] * 3 and "65000:9" in (comms or "").split() and len(asns) <= 4, line
        assert len(asns) <= 5 and len((comms or "").split()) <= 5, line
        assert poisoning or set(asns) == {LOCAL}, line
        assert parse_prefix(prefix)[0] in (Family.IPV4, Family.IPV6)


def test_reload_reexports_what_is_already_out(tmp_path: Path) -> None:
    """A reload that changes export policies withdraws from peers that now refuse and re-sends to
    peers whose attributes changed; peers whose policy did not change get nothing."""
    mgr, wire, cfg = make(tmp_path=tmp_path)

    async def go() -> dict[str, list[str]]:
        await mgr.announce(BASE, ("open", "all", "clean"))
        wire.lines.clear()
        cfg[0] = replace(cfg[0], peers=peers({**EXPORTS, "open": "none", "all": EXPORTS["pad"]}))
        return await mgr.reexport()

    out = run(go())
    assert out == {"resent": ["all 184.164.224.0/24"], "withdrawn": ["open 184.164.224.0/24"]}
    assert wire.lines == [  # in the order of the announcement's targets
        f"neighbor {ADDR['open']} withdraw route 184.164.224.0/24",
        f"neighbor {ADDR['all']} announce route 184.164.224.0/24 next-hop 192.0.2.1 origin igp "
        "as-path [ 64500 64500 64500 ] community [ 65000:9 ]",
    ]
    assert mgr.adv_json("open")[0]["state"] == "refused"
    assert run(mgr.reexport()) == {"resent": [], "withdrawn": []}  # idempotent


def test_reload_takes_back_group_members_whose_policy_now_accepts(tmp_path: Path) -> None:
    mgr, wire, cfg = make(tmp_path=tmp_path)

    async def go() -> dict[str, list[str]]:
        wanted = await mgr.announce(BASE, ("open", "none"), group=True)
        assert wanted.targets == ("open",) and wanted.refused == (("none", "export-none"),)
        again, _, _ = make(tmp_path=tmp_path)  # the refusal is persisted with the announcement
        assert again.load() == 1 and again.wanted[BASE.prefix].refused == (("none", "export-none"),)
        wire.lines.clear()
        cfg[0] = replace(cfg[0], peers=peers({**EXPORTS, "none": "all"}))
        return await mgr.reexport()

    out = run(go())
    assert out == {"resent": ["none 184.164.224.0/24"], "withdrawn": []}
    assert wire.lines == [f"neighbor {ADDR['none']} announce route 184.164.224.0/24 next-hop 192.0.2.1 "
                          "origin igp as-path [ 64500 ]"]  # fmt: skip
    w = mgr.wanted[BASE.prefix]
    assert w.targets == ("open", "none") and w.refused == ()
