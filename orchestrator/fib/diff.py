"""Fold best-path changes into per-prefix kernel operations.

Theory of operation
-------------------
The RIB emits one best-path change per prefix and per event; during a table load or a session flap
the same prefix can change several times within milliseconds. Writing every change would make the
kernel do work that is undone a moment later, so the writer collects changes in a ``FibDiff`` for a
short window and then drains it:

* Changes are folded per ``(family, key)``: the **last change wins**. A prefix announced, changed and
  withdrawn inside one window costs one DELETE (or nothing, if it was never installed: the writer
  drops deletions of routes it has not installed). The fold is a dict store, O(1) per change.
* A change to another next hop is a **REPLACE** (``NLM_F_CREATE | NLM_F_REPLACE`` in netlink terms),
  never DELETE + ADD, so a prefix never disappears from the table while it moves.
* ``nexthop`` is a ``NextHopRef``: the id of a kernel nexthop object chosen by the writer; ``None``
  means "remove the route". The diff does not interpret it.
* ``drain()`` returns REPLACEs first, in the order their prefixes were first changed, then DELETEs
  ordered by **descending key**. Deleting IPv4 routes in ascending prefix order hits a kernel cliff
  (fib_trie rebalancing: ~7,000/s instead of ~500,000/s, DESIGN.md "Kernel FIB"); descending key
  order is descending network order within each prefix length, which runs at full speed. IPv6 is
  ordered the same way for uniformity.

The module is pure: no I/O, no asyncio, no pyroute2 (STYLE.md rule 1).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from typing import NamedTuple, NewType

from orchestrator.rib.prefix import Family

NextHopRef = NewType("NextHopRef", int)
"""A kernel nexthop object id (``NHA_ID``), allocated by the writer."""


class OpKind(enum.Enum):
    REPLACE = "replace"
    DELETE = "delete"


class FibOp(NamedTuple):
    """One kernel operation for one prefix. ``nexthop`` is None exactly when ``kind`` is DELETE."""

    kind: OpKind
    family: Family
    key: int
    nexthop: NextHopRef | None


_REPLACE = OpKind.REPLACE
_DELETE = OpKind.DELETE


class FibDiff:
    """Pending per-prefix changes of both families; last change per prefix wins."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[Family, dict[int, NextHopRef | None]] = {Family.IPV4: {}, Family.IPV6: {}}

    def add(self, family: Family, key: int, nexthop: NextHopRef | None) -> None:
        """Record that ``family``/``key`` should point at ``nexthop`` (None: be removed)."""
        self._pending[family][key] = nexthop

    def pending(self, family: Family) -> dict[int, NextHopRef | None]:
        """The live pending map of one family (read-only use: the writer peeks for visibility)."""
        return self._pending[family]

    def __len__(self) -> int:
        return len(self._pending[Family.IPV4]) + len(self._pending[Family.IPV6])

    def drop(self, family: Family, key: int) -> None:
        """Forget any pending change of one prefix."""
        self._pending[family].pop(key, None)

    def drain(self) -> list[FibOp]:
        """Return every pending op (REPLACEs first, then DELETEs in descending key order) and reset.

        Each prefix appears at most once per family.
        """
        ops: list[FibOp] = []
        deletes: list[FibOp] = []
        for family, pending in self._pending.items():
            if not pending:
                continue
            self._pending[family] = {}
            dels: list[int] = []
            append = ops.append
            for key, nh in pending.items():
                if nh is None:
                    dels.append(key)
                else:
                    append(FibOp(_REPLACE, family, key, nh))
            dels.sort(reverse=True)  # never ascending: the IPv4 delete cliff
            deletes.extend(FibOp(_DELETE, family, key, None) for key in dels)
        ops.extend(deletes)
        return ops

    def drain_family(
        self, family: Family, limit: int | None = None
    ) -> tuple[list[tuple[int, NextHopRef]], list[int]]:
        """Fast path for bulk work: ``(replaces, deletes)`` of one family, deletes in descending key order.

        Same semantics as ``drain`` without building one ``FibOp`` per prefix (a full table is a
        million of them). With ``limit``, at most that many prefixes (the oldest pending first), so
        one call stays short on the event loop; the rest stays pending for the next call.
        """
        pending = self._pending[family]
        if not pending:
            return [], []
        if limit is None or len(pending) <= limit:
            self._pending[family] = {}
            items: Iterable[tuple[int, NextHopRef | None]] = pending.items()
        else:
            items = list(itertools.islice(pending.items(), limit))
            for key, _ in items:
                del pending[key]
        replaces = [(k, v) for k, v in items if v is not None]
        deletes = [k for k, v in items if v is None]
        deletes.sort(reverse=True)
        return replaces, deletes


def descending(keys: list[int]) -> list[int]:
    """``keys`` sorted for deletion: descending, never ascending (see the module docstring)."""
    return sorted(keys, reverse=True)
