"""The pure core must not do I/O: no asyncio, aiohttp or pyroute2 imports (STYLE.md rule 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {"asyncio", "aiohttp", "pyroute2"}
PURE = [
    "orchestrator/rib",
    "orchestrator/config.py",
    "orchestrator/status.py",
    "orchestrator/fib/diff.py",
    "orchestrator/collector/mrt.py",
    "orchestrator/lab/tablegen.py",
    "speakers/events.py",
    "speakers/exabgp/render.py",
    "speakers/exabgp/decode.py",
    "speakers/exabgp/session.py",
    "speakers/native/codec.py",
    "policies/model.py",
    "policies/rules.py",
    "policies/safety.py",
    "policies/dampening.py",
]


def _pure_files() -> list[Path]:
    files: list[Path] = []
    for entry in PURE:
        path = REPO / entry
        if path.is_dir():
            files.extend(sorted(path.rglob("*.py")))
        elif path.exists():
            files.append(path)
    return files


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_pure_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN, f"{path.relative_to(REPO)} imports {name}"
