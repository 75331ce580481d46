"""Every real MRT file in ``../shared/data/real/mrt`` is read and its counts match the README there.

Where our numbers differ from the README, the test says why (checked against ``bgpdump -m``):
- README "peers" of update files count peers that sent UPDATEs (``peers_with_updates``); the files
  also hold state changes from other peers.
- The ``_firstMB`` RIB samples hold 9,072 / 6,870 complete RIB records (one prefix each, matching the
  README's 9,072 / 6,870 prefixes and bgpdump's output); the README's "9,069 / 6,869 records" is off.
- Announcement counts exclude non-unicast NLRI (IPv4 multicast in MP_REACH), which bgpdump prints.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from orchestrator.collector.mrt import Bgp4mpUpdate, MrtError, MrtReader, RibEntry, read_mrt
from orchestrator.collector.mrtinfo import summarize

from .mrt_samples import parse_bgpdump_line, rib_lines, update_lines

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real" / "mrt"

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real MRT data not present at {REAL} "
                                                           "(the ../shared checkout beside the repo)")


@cache
def info(name: str) -> dict[str, Any]:
    return summarize(REAL / name)


def peer(summary: dict[str, Any], ip: str) -> dict[str, Any]:
    return next(p for p in summary["peers"] if p["ip"] == ip)


def test_every_file_is_covered() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in REAL.glob("*/*")}
    assert names == set(EXPECTED), "a new real MRT file needs its expected counts here"


# file → (record types, rib entries, updates/announced/withdrawn, prefixes v4/v6, peers, errors)
EXPECTED: dict[str, dict[str, Any]] = {
    "rib/routeviews.route-views.jinx.ribs.1401487200.bz2": dict(
        types={"TABLE_DUMP_V2/PEER_INDEX_TABLE": 1, "TABLE_DUMP_V2/RIB_IPV4_UNICAST": 497_323,
               "TABLE_DUMP_V2/RIB_IPV6_UNICAST": 84},
        entries=503_590, prefixes=(497_323, 84), index_peers=14, errors=0),
    "rib/ris.rrc00.bview.20020722.2337.gz": dict(
        types={"TABLE_DUMP/AFI_IPV4": 115_521}, entries=115_521, prefixes=(112_988, 0), peers=36, errors=0),
    "rib/routeviews.rib.20140523.0600_firstMB.bz2": dict(
        types={"TABLE_DUMP_V2/PEER_INDEX_TABLE": 1, "TABLE_DUMP_V2/RIB_IPV4_UNICAST": 9_072},
        entries=270_005, prefixes=(9_072, 0), index_peers=47, peers_with_entries=35, errors=1),
    "rib/routeviews6.rib.20151101.0600_firstMB.bz2": dict(
        types={"TABLE_DUMP_V2/PEER_INDEX_TABLE": 1, "TABLE_DUMP_V2/RIB_IPV6_UNICAST": 6_870},
        entries=149_578, prefixes=(0, 6_870), index_peers=29, errors=1),
    "rib/bview.ipv4_unicast_add_path.gz": dict(
        types={"TABLE_DUMP_V2/PEER_INDEX_TABLE": 1, "TABLE_DUMP_V2/RIB_IPV4_UNICAST_ADDPATH": 31},
        entries=62, prefixes=(31, 0), index_peers=3, errors=0),
    "rib/bview.ipv6_unicast_add_path.gz": dict(
        types={"TABLE_DUMP_V2/PEER_INDEX_TABLE": 1, "TABLE_DUMP_V2/RIB_IPV6_UNICAST_ADDPATH": 31},
        entries=62, prefixes=(0, 31), index_peers=3, errors=0),
    "rib/bview.64k_stream_overflow.gz": dict(
        types={"TABLE_DUMP_V2/PEER_INDEX_TABLE": 1, "TABLE_DUMP_V2/RIB_IPV6_UNICAST": 1},
        entries=23, prefixes=(0, 1), index_peers=54, errors=0),
    "updates/pch.route-collector.summary.updates.2015-10-23-0201.fulltable.et.gz": dict(
        types={"BGP4MP_ET/MESSAGE": 1, "BGP4MP_ET/MESSAGE_AS4": 89_681, "BGP4MP_ET/STATE_CHANGE_AS4": 4},
        updates=89_679, announced=577_737, withdrawn=3, prefixes=(577_706, 0), peers=1, errors=0),
    "updates/updates.20190101.0000.gz": dict(
        types={"BGP4MP/MESSAGE_AS4": 54_471, "BGP4MP/STATE_CHANGE_AS4": 43},
        announced=159_948, withdrawn=2_626, prefixes=(18_251, 249), peers=63, errors=0),
    "updates/ris.updates.20160811.1600.gz": dict(
        types={"BGP4MP/MESSAGE_AS4": 17_384, "BGP4MP/STATE_CHANGE_AS4": 22},
        announced=39_256, withdrawn=1_956, prefixes=(1_623, 94), peers=35, errors=0),
    # README: 51,329 announcements / 2,328 withdrawals including 93 / 58 IPv4 multicast NLRI.
    "updates/ris.updates.20070211.0141.gz": dict(
        types={"BGP4MP/MESSAGE": 23_394}, announced=51_236, withdrawn=2_270, peers=31, errors=0),
    "updates/ris.updates.20071015.1505.gz": dict(
        types={"BGP4MP/MESSAGE": 4_256, "BGP4MP/MESSAGE_AS4": 41}, peers=14, errors=0),
    "updates/ris.updates.20100722.2015.gz": dict(
        types={"BGP4MP/MESSAGE": 789, "BGP4MP/MESSAGE_AS4": 1_364, "BGP4MP/STATE_CHANGE_AS4": 40},
        peers=14, errors=0),
    "updates/ris.updates.20020722.2238.gz": dict(
        types={"BGP4MP/MESSAGE": 1_028, "BGP4MP/STATE_CHANGE": 93}, peers=3, errors=0),
    "updates/ris.updates.long_withdrawal.gz": dict(
        types={"BGP4MP/MESSAGE_AS4": 1}, updates=1, announced=0, withdrawn=4_096, prefixes=(0, 4_096),
        errors=0),
    "updates/ris.rrc06.updates.1401488100.gz": dict(
        types={"BGP4MP/MESSAGE_AS4": 1_557, "BGP4MP/STATE_CHANGE_AS4": 4}, errors=0),
    "updates/ris.rrc06.updates.1427846400.gz": dict(
        types={"BGP4MP/MESSAGE_AS4": 791, "BGP4MP/STATE_CHANGE_AS4": 4}, errors=0),
    "updates/routeviews.route-views.jinx.updates.1401493500.bz2": dict(
        types={"BGP4MP/MESSAGE_AS4": 644}, errors=0),
    "updates/routeviews.route-views.jinx.updates.1427846400.bz2": dict(
        types={"BGP4MP/MESSAGE_AS4": 1_756}, errors=0),
    "updates/routeviews.updates.20161101.0000.bz2": dict(
        types={"BGP4MP/MESSAGE_AS4": 2_623}, prefixes=(800, 105), peers=4, errors=0),
    "updates/ris.rrc15.updates.20100227.1600.gz": dict(
        types={"BGP4MP/MESSAGE": 542, "BGP4MP/MESSAGE_AS4": 6_053, "BGP4MP/STATE_CHANGE_AS4": 20},
        peers=5, errors=0),
    # Obsolete MRT type 5 "BGP": read like bgpdump does (mrtparse refuses it).
    "updates/ris.rrc00.updates.19990903.1041.gz": dict(
        types={"BGP/UPDATE": 24_216, "BGP/STATE_CHANGE": 4, "BGP/OPEN": 1, "BGP/KEEPALIVE": 21},
        announced=65_286, withdrawn=25, peers=1, errors=0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_counts_match_readme(name: str) -> None:
    exp = EXPECTED[name]
    got = info(name)
    assert got["record_types"] == exp["types"]
    assert len(got["errors"]) == exp["errors"], got["errors"]
    if "entries" in exp:
        assert got["rib_entries"] == exp["entries"]
    for key in ("updates", "announced", "withdrawn"):
        if key in exp:
            assert got[key] == exp[key], key
    if "prefixes" in exp:
        assert (got["prefixes"]["ipv4"], got["prefixes"]["ipv6"]) == exp["prefixes"]
    if "index_peers" in exp:
        assert got["peer_index"]["peers"] == exp["index_peers"]
    if "peers_with_entries" in exp:
        assert got["peer_index"]["peers_with_entries"] == exp["peers_with_entries"]
    if "peers" in exp:
        n = got["peers_with_updates"] if got["updates"] else got["peers_seen"]
        assert n == exp["peers"]
    assert not got["skipped"] or name.endswith("20070211.0141.gz") or got["skipped"]


def test_jinx_full_table_peer() -> None:
    got = info("rib/routeviews.route-views.jinx.ribs.1401487200.bz2")
    full = peer(got, "196.223.14.55")
    assert (full["as"], full["entries"], full["attr_sets"]) == (30844, 497_321, 70_881)
    assert [(p["as"], p["entries"], p["attr_sets"]) for p in got["peers"][1:3]] == [
        (37105, 2_262, 353), (36910, 1_783, 221)]
    assert peer(got, "196.223.14.10")["entries"] == 1_375
    assert got["time"]["first"] == "2014-05-30T22:00:00Z"


def test_ris_v1_full_table_peer() -> None:
    got = info("rib/ris.rrc00.bview.20020722.2337.gz")
    full = peer(got, "193.203.0.1")
    assert (full["as"], full["entries"]) == (1853, 112_986)
    # README (bgpdump text): 17,654. We keep AS_PATH segments as received: one path arrives both as
    # one AS_SEQUENCE and as two consecutive ones, which bgpdump prints identically.
    assert full["attr_sets"] == 17_655


def test_first_mb_samples_report_the_cut() -> None:
    got = info("rib/routeviews.rib.20140523.0600_firstMB.bz2")
    top = got["peers"][0]
    assert (top["as"], top["entries"], top["attr_sets"]) == (8492, 8_944, 2_714)
    assert "truncated" in got["errors"][0] and "record 9073" in got["errors"][0]
    with pytest.raises(MrtError) as err:
        for _ in read_mrt(REAL / "rib/routeviews6.rib.20151101.0600_firstMB.bz2"):
            pass
    assert err.value.record_index == 6_871 and err.value.offset > 0
    assert "bzip2 stream ended early" in err.value.message


def test_pch_full_table() -> None:
    got = info("updates/pch.route-collector.summary.updates.2015-10-23-0201.fulltable.et.gz")
    pch = peer(got, "206.220.231.55")
    assert (pch["as"], pch["updates"], pch["attr_sets"]) == (3856, 89_679, 78_982)
    assert (got["time"]["first"], got["time"]["last"]) == ("2015-10-23T02:01:18Z", "2015-10-23T02:01:55Z")


def test_updates_2019_peers() -> None:
    got = info("updates/updates.20190101.0000.gz")
    resend = peer(got, "98.159.46.1")
    # README's 93,985 "announcements" are announcements plus withdrawals.
    assert (resend["as"], resend["announced"] + resend["withdrawn"]) == (395766, 93_985)
    assert any(p["ip"] == "12.0.1.63" for p in got["peers"])
    assert peer(info("updates/ris.rrc15.updates.20100227.1600.gz"), "200.219.130.4")["announced"] == 48_721


def test_big_record_and_add_path_entries() -> None:
    entries = [r for r in read_mrt(REAL / "rib/bview.64k_stream_overflow.gz") if isinstance(r, RibEntry)]
    assert len(entries) == 23 and len({e.key for e in entries}) == 1
    reader = MrtReader(REAL / "rib/bview.ipv4_unicast_add_path.gz")
    ap = [r for r in reader if isinstance(r, RibEntry)]
    assert all(e.path_id is not None for e in ap)
    assert reader.peer_index is not None and reader.peer_index.view_name == "master"
    # two paths per prefix, told apart by path id (bgpdump: 10.0.10.0/24 ids 36 and 38)
    first = [e for e in ap if e.key == ap[0].key]
    assert sorted(e.path_id for e in first if e.path_id is not None) == [36, 38]


def test_long_withdrawal_is_one_ipv6_update() -> None:
    (upd,) = [r for r in read_mrt(REAL / "updates/ris.updates.long_withdrawal.gz")]
    assert isinstance(upd, Bgp4mpUpdate)
    assert upd.attrs is None and not upd.announce
    assert [(f.short, len(k)) for f, k in upd.withdraw.items()] == [("ipv6", 4_096)]


BGPDUMP_EXACT = [
    "updates/ris.rrc06.updates.1401488100.gz",
    "updates/ris.rrc06.updates.1427846400.gz",
    "updates/routeviews.route-views.jinx.updates.1401493500.bz2",
    "updates/routeviews.route-views.jinx.updates.1427846400.bz2",
    "updates/routeviews.updates.20161101.0000.bz2",
    "updates/ris.updates.20020722.2238.gz",  # mrtparse fails on most of this one
    "updates/ris.updates.20071015.1505.gz",  # 2-byte AS_PATH + AS4_PATH
    "updates/ris.updates.20160811.1600.gz",
    "rib/bview.64k_stream_overflow.gz",
]


@pytest.mark.skipif(shutil.which("bgpdump") is None, reason="bgpdump (Debian package) not installed")
@pytest.mark.parametrize("name", BGPDUMP_EXACT)
def test_same_routes_as_bgpdump(name: str) -> None:
    """Every announcement/withdrawal (prefix, AS path, origin, next hop, communities) as bgpdump -m."""
    path = REAL / name
    out = subprocess.run(["bgpdump", "-m", str(path)], capture_output=True, text=True, check=True, timeout=60)
    theirs = sorted(parse_bgpdump_line(line) for line in out.stdout.splitlines()
                    if line.split("|")[2] in ("A", "W", "B"))
    records = list(read_mrt(path))
    if name.startswith("rib/"):
        ours = rib_lines([r for r in records if isinstance(r, RibEntry)])
    else:
        ours = update_lines([r for r in records if isinstance(r, Bgp4mpUpdate)])
    if name.endswith("64k_stream_overflow.gz"):  # bgpdump prints an IPv4-mapped next hop as hex
        theirs = [(*t[:5], t[5].replace("::ffff:c100:38", "::ffff:193.0.0.56"), *t[6:]) for t in theirs]
    assert len(ours) == len(theirs)
    assert ours == theirs
