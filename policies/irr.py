"""IRR prefix lists from bgpq4 or a file: the I/O edge of the policy layer.

``IrrCache.refresh(peer, as_set, bgpq4_path, timeout)`` runs ``bgpq4 -j -l NAME AS-SET`` as a
subprocess (blocking: call it from a worker thread, e.g. ``asyncio.to_thread``), parses its JSON and
swaps the peer's list in. On any failure (timeout, exit status, bad JSON, empty list) the last good
list is kept and the failure is returned, not raised: a flaky IRR server must never empty a filter.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from policies.prefixset import PrefixEntry, PrefixList, parse_bgpq4_json, parse_lines


@dataclass(frozen=True, slots=True)
class RefreshResult:
    peer: str
    ok: bool
    entries: int  # entries in the list now in use (new on success, old on failure)
    error: str = ""


def load_prefix_file(path: str | Path) -> list[PrefixEntry]:
    """A file of entries: bgpq4 JSON when it starts with ``{``, else one entry per line.

    Raises OSError or ValueError (naming the file and line).
    """
    text = Path(path).read_text()
    try:
        if text.lstrip().startswith("{"):
            return parse_bgpq4_json(text)
        return parse_lines(text.splitlines())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def bgpq4_command(bgpq4_path: str, as_set: str, name: str = "NN", ipv6: bool = False,
                  extra: tuple[str, ...] = ()) -> list[str]:
    return [bgpq4_path, "-6" if ipv6 else "-4", "-j", "-l", name, *extra, as_set]


class IrrCache:
    """Last good IRR prefix list per peer."""

    def __init__(self) -> None:
        self._lists: dict[str, PrefixList] = {}

    def get(self, peer: str) -> PrefixList | None:
        return self._lists.get(peer)

    def set(self, peer: str, entries: list[PrefixEntry]) -> None:
        self._lists[peer] = PrefixList(entries)

    def refresh(self, peer: str, as_set: str, bgpq4_path: str = "bgpq4", timeout: float = 30.0,
                families: tuple[bool, ...] = (False, True), extra: tuple[str, ...] = ()) -> RefreshResult:
        """Query bgpq4 once per family (``False`` = IPv4, ``True`` = IPv6); all or nothing."""
        old = self._lists.get(peer)
        entries: list[PrefixEntry] = []
        for ipv6 in families:
            cmd = bgpq4_command(bgpq4_path, as_set, ipv6=ipv6, extra=extra)
            try:
                proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                return self._failed(peer, old, f"bgpq4 timed out after {timeout:g} s ({as_set})")
            except OSError as exc:
                return self._failed(peer, old, f"cannot run {bgpq4_path}: {exc}")
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip()[:200]
                return self._failed(peer, old, f"bgpq4 exited {proc.returncode}: {err}")
            try:
                entries.extend(parse_bgpq4_json(proc.stdout))
            except ValueError as exc:
                return self._failed(peer, old, str(exc))
        if not entries:
            return self._failed(peer, old, f"bgpq4 returned no prefixes for {as_set}")
        self.set(peer, entries)
        return RefreshResult(peer, True, len(entries))

    @staticmethod
    def _failed(peer: str, old: PrefixList | None, error: str) -> RefreshResult:
        return RefreshResult(peer, False, len(old) if old is not None else 0, error)
