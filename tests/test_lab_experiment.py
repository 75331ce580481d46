"""A scheduled experiment in the shipped lab: each step reaches the feeder on the wire, on time.

The lab's ExaBGP speakers send what the steps announce; the feeders record what they receive
(`lab received`), so this checks the whole path: TOML file → CLI → API → plan → runner → speaker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_lab_announce import SmallLab
from tests.test_lab_e2e import running

pytestmark = [pytest.mark.interop]
PREFIX = "198.51.100.0/24"
EXPERIMENT = """
name = "prepend-sweep"
description = "prepend on lab-a, then withdraw"

[[steps]]
at = 0
action = "announce"
prefix = "198.51.100.0/24"
peers = ["lab-a"]
communities = ["64500:1"]

[[steps]]
at = 4
action = "announce"
prefix = "198.51.100.0/24"
peers = ["lab-a"]
prepend = 2
communities = ["64500:2"]

[[steps]]
at = 8
action = "withdraw"
prefix = "198.51.100.0/24"
"""


class ExperimentLab(SmallLab):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.patch_config({'"127.0.86.2"': '"127.0.88.2"', '"127.0.86.3"': '"127.0.88.3"',
                           "min_interval = 600": "min_interval = 3"})


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[ExperimentLab]:
    with running(ExperimentLab(tmp_path)) as lab:
        yield lab


def received(lab: ExperimentLab) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    for r in lab.api("/lab/received?peer=lab-a"):
        if r["prefix"] == PREFIX:
            return tuple(r["as_path"]), tuple(r["communities"])
    return None


def test_experiment_steps_reach_the_wire_in_order(lab: ExperimentLab, tmp_path: Path) -> None:
    lab.start()
    lab.wait_loaded()
    bad = tmp_path / "too-fast.toml"
    bad.write_text(EXPERIMENT.replace("at = 4", "at = 1"))
    res = lab.cli("experiment", "start", str(bad), check=False)
    assert res.returncode == 1
    assert "rate: steps[1] (at +1 s)" in res.stderr and "move it 2 s later" in res.stderr
    assert lab.api("/experiments") == [] and received(lab) is None  # refused whole: nothing sent

    good = tmp_path / "sweep.toml"
    good.write_text(EXPERIMENT)
    dry = lab.cli("experiment", "start", str(good), "--dry-run")
    assert "nothing scheduled" in dry.stdout and lab.api("/experiments") == []
    lab.cli("experiment", "start", str(good))

    seen: list[tuple[tuple[int, ...], tuple[str, ...]] | None] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = received(lab)
        if not seen or seen[-1] != now:
            seen.append(now)
        if lab.api("/experiments/prepend-sweep")["state"] == "finished" and now is None:
            break
        time.sleep(0.2)
    if seen[0] is None:  # polled before step 0 reached the feeder
        seen.pop(0)
    assert seen == [((64500,), ("64500:1",)), ((64500, 64500, 64500), ("64500:2",)), None]
    shown = json.loads(lab.cli("experiment", "show", "prepend-sweep", "--json").stdout)
    assert [s["state"] for s in shown["steps"]] == ["done", "done", "done"]
    assert shown["steps"][2]["outcome"] == "withdrawn from lab-a"
    assert "prepend-sweep  finished" in lab.cli("experiment", "list").stdout
    assert lab.stop() == 0


def test_peering_announcement_json_applies_in_the_lab(lab: ExperimentLab, tmp_path: Path) -> None:
    """`peerctl apply FILE`: the PEERING client's announcement format, muxes named as our peers."""
    lab.start()
    lab.wait_loaded()
    doc = tmp_path / "announce.json"
    doc.write_text(json.dumps({
        "198.51.100.0/24": {"announce": [{"muxes": ["lab-a"], "peers": [7]}], "description": "test"},
        "203.0.113.0/24": {"announce": [{"muxes": ["nowhere01"]}]},
    }))  # fmt: skip
    res = lab.cli("apply", str(doc), check=False)
    assert res.returncode == 1  # one prefix refused, the other applied
    assert "announce 198.51.100.0/24: lab-a" in res.stdout
    assert "203.0.113.0/24: refused: targets: no peer named 'nowhere01'" in res.stdout
    deadline = time.monotonic() + 20
    while received(lab) is None:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert received(lab) == ((64500,), ("47065:7",))  # PEERING peer id 7 → community 47065:7
    assert lab.stop() == 0
