"""The files in examples/ stay true: every config passes `peerctl check`, and the example experiment
passes every safety and rate rule against the shipped lab config."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from orchestrator.announce import AnnouncementManager
from orchestrator.api.announce import parse_request
from orchestrator.config import PeerKind, load_config
from orchestrator.experiments import plan
from orchestrator.log import get_logger

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "examples").glob("*.toml") if "[local]" in p.read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_passes_check(path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "-c", str(path), "check"], cwd=REPO,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{path}: ok")


def test_examples_say_what_they_claim() -> None:
    peering = load_config(REPO / "examples" / "peering.toml")
    assert {p.kind for p in peering.peers} == {PeerKind.MUX} and peering.local.asn == 47065
    assert peering.fib.per_upstream_tables and peering.safety is not None
    assert peering.safety.min_interval == 600 and not peering.safety.allow_poisoning
    ixp = load_config(REPO / "examples" / "ixp.toml")
    assert {p.kind for p in ixp.peers} == {PeerKind.UPSTREAM, PeerKind.ROUTE_SERVER, PeerKind.IXP_PEER}


def test_example_experiment_plans_against_the_shipped_config(tmp_path: Path) -> None:
    config = load_config(REPO / "config.toml")
    mgr = AnnouncementManager(lambda: config, dict, tmp_path, get_logger())
    body = tomllib.loads((REPO / "examples" / "experiment.toml").read_text())
    exp = plan(body, mgr, time.time(), parse_request)
    assert [(s.at, s.action) for s in exp.steps] == [(0, "announce"), (600, "announce"), (1200, "withdraw")]
    assert exp.steps[0].targets == ("lab-a", "lab-b")
