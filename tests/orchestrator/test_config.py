"""load_config: the shipped lab config, inheritance, and a data table of bad configs → exact errors.

Every bad case names the line and the key path (0-based array indices), as ``peerctl check`` prints
them. Line numbers below count from the first line of each TOML text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.config import (
    REDACTED,
    Config,
    FibMode,
    PeerConfig,
    PeerKind,
    SpeakerKind,
    diff_peers,
    dump_config,
    load_config,
)
from orchestrator.errors import ConfigError
from orchestrator.rib.prefix import Family

REPO = Path(__file__).resolve().parents[2]

LOCAL = """\
[local]
asn = 64500
router_id = "192.0.2.1"
"""
# lines 4..8 when appended to LOCAL
PEER_A = """\
[[peers]]
name = "a"
kind = "upstream"
neighbor = "192.0.2.2"
peer_as = 65001
"""
# lines 9..13 when appended to LOCAL + PEER_A
PEER_B = """\
[[peers]]
name = "b"
kind = "ixp-peer"
neighbor = "2001:db8::2"
peer_as = 65002
"""
TEMPLATE = """\
[templates.up]
kind = "upstream"
local_address = "192.0.2.1"
hold_time = 30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


# ---- the shipped config ------------------------------------------------------------------------


def test_shipped_config_loads() -> None:
    config = load_config(REPO / "config.toml")
    assert config.path == REPO / "config.toml"
    assert config.local.asn == 64500
    assert config.local.source4 == "192.0.2.1"
    assert (config.api.host, config.api.port) == ("127.0.0.1", 8179)
    assert config.runtime.dir == REPO / "run"
    assert config.fib.mode is FibMode.FULL
    assert (config.fib.table, config.fib.netns, config.fib.source_interface) == (
        20000,
        "peerctl-lab",
        "peerctl0",
    )
    assert [p.name for p in config.peers] == ["lab-a", "lab-b"]
    lab_a = config.peer("lab-a")
    # everything below comes from [templates.upstream]
    assert lab_a.kind is PeerKind.UPSTREAM
    assert lab_a.local_address == "127.0.0.1"
    assert lab_a.families == (Family.IPV4, Family.IPV6)
    assert lab_a.speaker is SpeakerKind.EXABGP
    assert lab_a.template == "upstream"
    assert lab_a.local_pref == 100
    assert config.lab.feeders == ("lab-a", "lab-b")
    json.dumps(dump_config(config))  # JSON-friendly


# ---- good configs --------------------------------------------------------------------------------


def test_minimal_config_has_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, LOCAL)
    assert config.peers == ()  # a daemon without peers is valid
    assert config.fib.mode is FibMode.OFF
    assert config.lab.enabled is False
    assert config.runtime.dir == tmp_path / "run"


def test_runtime_dir_is_relative_to_the_file_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    path = write(tmp_path / "etc", LOCAL + '[runtime]\ndir = "../state"\nlog_level = "debug"\n')
    monkeypatch.chdir("/")
    config = load_config(path)
    assert config.runtime.dir == tmp_path / "state"
    assert config.runtime.dir.is_absolute()
    assert config.runtime.log_level == "debug"


def test_template_inheritance_peer_keys_win(tmp_path: Path) -> None:
    text = (
        LOCAL
        + TEMPLATE
        + """\
[[peers]]
name = "a"
template = "up"
neighbor = "192.0.2.2"
peer_as = 65001

[[peers]]
name = "b"
template = "up"
kind = "ixp-peer"
neighbor = "192.0.2.3"
peer_as = 65002
hold_time = 0
"""
    )
    a, b = load(tmp_path, text).peers
    assert (a.kind, a.hold_time, a.local_address, a.local_pref) == (PeerKind.UPSTREAM, 30, "192.0.2.1", 100)
    # b overrides kind and hold_time; local_pref follows b's own kind
    assert (b.kind, b.hold_time, b.local_address, b.local_pref) == (PeerKind.IXP_PEER, 0, "192.0.2.1", 150)


