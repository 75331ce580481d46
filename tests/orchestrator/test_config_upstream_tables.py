"""fib.per_upstream_tables: which table each peer gets, and the errors (file:line: key: message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.errors import ConfigError

HEAD = """\
[local]
asn = 64500
router_id = "192.0.2.1"
[fib]
mode = "full"
table = 20000
per_upstream_tables = true
"""  # lines 1..7


def peer(name: str, kind: str, n: int, extra: str = "") -> str:
    return (f'[[peers]]\nname = "{name}"\nkind = "{kind}"\nneighbor = "127.0.95.{n}"\npeer_as = {65000 + n}\n'
            + extra)


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def test_tables_by_config_order_and_own_key(tmp_path: Path) -> None:
    text = (HEAD + "upstream_table_base = 30000\n" + peer("a", "upstream", 2) + peer("rs", "route-server", 3)
            + peer("m", "mux", 4) + peer("x", "ixp-peer", 5, "table = 4242\n"))
    config = load(tmp_path, text)
    assert [(p.name, p.table) for p in config.peers] == [  # type: ignore[attr-defined]
        ("a", 30000), ("rs", None), ("m", 30002), ("x", 4242)]


def test_default_base_and_off(tmp_path: Path) -> None:
    config = load(tmp_path, HEAD + peer("a", "upstream", 2) + peer("b", "upstream", 3))
    assert [p.table for p in config.peers] == [20100, 20101]  # type: ignore[attr-defined]
    off = HEAD.replace("per_upstream_tables = true", "per_upstream_tables = false")
    config = load(tmp_path, off + peer("a", "upstream", 2))
    assert [p.table for p in config.peers] == [None]  # type: ignore[attr-defined]


BAD = [
    ("needs-flag", HEAD.replace("per_upstream_tables = true", "per_upstream_tables = false")
     + peer("a", "upstream", 2, "table = 30000\n"),
     "config.toml:13: peers[0].table: needs fib.per_upstream_tables = true"),
    ("main-table", HEAD + peer("a", "upstream", 2, "table = 254\n"),
     "config.toml:13: peers[0].table: 254 is the kernel's main table"),
    ("fib-table", HEAD + peer("a", "upstream", 2, "table = 20000\n"),
     "config.toml:13: peers[0].table: 20000 is fib.table"),
    ("duplicate", HEAD + peer("a", "upstream", 2) + peer("b", "mux", 3, "table = 20100\n"),
     "config.toml:18: peers[1].table: table 20100 is also peers[0] (a)'s"),
    ("base-hits-fib-table", HEAD + "upstream_table_base = 19999\n" + peer("a", "upstream", 2)
     + peer("b", "upstream", 3),
     "config.toml:8: fib.upstream_table_base: peers[1] (b) would get table 20000: 20000 is fib.table"),
    ("too-big", HEAD + peer("a", "upstream", 2, "table = 16777216\n"),
     "config.toml:13: peers[0].table: per-upstream tables must be at most 16777215"),
    ("base-type", HEAD + 'upstream_table_base = "x"\n', "config.toml:8: fib.upstream_table_base: "),
    ("in-template", HEAD + '[templates.t]\nkind = "upstream"\ntable = 5\n',
     "config.toml:10: templates.t.table: a template may not set table"),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD], ids=[i for i, _, _ in BAD])
def test_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert str(info.value).endswith(expected) or expected in str(info.value), str(info.value)
