"""Import policy in the daemon: each peer's chain between its speaker's Updates and the RIB.

Theory of operation
-------------------
``ImportPolicies`` holds one ``PeerImport`` per peer that configured a policy (``PeerConfig.policy``).
A peer without one is absent, and the daemon hands its Updates to the RIB untouched: the no-policy
path costs one dict lookup per Update, nothing per prefix.

For a peer with a policy, ``PeerImport.update`` runs the chain once per Update
(``ImportChain.evaluate_update``: attribute conditions once per attribute set, prefix predicates per
prefix) and then:

* accepted keys go to the RIB with the chain's output attributes (interned there as usual); keys
  suppressed by dampening (RFC 2439) are held back as filtered with the rule ``dampened``;
* rejected keys are remembered as *filtered* (per family: key → (rule, received attributes)) so the
  API can show them with the rule name, and withdrawn from the RIB (an announcement implicitly
  replaces the peer's previous path for the prefix, RFC 4271 3.1, even when the new one is refused);
* withdrawals remove the key from the RIB and from the filtered set;
* a max-prefix excess comes back as a ``LimitSignal``, once per family per session; the daemon acts on
  it (warn, tear down, restart later). After a teardown the peer's Updates still in the queue are
  dropped until the next PeerUp.

Memory: one filtered entry is a dict slot holding a (rule, attrs) tuple shared by every key of the
same Update and rule (``import none`` on a full table: ~100 bytes per prefix).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import PeerConfig
from orchestrator.errors import ConfigError
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family
from orchestrator.rib.table import BestChange, Rib
from policies.dampening import Dampening, DampState
from policies.irr import list_path, load_prefix_file
from policies.model import ImportChain, LimitSignal, PeerContext
from policies.prefixset import PrefixList
from policies.rpki import VrpTable
from policies.rules import build_import_chain, irr_child_prefixes

DAMPENED = "dampened"
_FAMILIES = (Family.IPV4, Family.IPV6)

Filtered = tuple[str, Attributes]  # (rule, attributes as received)


@dataclass(frozen=True, slots=True)
class FilteredPath:
    peer: str
    rule: str
    attrs: Attributes
    dampening: DampState | None = None


class PeerImport:
    """One peer's chain, its filtered routes and its dampening state."""

    __slots__ = ("chain", "ctx", "damp", "down", "filtered", "name", "tripped")

    def __init__(self, name: str, chain: ImportChain, ctx: PeerContext, damp: Dampening | None) -> None:
        self.name = name
        self.chain = chain
        self.ctx = ctx
        self.damp = damp
        self.filtered: tuple[dict[int, Filtered], dict[int, Filtered]] = ({}, {})
        self.tripped: set[Family] = set()  # max-prefix already signalled this session
        self.down = False  # torn down for max-prefix: drop queued Updates until PeerUp

    def update(
        self,
        rib: Rib,
        family: Family,
        attrs: Attributes | None,
        announce: list[int] | tuple[int, ...] | Any,
        withdraw: list[int] | tuple[int, ...] | Any,
        changes: list[BestChange],
        now: float | None = None,
    ) -> LimitSignal | None:
        """Apply one Update through the chain. Returns a LimitSignal the first time the peer goes
        over its max-prefix limit for ``family`` in this session, else None."""
        if self.down:
            return None
        name = self.name
        filtered = self.filtered[0 if family is Family.IPV4 else 1]
        damp = self.damp
        if withdraw:
            if filtered:
                for key in withdraw:
                    filtered.pop(key, None)
            if damp is not None:
                t = time.monotonic() if now is None else now
                for key in withdraw:
                    damp.withdraw(family, key, t)
            rib.update(name, family, None, (), withdraw, changes)
        if not announce or attrs is None:
            return None
        count = rib.peer_counts(name, family)[0]
        res = self.chain.evaluate_update(self.ctx, family, attrs, announce, count=count)
        if res.rejected:
            shared: dict[str, Filtered] = {}
            drop: list[int] = []
            for key, rule in res.rejected:
                entry = shared.get(rule)
                if entry is None:
                    entry = shared[rule] = (rule, attrs)
                filtered[key] = entry
                drop.append(key)
            rib.update(name, family, None, (), drop, changes)
        for out, keys in res.accepted:
            if filtered:
                for key in keys:
                    filtered.pop(key, None)
            if damp is not None:
                t = time.monotonic() if now is None else now
                held = [k for k in keys if damp.announce(family, k, out, t)]
                if held:
                    entry = (DAMPENED, out)
                    for key in held:
                        filtered[key] = entry
                    rib.update(name, family, None, (), held, changes)
                    keep = set(held)
                    keys = [k for k in keys if k not in keep]
            if keys:
                rib.update(name, family, out, keys, (), changes)
        limit = res.limit
        if limit is not None and family not in self.tripped:
            self.tripped.add(family)
            return limit
        return None

    def reuse(self, rib: Rib, now: float, changes: list[BestChange]) -> int:
        """Re-install routes whose dampening suppression ended; returns how many."""
        if self.damp is None or self.down:
            return 0
        n = 0
        for family, key in self.damp.reusable(now):
            filtered = self.filtered[0 if family is Family.IPV4 else 1]
            entry = filtered.get(key)
            if entry is not None and entry[0] == DAMPENED:
                del filtered[key]
                rib.update(self.name, family, entry[1], (key,), (), changes)
                n += 1
        return n

    def peer_down(self) -> None:
        for f in self.filtered:
            f.clear()
        self.tripped.clear()

    def count(self, family: Family) -> int:
        return len(self.filtered[0 if family is Family.IPV4 else 1])

    def irr_entries(self) -> int | None:
        """Entries of the IRR list in the chain; None when the chain has no IRR statement."""
        for st in self.chain.policy.statements:
            if st.name == "irr":
                cond = st.conditions[0]
                prefixes = getattr(cond, "prefixes", None)
                return len(prefixes) if prefixes is not None else None
        return None


