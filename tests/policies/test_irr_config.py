"""IRR refresh through a fake bgpq4, policy config parsing, and Pathvector parity."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from orchestrator.config import PeerKind
from orchestrator.errors import ConfigError
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, parse_prefix
from policies.config import parse_peer_policy, parse_safety
from policies.irr import IrrCache, load_prefix_file
from policies.model import LimitAction, PeerContext, Route, Verdict
from policies.rules import ImportRules, build_import_chain

GOOD = ('{"NN": [{"prefix": "8.8.8.0/24", "exact": true}, '
        '{"prefix": "8.8.0.0/16", "exact": false, "less-equal": 24}]}')


def script(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_irr_refresh_keeps_last_good(tmp_path: Path) -> None:
    cache = IrrCache()
    good = script(tmp_path, "good", f"cat <<'EOF'\n{GOOD}\nEOF")
    r = cache.refresh("p", "AS-GOOGLE", good, timeout=5, families=(False,))
    assert r.ok and r.entries == 2
    pl = cache.get("p")
    assert pl is not None and pl.matches(*parse_prefix("8.8.4.0/24"))
    hang = script(tmp_path, "hang", "exec sleep 30")
    r = cache.refresh("p", "AS-GOOGLE", hang, timeout=0.5, families=(False,))
    assert not r.ok and "timed out" in r.error and r.entries == 2 and cache.get("p") is pl
    bad = script(tmp_path, "bad", "echo 'not json'")
    assert not cache.refresh("p", "AS-GOOGLE", bad, timeout=5, families=(False,)).ok
    fail = script(tmp_path, "fail", "echo boom >&2; exit 1")
    r = cache.refresh("p", "AS-GOOGLE", fail, timeout=5, families=(False,))
    assert not r.ok and "boom" in r.error and cache.get("p") is pl
    assert not cache.refresh("p", "X", str(tmp_path / "missing"), timeout=5).ok


def test_prefix_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("8.8.8.0/24\n8.8.0.0/16 le 24\n")
    (tmp_path / "b.json").write_text(GOOD)
    assert len(load_prefix_file(tmp_path / "a.txt")) == len(load_prefix_file(tmp_path / "b.json")) == 2
    (tmp_path / "c.txt").write_text("8.8.8.0/24\nbad\n")
    with pytest.raises(ValueError, match=r"c\.txt: line 2"):
        load_prefix_file(tmp_path / "c.txt")


def test_peer_policy_config() -> None:
    pp = parse_peer_policy({"import": {"max4": 23, "communities": ["65000:1"]},
                            "max_prefix": {"ipv4": 10, "action": "restart", "restart_after": 60},
                            "irr": {"as_set": "AS-FOO"},
                            "rpki": {"vrp_file": "/v.json", "not_found": "reject"},
                            "dampening": {"half_life": 600}, "export": "all"}, kind=PeerKind.IXP_PEER)
    assert pp.import_rules.max4 == 23 and pp.import_rules.transit_asns
    assert pp.import_rules.max_prefix is not None and pp.import_rules.max_prefix.action is LimitAction.RESTART
    assert pp.irr is not None and pp.irr.as_set == "AS-FOO"
    assert pp.rpki is not None and pp.rpki.not_found is Verdict.REJECT
    assert pp.dampening.enabled and pp.dampening.half_life == 600 and pp.export_all
    assert not parse_peer_policy({"import": "none"}, kind=PeerKind.UPSTREAM).import_rules.enabled


@pytest.mark.parametrize(("table", "where"), [
    ({"import": "some"}, "peers[0].import"),
    ({"import": {"bogus": 1}}, "peers[0].import.bogus"),
    ({"import": {"max4": "x"}}, "peers[0].import.max4"),
    ({"max_prefix": {"action": "explode"}}, "peers[0].max_prefix.action"),
    ({"irr": {}}, "peers[0].irr"),
    ({"rpki": {"invalid": "maybe", "vrp_file": "v"}}, "peers[0].rpki.invalid"),
    ({"dampening": {"suppress": 100000}}, "peers[0].dampening"),
])
def test_peer_policy_errors(table: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_peer_policy(table, kind=PeerKind.UPSTREAM, file="c.toml", key_path="peers[0]")
    assert exc.value.key_path == where and str(exc.value).startswith("c.toml: ")


def test_safety_config() -> None:
    rules = parse_safety({"allocated": ["184.164.224.0/19"], "allow_poisoning": True}, local_asn=47065)
    assert rules.allow_poisoning and rules.max_path_length == 5 and rules.min_interval == 600
    with pytest.raises(ConfigError, match=r"safety.allocated"):
        parse_safety({}, local_asn=47065)
    with pytest.raises(ConfigError, match=r"safety.max_communities"):
        parse_safety({"allocated": ["184.164.224.0/19"], "max_communities": "5"}, local_asn=47065)


# --- Pathvector parity -----------------------------------------------------------------------------

PV = Path(__file__).resolve().parents[3] / "shared/data/real/configs/pathvector"


def pv_files() -> list[Path]:
    if not PV.is_dir():
        return []
    return sorted(PV.glob("*.yml")) + sorted(PV.glob("aethersh-infra/*.yml"))


def pathvector_decides(opts_rules: ImportRules, prefix: str, path: tuple[int, ...], peer_as: int) -> str:
    """Pathvector's BIRD filter order for the defaults we cover, written out independently."""
    family, _ = parse_prefix(prefix)
    length = int(prefix.split("/")[1])
    bogon_like = prefix.startswith(("10.", "192.168.", "2001:db8:"))
    if opts_rules.bogon_prefixes and bogon_like:
        return "bogon-prefix"
    lo, hi = (8, 24) if family is Family.IPV4 else (12, 48)
    if opts_rules.prefix_length and not lo <= length <= hi:
        return "prefix-length"
    if opts_rules.bogon_asns and any(64512 <= a <= 65534 or a == 23456 for a in path):
        return "bogon-asn"
    if opts_rules.first_as and path and path[0] != peer_as:
        return "first-as"
    if opts_rules.transit_asns and any(a in (174, 3356, 1299) and a != peer_as for a in path):
        return "transit-asn"
    return "accept"


