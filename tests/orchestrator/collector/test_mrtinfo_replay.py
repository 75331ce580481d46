"""``mrt info`` (summary, exit codes, one-line errors) and replay to speaker events."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from orchestrator.collector.mrt import MrtWriter
from orchestrator.collector.mrtinfo import format_summary, main_mrt_info, summarize
from orchestrator.collector.replay import replay_events
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, parse_prefix
from speakers.events import EndOfRib, PeerDown, PeerUp, Update

from .mrt_samples import PEERS, sample_table


@pytest.fixture
def rib_file(tmp_path: Path) -> Path:
    path = tmp_path / "rib.20240101.0000.gz"
    path.write_bytes(gzip.compress(MrtWriter(PEERS, timestamp=1_704_067_200).rib_dump(sample_table(500, 4))))
    return path


def test_summary_of_a_rib(rib_file: Path) -> None:
    info = summarize(rib_file)
    table = sample_table(500, 4)
    assert info["rib_entries"] == sum(len(p) for _, _, p in table)
    assert info["prefixes"]["ipv4"] + info["prefixes"]["ipv6"] == 500
    assert info["peer_index"]["peers"] == 3 and info["errors"] == []
    assert info["time"]["first"] == "2024-01-01T00:00:00Z"
    assert sum(p["entries"] for p in info["peers"]) == info["rib_entries"]
    text = format_summary(info)
    assert "TABLE_DUMP_V2/PEER_INDEX_TABLE" in text and "errors      0" in text


def test_main_ok_and_json(rib_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_mrt_info([str(rib_file)]) == 0
    assert "rib entries" in capsys.readouterr().out
    assert main_mrt_info([str(rib_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["records"] == 501


@pytest.mark.parametrize("content", [None, b"", b"not an mrt file, just text\n" * 3, b"\x1f\x8bgarbage"])
def test_main_bad_files_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             content: bytes | None) -> None:
    path = tmp_path / "bad.mrt"
    if content is not None:
        path.write_bytes(content)
    assert main_mrt_info([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("peerctl mrt info: ") and "Traceback" not in err


def test_main_truncated_file(rib_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.gz"
    data = rib_file.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert main_mrt_info([str(cut)]) == 2
    captured = capsys.readouterr()
    assert "rib entries" in captured.out
    assert captured.err.count("\n") == 1 and "truncated" in captured.err


def test_main_usage_error() -> None:
    assert main_mrt_info([]) == 2


def test_replay_rib_batches_by_attributes(rib_file: Path) -> None:
    events = list(replay_events(rib_file, "192.0.2.1", batch=4))
    assert isinstance(events[0], PeerUp) and events[0].peer == "192.0.2.1" and events[0].peer_as == 64500
    updates = [e for e in events if isinstance(e, Update)]
    assert all(len(u.announce) <= 4 and not u.withdraw and u.attrs is not None for u in updates)
    want = {(f, k) for f, k, paths in sample_table(500, 4) for p in paths if p[0] == 0}
    assert {(u.family, k) for u in updates for k in u.announce} == want
    assert sum(len(u.announce) for u in updates) == len(want)
    eors = [e for e in events if isinstance(e, EndOfRib)]
    assert {e.family for e in eors} <= {Family.IPV4, Family.IPV6} and events[-1] == eors[-1]
    everyone = list(replay_events(rib_file))
    assert len({e.peer for e in everyone if isinstance(e, PeerUp)}) == 3


def test_replay_update_stream() -> None:
    w = MrtWriter(PEERS)
    attrs = Attributes(next_hop="2001:db8::99", as_path=((AS_SEQUENCE, (64500, 1)),))
    _, k6 = parse_prefix("2001:db8:1::/48")
    _, k4 = parse_prefix("10.0.0.0/8")
    data = b"".join([
        w.state_change(1, "2001:db8::1", 64500, "2001:db8::fe", 65000, 5, 6),
        w.update(2, "2001:db8::1", 64500, "2001:db8::fe", 65000, Family.IPV6, [k6], [], attrs),
        w.update(3, "192.0.2.1", 64500, "192.0.2.254", 65000, Family.IPV4, [], [k4], None),
        w.state_change(4, "2001:db8::1", 64500, "2001:db8::fe", 65000, 6, 1),
    ])
    events = list(replay_events(data))
    assert events[0] == PeerUp("2001:db8::1", 64500, "0.0.0.0")
    assert events[1] == Update("2001:db8::1", Family.IPV6, attrs, [k6], ())
    assert events[2] == PeerUp("192.0.2.1", 64500, "0.0.0.0")
    assert events[3] == Update("192.0.2.1", Family.IPV4, None, (), [k4])
    assert isinstance(events[4], PeerDown) and events[4].peer == "2001:db8::1"
    assert [type(e) for e in replay_events(data, "192.0.2.1")] == [PeerUp, Update]
