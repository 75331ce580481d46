"""The optional C accelerators (``setup.py``'s ``EXTENSIONS``): built wherever they can be, so CI
really runs them (the differential tests beside each compare them with the Python reference), wired
in where built, and all off with ``PEERCTL_PURE=1``."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = re.findall(r'^\s*Extension\("([\w.]+)"', (ROOT / "setup.py").read_text(), re.MULTILINE)
# Where each is wired in: (module, attribute) holding the accelerator's object, or None without it.
WIRED = {
    "policies._match": ("policies.accel", "MODULE", None),
    "orchestrator.rib._fastrib": ("orchestrator.rib.table", "_c_announce", "announce"),
    "speakers.native._fastpath": ("speakers.native.codec", "plain_updates", "plain_updates"),
}


def test_every_extension_is_known() -> None:
    assert sorted(EXTENSIONS) == sorted(WIRED)


@pytest.mark.parametrize("name", EXTENSIONS)
def test_built_where_it_can_be_and_wired_in(name: str) -> None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if shutil.which(cc) is None or not header.exists():
        pytest.skip(f"no C compiler ({cc}) or no {header}: the Python path is what runs here")
    try:
        ext = importlib.import_module(name)
    except ImportError as exc:
        pytest.fail(f"a C compiler and Python.h are present but {name} is not built ({exc}): "
                    "run scripts/setup.sh or `python setup.py build_ext --inplace`")
    user, attr, member = WIRED[name]
    wired = getattr(importlib.import_module(user), attr)
    if os.environ.get("PEERCTL_PURE") == "1":
        assert wired is None
    else:
        assert wired is (ext if member is None else getattr(ext, member))


def test_peerctl_pure_turns_every_one_off() -> None:
    code = "; ".join([f"import {user}" for user, _, _ in WIRED.values()] +
                     [f"print({user}.{attr} is None)" for user, attr, _ in WIRED.values()])
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PEERCTL_PURE": "1"},
                         capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True"] * len(WIRED)