SAMPLES = [("8.8.8.0/24", (0, 15169)), ("10.0.0.0/8", (0, 1)), ("8.8.8.0/25", (0,)), ("8.0.0.0/7", (0,)),
           ("2606:4700::/32", (0, 13335)), ("2606:4700::/64", (0,)), ("8.8.8.0/24", (0, 64512, 15169)),
           ("8.8.8.0/24", (174, 15169)), ("8.8.8.0/24", (0, 3356, 15169)), ("2001:db8:1::/48", (0,))]


@pytest.mark.parametrize("path", pv_files(), ids=lambda p: p.name)
def test_pathvector_configs_decide_alike(path: Path) -> None:
    pytest.importorskip("yaml")
    from policies.pathvector import convert
    peers = convert(path)
    for peer in peers:
        if not peer.policy.import_rules.enabled:
            continue
        ctx = PeerContext(peer.name, peer.kind, peer.asn, 215207, "", False)
        chain = build_import_chain(peer.policy.import_rules, ctx)
        for prefix, raw_path in SAMPLES:
            aspath = tuple(peer.asn if a == 0 else a for a in raw_path)
            family, key = parse_prefix(prefix)
            d = chain.policy.evaluate(Route(family, key, Attributes(as_path=((AS_SEQUENCE, aspath),))), ctx)
            want = pathvector_decides(peer.policy.import_rules, prefix, aspath, peer.asn)
            assert d.rule == want, (peer.name, prefix, aspath)
        mp = peer.policy.import_rules.max_prefix
        assert mp is not None and mp.ipv4 is not None and mp.ipv4 >= 1_000_000 and mp.ipv6 is not None


def test_pathvector_specifics() -> None:
    pytest.importorskip("yaml")
    if not PV.is_dir():
        pytest.skip(f"{PV} absent")
    from policies.pathvector import convert
    by = {p.name: p for p in convert(PV / "aethersh-infra/strudel.pathvector.yml")}
    rs = by["LOCIX Dusseldorf Route Servers"]
    assert rs.kind is PeerKind.ROUTE_SERVER and not rs.policy.import_rules.first_as
    assert not rs.policy.import_rules.next_hop and rs.policy.import_rules.transit_asns
    assert rs.policy.import_rules.local_pref == 90
    up = by["ServPerso Systems"]
    mp = up.policy.import_rules.max_prefix
    assert mp is not None and (mp.ipv4, mp.ipv6) == (1_500_000, 500_000)
    assert up.policy.import_rules.large_communities == ((217207, 120, 34872), (215207, 140, 1276))
    cf = by["Cloudflare"]
    assert cf.policy.irr is None  # filter-irr: false overrides the template
