"""IRR prefix lists from bgpq4 or a file: the I/O edge of the policy layer.

Theory of operation
-------------------
A peer's IRR source is ``irr = { as_set = "AS-FOO" }`` (an AS-SET or a single ``ASnnn``), ``irr =
{ file = "foo.txt" }`` (a list kept by hand or by another tool), or both (bgpq4 writes into that
file). The import chain reads the *list file* (``list_path``: the configured file, else
``runtime.dir/irr/PEER.json``) when the peer's chain is built.

``refresh_file(peer, as_set, path, ...)`` runs ``bgpq4 -4 -j`` and ``bgpq4 -6 -j`` as subprocesses
(blocking: call it from a worker thread or the CLI), each under ``timeout`` (the child is killed when
it expires), parses the JSON and writes both families into ``path`` atomically (temporary file,
fsync, rename), so a reader sees the old list or the new one, never half of one. On any failure
(bgpq4 missing, timeout, exit status, output that is not bgpq4 JSON, an empty answer) the file is
left alone and the ``RefreshResult`` says which peer, why, and how many entries the kept list has:
a flaky IRR server must never empty a filter. ``IrrCache`` is the same in memory (no file).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from policies.prefixset import PrefixEntry, PrefixList, bgpq4_item, parse_bgpq4_json, parse_lines


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


def list_path(peer: str, file: Path | None, irr_dir: Path | None) -> Path | None:
    """Where the peer's IRR list is read from (and written by ``refresh``); None: nowhere."""
    if file is not None:
        return file
    return irr_dir / f"{peer}.json" if irr_dir is not None else None


def bgpq4_command(bgpq4_path: str, as_set: str, name: str = "NN", ipv6: bool = False,
                  extra: Sequence[str] = ()) -> list[str]:
    return [bgpq4_path, "-6" if ipv6 else "-4", "-j", "-l", name, *extra, as_set]


class IrrFetchError(Exception):
    """bgpq4 gave no usable list; the message says why."""


def fetch(as_set: str, *, bgpq4_path: str = "bgpq4", timeout: float = 30.0,
          families: Sequence[bool] = (False, True), extra: Sequence[str] = ()) -> list[dict[str, Any]]:
    """bgpq4's JSON items for ``as_set``, one run per family (``False`` = IPv4); all or nothing.

    Raises IrrFetchError naming the cause (timeout, exit status and stderr, bad JSON, no prefixes).
    """
    items: list[dict[str, Any]] = []
    for ipv6 in families:
        cmd = bgpq4_command(bgpq4_path, as_set, ipv6=ipv6, extra=extra)
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise IrrFetchError(f"bgpq4 timed out after {timeout:g} s ({as_set})") from None
        except OSError as exc:
            raise IrrFetchError(f"cannot run {bgpq4_path}: {exc}") from None
        if proc.returncode != 0:
            err = " ".join(proc.stderr.decode(errors="replace").split())[:300]
            raise IrrFetchError(f"bgpq4 exited {proc.returncode}: {err or 'no message'}")
        try:
            doc = json.loads(proc.stdout)
            (raw,) = doc.values() if isinstance(doc, dict) else (None,)
            if not isinstance(raw, list):
                raise ValueError("expected an object with one list")
            for i, item in enumerate(raw):
                bgpq4_item(item, i)  # validates; raises ValueError naming the item
            items.extend(raw)
        except ValueError as exc:
            raise IrrFetchError(f"bgpq4 output is not a bgpq4 JSON list: {exc}") from None
    if not items:
        raise IrrFetchError(f"bgpq4 returned no prefixes for {as_set}")
    return items


def write_atomic(path: Path, data: bytes) -> None:
    """Write, fsync, rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def refresh_file(peer: str, as_set: str, path: Path, *, bgpq4_path: str = "bgpq4", timeout: float = 30.0,
                 families: Sequence[bool] = (False, True), extra: Sequence[str] = ()) -> RefreshResult:
    """Query bgpq4 and replace ``path`` on success; keep it on failure (see the module docstring)."""
    try:
        items = fetch(as_set, bgpq4_path=bgpq4_path, timeout=timeout, families=families, extra=extra)
    except IrrFetchError as exc:
        try:
            kept = len(load_prefix_file(path)) if path.exists() else 0
        except (OSError, ValueError):
            kept = 0
        return RefreshResult(peer, False, kept, str(exc))
    write_atomic(path, json.dumps({"NN": items}, indent=1).encode())
    return RefreshResult(peer, True, len(items))


class IrrCache:
    """Last good IRR prefix list per peer, in memory."""

    def __init__(self) -> None:
        self._lists: dict[str, PrefixList] = {}

    def get(self, peer: str) -> PrefixList | None:
        return self._lists.get(peer)

    def set(self, peer: str, entries: list[PrefixEntry]) -> None:
        self._lists[peer] = PrefixList(entries)

    def refresh(self, peer: str, as_set: str, bgpq4_path: str = "bgpq4", timeout: float = 30.0,
                families: tuple[bool, ...] = (False, True), extra: tuple[str, ...] = ()) -> RefreshResult:
        """Query bgpq4 once per family (``False`` = IPv4, ``True`` = IPv6); all or nothing."""
        try:
            items = fetch(as_set, bgpq4_path=bgpq4_path, timeout=timeout, families=families, extra=extra)
        except IrrFetchError as exc:
            old = self._lists.get(peer)
            return RefreshResult(peer, False, len(old) if old is not None else 0, str(exc))
        self.set(peer, [bgpq4_item(item, i) for i, item in enumerate(items)])
        return RefreshResult(peer, True, len(items))
