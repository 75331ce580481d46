"""The shipped lab config: announce a documentation prefix and see it at the feeder (`lab received`)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_lab_e2e import PEERCTL, REPO, Lab, running

pytestmark = [pytest.mark.interop]


class SmallLab(Lab):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.patch_config({'"127.0.90.2"': '"127.0.86.2"', '"127.0.90.3"': '"127.0.86.3"',
                           'mode = "full"': 'mode = "off"', "ipv4_prefixes = 3000": "ipv4_prefixes = 200",
                           "ipv6_prefixes = 800": "ipv6_prefixes = 50"})  # fmt: skip


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[SmallLab]:
    with running(SmallLab(tmp_path)) as lab:
        yield lab


def test_announce_in_the_lab(lab: SmallLab) -> None:
    lab.start()
    lab.wait_loaded()
    assert lab.api("/announcements/allowed")["prefixes"] == ["198.51.100.0/24", "203.0.113.0/24",
                                                             "2001:db8:100::/40"]
    res = lab.cli("announce", "198.51.100.0/24", "--peer", "lab-a", "--prepend", "2",
                  "--community", "64500:7", "--large-community", "64500:1:1", "--next-hop", "192.0.2.1")
    assert "announced 198.51.100.0/24" in res.stdout
    deadline = time.monotonic() + 20
    got: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        got = [r for r in lab.api("/lab/received?peer=lab-a") if r["prefix"] == "198.51.100.0/24"]
        if got:
            break
        time.sleep(0.2)
    assert got == [{"prefix": "198.51.100.0/24", "as_path": [64500, 64500, 64500], "communities": ["64500:7"],
                    "large_communities": ["64500:1:1"], "next_hop": "192.0.2.1", "med": None}]
    cli = json.loads(subprocess.run([*PEERCTL, "-c", str(lab.config), "lab", "received", "lab-b"],
                                    capture_output=True, text=True, cwd=REPO, timeout=30).stdout)
    assert cli == []  # only lab-a was targeted
    assert lab.stop() == 0