@pytest.mark.parametrize(
    ("extra", "attr", "expected"),
    [
        ("multihop = true", "multihop", 64),
        ("multihop = false", "multihop", None),
        ("multihop = 2", "multihop", 2),
        ("local_pref = 90", "local_pref", 90),
        ('families = ["ipv6"]', "families", (Family.IPV6,)),
        ('families = ["ipv6 unicast", "ipv4"]', "families", (Family.IPV6, Family.IPV4)),
        ('speaker = "native"', "speaker", SpeakerKind.NATIVE),
        ("passive = true", "passive", True),
        ("allow_own_as = true", "allow_own_as", True),
        ("port = 1179", "port", 1179),
        ('password = "s3cret"', "password", "s3cret"),
        ('description = "AS65001 in FRA"', "description", "AS65001 in FRA"),
        ('local_address = "192.0.2.1"', "local_address", "192.0.2.1"),
    ],
)
def test_peer_values(tmp_path: Path, extra: str, attr: str, expected: object) -> None:
    (peer,) = load(tmp_path, LOCAL + PEER_A + extra + "\n").peers
    assert getattr(peer, attr) == expected


def test_addresses_are_canonical(tmp_path: Path) -> None:
    text = LOCAL + PEER_A.replace("192.0.2.2", "2001:DB8:0::0002") + 'local_address = "2001:db8::0:1"\n'
    (peer,) = load(tmp_path, text).peers
    assert (peer.neighbor, peer.local_address) == ("2001:db8::2", "2001:db8::1")


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [("127.0.0.1:8179", "127.0.0.1", 8179), ("[::1]:9000", "::1", 9000), ("localhost:80", "localhost", 80)],
)
def test_api_listen(tmp_path: Path, listen: str, host: str, port: int) -> None:
    api = load(tmp_path, LOCAL + f'[api]\nlisten = "{listen}"\n').api
    assert (api.host, api.port) == (host, port)


# ---- bad configs: (TOML text, expected substring of str(ConfigError)) ----------------------------

