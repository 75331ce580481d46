"""Our own prefixes: announced to and withdrawn from peers, safety rules first, persisted.

Theory of operation
-------------------
``AnnouncementManager`` keeps the *wanted* state (prefix → ``Wanted``: the request, its target peers
and the attributes the safety rules produced) and, per peer, what was handed to that peer's speaker
(``Advertised``: the exact command line and its state). Every request goes through
``SafetyRules.check`` (``policies.safety``) **before** anything is sent: a refusal raises
``PolicyError`` and changes nothing, so nothing outside the allocation or breaking a rule can reach a
speaker. The attributes checked are the attributes sent (``announce_command`` renders them).

* ``announce(request, targets)``: check, then each target's *export policy* (``export`` in the
  peer's config, ``policies.rules.build_export_policy``: ``export = "none"``, a prefix list, no
  poisoning, per-peer prepends and communities) and the safety rules again on what that peer would
  get; then send ``neighbor ADDR announce route ...`` to each target and ``withdraw route`` to peers
  that had the prefix but are no longer targeted. A peer named explicitly whose export policy
  refuses makes the whole request fail with that rule (nothing sent); peers chosen as a group
  (``--all``, ``--kind``) that refuse are left out and listed as ``refused`` (rule per peer).
* ``withdraw(prefix, targets)``: a change too (the rate rule applies: PEERING counts withdrawals
  as updates); withdraws from the given targets (default: all that have it).
* PeerUp → every wanted prefix of that peer is sent again (a new session, or a new ExaBGP process,
  starts with an empty Adj-RIB-Out), through the export policy of the config then in force (a
  reload may have changed it: a refused entry stays in ``adv`` as ``refused`` with the rule);
  PeerDown → its entries go back to ``pending``.
* ExaBGP acks (``ExaBGPSession.on_answer``) move an entry from ``sent`` to ``acked`` (ExaBGP took
  the route into its Adj-RIB-Out; it is on the wire while the session is established) or ``error``.
* The wanted set and the change history (rate rule) are written to ``runtime_dir/announcements.json``
  (write to a temporary file, fsync, rename) after every change and read back at start, re-checked
  against the current rules (an announcement the new config no longer allows is dropped and logged).

The AS path sent is the one the neighbor sees: to an external peer our AS first (ExaBGP sends an API
``as-path`` exactly as written; ``Attributes.pack`` in exabgp 5.0.15 only adds the local AS when no
AS_PATH is given); to an internal peer (a PEERING mux: iBGP) without our AS in front, which the mux
adds on export (``without_own_as``). ``next-hop self`` for a prefix of the other family than the
session (IPv6 over an IPv4 mux session) is our ``source6``/``source4`` (``self_next_hop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

from orchestrator.config import Config, PeerConfig, PeerKind
from orchestrator.errors import ApiError, PolicyError
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes, community_text
from orchestrator.rib.prefix import Family, format_prefix, parse_prefix
from policies.model import PeerContext, Policy, Route, Verdict
from policies.rules import ExportRules, build_export_policy
from policies.safety import Announcement, History, SafetyRules
from speakers.events import PeerDown, PeerUp, SpeakerEvent
from speakers.exabgp.session import announce_command, withdraw_command

STATE_FILE = "announcements.json"
ATTR_KEYS: Final = frozenset({"prepend", "origin", "poison", "communities", "large_communities", "next_hop"})
"""The attribute members of an announcement request (API body, experiment step, a ``per_peer`` entry)."""


def request_state(
    ann: Announcement, targets: Sequence[str], variants: Mapping[str, Announcement]
) -> tuple[Announcement, tuple[str, ...], tuple[tuple[str, Announcement], ...]]:
    """An announce request as ``Wanted`` keeps it, so that asking again compares equal however the
    targets were listed: the canonical prefix; the targets without their own set (the common
    announcement's ``muxes``), then the peers with their own set (``variants``, each its own mux)."""
    prefix = _canonical(ann.prefix)
    common = tuple(t for t in targets if t not in variants)
    ann = replace(ann, prefix=prefix, muxes=common)
    own = tuple((n, replace(v, prefix=prefix, muxes=(n,))) for n, v in variants.items())
    return ann, (*common, *variants), own


def parse_targets(body: Mapping[str, Any]) -> tuple[list[str], bool, str | None]:
    """A request's targets as ``AnnouncementManager.resolve`` takes them: ``peers`` (names; a name
    given twice is one target), ``all`` (JSON true or false only: ``"false"`` is not false) and
    ``kind``, at most one of them. ApiError naming the member; no targets at all is the caller's to
    judge."""
    peers = body.get("peers") or []
    if not isinstance(peers, list) or not all(isinstance(p, str) for p in peers):
        raise ApiError(400, "peers: expected a list of peer names")
    peers = list(dict.fromkeys(peers))
    kind = body.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise ApiError(400, "kind: expected a peer kind name")
    every = body.get("all", False)
    if not isinstance(every, bool):
        raise ApiError(400, f"all: expected true or false, not {every!r}")
    if sum((bool(peers), every, kind is not None)) > 1:
        raise ApiError(400, "peers, kind, all: give one of them")
    return peers, every, kind


def parse_per_peer(spec: object, prefix: str, resolve: Callable[..., tuple[str, ...]],
                   parse: Callable[[dict[str, Any]], Announcement]) -> dict[str, Announcement]:
    """A request's ``per_peer`` (``{NAME: {attributes}}``): the peers that get an attribute set of
    their own for ``prefix``, each a whole set (what it leaves out is the default, not taken from
    the request's common attributes). ``resolve`` is ``AnnouncementManager.resolve`` (PolicyError
    "targets" for an unknown peer or one without the family), ``parse`` the request parser of the
    API. ApiError(400) naming the member otherwise."""
    if not isinstance(spec, dict) or not all(isinstance(v, dict) for v in spec.values()):
        raise ApiError(400, "per_peer: expected an object of peer name -> attributes")
    family = parse_prefix(prefix)[0]
    out: dict[str, Announcement] = {}
    for name, attrs in spec.items():
        unknown = set(attrs) - ATTR_KEYS
        if unknown:
            raise ApiError(400, f"per_peer.{name}: unknown keys {sorted(unknown)} "
                           f"(expected {sorted(ATTR_KEYS)})")
        resolve([name], family=family)
        try:
            out[name] = replace(parse({**attrs, "prefix": prefix}), muxes=(name,))
        except ApiError as exc:
            raise ApiError(400, f"per_peer.{name}.{exc}") from None
    return out


def without_own_as(attrs: Attributes, asn: int) -> Attributes:
    """The path as sent to an internal peer (a PEERING mux session is iBGP): without our own AS in
    front, which the peer adds when it exports over eBGP (RFC 4271 5.1.2: a route we originate goes
    to internal peers with an empty AS_PATH; prepends and poisoning stay)."""
    path = attrs.as_path
    if not path or path[0][0] != AS_SEQUENCE or not path[0][1] or path[0][1][0] != asn:
        return attrs
    rest = path[0][1][1:]
    return replace(attrs, as_path=((AS_SEQUENCE, rest), *path[1:]) if rest else path[1:])


def self_next_hop(peer: PeerConfig, prefix: str, source4: str | None, source6: str | None) -> str:
    """``next-hop self`` for ``prefix`` on ``peer``'s session: the session's own address when the
    families agree (the speaker fills it in); across families (an IPv6 prefix over an IPv4 session,
    as on PEERING muxes) our ``[local] source6`` / ``source4``, since a speaker has no address of
    that family to use. PolicyError when there is none (refused before anything is sent)."""
    family = parse_prefix(prefix)[0]
    session = Family.IPV6 if ":" in peer.neighbor else Family.IPV4
    if family is session:
        return "self"
    source, key = (source6, "source6") if family is Family.IPV6 else (source4, "source4")
    if source is None:
        raise PolicyError(
            "next-hop",
            f"peer {peer.name}: next hop 'self' would be the {session.value.split()[0]} session's "
            f"address, which cannot be the next hop of {prefix}: set [local] {key} or give a next hop "
            "(--next-hop)",
        )
    return source


class CommandSink(Protocol):
    async def send(self, command: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Wanted:
    announcement: Announcement
    targets: tuple[str, ...]
    attrs: Attributes  # as checked by the safety rules (before the per-peer export policy, next hop)
    changed_at: float
    refused: tuple[tuple[str, str], ...] = ()  # (peer, export rule): group members left out
    variants: tuple[tuple[str, Announcement, Attributes], ...] = ()
    """Targets sent their own attribute set (PEERING: per-mux prepends, poisoning, communities):
    (peer, its request, its checked attributes); the other targets get ``announcement``."""

    def for_peer(self, name: str) -> tuple[Announcement, Attributes]:
        for peer, ann, attrs in self.variants:
            if peer == name:
                return ann, attrs
        return self.announcement, self.attrs

    def same_request(self, ann: Announcement, targets: tuple[str, ...],
                     variants: Sequence[tuple[str, Announcement]]) -> bool:
        """The same announcement(s) to the same targets: re-asking is not a change."""
        return (self.announcement == ann and self.targets == targets
                and [v[:2] for v in self.variants] == list(variants))


@dataclass(slots=True)
class Advertised:
    prefix: str
    command: str
    attrs: Attributes
    state: str = "pending"  # pending (session down) | sent | acked | error | refused (export policy)
    since: float = field(default_factory=time.time)
    rule: str = ""  # the export rule, when refused


def _announcement(saved: dict[str, Any]) -> Announcement:
    """An ``Announcement`` from its saved form (``asdict``; JSON turned its tuples into lists)."""
    lists = ("muxes", "peers", "poison", "as_set", "communities", "large_communities")
    tuples: dict[str, Any] = {k: tuple(tuple(x) if isinstance(x, list) else x for x in saved[k])
                              for k in lists if k in saved}
    return Announcement(**{**saved, **tuples})


def _acking_session(speaker: Any) -> Any:
    """The speaker's session when it acknowledges commands (ExaBGP's ``on_answer``), else None."""
    session = getattr(speaker, "session", None)
    return session if hasattr(session, "on_answer") else None


def _canonical(prefix: str) -> str:
    try:
        family, key = parse_prefix(prefix)
    except ValueError as exc:
        raise PolicyError("prefix", str(exc)) from None
    return format_prefix(family, key)


def _request_json(ann: Announcement, attrs: Attributes) -> dict[str, Any]:
    """One peer's own attribute set, as ``wanted_json`` lists it under ``per_peer``."""
    return {"prepend": ann.prepend, "origin": ann.origin, "poison": list(ann.poison),
            "next_hop": ann.next_hop or None,
            **{k: v for k, v in attrs_json(attrs).items() if k != "next_hop"}}  # fmt: skip


def attrs_json(a: Attributes) -> dict[str, Any]:
    return {
        "as_path": a.as_path_flat(),
        "next_hop": a.next_hop,
        "communities": [community_text(c) for c in a.communities],
        "large_communities": [f"{x}:{y}:{z}" for x, y, z in a.large_communities],
        "med": a.med,
    }


class AnnouncementManager:
    """Wanted announcements, per-peer advertised state, persistence. One per daemon.

    ``speakers`` maps peer name → an object with ``async send(command)``; it is read at send time
    (speakers come and go with reloads and max-prefix restarts).
    """

    def __init__(
        self,
        config: Callable[[], Config],
        speakers: Callable[[], dict[str, Any]],
        runtime_dir: Path | None,
        log: Any,
        *,
        clock: Callable[[], float] = time.time,
        established: Callable[[str], bool] = lambda name: True,
    ) -> None:
        self._config = config  # a getter: the daemon's config changes on reload
        self._speakers = speakers
        self.path = runtime_dir / STATE_FILE if runtime_dir is not None else None
        self.log = log
        self.clock = clock
        self.established = established
        self.wanted: dict[str, Wanted] = {}
        self.history = History()
        self._history_raw: dict[str, float] = {}
        self.adv: dict[str, dict[str, Advertised]] = {}
        self._hooked: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._export_for: Config | None = None  # the config the cached export policies belong to
        self._exports: dict[str, Policy | None] = {}

    # -- config ------------------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        return self._config()

    @property
    def safety(self) -> SafetyRules | None:
        return self.config.safety

    def allowed(self) -> list[str]:
        rules = self.safety
        return [format_prefix(e.family, e.key) for e in rules.allocated] if rules is not None else []

    def resolve(self, peers: Sequence[str] = (), all_peers: bool = False, kind: str | None = None,
                family: Family | None = None) -> tuple[str, ...]:
        """Target peer names. Explicit names must exist (and carry the family); groups (``all``,
        ``kind``) silently skip peers without the family. Raises PolicyError("targets", ...)."""
        by_name = {p.name: p for p in self.config.peers}
        out: list[str] = []
        for name in peers:
            p = by_name.get(name)
            if p is None:
                raise PolicyError("targets", f"no peer named {name!r}")
            if family is not None and family not in p.families:
                raise PolicyError("targets", f"peer {name} does not carry {family.short}")
            out.append(name)
        group: Iterable[PeerConfig] = ()
        if all_peers:
            group = self.config.peers
        elif kind is not None:
            try:
                k = PeerKind(kind)
            except ValueError:
                raise PolicyError("targets", f"unknown peer kind {kind!r} "
                                  f"(one of {', '.join(m.value for m in PeerKind)})") from None
            group = [p for p in self.config.peers if p.kind is k]
        for p in group:
            if (family is None or family in p.families) and p.name not in out:
                out.append(p.name)
        if not out:
            raise PolicyError("targets", "no target peers (give --peer NAME, --kind KIND or --all)")
        return tuple(out)

    # -- requests ----------------------------------------------------------------------------------

    def _check(self, ann: Announcement, now: float, *, rate: bool = True) -> Attributes:
        rules = self.safety
        if rules is None:
            raise PolicyError("allocated", "no [safety] allocation in the config: announcements are off")
        return rules.check(ann, now, self.history if rate else None)

    # -- what the experiment runner needs besides announce/withdraw (orchestrator.experiments) ------

    def check_rules(self, ann: Announcement, now: float, explicit: Sequence[str] = (),
                    variants: Mapping[str, Announcement] | None = None) -> None:
        """Every rule but the rate rule (which an experiment's plan simulates over its timeline), and
        the export policy of each explicitly named target (group members that refuse are left out
        when the step runs) and of each peer with its own attribute set. Raises PolicyError."""
        attrs = self._check(ann, now, rate=False)
        checked = tuple((n, v, self._check(v, now, rate=False)) for n, v in (variants or {}).items())
        wanted = Wanted(ann, (), attrs, now, variants=checked)
        for name in dict.fromkeys((*explicit, *(variants or {}))):  # a named peer with its own set: once
            peer = self._peer(name)
            if peer is not None:
                self.command_for(peer, wanted)

    def last_change(self, prefix: str) -> float | None:
        return self.history.last_change(prefix)

    def min_interval(self) -> float:
        rules = self.safety
        return rules.min_interval if rules is not None else 0.0

    async def announce(self, ann: Announcement, targets: Sequence[str], *, group: bool = False,
                       at: float | None = None, variants: Mapping[str, Announcement] | None = None) -> Wanted:
        """Check the safety rules and each target's export policy, then send. Raises PolicyError
        (nothing sent, nothing changed). With ``group`` (targets chosen by ``--all``/``--kind``), peers
        whose export policy refuses are left out (``Wanted.refused``) unless all of them refuse.
        ``at``: the time the change counts at for the rate rule (a scheduled step's own time).
        ``variants``: peers (targets too, named explicitly) that get their own attribute set for
        this prefix instead of ``ann``'s; checked by the same rules, one change for the rate rule."""
        variants = variants or {}
        ann, targets, own = request_state(ann, targets, variants)
        prefix = ann.prefix
        now = self.clock() if at is None else at
        old = self.wanted.get(prefix)
        if old is not None and old.same_request(ann, targets, own):
            return old  # nothing changes: not a change for the rate rule either
        attrs = self._check(ann, now)
        checked = tuple((n, v, self._check(v, now)) for n, v in own)
        trial = Wanted(ann, (), attrs, now, variants=checked)
        plans: dict[str, tuple[str, Attributes]] = {}
        refused: dict[str, PolicyError] = {}
        for name in targets:
            peer = self._peer(name)
            if peer is None:
                continue
            try:
                plans[name] = self.command_for(peer, trial)
            except PolicyError as exc:
                if not group or name in variants:
                    raise
                refused[name] = exc
        if refused and not plans:
            raise next(iter(refused.values()))
        targets = tuple(t for t in targets if t not in refused)
        ann = replace(ann, muxes=tuple(t for t in targets if t not in variants))
        wanted = Wanted(ann, targets, attrs, now, tuple((n, e.rule) for n, e in refused.items()), checked)
        self.wanted[prefix] = wanted
        self._record(prefix, now)
        gone = set(old.targets) - set(targets) if old is not None else set()
        for name in gone:
            await self._send_withdraw(name, prefix)
        for name in targets:
            if name in plans:
                await self._send_planned(name, prefix, *plans[name])
        self._save()
        self.log.info("announced", prefix=prefix, peers=list(targets), as_path=attrs.as_path_flat())
        return wanted

    async def withdraw(self, prefix: str, targets: Sequence[str] = (), *,
                       at: float | None = None) -> tuple[str, ...]:
        """Withdraw from ``targets`` (default: every peer that has it). Raises PolicyError when the
        prefix is not announced or the rate rule refuses the change."""
        prefix = _canonical(prefix)
        old = self.wanted.get(prefix)
        if old is None:
            raise PolicyError("not-announced", f"{prefix} is not announced")
        chosen = tuple(t for t in (targets or old.targets) if t in old.targets)
        if not chosen:
            raise PolicyError("not-announced", f"{prefix} is not announced to {', '.join(targets)}")
        now = self.clock() if at is None else at
        rules = self.safety
        last = self.history.last_change(prefix)
        if rules is not None and last is not None and now - last < rules.min_interval:
            # PEERING counts withdrawals as changes: same rule, same message as SafetyRules.check
            wait = math.ceil(rules.min_interval - (now - last))
            raise PolicyError("rate", f"{prefix} changed {now - last:.0f} s ago; at least "
                              f"{rules.min_interval:g} s between changes: wait {wait} s")
        left = tuple(t for t in old.targets if t not in chosen)
        if left:
            muxes = tuple(t for t in left if t in old.announcement.muxes)
            self.wanted[prefix] = replace(old, targets=left, changed_at=now,
                                          announcement=replace(old.announcement, muxes=muxes),
                                          variants=tuple(v for v in old.variants if v[0] in left))
        else:
            del self.wanted[prefix]
        self._record(prefix, now)
        for name in chosen:
            await self._send_withdraw(name, prefix)
        self._save()
        self.log.info("withdrawn", prefix=prefix, peers=list(chosen))
        return chosen

    # -- wire --------------------------------------------------------------------------------------

    def _peer(self, name: str) -> PeerConfig | None:
        for p in self.config.peers:
            if p.name == name:
                return p
        return None

    def export_policy(self, peer: PeerConfig) -> Policy | None:
        """The peer's export policy (None: no ``export`` restriction), cached per config object."""
        config = self.config
        if self._export_for is not config:
            self._export_for, self._exports = config, {}
        if peer.name not in self._exports:
            rules = peer.policy.export if peer.policy is not None else None
            self._exports[peer.name] = None if rules is None or rules == ExportRules() else \
                build_export_policy(rules, PeerContext.for_kind(peer.name, peer.kind, peer.peer_as,
                                                                config.local.asn, peer.neighbor))
        return self._exports[peer.name]

    def export(self, peer: PeerConfig, prefix: str, attrs: Attributes) -> Attributes:
        """``attrs`` through the peer's export policy, then the safety rules on the result.
        Raises PolicyError(rule, message naming the peer) when refused."""
        policy = self.export_policy(peer)
        if policy is None:
            return attrs
        family, key = parse_prefix(prefix)
        ctx = PeerContext.for_kind(peer.name, peer.kind, peer.peer_as, self.config.local.asn, peer.neighbor)
        d = policy.evaluate(Route(family, key, attrs), ctx)
        if d.verdict is not Verdict.ACCEPT:
            raise PolicyError(d.rule, f"peer {peer.name}: its export policy refuses {prefix} (rule {d.rule})")
        out = d.route.attrs
        rules = self.safety
        if out != attrs and rules is not None:
            try:
                rules.check_attributes(out)
            except PolicyError as exc:
                raise PolicyError(exc.rule, f"peer {peer.name}, after its export policy: {exc}") from None
        return out

    def command_for(self, peer: PeerConfig, wanted: Wanted) -> tuple[str, Attributes]:
        """The command for ``peer`` and the attributes it carries. Raises PolicyError when the peer's
        export policy (or a safety rule on its result) refuses."""
        ann, base = wanted.for_peer(peer.name)
        attrs = self.export(peer, ann.prefix, base)
        local = self.config.local
        if peer.peer_as == local.asn:
            attrs = without_own_as(attrs, local.asn)
        next_hop = ann.next_hop or self.config.announce.next_hop
        if next_hop == "self":
            next_hop = self_next_hop(peer, ann.prefix, local.source4, local.source6)
        attrs = replace(attrs, next_hop=next_hop)
        return f"neighbor {peer.neighbor} {announce_command(ann.prefix, attrs)}", attrs

    async def _send_announce(self, name: str, wanted: Wanted) -> None:
        peer = self._peer(name)
        if peer is None:
            return
        prefix = wanted.announcement.prefix
        try:
            line, attrs = self.command_for(peer, wanted)
        except PolicyError as exc:  # the export policy changed since (reload): send nothing
            self._refused(name, wanted, exc)
            return
        await self._send_planned(name, prefix, line, attrs)

    def _refused(self, name: str, wanted: Wanted, exc: PolicyError) -> None:
        prefix, attrs = wanted.announcement.prefix, wanted.for_peer(name)[1]
        self.adv.setdefault(name, {})[prefix] = Advertised(prefix, "", attrs, "refused", rule=exc.rule)
        self.log.warning("announce_refused_by_export", peer=name, prefix=prefix, reason=exc.rule)

    async def _send_planned(self, name: str, prefix: str, line: str, attrs: Attributes) -> None:
        entry = Advertised(prefix, line, attrs)
        self.adv.setdefault(name, {})[prefix] = entry
        await self._send(name, entry)

    async def _send_withdraw(self, name: str, prefix: str) -> None:
        peer = self._peer(name)
        table = self.adv.get(name, {})
        table.pop(prefix, None)
        if peer is None:
            return
        speaker = self._speakers().get(name)
        if speaker is not None:
            await speaker.send(f"neighbor {peer.neighbor} {withdraw_command(prefix)}")

    async def _send(self, name: str, entry: Advertised) -> None:
        speaker = self._speakers().get(name)
        if speaker is None or not self.established(name):
            entry.state = "pending"
            return
        self._hook(name, speaker)
        entry.state, entry.since = "sent", time.time()
        await speaker.send(entry.command)

    async def settle(self, prefix: str, timeout: float = 3.0) -> dict[str, str]:
        """Each target's state for ``prefix`` once the speakers that acknowledge (ExaBGP) answered,
        or ``timeout`` passed: ``acked``, ``error`` (the speaker refused the command: its log says
        why), ``sent``, ``pending`` (session down: sent when it comes up), ``refused``."""
        prefix = _canonical(prefix)
        wanted = self.wanted.get(prefix)
        targets = wanted.targets if wanted is not None else ()
        deadline = time.monotonic() + timeout

        def waiting() -> bool:
            return any(e.state == "sent" and self._acks(n) for n in targets
                       if (e := self.adv.get(n, {}).get(prefix)) is not None)  # fmt: skip

        while waiting() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return {n: e.state for n in targets if (e := self.adv.get(n, {}).get(prefix)) is not None}

    def _acks(self, name: str) -> bool:
        return _acking_session(self._speakers().get(name)) is not None

    def _hook(self, name: str, speaker: Any) -> None:
        """ExaBGP speakers: learn which commands were acknowledged (``ExaBGPSession.on_answer``)."""
        session = _acking_session(speaker)
        if session is None or id(session) in self._hooked:
            return
        self._hooked.add(id(session))

        def answered(command: str | None, ok: bool) -> None:
            if command is None:
                return
            for entry in self.adv.get(name, {}).values():
                if entry.command == command and entry.state == "sent":
                    entry.state, entry.since = ("acked" if ok else "error"), time.time()
                    if not ok:
                        self.log.error("announce_refused_by_speaker", peer=name, command=command)
                    return

        session.on_answer = answered

    async def reexport(self) -> dict[str, list[str]]:
        """After a config reload: every wanted prefix through each target's (possibly new) export
        policy again. A peer that now refuses gets a withdraw (and shows ``refused`` in ``adv``); a
        peer whose attributes changed gets the new announcement; the others get nothing. Not a change
        of the prefix for the rate rule: the experiment did not change, the peer's policy did.
        Returns ``{"resent": [...], "withdrawn": [...]}`` as ``peer prefix`` strings."""
        out: dict[str, list[str]] = {"resent": [], "withdrawn": []}
        for prefix, wanted in list(self.wanted.items()):
            # group members an export policy left out: those whose policy now accepts join
            back = []
            for name, _rule in wanted.refused:
                peer = self._peer(name)
                if peer is None:
                    continue
                with contextlib.suppress(PolicyError):
                    self.command_for(peer, wanted)
                    back.append(name)
            if back:
                targets = wanted.targets + tuple(back)
                wanted = replace(wanted, targets=targets, refused=tuple(r for r in wanted.refused
                                                                          if r[0] not in back),
                                 announcement=replace(wanted.announcement,
                                                      muxes=(*wanted.announcement.muxes, *back)))  # fmt: skip
                self.wanted[prefix] = wanted
            for name in wanted.targets:
                peer = self._peer(name)
                if peer is None:
                    continue
                current = self.adv.get(name, {}).get(prefix)
                try:
                    line, attrs = self.command_for(peer, wanted)
                except PolicyError as exc:
                    if current is not None and current.state != "refused":
                        await self._send_withdraw(name, prefix)
                        out["withdrawn"].append(f"{name} {prefix}")
                    self._refused(name, wanted, exc)
                    continue
                if current is None or current.command != line:
                    await self._send_planned(name, prefix, line, attrs)
                    out["resent"].append(f"{name} {prefix}")
        if out["resent"] or out["withdrawn"]:
            self.log.info("announcements_reexported", **out)
            self._save()
        return out

    # -- session events (Daemon.event_listeners: called in the RIB task) ----------------------------

    def on_event(self, now: float, event: SpeakerEvent) -> None:
        if isinstance(event, PeerUp):
            wanted = [w for w in self.wanted.values() if event.peer in w.targets]
            if wanted:
                self._spawn(self._resend(event.peer, wanted))
        elif isinstance(event, PeerDown):
            for entry in self.adv.get(event.peer, {}).values():
                entry.state, entry.since = "pending", time.time()

    async def _resend(self, name: str, wanted: Sequence[Wanted]) -> None:
        await asyncio.sleep(0)  # after the RIB task marked the peer established
        for w in wanted:
            if self.wanted.get(w.announcement.prefix) is w:
                await self._send_announce(name, w)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- views -------------------------------------------------------------------------------------

    def wanted_json(self) -> list[dict[str, Any]]:
        out = []
        for prefix, w in sorted(self.wanted.items()):
            a = w.announcement
            out.append({
                "prefix": prefix, "peers": list(w.targets), "prepend": a.prepend, "origin": a.origin,
                "poison": list(a.poison), "next_hop": a.next_hop or self.config.announce.next_hop,
                "changed_at": w.changed_at, **{k: v for k, v in attrs_json(w.attrs).items()
                                               if k != "next_hop"},
                "refused": dict(w.refused),
                **({"per_peer": {n: _request_json(v, va) for n, v, va in w.variants}} if w.variants else {}),
            })  # fmt: skip
        return out

    def adv_json(self, name: str) -> list[dict[str, Any]]:
        up = self.established(name)
        return [
            {"prefix": e.prefix, "state": e.state, "on_wire": up and e.state in ("sent", "acked"),
             "command": e.command, "since": e.since, **attrs_json(e.attrs),
             **({"rule": e.rule} if e.rule else {})}
            for _, e in sorted(self.adv.get(name, {}).items())
        ]  # fmt: skip

    # -- persistence -------------------------------------------------------------------------------

    def _record(self, prefix: str, now: float) -> None:
        self.history.record(prefix, now)
        self._history_raw[prefix] = now

    def _save(self) -> None:
        if self.path is None or not self.config.announce.persist:
            return
        doc = {
            "version": 1,
            "announcements": [
                {**asdict(w.announcement), "targets": list(w.targets), "changed_at": w.changed_at,
                 "refused": [list(r) for r in w.refused],
                 **({"variants": [{"peer": n, **asdict(v)} for n, v, _ in w.variants]} if w.variants else {})}
                for w in self.wanted.values()
            ],
            "history": self._history_raw,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def load(self) -> int:
        """Read the persisted state; returns how many announcements were restored. Entries the
        current config refuses (allocation, rules, unknown peers) are dropped and logged."""
        if self.path is None or not self.config.announce.persist or not self.path.exists():
            return 0
        try:
            doc = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            self.log.error("announcements_unreadable", path=str(self.path), error=str(exc))
            return 0
        for prefix, t in dict(doc.get("history", {})).items():
            with contextlib.suppress(ValueError, TypeError):
                self._record(prefix, float(t))
        names = {p.name for p in self.config.peers}
        for item in doc.get("announcements", []):
            try:
                targets = tuple(n for n in item.pop("targets") if n in names)
                changed_at = float(item.pop("changed_at", 0.0))
                refused = tuple((str(n), str(r)) for n, r in item.pop("refused", []) if n in names)
                saved = [dict(v) for v in item.pop("variants", [])]
                ann = _announcement(item)
                attrs = self._check(ann, self.clock(), rate=False)
                variants = tuple((n, v, self._check(v, self.clock(), rate=False))
                                 for n, v in ((d.pop("peer"), _announcement(d)) for d in saved) if n in names)
            except (PolicyError, TypeError, KeyError, ValueError) as exc:
                self.log.error("announcement_dropped", item=str(item)[:200], reason=str(exc))
                continue
            if targets:
                self.wanted[ann.prefix] = Wanted(ann, targets, attrs, changed_at, refused, variants)
                for name in targets:
                    peer = self._peer(name)
                    if peer is None:
                        continue
                    try:
                        line, a = self.command_for(peer, self.wanted[ann.prefix])
                    except PolicyError as exc:  # the config changed while we were down
                        self._refused(name, self.wanted[ann.prefix], exc)
                        continue
                    self.adv.setdefault(name, {})[ann.prefix] = Advertised(ann.prefix, line, a)
        return len(self.wanted)


__all__ = ["Advertised", "AnnouncementManager", "Wanted", "attrs_json"]
