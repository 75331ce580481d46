"""The collector under load and failure: rotation loses nothing, kill -9 leaves earlier files whole,
the HTTP API and metrics, the [collector] config, pre-/post-policy dumps, oversized events."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from orchestrator.api.app import build_app
from orchestrator.collector.mrt import Bgp4mpUpdate, MrtError, MrtReader, RibEntry
from orchestrator.collector.record import RecordEncoder
from orchestrator.config import CollectorConfig, RibPolicy, load_config
from orchestrator.errors import ConfigError
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, key_from_parts, parse_prefix
from speakers.events import PeerUp, SpeakerEvent, Update

from .daemon_helpers import feed, make_daemon, real_peers_and_events, start, updates_in

REPO = Path(__file__).resolve().parents[3]
ATTRS = Attributes(next_hop="192.0.2.1", as_path=((AS_SEQUENCE, (64500, 64501)),))


def _keys(n: int, base: int = 0) -> list[int]:
    return [key_from_parts((10 << 24) | ((base + i) << 8), 24, Family.IPV4) for i in range(n)]


def test_rotation_under_load_loses_no_update(tmp_path: Path, real_data: Path) -> None:
    """1-second files, ~3 s of UPDATEs: every UPDATE is in exactly one finished file, in order."""
    peers, _ = real_peers_and_events(real_data / "mrt" / "updates/routeviews.updates.20161101.0000.bz2", 10)
    daemon = make_daemon(tmp_path, peers[:1], interval=1)
    name = peers[0].name
    sent = 0

    async def main() -> None:
        nonlocal sent
        await start(daemon)
        await feed(daemon, [PeerUp(name, peers[0].peer_as, "10.0.0.1")])
        deadline = time.monotonic() + 3.2
        while time.monotonic() < deadline and sent < 200_000:
            batch: list[SpeakerEvent] = [Update(name, Family.IPV4, ATTRS, _keys(1, sent + i), ())
                                         for i in range(200)]
            sent += len(batch)
            await daemon.emit_many(batch)
            await asyncio.sleep(0.002)
        await daemon.stop()

    asyncio.run(main())
    files = sorted((tmp_path / "mrt").glob("updates.*"))
    assert len(files) >= 3 and not [f for f in files if f.name.endswith(".partial")]
    seen: list[int] = []
    for f in files:
        ups = [r for r in MrtReader(f) if isinstance(r, Bgp4mpUpdate)]
        assert len({int(u.timestamp) for u in ups}) == 1  # a file holds its own second only
        seen += [u.announce[Family.IPV4][0] for u in ups]
    assert seen == _keys(sent) and sent > 2000


def test_period_change_with_events_queued_keeps_every_timestamp(tmp_path: Path, real_data: Path) -> None:
    """Events are queued and encoded per RIB batch: a new period arriving while events of the old one
    are still queued flushes them to the old file, and the new period's events keep their own time."""
    peers, _ = real_peers_and_events(real_data / "mrt" / "updates/routeviews.updates.20161101.0000.bz2", 10)
    daemon = make_daemon(tmp_path, peers[:1], interval=1)
    name = peers[0].name
    t0 = 1_700_000_000.5

    async def main() -> None:
        await daemon.start_collector()
        on_event = daemon.collector.on_event
        for i in range(6):  # no yield in between: all queued, periods t0, t0, t0 + 1, ... t0 + 2
            on_event(t0 + i // 2, Update(name, Family.IPV4, ATTRS, _keys(1, i), ()))
        await daemon.stop_collector()

    asyncio.run(main())
    files = sorted((tmp_path / "mrt").glob("updates.*"))
    got = [(int(u.timestamp), u.announce[Family.IPV4][0]) for f in files for u in MrtReader(f)
           if isinstance(u, Bgp4mpUpdate)]
    assert got == [(int(t0) + i // 2, k) for i, k in enumerate(_keys(6))]
    assert len(files) == 3


WRITER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from tests.orchestrator.collector.daemon_helpers import make_daemon, feed, start
    from tests.orchestrator.collector.test_collector_ops import ATTRS, _keys
    from orchestrator.config import PeerConfig, PeerKind
    from orchestrator.rib.prefix import Family
    from speakers.events import PeerUp, Update

    async def main():
        peer = PeerConfig(name="p", kind=PeerKind.COLLECTOR, neighbor="192.0.2.1", peer_as=64500)
        daemon = make_daemon(Path(sys.argv[1]), [peer], interval=1)
        await start(daemon)
        await feed(daemon, [PeerUp("p", 64500, "10.0.0.1")])
        i = 0
        deadline = time.monotonic() + 30  # bounded even if nobody kills us
        while time.monotonic() < deadline:
            await daemon.emit_many([Update("p", Family.IPV4, ATTRS, _keys(1, i + j), ()) for j in range(50)])
            i += 50
            await asyncio.sleep(0.005)

    asyncio.run(main())
""")


def test_kill_9_leaves_earlier_files_intact(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(REPO)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = [p for p in (tmp_path / "mrt").glob("updates.*") if not p.name.endswith(".partial")]
            if len(done) >= 2 and list((tmp_path / "mrt").glob("*.partial")):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        else:
            pytest.fail("the writer finished no two files in 20 s")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(p for p in (tmp_path / "mrt").glob("updates.*") if not p.name.endswith(".partial"))
    partial = list((tmp_path / "mrt").glob("*.partial"))
    assert len(done) >= 2 and len(partial) == 1
    counts = [sum(1 for r in MrtReader(p) if isinstance(r, Bgp4mpUpdate)) for p in done]  # raise if cut
    assert all(n > 0 for n in counts[1:])
    if partial[0].stat().st_size:  # what reached the disk of the file being written: cut, and said so
        with pytest.raises(MrtError):
            for _ in MrtReader(partial[0]):
                pass


def test_http_api_dump_status_and_metrics(tmp_path: Path, real_data: Path) -> None:
    peers, events = real_peers_and_events(real_data / "mrt" / "updates/routeviews.updates.20161101.0000.bz2")
    daemon = make_daemon(tmp_path, peers, compression="bz2")
    off = make_daemon(tmp_path / "off", peers, enabled=False)

    async def main() -> None:
        await start(daemon)
        await feed(daemon, events)
        async with TestClient(TestServer(build_app(daemon))) as client:
            resp = await client.get("/api/v1/collector")
            status = await resp.json()
            assert status["enabled"] and status["compression"] == "bz2" and status["updates_interval"] == 900
            assert status["records"] == len(events) and status["last_rib_file"] is None
            # the file being written; None right after a period boundary (every 15 min), when the
            # ticker has just finished it
            current = status["updates_file"] or str(max(daemon.collector.config.dir.glob("updates.*")))
            assert current.endswith((".bz2", ".bz2.partial"))
            resp = await client.post("/api/v1/collector/dump")
            assert resp.status == 200
            rib_file = Path((await resp.json())["rib_file"])
            assert rib_file.name.startswith("rib.") and rib_file.name.endswith(".bz2")
            entries = sum(1 for r in MrtReader(rib_file) if isinstance(r, RibEntry))
            assert entries == sum(len(ps) for f in Family for _, ps in daemon.rib.iter_paths(f)) > 1000
            resp = await client.post("/api/v1/collector/dump")  # same minute: a new name, not overwritten
            second = Path((await resp.json())["rib_file"])
            assert second != rib_file and rib_file.exists() and second.exists()
            assert (await (await client.get("/api/v1/collector")).json())["last_rib_file"] == str(second)
            metrics = await (await client.get("/metrics")).text()
            assert f"peerctl_collector_records_total {len(events)}" in metrics
            assert "peerctl_collector_rib_dumps_total 2" in metrics
            assert "peerctl_collector_errors_total 0" in metrics
        async with TestClient(TestServer(build_app(off))) as client:
            resp = await client.post("/api/v1/collector/dump")
            assert resp.status == 409 and "disabled" in (await resp.json())["error"]
            assert (await (await client.get("/api/v1/collector")).json())["enabled"] is False
        await daemon.stop()

    asyncio.run(main())
    (upd,) = (tmp_path / "mrt").glob("updates.*")
    assert sum(1 for r in MrtReader(upd) if isinstance(r, Bgp4mpUpdate)) == len(events) - len(peers)


CONFIG = """\
[local]
asn = 64500
router_id = "192.0.2.1"

[runtime]
dir = "state"

[collector]
{body}
"""


def _load(tmp_path: Path, body: str) -> CollectorConfig:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(body=body))
    return load_config(path).collector


@pytest.mark.parametrize(("body", "message"), [
    ('enabled = true\nintervall = 5', "c.toml:10: collector.intervall: unknown key (did you mean"),
    ('compression = "xz"', "c.toml:9: collector.compression: must be one of gz, bz2, none"),
    ("rib_interval = 30", "c.toml:9: collector.rib_interval: must be 0 (dumps on request only) or >= 60"),
    ("updates_interval = 0", "c.toml:9: collector.updates_interval: must be between 1 and"),
    ('rib_policy = "all"', "c.toml:9: collector.rib_policy: must be one of post, pre, both"),
    ('dir = ""', "c.toml:9: collector.dir: must not be empty"),
])
def test_config_errors_name_file_line_and_key(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, body)
    assert str(err.value).startswith(f"{tmp_path}/{message}"), str(err.value)


def test_config_defaults_and_dirs(tmp_path: Path) -> None:
    c = _load(tmp_path, "enabled = true")
    assert c == CollectorConfig(enabled=True, dir=tmp_path / "state" / "mrt", updates_interval=900,
                                rib_interval=7200, compression="gz", rib_policy=RibPolicy.POST)
    c = _load(tmp_path, 'dir = "archive/mrt"\nrib_policy = "both"\ncompression = "none"')
    assert c.dir == tmp_path / "archive" / "mrt" and c.rib_policy is RibPolicy.BOTH
    shipped = load_config(REPO / "config.toml")
    assert shipped.collector.enabled and shipped.collector.dir == shipped.runtime.dir / "mrt"


def test_pre_and_post_policy_dumps(tmp_path: Path) -> None:
    """A bogon (10.0.0.0/8) refused by the import policy is in rib-pre, not in rib; accepted routes
    are in both."""
    cfg = tmp_path / "p.toml"
    cfg.write_text(CONFIG.format(body=f'enabled = true\ndir = "{tmp_path}/mrt"\nrib_policy = "both"') + """
[[peers]]
name = "up"
kind = "upstream"
neighbor = "192.0.2.9"
peer_as = 174
import = { next_hop = false }
""")
    config = load_config(cfg)
    assert config.peers[0].policy is not None
    daemon = make_daemon(tmp_path, list(config.peers), rib_policy=RibPolicy.BOTH)
    good = parse_prefix("8.8.8.0/24")[1], parse_prefix("9.9.9.0/24")[1]
    bogon = parse_prefix("10.0.0.0/8")[1]
    attrs = Attributes(next_hop="192.0.2.9", as_path=((AS_SEQUENCE, (174, 15169)),))

    async def main() -> list[Path]:
        await start(daemon)
        await feed(daemon, [PeerUp("up", 174, "192.0.2.9"),
                            Update("up", Family.IPV4, attrs, [good[1], bogon], ())])
        assert daemon.collector is not None
        files: list[Path] = await daemon.collector.dump()
        await daemon.stop()
        return files

    post, pre = asyncio.run(main())
    assert post.name.startswith("rib.") and pre.name.startswith("rib-pre.")
    keys = {p: {r.key for r in MrtReader(p) if isinstance(r, RibEntry)} for p in (post, pre)}
    assert keys[post] == {good[1]} and keys[pre] == {good[1], bogon}
    assert sum(1 for _ in updates_in(tmp_path / "mrt")) == 2  # the state change and the UPDATE


def test_oversized_events_split_into_4096_byte_updates() -> None:
    enc = RecordEncoder(64500)
    enc.set_peer("p", "2001:db8::1", 64501, None)
    v6 = [parse_prefix(f"2001:db8:{i:x}::/48")[1] for i in range(600)]
    v4 = [*_keys(1500), 0]  # and the default route (key 0)
    a6 = Attributes(next_hop="2001:db8::1", as_path=((AS_SEQUENCE, (64501,)),))
    out: list[bytes] = []
    n = enc.update(out, 1, "p", Family.IPV6, a6, v6, v6[:300])
    n += enc.update(out, 2, "p", Family.IPV4, ATTRS, v4, v4[:700])
    out.append(enc.end_of_rib(3, "p", Family.IPV6))
    out.append(enc.end_of_rib(3, "p", Family.IPV4))
    assert n == len(out) - 2 > 4
    recs = [r for r in MrtReader(b"".join(out)) if isinstance(r, Bgp4mpUpdate)]
    assert all(len(raw) - 12 - 44 <= 4096 for raw in out)  # MRT + BGP4MP (IPv6 addresses) headers
    assert [k for r in recs for k in r.withdraw.get(Family.IPV6, [])] == v6[:300]
    assert [k for r in recs for k in r.announce.get(Family.IPV6, [])] == v6
    assert [k for r in recs for k in r.withdraw.get(Family.IPV4, [])] == v4[:700]
    assert [k for r in recs for k in r.announce.get(Family.IPV4, [])] == v4
    assert all(r.attrs_for(Family.IPV6) == a6 for r in recs if r.announce.get(Family.IPV6))
    assert [r.end_of_rib for r in recs[-2:]] == [Family.IPV6, Family.IPV4]
    assert recs[0].local_ip == "::"


def test_fast_attribute_encoder_matches_the_codec(real_data: Path) -> None:
    """Differential: the codec's fast 4-byte-AS block encoder (what recording and RIB dumps use) is
    byte-identical to its general encoder on every attribute set of two real update files and on
    shapes they lack."""
    from orchestrator.rib.attrs import AS_SET, Origin
    from speakers.native import codec

    sets = set()
    for name in ("routeviews.updates.20161101.0000.bz2", "ris.updates.20160811.1600.gz"):
        for rec in MrtReader(real_data / "mrt" / "updates" / name):
            if isinstance(rec, Bgp4mpUpdate) and rec.attrs is not None:
                sets.update(rec.attrs_for(f) for f in rec.announce)
    long_path = ((AS_SEQUENCE, tuple(range(1, 300))), (AS_SET, (7, 8)))
    sets |= {
        Attributes(next_hop="192.0.2.1", origin=Origin.INCOMPLETE, as_path=long_path, med=0, local_pref=7,
                   atomic_aggregate=True, aggregator=(4_200_000_000, "10.1.2.3"),
                   communities=tuple(range(70)), large_communities=((1, 2, 3), (4_000_000_000, 5, 6))),
        Attributes(next_hop="2001:db8::1", other=((0xC0, 99, b"xyz"),)),
        Attributes(),
    }
    assert len(sets) > 10_000
    for attrs in sets:
        for keep in (True, False):
            nh = keep and ":" not in attrs.next_hop
            want = b"".join(codec._encode_attrs(attrs, True, nh))  # the general encoder
            assert codec.encode_path_attributes(attrs, with_next_hop=nh) == want, attrs


def _update_body(raw_attrs: bytes, nlri: bytes) -> bytes:
    return b"\x00\x00" + len(raw_attrs).to_bytes(2, "big") + raw_attrs + nlri


def _recorded_attrs(record: bytes) -> bytes:
    """The path attribute block of a one-UPDATE BGP4MP_MESSAGE_AS4 record of an IPv4 peer."""
    i = 12 + 20 + 19  # MRT header, BGP4MP_AS4 header (IPv4 addresses), BGP header
    i += 2 + int.from_bytes(record[i : i + 2], "big")  # withdrawn routes
    return record[i + 2 : i + 2 + int.from_bytes(record[i : i + 2], "big")]


def test_received_attribute_bytes_are_recorded_as_received() -> None:
    """A set decoded by the native codec (both of its paths: the session's plain fast path, and
    ``decode_update`` as the MRT reader uses it) on a 4-byte-ASN session is recorded with the
    attribute block byte for byte as received, here one that re-encoding would change (MED before
    NEXT_HOP, an ORIGINATOR_ID the decoder skips); a file read back and recorded again is the same
    bytes. A 2-byte-ASN session's block (2-byte AS_PATH) and a set changed after decoding (import
    policy) fall back to encoding."""
    import dataclasses

    from speakers.native import codec

    codec.clear_attribute_cache()
    received = (b"\x40\x01\x01\x00"  # ORIGIN IGP
                b"\x40\x02\x0a\x02\x02\x00\x00\xfb\xf5\x00\x01\x00\x00"  # AS_PATH 64501 65536 (4-byte)
                b"\x80\x04\x04\x00\x00\x00\x07"  # MED 7, before NEXT_HOP
                b"\x40\x03\x04\xc0\x00\x02\x01"  # NEXT_HOP 192.0.2.1
                b"\x80\x09\x04\x0a\x00\x00\x01")  # ORIGINATOR_ID (optional non-transitive, skipped)
    nlri = b"\x18\x0a\x00\x01\x18\x0a\x00\x02"  # 10.0.1.0/24 10.0.2.0/24
    plain = codec.decode_plain_update(_update_body(received, nlri))
    assert plain is not None
    attrs = plain[0]
    assert attrs.raw4 == received and attrs.med == 7 and attrs.as_path == ((AS_SEQUENCE, (64501, 65536)),)
    assert codec.encode_path_attributes(attrs, asn4=True) != received  # what encoding would write
    codec.clear_attribute_cache()
    (fu,) = codec.decode_update(_update_body(received, nlri), asn4=True).families
    assert fu.attrs is not None and fu.attrs.raw4 == received

    enc = RecordEncoder(64500)
    enc.set_peer("p", "192.0.2.1", 64501, "192.0.2.2")
    out: list[bytes] = []
    assert enc.encode([1, Update("p", Family.IPV4, attrs, plain[1], [])], out) == 1
    first = b"".join(out)
    assert _recorded_attrs(first) == received
    again: list[bytes] = []
    enc.update(again, 1, "p", Family.IPV4, fu.attrs, fu.announce, [])  # the general path
    assert b"".join(again) == first
    (rec,) = [r for r in MrtReader(first) if isinstance(r, Bgp4mpUpdate)]
    assert rec.attrs_for(Family.IPV4) == attrs and rec.announce[Family.IPV4] == plain[1]
    replay: list[bytes] = []
    enc.encode([1, Update("p", Family.IPV4, rec.attrs_for(Family.IPV4), rec.announce[Family.IPV4], [])],
               replay)
    assert b"".join(replay) == first  # the MRT reader's set carries the bytes too

    changed = dataclasses.replace(attrs, local_pref=200)  # what an import policy makes
    assert changed.raw4 == b""
    out = []
    enc.encode([1, Update("p", Family.IPV4, changed, plain[1], [])], out)
    assert _recorded_attrs(b"".join(out)) == codec.encode_path_attributes(changed, asn4=True)

    codec.clear_attribute_cache()
    two_byte = (b"\x40\x01\x01\x00" b"\x40\x02\x06\x02\x02\xfb\xf5\x5b\xa0"  # AS_PATH 64501 23456
                b"\x40\x03\x04\xc0\x00\x02\x01")
    (fu2,) = codec.decode_update(_update_body(two_byte, nlri), asn4=False).families
    assert fu2.attrs is not None and fu2.attrs.raw4 == b""
    out = []
    enc.encode([1, Update("p", Family.IPV4, fu2.attrs, fu2.announce, [])], out)
    block = _recorded_attrs(b"".join(out))
    assert block == codec.encode_path_attributes(fu2.attrs, asn4=True) != two_byte
    (rec2,) = [r for r in MrtReader(b"".join(out)) if isinstance(r, Bgp4mpUpdate)]
    assert rec2.attrs_for(Family.IPV4) == fu2.attrs
