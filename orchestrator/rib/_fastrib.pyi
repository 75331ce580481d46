from collections.abc import Iterator, Sequence
from typing import Any

class Announcer(Iterator[int]):
    received: int
    best: int
    def __next__(self) -> int: ...

def setup(path_type: type, best_change_type: type, only_path_reason: object, lo_entries: tuple[bytes, ...],
          lo_bits: int) -> None: ...
def announcer(buckets: dict[int, list[Any]], path: Any, peer: Any, family: Any, changes: list[Any] | None,
              keys: Sequence[int]) -> Announcer: ...
