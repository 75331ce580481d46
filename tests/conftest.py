"""Shared fixtures: where the third-party real data lives, and root-only skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``../shared/data/real`` (third-party BGP data), or skip with a clear message."""
    if not SHARED_REAL.is_dir():
        pytest.skip(f"real data not present at {SHARED_REAL} (the ../shared checkout beside the repo)")
    return SHARED_REAL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)
