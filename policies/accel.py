"""The optional C per-prefix loop of the import chain (``policies/_match.c``) and its fallback.

Theory of operation
-------------------
``model.generate_loop`` writes the per-prefix loop of a program shape as Python source; that loop is
the reference. When every step of a shape is one the C module knows (a prefix list, a length bound,
an RPKI state, or "always"; each an ``Inline`` whose ``native`` describes it, see ``model.Inline``)
and the family is IPv4, ``native_loop`` wraps the generated loop in a ``_match.Loop``: same call,
same outputs, one C call per UPDATE for all its keys, and the generated loop still runs any call the
C code does not take as is (odd key or origin types, keys out of range: see the C module).

The tables reach C as flat arrays (``array`` 'Q'/'I' of ``RangeIndex`` and ``VrpTable.flat``),
exported for as long as the loop lives, so they cannot be resized under it; they are built once per
list or VRP load and never change.

``copier`` does the same for the one per-set cost that is mostly object building: the import
action's new ``Attributes`` (``rules.ImportAttributes``), a copy of the received set with three
fields replaced, by ``_match.Copier`` (slot pointers copied in C) instead of ``Attributes.fast``.

``gates`` runs a peer's attribute gates (bogon ASN, local AS, path length, first AS, transit ASN:
the ``Condition.bind`` tests that carry a ``native`` form) over an AS path in one call, where the
Python tests cost a call and a loop over the path each; a path of another shape is left to them.

``PEERCTL_PURE=1`` in the environment (read at import) or a missing build leaves ``MODULE`` None:
``native_loop`` and ``copier`` then return the Python function itself, ``gates`` None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Final, TypeVar

from orchestrator.accelerators import load

F = TypeVar("F", bound=Callable[..., Any])

# Step op codes of _match.c.
OP_ALWAYS: Final = 0
OP_LIST: Final = 1
OP_LENGTH: Final = 2
OP_RPKI: Final = 3

# Gate kinds of _match.Gates (``model.native_gate``).
GATE_ASN_IN: Final = 0
GATE_HAS: Final = 1
GATE_LONGER: Final = 2
GATE_FIRST_NOT: Final = 3
GATE_ANY_IN: Final = 4
GATE_NEVER: Final = 5

#: ``Inline.native`` of an RPKI step compares the state by these codes (0 valid, 1 invalid, 2 none).
RPKI_STATES: Final = ("valid", "invalid", "not-found")


MODULE: ModuleType | None = load("policies._match")


def native_loop(width: int, steps: Sequence[tuple[Any, ...]], fallback: F) -> F:
    """``fallback`` (the generated loop) run in C when possible, else ``fallback`` itself.

    ``steps``: per step ``(op, negate, accept, output index, rule name, *tables)`` as ``_match.Loop``
    takes them. A table C refuses (a ValueError/TypeError/BufferError from the constructor: wrong
    array type, an inconsistent index) keeps the Python loop.
    """
    if MODULE is None or width != 32 or not steps:
        return fallback
    try:
        loop: F = MODULE.Loop(fallback, tuple(steps))
    except (ValueError, TypeError, BufferError, OverflowError):
        return fallback
    return loop


def copier(cls: type, replaced: tuple[str, ...], fallback: F) -> F:
    """``fallback(obj, *values)`` (which must build a ``cls`` copying ``obj``'s slots but ``replaced``,
    set to ``values``) done by ``_match.Copier`` when it is built and ``cls`` is a plain slotted
    class, else ``fallback`` itself."""
    if MODULE is None:
        return fallback
    try:
        made: F = MODULE.Copier(cls, tuple(vars(cls)["__slots__"]), replaced, fallback)
    except (KeyError, ValueError, TypeError):
        return fallback
    return made


def gates(natives: Sequence[tuple[Any, ...]]) -> Callable[[Any], int | None] | None:
    """``_match.Gates`` over these gate forms (``as_path -> index of the first that fires, -1, or
    None``), or None when the module is absent or refuses one (a value past 64 bits)."""
    if MODULE is None:
        return None
    try:
        made: Callable[[Any], int | None] = MODULE.Gates(tuple(natives))
    except (ValueError, TypeError, OverflowError, BufferError):
        return None
    return made