class ImportPolicies:
    """Chains of the peers that have a policy; IRR lists and VRP tables loaded once per file.

    A peer's IRR list is read from ``policies.irr.list_path`` (its ``irr.file``, else
    ``irr_dir/PEER.json`` written by ``peerctl irr refresh``). A peer with ``irr.as_set`` whose list
    does not exist yet gets no IRR statement (logged as ``irr_list_missing``) until a refresh
    succeeds: failing closed would drop every route of a peer on a first start without IRR access.
    """

    def __init__(self, local_asn: int, irr_dir: Path | None = None, log: Any = None) -> None:
        self.local_asn = local_asn
        self.irr_dir = irr_dir
        self.log = log
        self.peers: dict[str, PeerImport] = {}
        self._vrps: dict[Path, VrpTable] = {}

    def configure(self, peer: PeerConfig, config_file: str = "config.toml") -> None:
        """(Re)build the peer's chain from its config; no policy → no chain (accept all).

        Raises ConfigError when an IRR or VRP file cannot be read.
        """
        self.peers.pop(peer.name, None)
        built = self.build(peer, config_file)
        if built is not None:
            self.peers[peer.name] = built

    def refresh(self, peer: PeerConfig, built: PeerImport | None) -> None:
        """Swap in a chain ``build`` made (e.g. after an IRR refresh), keeping the peer's filtered
        routes, dampening and max-prefix state. Routes already held are not re-evaluated: the new
        chain applies from the peer's next UPDATE."""
        old = self.peers.get(peer.name)
        if built is None:
            self.peers.pop(peer.name, None)
            return
        if old is not None:
            built.filtered, built.tripped, built.down = old.filtered, old.tripped, old.down
            built.damp = old.damp if old.damp is not None else built.damp
        self.peers[peer.name] = built

    def build(self, peer: PeerConfig, config_file: str = "config.toml") -> PeerImport | None:
        """The peer's ``PeerImport`` (None without a policy). Reads files: blocking, thread-safe
        enough to run in a worker thread (``asyncio.to_thread``). Raises ConfigError."""
        pol = peer.policy
        if pol is None:
            return None
        ctx = PeerContext.for_kind(peer.name, peer.kind, peer.peer_as, self.local_asn, peer.neighbor)
        irr: PrefixList | None = None
        path = list_path(peer.name, pol.irr.file, self.irr_dir) if pol.irr is not None else None
        if pol.irr is not None and path is not None and (pol.irr.file is not None or path.exists()):
            try:
                entries = load_prefix_file(path)
            except (OSError, ValueError) as exc:
                raise ConfigError(config_file, f"{peer.name}.irr.file", str(exc)) from None
            irr = PrefixList(irr_child_prefixes(entries) if pol.irr.child_prefixes else entries)
        elif pol.irr is not None and self.log is not None:
            self.log.warning("irr_list_missing", peer=peer.name, path=str(path),
                             reason="no IRR filter until `peerctl irr refresh` succeeds")
        vrps: VrpTable | None = None
        if pol.rpki is not None and pol.rpki.vrp_file is not None:
            vrps = self._vrps.get(pol.rpki.vrp_file)
            if vrps is None:
                from policies.rpki import load_vrps

                try:
                    vrps = self._vrps[pol.rpki.vrp_file] = VrpTable(load_vrps(pol.rpki.vrp_file))
                except (OSError, ValueError) as exc:
                    raise ConfigError(config_file, f"{peer.name}.rpki.vrp_file", str(exc)) from None
        rules = pol.import_rules
        if pol.rpki is not None:
            from dataclasses import replace

            rules = replace(rules, rpki_invalid=pol.rpki.invalid, rpki_not_found=pol.rpki.not_found)
        chain = build_import_chain(rules, ctx, irr=irr, vrps=vrps)
        damp = Dampening(pol.dampening) if pol.dampening.enabled else None
        return PeerImport(peer.name, chain, ctx, damp)

    def remove(self, name: str) -> None:
        self.peers.pop(name, None)

    def filtered_paths(self, family: Family, key: int) -> Iterator[FilteredPath]:
        now = time.monotonic()
        for name, pi in self.peers.items():
            entry = pi.filtered[0 if family is Family.IPV4 else 1].get(key)
            if entry is not None:
                ds = pi.damp.state(family, key, now) if pi.damp is not None else None
                yield FilteredPath(name, entry[0], entry[1], ds)

    def filtered_count(self, name: str, family: Family) -> int:
        pi = self.peers.get(name)
        return pi.count(family) if pi is not None else 0

    def reuse(self, rib: Rib, now: float) -> list[BestChange]:
        changes: list[BestChange] = []
        for pi in self.peers.values():
            pi.reuse(rib, now, changes)
        return changes


__all__ = ["DAMPENED", "FilteredPath", "ImportPolicies", "PeerImport"]
