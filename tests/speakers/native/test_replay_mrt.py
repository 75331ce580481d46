"""``speakers.replay.mrt.table_groups``: one peer's view of a real MRT RIB dump, rewritten for a feeder,
and served by ``feeder --mrt`` to the native speaker over a real session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from orchestrator.config import LocalConfig, PeerConfig, PeerKind
from orchestrator.rib.attrs import AS_SEQUENCE
from orchestrator.rib.prefix import Family
from speakers.events import EndOfRib, SpeakerEvent, Update
from speakers.native.speaker import NativeSpeaker
from speakers.replay.mrt import peer_counts, table_groups

ROOT = Path(__file__).resolve().parents[3]


def test_most_common_peer_and_rewrite(real_data: Path) -> None:
    path = real_data / "mrt/rib/bview.ipv4_unicast_add_path.gz"
    counts = peer_counts(path)
    assert counts.most_common(1)[0] == (("10.0.16.2", 65017), 31)
    groups = list(table_groups(path, next_hop4="192.0.2.2", next_hop6="2001:db8::2", peer_as=65010))
    keys = [k for _, _, ks in groups for k in ks]
    assert len(keys) == len(set(keys)) == 16  # ADD-PATH: several paths per prefix, the first one wins
    for family, attrs, _ in groups:
        assert family is Family.IPV4 and attrs.next_hop == "192.0.2.2" and attrs.local_pref is None
        assert attrs.as_path[0][0] == AS_SEQUENCE and attrs.as_path[0][1][:2] == (65010, 65017)
    other = list(table_groups(path, next_hop4="192.0.2.2", next_hop6="2001:db8::2", peer_as=65010,
                              peer="10.0.15.1"))  # fmt: skip
    assert all(a.as_path[0][1][1] == 65015 for _, a, _ in other)
    with pytest.raises(ValueError, match="no RIB entries"):
        list(table_groups(path, next_hop4="192.0.2.2", next_hop6="2001:db8::2", peer_as=1, peer="192.0.2.99"))


def test_ipv6_dump(real_data: Path) -> None:
    path = real_data / "mrt/rib/bview.ipv6_unicast_add_path.gz"
    groups = list(table_groups(path, next_hop4="192.0.2.2", next_hop6="2001:db8::2", peer_as=65010))
    assert {f for f, _, _ in groups} == {Family.IPV6}
    assert all(a.next_hop == "2001:db8::2" for _, a, _ in groups)
    assert sum(len(k) for _, _, k in groups) == 16


@pytest.mark.interop
def test_feeder_serves_mrt_to_native_speaker(real_data: Path, tmp_path: Path) -> None:
    path = real_data / "mrt/rib/bview.ipv4_unicast_add_path.gz"
    ready = tmp_path / "ready"
    cmd = [sys.executable, "-m", "speakers.native.feeder", "--listen", "127.0.70.20", "--port", "17980",
           "--asn", "65010", "--router-id", "127.0.70.20", "--peer-as", "65001", "--mrt", str(path),
           "--ready-file", str(ready)]  # fmt: skip
    with open(tmp_path / "feeder.log", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=err, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "feeder.log").read_text()
            time.sleep(0.1)
        got: dict[int, object] = {}
        eor = asyncio.Event()

        async def emit(ev: SpeakerEvent) -> None:
            if isinstance(ev, Update):
                got.update(dict.fromkeys(ev.announce, ev.attrs))
            elif isinstance(ev, EndOfRib) and ev.family is Family.IPV4:
                eor.set()

        async def scenario() -> None:
            peer = PeerConfig(name="mrt", kind=PeerKind.UPSTREAM, neighbor="127.0.70.20", peer_as=65010,
                              local_address="127.0.70.21", port=17980, families=(Family.IPV4,))  # fmt: skip
            sp = NativeSpeaker(peer, LocalConfig(asn=65001, router_id="127.0.70.21"), emit,
                               structlog.get_logger("test"))  # fmt: skip
            await sp.start()
            await asyncio.wait_for(eor.wait(), 30)
            await sp.stop()

        asyncio.run(scenario())
        want = {k for _, _, ks in table_groups(path, next_hop4="192.0.2.2", next_hop6="2001:db8::2",
                                               peer_as=65010) for k in ks}  # fmt: skip
        assert set(got) == want
    finally:
        proc.terminate()
        proc.wait(10)
