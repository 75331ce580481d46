"""The daemon records what its peers send: real UPDATEs (RouteViews, 4 peers, IPv4 and IPv6) through
a real Daemon's RIB task into MRT files, read back by our reader and by Debian's bgpdump."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.collector.mrt import Bgp4mpUpdate, MrtReader, PeerIndex, RibEntry, StateChange
from orchestrator.collector.record import ESTABLISHED, IDLE
from orchestrator.rib.attrs import AS_SEQUENCE
from orchestrator.rib.prefix import Family, format_prefix
from speakers.events import SpeakerEvent, Update

from .daemon_helpers import (
    UPDATES_FILE,
    down_events,
    feed,
    make_daemon,
    real_peers_and_events,
    start,
    updates_in,
)


def _expected(events: list[SpeakerEvent]) -> list[View]:
    return [(e.peer, e.family, tuple(e.announce), tuple(e.withdraw), e.attrs if e.announce else None)
            for e in events if isinstance(e, Update)]


View = tuple[str, Family, tuple[int, ...], tuple[int, ...], Any]


def _record_view(rec: Bgp4mpUpdate, by_ip: dict[str, str]) -> View:
    families = set(rec.announce) | set(rec.withdraw)
    assert len(families) == 1, "one family per recorded UPDATE"
    (family,) = families
    return (by_ip[rec.peer_ip], family, tuple(rec.announce.get(family, ())),
            tuple(rec.withdraw.get(family, ())), rec.attrs_for(family) if rec.announce.get(family) else None)


@pytest.fixture
def recorded(tmp_path: Path, real_data: Path) -> tuple[Path, list[Any], list[SpeakerEvent], dict[str, Any]]:
    """The whole RouteViews file through a daemon, peers taken down at the end, then a RIB dump
    taken before the down events and the RIB's own view at that moment."""
    peers, events = real_peers_and_events(real_data / "mrt" / UPDATES_FILE)
    daemon = make_daemon(tmp_path, peers)

    async def main() -> dict[str, Any]:
        await start(daemon)
        await feed(daemon, events)
        assert daemon.collector is not None
        (rib_file,) = await daemon.collector.dump()
        snapshot = [(f, key, p) for f in Family for key, ps in daemon.rib.iter_paths(f) for p in ps]
        rib = {(p.peer, f, key, p.blob) for f, key, p in snapshot}
        paths_of = {(p.peer, p.blob): p.attrs for _, _, p in snapshot}
        await feed(daemon, down_events(peers))
        await daemon.stop()  # drains, stops the RIB task, closes the collector
        return {"rib_file": rib_file, "rib": rib, "attrs": paths_of, "peers": peers}

    info = asyncio.run(main())
    return tmp_path / "mrt", list(updates_in(tmp_path / "mrt")), events, info


def test_reader_reads_back_every_update_and_state_change(recorded: Any) -> None:
    directory, records, events, info = recorded
    peers = info["peers"]
    by_ip = {p.neighbor: p.name for p in peers}
    assert not list(directory.glob("*.partial"))
    ups = [r for r in records if isinstance(r, Bgp4mpUpdate)]
    assert [_record_view(r, by_ip) for r in ups] == _expected(events)
    assert all(r.peer_as == next(p.peer_as for p in peers if p.neighbor == r.peer_ip) and r.local_as == 6447
               for r in ups)
    assert all(r.local_ip == next(p.local_address for p in peers if p.neighbor == r.peer_ip) for r in ups)
    states = [(r.peer_ip, r.old_state, r.new_state) for r in records if isinstance(r, StateChange)]
    assert states == [(p.neighbor, IDLE, ESTABLISHED) for p in peers] + [(p.neighbor, ESTABLISHED, IDLE)
                                                                         for p in peers]
    # state changes sit where they happened: each peer's Established before its first UPDATE
    backwards = list(reversed(list(enumerate(records))))
    first_up = {r.peer_ip: i for i, r in backwards if isinstance(r, StateChange)}
    first_update = {r.peer_ip: i for i, r in backwards if isinstance(r, Bgp4mpUpdate)}
    assert all(first_up[ip] < first_update[ip] for ip in first_update)


def test_rib_dump_reads_back_as_the_rib(recorded: Any) -> None:
    _, _, _, info = recorded
    reader = MrtReader(info["rib_file"])
    recs = list(reader)
    index = recs[0]
    assert isinstance(index, PeerIndex) and index.collector_id == "10.9.9.9"
    assert [(e.ip, e.asn) for e in index.peers] == [(p.neighbor, p.peer_as) for p in info["peers"]]
    assert [e.bgp_id for e in index.peers] == [f"10.0.0.{i + 1}" for i in range(len(info["peers"]))]
    names = [p.name for p in info["peers"]]
    got = {(names[e.peer_index], e.family, e.key, e.attrs) for e in recs if isinstance(e, RibEntry)}
    want = {(peer, f, key, info["attrs"][(peer, blob)]) for peer, f, key, blob in info["rib"]}
    assert len(want) > 1000 and {f for _, f, _, _ in want} == set(Family)
    assert got == want


BGPDUMP = shutil.which("bgpdump") or "bgpdump"


def _bgpdump_path(as_path: Any) -> str:
    """AS_PATH as ``bgpdump -m`` prints it: sequences space-separated, sets as ``{a,b}``."""
    return " ".join(" ".join(map(str, asns)) if seg == AS_SEQUENCE else "{" + ",".join(map(str, asns)) + "}"
                    for seg, asns in as_path)


@pytest.mark.skipif(shutil.which("bgpdump") is None, reason="bgpdump not installed (apt install bgpdump)")
def test_bgpdump_reads_our_files_line_for_line(recorded: Any) -> None:
    directory, records, _, info = recorded
    (upd,) = sorted(directory.glob("updates.*"))
    out = subprocess.run([BGPDUMP, "-m", str(upd)], capture_output=True, text=True, check=True).stdout
    lines = [line.split("|") for line in out.splitlines()]
    ups = [r for r in records if isinstance(r, Bgp4mpUpdate)]
    ours: list[tuple[str, ...]] = []
    for r in ups:
        for family, keys in r.withdraw.items():
            ours += [("W", r.peer_ip, str(r.peer_as), format_prefix(family, k)) for k in keys]
        for family, keys in r.announce.items():
            a = r.attrs_for(family)
            assert a is not None
            fields = (_bgpdump_path(a.as_path), ("IGP", "EGP", "INCOMPLETE")[int(a.origin)], a.next_hop,
                      str(a.local_pref or 0), str(a.med or 0),
                      " ".join(f"{c >> 16}:{c & 0xFFFF}" for c in a.communities))
            ours += [("A", r.peer_ip, str(r.peer_as), format_prefix(family, k), *fields) for k in keys]
    states = sum(1 for r in records if isinstance(r, StateChange))
    # bgpdump -m: BGP4MP|time|A|peer|peer AS|prefix|AS path|origin|next hop|LP|MED|communities|...
    theirs = [tuple(x[2:12]) if x[2] == "A" else tuple(x[2:6]) for x in lines if x[2] in ("A", "W")]
    assert sum(1 for x in lines if x[2] == "STATE") == states
    assert len(lines) == len(ours) + states  # one line per prefix, nothing else
    assert theirs == ours

    rib_out = subprocess.run([BGPDUMP, "-m", str(info["rib_file"])], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert len(rib_out) == len(info["rib"])
    names = {p.neighbor: p.name for p in info["peers"]}
    got = {(names[x.split("|")[3]], x.split("|")[5]) for x in rib_out}
    assert got == {(peer, format_prefix(f, key)) for peer, f, key, _ in info["rib"]}