BAD: list[tuple[str, str, str]] = [
    # id, text, expected
    ("syntax", LOCAL + "[fib]\nmode = \n", "config.toml:5: TOML syntax error: Invalid value (column 8)"),
    ("syntax-dup-key", LOCAL + "asn = 1\n", "config.toml:4: TOML syntax error: Cannot overwrite a value"),
    (
        "syntax-eof",
        LOCAL + 'x = "abc',
        "config.toml: TOML syntax error: Unterminated string (at end of file)",
    ),
    ("top-unknown", "pers = []\n" + LOCAL, "config.toml:1: pers: unknown key (did you mean peers?)"),
    (
        "local-unknown",
        LOCAL + "peers = []\n",
        "config.toml:4: local.peers: unknown key (expected one of: asn,",
    ),
    ("no-local", "[api]\n", "config.toml: local: missing required table [local]"),
    ("local-not-table", 'local = "x"\n', 'config.toml:1: local: expected a table, got "x"'),
    (
        "local-missing-asn",
        '[local]\nrouter_id = "1.1.1.1"\n',
        "config.toml:1: local: missing required key asn",
    ),
    (
        "asn-zero",
        LOCAL.replace("64500", "0"),
        "config.toml:2: local.asn: must be between 1 and 4294967295, got 0",
    ),
    ("asn-big", LOCAL.replace("64500", "4294967296"), "config.toml:2: local.asn: must be between 1 and"),
    (
        "asn-str",
        LOCAL.replace("64500", '"64500"'),
        'config.toml:2: local.asn: expected an integer, got "64500"',
    ),
    ("asn-bool", LOCAL.replace("64500", "true"), "config.toml:2: local.asn: expected an integer, got true"),
    ("asn-float", LOCAL.replace("64500", "1.5"), "config.toml:2: local.asn: expected an integer, got 1.5"),
    (
        "rid-short",
        LOCAL.replace("192.0.2.1", "1.2.3"),
        'local.router_id: expected an IPv4 address, got "1.2.3"',
    ),
    ("rid-v6", LOCAL.replace("192.0.2.1", "::1"), "config.toml:3: local.router_id: expected an IPv4 address"),
    (
        "rid-zero",
        LOCAL.replace("192.0.2.1", "0.0.0.0"),
        "config.toml:3: local.router_id: must not be 0.0.0.0",
    ),
    (
        "source4-v6",
        LOCAL + 'source4 = "2001:db8::1"\n',
        "config.toml:4: local.source4: expected an IPv4 address",
    ),
    (
        "source6-v4",
        LOCAL + 'source6 = "192.0.2.1"\n',
        "config.toml:4: local.source6: expected an IPv6 address",
    ),
    (
        "local-typo",
        LOCAL + 'source_4 = "192.0.2.1"\n',
        "config.toml:4: local.source_4: unknown key (did you mean source4?)",
    ),
    (
        "listen-v6-bare",
        LOCAL + '[api]\nlisten = "::1:8179"\n',
        "config.toml:5: api.listen: an IPv6 address needs brackets",
    ),
    (
        "listen-no-port",
        LOCAL + '[api]\nlisten = "localhost"\n',
        'config.toml:5: api.listen: expected "host:port"',
    ),
    (
        "listen-port",
        LOCAL + '[api]\nlisten = "[::1]:70000"\n',
        "config.toml:5: api.listen: port must be 1..65535",
    ),
    (
        "listen-bad-v4",
        LOCAL + '[api]\nlisten = "1.2.3.999:1"\n',
        "config.toml:5: api.listen: not an IPv4 address",
    ),
    (
        "api-typo",
        LOCAL + '[api]\nlisen = "x"\n',
        "config.toml:5: api.lisen: unknown key (did you mean listen?)",
    ),
    (
        "log-level",
        LOCAL + '[runtime]\nlog_level = "verbose"\n',
        "config.toml:5: runtime.log_level: must be one of debug, info, warning, error",
    ),
    ("runtime-dir-empty", LOCAL + '[runtime]\ndir = ""\n', "config.toml:5: runtime.dir: must not be empty"),
    (
        "decision-type",
        LOCAL + '[decision]\nalways_compare_med = "yes"\n',
        'config.toml:5: decision.always_compare_med: expected true or false, got "yes"',
    ),
    (
        "fib-mode",
        LOCAL + '[fib]\nmode = "half"\n',
        'config.toml:5: fib.mode: must be one of off, default, full, got "half"',
    ),
    (
        "fib-table-0",
        LOCAL + "[fib]\ntable = 0\n",
        "config.toml:5: fib.table: must be between 1 and 4294967295, got 0",
    ),
    (
        "fib-stale-timeout",
        LOCAL + "[fib]\nstale_timeout = -1\n",
        "config.toml:5: fib.stale_timeout: must be between 0 and 86400, got -1",
    ),
    (
        "fib-table-local",
        LOCAL + "[fib]\ntable = 255\n",
        "config.toml:5: fib.table: 255 is the kernel's local table",
    ),
    (
        "fib-proto-kernel",
        LOCAL + "[fib]\nprotocol = 2\n",
        "config.toml:5: fib.protocol: 2 is reserved by the kernel",
    ),
    (
        "fib-proto-big",
        LOCAL + "[fib]\nprotocol = 256\n",
        "config.toml:5: fib.protocol: must be between 0 and 255",
    ),
    ("fib-metric", LOCAL + "[fib]\nmetric = -1\n", "config.toml:5: fib.metric: must be between 0 and"),
    ("fib-netns", LOCAL + '[fib]\nnetns = "a/b"\n', "config.toml:5: fib.netns: not a network namespace name"),
    (
        "fib-ifname-long",
        LOCAL + '[fib]\nsource_interface = "sixteen-chars-xx"\n',
        "config.toml:5: fib.source_interface: not an interface name",
    ),
    (
        "fib-ifname-space",
        LOCAL + '[fib]\nsource_interface = "a b"\n',
        "fib.source_interface: not an interface name",
    ),
    (
        "fib-tables-type",
        LOCAL + "[fib]\nper_upstream_tables = 1\n",
        "config.toml:5: fib.per_upstream_tables: expected true or false, got 1",
    ),
    (
        "fib-typo",
        LOCAL + "[fib]\nmetrc = 1\n",
        "config.toml:5: fib.metrc: unknown key (did you mean metric?)",
    ),
    # peers
    (
        "peer-typo",
        LOCAL + PEER_A + "hold_tme = 90\n",
        "config.toml:9: peers[0].hold_tme: unknown key (did you mean hold_time?)",
    ),
    (
        "peer-typo-2nd",
        LOCAL + PEER_A + PEER_B + "naighbor = 1\n",
        "config.toml:14: peers[1].naighbor: unknown key (did you mean neighbor?)",
    ),
    (
        "peer-as-str",
        LOCAL + PEER_A + PEER_B.replace("65002", '"abc"'),
        'config.toml:13: peers[1].peer_as: expected an integer, got "abc"',
    ),
    (
        "peer-as-zero",
        LOCAL + PEER_A.replace("65001", "0"),
        "config.toml:8: peers[0].peer_as: must be between 1 and 4294967295",
    ),
    (
        "peer-missing-kind",
        LOCAL + PEER_A.replace('kind = "upstream"\n', ""),
        "config.toml:4: peers[0]: missing required key kind",
    ),
    (
        "peer-missing-as",
        LOCAL + PEER_A + PEER_B.replace("peer_as = 65002\n", ""),
        "config.toml:9: peers[1]: missing required key peer_as",
    ),
    (
        "peer-kind",
        LOCAL + PEER_A.replace('"upstream"', '"transit"'),
        "config.toml:6: peers[0].kind: must be one of mux, upstream, route-server, ixp-peer, collector, got",
    ),
    (
        "peer-name-space",
        LOCAL + PEER_A.replace('"a"', '"a b"'),
        "config.toml:5: peers[0].name: must be 1-64 characters",
    ),
    (
        "peer-name-dots",
        LOCAL + PEER_A.replace('"a"', '".."'),
        "config.toml:5: peers[0].name: must be 1-64 characters",
    ),
    ("peer-name-empty", LOCAL + PEER_A.replace('"a"', '""'), "config.toml:5: peers[0].name: must be 1-64"),
    (
        "neighbor-bad",
        LOCAL + PEER_A.replace("192.0.2.2", "300.1.1.1"),
        'config.toml:7: peers[0].neighbor: expected an IP address, got "300.1.1.1"',
    ),
    (
        "neighbor-prefix",
        LOCAL + PEER_A.replace("192.0.2.2", "192.0.2.0/24"),
        "config.toml:7: peers[0].neighbor: expected an IP address",
    ),
    (
        "neighbor-mcast",
        LOCAL + PEER_A.replace("192.0.2.2", "224.0.0.5"),
        "config.toml:7: peers[0].neighbor: must be a unicast address",
    ),
    (
        "neighbor-int",
        LOCAL + PEER_A.replace('"192.0.2.2"', "3221225986"),
        "config.toml:7: peers[0].neighbor: expected a string, got 3221225986",
    ),
    (
        "local-addr-family",
        LOCAL + PEER_A + 'local_address = "2001:db8::1"\n',
        "config.toml:9: peers[0].local_address: 2001:db8::1 is not the same address family as neighbor 192.0",
    ),
    (
        "family-bad",
        LOCAL + PEER_A + 'families = ["ipv4", "ipx"]\n',
        'config.toml:9: peers[0].families[1]: must be ipv4 or ipv6, got "ipx"',
    ),
    (
        "family-dup",
        LOCAL + PEER_A + 'families = ["ipv4", "ipv4"]\n',
        "config.toml:9: peers[0].families[1]: duplicate family ipv4",
    ),
    (
        "family-empty",
        LOCAL + PEER_A + "families = []\n",
        "config.toml:9: peers[0].families: must name at least one family",
    ),
    (
        "family-str",
        LOCAL + PEER_A + 'families = "ipv4"\n',
        "config.toml:9: peers[0].families: expected an array",
    ),
    (
        "family-multiline",
        LOCAL + PEER_A + 'families = [\n  "ipv4",\n  6,\n]\n',
        "config.toml:9: peers[0].families[1]: expected a string, got 6",
    ),
    (
        "hold-1",
        LOCAL + PEER_A + "hold_time = 1\n",
        "config.toml:9: peers[0].hold_time: must be 0 or >= 3, got 1",
    ),
    (
        "hold-neg",
        LOCAL + PEER_A + "hold_time = -3\n",
        "config.toml:9: peers[0].hold_time: must be 0 or >= 3, got -3",
    ),
    (
        "hold-big",
        LOCAL + PEER_A + "hold_time = 65536\n",
        "config.toml:9: peers[0].hold_time: must be <= 65535, got 65536",
    ),
    (
        "multihop-0",
        LOCAL + PEER_A + "multihop = 0\n",
        "config.toml:9: peers[0].multihop: must be between 1 and 255, got 0",
    ),
    (
        "multihop-str",
        LOCAL + PEER_A + 'multihop = "2"\n',
        "config.toml:9: peers[0].multihop: expected a TTL (1..255) or true/false",
    ),
    (
        "port-0",
        LOCAL + PEER_A + "port = 0\n",
        "config.toml:9: peers[0].port: must be between 1 and 65535, got 0",
    ),
    (
        "speaker",
        LOCAL + PEER_A + 'speaker = "bird"\n',
        'config.toml:9: peers[0].speaker: must be one of exabgp, native, got "bird"',
    ),
    (
        "password-long",
        LOCAL + PEER_A + f'password = "{"x" * 81}"\n',
        "config.toml:9: peers[0].password: must be 1 to 80 bytes",
    ),
    (
        "password-quote",
        LOCAL + PEER_A + "password = 'a\"b'\n",
        "config.toml:9: peers[0].password: must be printable ASCII",
    ),
    (
        "description-newline",
        LOCAL + PEER_A + 'description = "a\\nb"\n',
        "config.toml:9: peers[0].description: must not contain control characters",
    ),
    (
        "passive-str",
        LOCAL + PEER_A + 'passive = "true"\n',
        'config.toml:9: peers[0].passive: expected true or false, got "true"',
    ),
    (
        "dup-name",
        LOCAL + PEER_A + PEER_B.replace('"b"', '"a"'),
        'config.toml:10: peers[1].name: duplicate peer name "a" (also peers[0])',
    ),
    (
        "dup-neighbor",
        LOCAL + PEER_A + PEER_B.replace("2001:db8::2", "192.0.2.2"),
        "config.toml:12: peers[1].neighbor: duplicate neighbor 192.0.2.2 port 179 (also peers[0] a)",
    ),
    (
        "dup-neighbor-canonical",
        LOCAL + PEER_B + PEER_B.replace('"b"', '"c"').replace("::2", ":0::0002"),
        "peers[1].neighbor: duplicate neighbor 2001:db8::2 port 179",
    ),
    (
        "peers-table",
        LOCAL + "[peers]\nname = 1\n",
        "config.toml:4: peers: expected an array of tables ([[peers]]), got a table",
    ),
    ("peer-not-table", "peers = [1]\n" + LOCAL, "config.toml:1: peers[0]: expected a table, got 1"),
    # templates
    (
        "tmpl-unknown",
        LOCAL + TEMPLATE + PEER_A + 'template = "upp"\n',
        'config.toml:13: peers[0].template: unknown template "upp" (did you mean up?)',
    ),
    (
        "tmpl-none",
        LOCAL + PEER_A + 'template = "up"\n',
        'config.toml:9: peers[0].template: unknown template "up" (defined: none)',
    ),
    (
        "tmpl-sets-name",
        LOCAL + TEMPLATE + 'name = "x"\n',
        "config.toml:8: templates.up.name: a template may not set name",
    ),
    (
        "tmpl-sets-neighbor",
        LOCAL + TEMPLATE + 'neighbor = "192.0.2.9"\n',
        "config.toml:8: templates.up.neighbor: a template may not set neighbor",
    ),
    (
        "tmpl-nested",
        LOCAL + TEMPLATE + 'template = "up"\n',
        "config.toml:8: templates.up.template: a template may not set template",
    ),
    (
        "tmpl-typo",
        LOCAL + TEMPLATE + "pasive = true\n",
        "config.toml:8: templates.up.pasive: unknown key (did you mean passive?)",
    ),
    (
        "tmpl-bad-value",
        LOCAL + TEMPLATE.replace("30", "2"),
        "config.toml:7: templates.up.hold_time: must be 0 or >= 3, got 2",
    ),
    (
        "tmpl-bad-name",
        LOCAL + '[templates."a b"]\nkind = "mux"\n',
        "config.toml:4: templates.a b: template name must be 1-64",
    ),
    (
        "tmpl-not-table",
        LOCAL + "[templates]\nup = 1\n",
        "config.toml:5: templates.up: expected a table, got 1",
    ),
    (
        "tmpl-family-clash",
        LOCAL + TEMPLATE + PEER_A.replace("192.0.2.2", "2001:db8::2") + 'template = "up"\n',
        "config.toml:6: templates.up.local_address: 192.0.2.1 is not the same address family as neighbor",
    ),
    # lab
    (
        "lab-feeder",
        LOCAL + PEER_A + '[lab]\nfeeders = ["a", "lab-b"]\n',
        'config.toml:10: lab.feeders[1]: no peer named "lab-b"',
    ),
    (
        "lab-feeder-typo",
        LOCAL + PEER_A + PEER_B + '[lab]\nfeeders = ["bb"]\n',
        'config.toml:15: lab.feeders[0]: no peer named "bb" (did you mean b?)',
    ),
    (
        "lab-feeder-dup",
        LOCAL + PEER_A + '[lab]\nfeeders = ["a", "a"]\n',
        'config.toml:10: lab.feeders[1]: "a" is listed twice',
    ),
    (
        "lab-overlap",
        LOCAL + "[lab]\noverlap = 1.5\n",
        "config.toml:5: lab.overlap: must be between 0.0 and 1.0, got 1.5",
    ),
    (
        "lab-overlap-nan",
        LOCAL + "[lab]\noverlap = nan\n",
        "config.toml:5: lab.overlap: must be between 0.0 and 1.0, got nan",
    ),
    (
        "lab-v4",
        LOCAL + "[lab]\nipv4_prefixes = 2_000_001\n",
        "config.toml:5: lab.ipv4_prefixes: must be between 0 and 2000000",
    ),
    (
        "lab-v6",
        LOCAL + "[lab]\nipv6_prefixes = 500_001\n",
        "config.toml:5: lab.ipv6_prefixes: must be between 0 and 500000",
    ),
    (
        "lab-typo",
        LOCAL + "[lab]\nenable = true\n",
        "config.toml:5: lab.enable: unknown key (did you mean enabled?)",
    ),
    # the line index: headers with spaces, comments, multi-line strings, dotted keys
    (
        "line-comment-header",
        LOCAL + "# [fib]\n[ fib ]  # kernel\n\ntable = 255\n",
        "config.toml:7: fib.table: 255",
    ),
    (
        "line-multiline-str",
        LOCAL + PEER_A + 'description = """\nhold_time = 1\n"""\nhold_time = 1\n',
        "config.toml:12: peers[0].hold_time: must be 0 or >= 3",
    ),
    ("line-dotted", "fib.table = 255\n" + LOCAL, "config.toml:1: fib.table: 255"),
    (
        "lab-into-host-table",
        LOCAL + PEER_A.replace("192.0.2.2", "127.0.0.2") + '[fib]\nmode = "full"\n[lab]\nenabled = true\n'
        'feeders = ["a"]\n',
        "fib.netns: the lab's generated routes would go into this host's table 254",
    ),
    (
        "lab-feeder-not-loopback",
        LOCAL + PEER_A + '[lab]\nenabled = true\nfeeders = ["a"]\n',
        "lab.feeders[0]: peer a's neighbor 192.0.2.2 is not a loopback address",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_config(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert expected in message
    assert message.startswith(str(tmp_path / "config.toml"))


def test_error_carries_structured_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, LOCAL + PEER_A + "hold_time = 1\n")
    err = info.value
    assert (err.key_path, err.line, err.message) == ("peers[0].hold_time", 9, "must be 0 or >= 3, got 1")
    assert err.file == str(tmp_path / "config.toml")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "latin1.toml").write_bytes(b"[local]\n# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "latin1.toml")


# ---- dump_config and diff_peers -------------------------------------------------------------------


def test_dump_config_redacts_password(tmp_path: Path) -> None:
    config = load(tmp_path, LOCAL + PEER_A + 'password = "s3cret"\n' + PEER_B)
    view = dump_config(config)
    text = json.dumps(view)
    assert "s3cret" not in text
    peers = view["peers"]
    assert isinstance(peers, list)
    assert peers[0]["password"] == REDACTED
    assert peers[1]["password"] is None
    assert peers[0]["families"] == ["ipv4", "ipv6"]
    assert peers[1]["kind"] == "ixp-peer"
    assert view["runtime"] == {"dir": str(tmp_path / "run"), "log_level": "info"}


def _peer(name: str, neighbor: str, **changes: object) -> str:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in changes.items())
    return f'[[peers]]\nname = "{name}"\nkind = "mux"\nneighbor = "{neighbor}"\npeer_as = 65001\n{extra}'


def test_diff_peers(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = load(
        tmp_path / "old",
        LOCAL + _peer("keep", "10.0.0.1") + _peer("gone", "10.0.0.2") + _peer("edit", "10.0.0.3"),
    )
    new = load(
        tmp_path / "new",
        LOCAL
        + _peer("fresh", "10.0.0.4")
        + _peer("edit", "10.0.0.3", hold_time=30)
        + _peer("keep", "10.0.0.1"),
    )
    diff = diff_peers(old, new)
    assert [p.name for p in diff.added] == ["fresh"]
    assert diff.removed == ("gone",)
    assert [(p.name, p.hold_time) for p in diff.changed] == [("edit", 30)]
    assert diff.unchanged == ("keep",)
    same = diff_peers(old, old)
    assert (same.added, same.removed, same.changed) == ((), (), ())
    assert same.unchanged == ("keep", "gone", "edit")


def test_diff_peers_any_field_counts(tmp_path: Path) -> None:
    old = load(tmp_path, LOCAL + _peer("p", "10.0.0.1"))
    for change in ({"description": "x"}, {"password": "pw"}, {"families": ["ipv4"]}, {"multihop": True}):
        new = load(tmp_path, LOCAL + _peer("p", "10.0.0.1", **change))
        assert [p.name for p in diff_peers(old, new).changed] == ["p"], change


def test_peer_config_is_frozen(tmp_path: Path) -> None:
    (peer,) = load(tmp_path, LOCAL + PEER_A).peers
    assert isinstance(peer, PeerConfig)
    with pytest.raises(AttributeError):
        peer.hold_time = 3  # type: ignore[misc]


def test_warnings_for_an_api_open_beyond_loopback(tmp_path: Path) -> None:
    from orchestrator.config import config_warnings

    assert config_warnings(load(tmp_path, LOCAL)) == []
    assert config_warnings(load(tmp_path, LOCAL + '[api]\nlisten = "localhost:8179"\n')) == []
    (warning,) = config_warnings(load(tmp_path, LOCAL + '[api]\nlisten = "0.0.0.0:8179"\n'))
    assert warning.startswith("api.listen: 0.0.0.0 is not a loopback address")
