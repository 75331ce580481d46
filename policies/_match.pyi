from collections.abc import Callable, Iterable
from typing import Any

class Loop:
    """The import chain's per-prefix loop in C (see policies/_match.c)."""

    fallback: Callable[..., None]
    steps: int
    def __init__(self, fallback: Callable[..., None], steps: Iterable[tuple[Any, ...]]) -> None: ...
    def __call__(self, keys: Any, origin: Any, preds: Any, groups: Any, rejected: Any) -> None: ...
