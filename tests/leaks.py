"""Leak checks shared by the tests of the C accelerators: traced memory after warm-up calls."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable


def growth(run: Callable[[], None], times: int, settle: Callable[[], None] = lambda: None) -> int:
    """Bytes the traced memory grew over ``times`` calls of ``run`` after a first one; ``settle``
    (e.g. clearing a bounded cache) and a collection run before each measurement."""
    tracemalloc.start()
    try:
        run()
        settle()
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(times):
            run()
        settle()
        gc.collect()
        return int(tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
