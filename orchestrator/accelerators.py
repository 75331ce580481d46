"""The optional C accelerators (``setup.py``'s ``EXTENSIONS``), loaded in one way.

Each one speeds up Python code that stays the reference: the module that uses it asks ``load``
for it and falls back to its own Python when the answer is None, i.e. when the extension was not
built (no C compiler or no Python headers at install time) or ``PEERCTL_PURE=1`` is set (to run,
and test, the Python path on a machine where it is built).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE_ENV = "PEERCTL_PURE"


def load(name: str) -> ModuleType | None:
    """The built extension ``name`` (e.g. ``"policies._match"``), or None (see the module)."""
    if os.environ.get(PURE_ENV) == "1":
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
