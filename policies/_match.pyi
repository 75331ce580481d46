from collections.abc import Callable, Iterable
from typing import Any

class Loop:
    """The import chain's per-prefix loop in C (see policies/_match.c)."""

    fallback: Callable[..., None]
    steps: int
    def __init__(self, fallback: Callable[..., None], steps: Iterable[tuple[Any, ...]]) -> None: ...
    def __call__(self, keys: Any, origin: Any, preds: Any, groups: Any, rejected: Any) -> None: ...

class Copier:
    """A slotted object copied with some slots replaced."""

    fallback: Callable[..., Any]
    def __init__(self, type: type, slots: tuple[str, ...], replaced: tuple[str, ...],
                 fallback: Callable[..., Any]) -> None: ...
    def __call__(self, obj: Any, *values: Any) -> Any: ...

class Gates:
    """A peer's attribute gates over an AS path: the first that fires, -1, or None (not handled)."""

    def __init__(self, gates: Iterable[tuple[Any, ...]]) -> None: ...
    def __call__(self, as_path: Any) -> int | None: ...
