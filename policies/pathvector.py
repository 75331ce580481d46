"""Pathvector YAML → our per-peer policy (import rules, max-prefix, IRR), for migrations and for
checking that our defaults decide as Pathvector's do.

Needs PyYAML, which peerctl does not depend on: ``convert`` raises ``RuntimeError`` when ``yaml`` is
not importable (install ``pyyaml`` to use it). Only the filtering options are converted; session
options (neighbors, passwords, multihop...) belong to the peer config loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import PeerKind
from orchestrator.rib.attrs import parse_community, parse_large_community
from policies.config import IrrConfig, PeerPolicy, RpkiConfig
from policies.model import LimitAction, MaxPrefix, Verdict
from policies.rules import ImportRules

# Pathvector import-limit-violation values → ours.
LIMIT_ACTIONS = {"disable": LimitAction.TEARDOWN, "restart": LimitAction.RESTART,
                 "block": LimitAction.REJECT, "warn": LimitAction.WARN}
TEMPLATE_KINDS = {"routeserver": PeerKind.ROUTE_SERVER, "route-server": PeerKind.ROUTE_SERVER,
                  "rs": PeerKind.ROUTE_SERVER, "upstream": PeerKind.UPSTREAM, "transit": PeerKind.UPSTREAM,
                  "peer": PeerKind.IXP_PEER, "peers": PeerKind.IXP_PEER, "downstream": PeerKind.IXP_PEER}


@dataclass(frozen=True, slots=True)
class PathvectorPeer:
    name: str
    kind: PeerKind
    asn: int
    neighbors: tuple[str, ...]
    policy: PeerPolicy


def _community(text: str) -> tuple[int | None, tuple[int, int, int] | None]:
    text = str(text).replace(",", ":")
    if text.count(":") == 2:
        return None, parse_large_community(text)
    return parse_community(text), None


def convert_doc(doc: dict[str, Any]) -> list[PathvectorPeer]:
    """A parsed Pathvector document → peers with their import policy."""
    templates: dict[str, dict[str, Any]] = doc.get("templates") or {}
    out = []
    for name, peer in (doc.get("peers") or {}).items():
        tname = peer.get("template")
        opts = {**(templates.get(tname, {}) if tname else {}), **peer}
        kind = TEMPLATE_KINDS.get(str(tname).lower(), PeerKind.UPSTREAM) if tname else PeerKind.UPSTREAM
        if opts.get("rs-client"):
            kind = PeerKind.IXP_PEER  # they are the route server; its clients are peers to it
        if not opts.get("import", True):
            rules = ImportRules.none()
        else:
            comms: list[int] = []
            large: list[tuple[int, int, int]] = []
            for text in opts.get("add-on-import") or []:
                std, lg = _community(text)
                if std is not None:
                    comms.append(std)
                if lg is not None:
                    large.append(lg)
            violation = str(opts.get("import-limit-violation", "disable"))
            action = LIMIT_ACTIONS.get(violation, LimitAction.TEARDOWN)
            max_prefix = MaxPrefix(int(opts.get("import-limit4", 1_000_000)),
                                   int(opts.get("import-limit6", 300_000)), action) \
                if opts.get("filter-max-prefix", True) else None
            # Pathvector has no separate route-server switch: templates turn the checks off.
            rules = ImportRules(
                bogon_prefixes=bool(opts.get("filter-bogon-routes", True)),
                accept_default=bool(doc.get("accept-default", False)),
                bogon_asns=bool(opts.get("filter-bogon-asns", True)),
                prefix_length=bool(opts.get("filter-prefix-length", True)),
                local_as=not opts.get("allow-local-as", False),
                first_as=bool(opts.get("enforce-first-as", True)),
                transit_asns=bool(opts.get("filter-transit-asns", False)),
                next_hop=bool(opts.get("enforce-peer-nexthop", True)),
                rpki_invalid=Verdict.REJECT if opts.get("filter-rpki", True) else Verdict.ACCEPT,
                rpki_not_found=Verdict.REJECT if opts.get("strict-rpki", False) else Verdict.ACCEPT,
                local_pref=int(opts.get("local-pref", 100)),
                communities=tuple(comms), large_communities=tuple(large),
                max_prefix=max_prefix, max_path_length=None)
        irr = None
        if opts.get("filter-irr") and (opts.get("as-set") or opts.get("auto-as-set")):
            irr = IrrConfig(opts.get("as-set") or f"AS{opts.get('asn')}", None,
                            bool(opts.get("irr-accept-child-prefixes", False)))
        rpki = RpkiConfig(None, rules.rpki_invalid, rules.rpki_not_found) if opts.get("filter-rpki", True) \
            else None
        out.append(PathvectorPeer(str(name), kind, int(opts.get("asn", 0)),
                                  tuple(str(n) for n in opts.get("neighbors") or ()),
                                  PeerPolicy(rules, irr, rpki)))
    return out


def convert(path: str | Path) -> list[PathvectorPeer]:
    """Read a Pathvector YAML file. Raises RuntimeError without PyYAML, OSError, ValueError."""
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise RuntimeError("reading Pathvector YAML needs PyYAML (pip install pyyaml)") from None
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a Pathvector config (expected a mapping)")
    return convert_doc(doc)
