"""JSON shapes of peers and routes, shared by the API and (through it) the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.config import PeerConfig
from orchestrator.errors import ApiError
from orchestrator.rib.attrs import community_text
from orchestrator.rib.prefix import Family, format_prefix, parse_address, parse_prefix

if TYPE_CHECKING:
    from orchestrator.daemon import Daemon
    from orchestrator.importer import FilteredPath
    from orchestrator.rib.table import Path

ORIGIN_NAMES = ("igp", "egp", "incomplete")


def path_json(
    daemon: Daemon, family: Family, key: int, path: Path, best: bool, reason: str | None = None
) -> dict[str, Any]:
    a = path.attrs
    out: dict[str, Any] = {
        "peer": path.peer,
        "next_hop": path.next_hop,
        "as_path": a.as_path_flat(),
        "origin": ORIGIN_NAMES[int(a.origin)],
        "med": a.med,
        "local_pref": path.local_pref,
        "communities": [community_text(c) for c in a.communities],
        "large_communities": [f"{x}:{y}:{z}" for x, y, z in a.large_communities],
        "best": best,
        "reason": reason,
    }
    if best:
        out["installed"] = bool(daemon.fib.is_installed(family, key)) if daemon.fib is not None else False
    return out


def filtered_json(family: Family, key: int, fp: FilteredPath) -> dict[str, Any]:
    """A path an import policy refused (or dampening holds back), with the rule that did it."""
    a = fp.attrs
    out: dict[str, Any] = {
        "peer": fp.peer,
        "next_hop": a.next_hop,
        "as_path": a.as_path_flat(),
        "origin": ORIGIN_NAMES[int(a.origin)],
        "med": a.med,
        "local_pref": a.local_pref,
        "communities": [community_text(c) for c in a.communities],
        "large_communities": [f"{x}:{y}:{z}" for x, y, z in a.large_communities],
        "best": False,
        "filtered": True,
        "rule": fp.rule,
        "reason": f"filtered: {fp.rule}",
    }
    if fp.dampening is not None:
        d = fp.dampening
        out["dampening"] = {"penalty": round(d.penalty, 1), "suppressed": d.suppressed,
                            "reuse_in_s": round(d.reuse_in, 1)}  # fmt: skip
    return out


def routes_for(daemon: Daemon, text: str, filtered: bool = False) -> dict[str, Any] | None:
    """Every path of a prefix (exact) or of the longest prefix covering an address, best first;
    with ``filtered``, then the paths import policies refused (``"filtered": true`` and the rule).

    Raises ApiError(400) when ``text`` is neither a prefix nor an address; None when nothing matches.
    """
    rib = daemon.rib
    if "/" in text:
        try:
            family, key = parse_prefix(text)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    else:
        try:
            family, address = parse_address(text)
        except ValueError as exc:
            raise ApiError(400, f"not a prefix or address: {text!r}") from exc
        found = rib.longest_match(family, address)
        if found is None:
            return None
        key = found
    paths = rib.paths(family, key)
    refused = [filtered_json(family, key, fp) for fp in daemon.imports.filtered_paths(family, key)] \
        if filtered else []  # fmt: skip
    if not paths and not refused:
        return None
    reason = rib.reason(family, key)
    return {
        "prefix": format_prefix(family, key),
        "paths": [
            path_json(
                daemon,
                family,
                key,
                p,
                i == 0,
                (reason.text if reason is not None else None) if i == 0 else None,
            )
            for i, p in enumerate(paths)
        ]
        + refused,
    }


def peer_json(daemon: Daemon, peer: PeerConfig, now: float) -> dict[str, Any]:
    st = daemon.status.get(peer.name)
    counts = daemon.rib.counts()["peers"].get(peer.name, {})
    families: dict[str, Any] = {}
    for family in peer.families:
        c = counts.get(family.short, {})
        load_s = st.table_load_s(family) if st is not None else None
        accepted = c.get("received", 0)
        filtered = daemon.imports.filtered_count(peer.name, family)
        families[family.short] = {
            "received": accepted + filtered,  # before import policy
            "accepted": accepted,
            "filtered": filtered,
            "best": c.get("best", 0),
            "end_of_rib": st is not None and family in st.end_of_rib,
            # seconds from Established to this family's End-of-RIB (the initial table), null before
            "table_load_s": None if load_s is None else round(load_s, 3),
        }
    return {
        "name": peer.name,
        "kind": peer.kind.value,
        "address": peer.neighbor,
        "peer_as": peer.peer_as,
        "speaker": peer.speaker.value,
        "state": st.state if st else "idle",
        "uptime_s": round(st.uptime(now), 1) if st else 0.0,
        "router_id": st.router_id if st else "0.0.0.0",
        "families": families,
        "updates": st.updates if st else 0,
        "flaps": st.flaps if st else 0,
        "speaker_restarts": st.speaker_restarts if st else 0,
        "last_error": st.last_error if st else "",
    }
