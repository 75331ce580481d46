"""Table generator: shape, determinism, overlap, routable-looking prefixes."""

from __future__ import annotations

import collections
import ipaddress

from orchestrator.lab.tablegen import generate_table
from orchestrator.rib.prefix import Family, format_prefix, key_length

ARGS = dict(
    ipv4=20_000, ipv6=5_000, overlap=0.3, peer_as=65010, next_hop4="192.0.2.2", next_hop6="2001:db8::2"
)


def test_deterministic() -> None:
    a = generate_table(7, 0, **ARGS)  # type: ignore[arg-type]
    b = generate_table(7, 0, **ARGS)  # type: ignore[arg-type]
    assert a == b
    assert generate_table(8, 0, **ARGS) != a  # type: ignore[arg-type]


def test_counts_distinct_and_overlap() -> None:
    t0 = generate_table(7, 0, **ARGS)  # type: ignore[arg-type]
    t1 = generate_table(7, 1, **ARGS)  # type: ignore[arg-type]
    for fam, n in ((Family.IPV4, 20_000), (Family.IPV6, 5_000)):
        assert t0.count(fam) == n == len(t0.keys(fam))
        shared = t0.keys(fam) & t1.keys(fam)
        assert len(shared) == round(n * 0.3)
    # shared prefixes carry different attributes on the two feeders
    a0 = {k: a for f, a, ks in t0 if f is Family.IPV4 for k in ks}
    a1 = {k: a for f, a, ks in t1 if f is Family.IPV4 for k in ks}
    common = a0.keys() & a1.keys()
    differ = sum(1 for k in common if a0[k].as_path_length != a1[k].as_path_length or a0[k].med != a1[k].med)
    assert differ > len(common) * 0.5


def test_shape() -> None:
    t = generate_table(1, 0, **ARGS)  # type: ignore[arg-type]
    lengths4 = collections.Counter(key_length(k) for k in t.keys(Family.IPV4))
    assert max(lengths4) <= 24
    assert 0.55 < lengths4[24] / 20_000 < 0.65
    assert lengths4[22] > lengths4[21] and lengths4[23] > lengths4[20]
    lengths6 = collections.Counter(key_length(k) for k in t.keys(Family.IPV6))
    assert lengths6.most_common(1)[0][0] == 48
    groups = t.groups
    per_set = (20_000 + 5_000) / len(groups)
    assert 5 < per_set < 10
    hops = collections.Counter(a.as_path_length for _, a, _ in groups)
    assert min(hops) >= 1 and max(hops) <= 13
    assert hops.most_common(1)[0][0] in (3, 4, 5)
    assert all(a.as_path[0][1][0] == 65010 for _, a, _ in groups)
    with_comm = sum(1 for _, a, _ in groups if a.communities) / len(groups)
    assert 0.3 < with_comm < 0.55
    assert any(a.large_communities for _, a, _ in groups) and any(a.med is not None for _, a, _ in groups)
    for fam, a, _ in groups:
        assert a.next_hop == ("192.0.2.2" if fam is Family.IPV4 else "2001:db8::2")


def test_prefixes_look_routable() -> None:
    t = generate_table(3, 0, **ARGS)  # type: ignore[arg-type]
    for fam in Family:
        for k in t.keys(fam):
            net = ipaddress.ip_network(format_prefix(fam, k))
            assert net.is_global and not net.is_multicast, net
            if fam is Family.IPV6:
                assert not net.subnet_of(ipaddress.ip_network("2002::/16"))  # type: ignore[arg-type]
