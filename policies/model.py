"""Policy vocabulary: conditions, actions, statements, policies, and the per-UPDATE import chain.

Theory of operation
-------------------
A ``Policy`` is an ordered tuple of ``Statement``s. A statement matches a ``Route`` when all of its
conditions match; it then applies its actions (each returns a *new* ``Route``) and yields its verdict.
``NEXT`` means "carry on with the next statement" (with the modified route); the first verdict that
is not ``NEXT`` wins; when no statement decides, the policy's explicit ``default`` does. Every reject
names the statement (rule) that produced it, or ``"default"``. This is STYLE.md rule 8, after GoBGP
``table/policy.go`` ``Statement.Apply``.

``Policy.evaluate(route, ctx)`` is the plain, obviously-correct evaluator. It is the reference the
fast path is tested against, and the one to use for single routes (API "why was this rejected").

The fast path, ``ImportChain.evaluate_update(ctx, family, attrs, keys)``, exists because the import
chain runs once per prefix on full tables (~1M prefixes, ~6 per UPDATE, one attribute set per UPDATE).
Every condition declares a ``scope``:

* ``Scope.ATTRS`` conditions depend only on the attribute set and the peer (bogon ASNs, AS-path
  length, first AS, next hop). They are evaluated **once per attribute set**: ``compile`` returns a
  ``bool``.
* ``Scope.PREFIX`` conditions depend on the prefix too (bogon prefixes, length bounds, IRR list, RPKI).
  ``compile(ctx, family, attrs)`` returns a ``KeyPredicate(key, network, length) -> bool`` closure that
  has already taken from ``attrs`` what it needs (e.g. the origin AS for RPKI).

For one attribute set the chain is *compiled* into a short program: statements whose attribute
conditions are false vanish, attribute-only statements that always fire end the program, and actions
(which must only depend on the attributes and the peer, see ``Action``) are applied once, yielding the
output ``Attributes`` for that step. The per-prefix loop then only runs the remaining key predicates,
with the prefix split into (network, length) once. Programs are cached per ``Attributes`` object
identity (a bounded dict; interned attribute sets make repeats across UPDATEs hit). A statement with
prefix conditions, a NEXT verdict and actions cannot be folded this way; such chains fall back to
``Policy.evaluate`` per prefix (correct, slower).

Pure: no I/O, no clock; the max-prefix state (how many prefixes the peer already has) is passed in.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Final

from orchestrator.config import PeerKind
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family

#: (key, network as an int of the family's width, prefix length) -> matches?
KeyPredicate = Callable[[int, int, int], bool]

_V4: Final = Family.IPV4


def split_key(key: int, width: int) -> tuple[int, int]:
    """Prefix key → ``(network, length)``, the network as an int ``width`` bits wide.

    Inlined in ``ImportChain`` for speed; keep the two in step.
    """
    if key == 0:
        return 0, 0
    shift = ((key.bit_length() + 7) >> 3) - 1 << 3
    length = key >> shift
    return (key ^ (length << shift)) << (width - shift), length


class Verdict(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    NEXT = "next"


class Direction(enum.Enum):
    IMPORT = "import"
    EXPORT = "export"


class Scope(enum.Enum):
    """What a condition depends on; decides how often the fast path evaluates it."""

    ATTRS = "attrs"  # attributes + peer only: once per attribute set
    PREFIX = "prefix"  # the prefix too: once per prefix


@dataclass(frozen=True, slots=True)
class Route:
    """One route as policies see it: a prefix key of a family plus its (shared) attribute set."""

    family: Family
    key: int
    attrs: Attributes


@dataclass(frozen=True, slots=True)
class PeerContext:
    """The peer a route comes from (import) or goes to (export)."""

    name: str
    kind: PeerKind
    peer_as: int
    local_as: int
    neighbor: str = ""
    is_route_server: bool = False

    @property
    def ibgp(self) -> bool:
        return self.peer_as == self.local_as

    @classmethod
    def for_kind(cls, name: str, kind: PeerKind, peer_as: int, local_as: int,
                 neighbor: str = "") -> PeerContext:
        return cls(name, kind, peer_as, local_as, neighbor, kind is PeerKind.ROUTE_SERVER)


class Condition(abc.ABC):
    """A test on a route. Subclasses set ``scope`` and implement ``matches``; may override ``compile``."""

    scope: ClassVar[Scope] = Scope.ATTRS

    @abc.abstractmethod
    def matches(self, route: Route, ctx: PeerContext) -> bool: ...

    def compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> bool | KeyPredicate:
        """Specialise for one attribute set: a bool (ATTRS scope) or a key predicate (PREFIX scope).

        The default is correct but slow; fast conditions override it.
        """
        if self.scope is Scope.ATTRS:
            return self.matches(Route(family, 0, attrs), ctx)

        def pred(key: int, network: int, length: int) -> bool:
            return self.matches(Route(family, key, attrs), ctx)

        return pred


@dataclass(frozen=True, slots=True)
class Not(Condition):
    """Negation of another condition (same scope)."""

    inner: Condition

    @property
    def scope(self) -> Scope:  # type: ignore[override]
        return self.inner.scope

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        return not self.inner.matches(route, ctx)

    def compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> bool | KeyPredicate:
        compiled = self.inner.compile(ctx, family, attrs)
        if isinstance(compiled, bool):
            return not compiled
        inner = compiled

        def pred(key: int, network: int, length: int) -> bool:
            return not inner(key, network, length)

        return pred


class Action(abc.ABC):
    """A change to a route. ``apply`` returns a new Route and never mutates its argument.

    Actions may depend on the attributes and the peer only, not on the prefix (so the fast path can
    apply them once per attribute set); a prefix-dependent change is a separate statement per prefix set.
    """

    @abc.abstractmethod
    def apply(self, route: Route, ctx: PeerContext) -> Route: ...


@dataclass(frozen=True, slots=True)
class Statement:
    """Conditions (all must match) → actions → verdict. ``name`` is the rule name reported on reject."""

    name: str
    conditions: tuple[Condition, ...] = ()
    actions: tuple[Action, ...] = ()
    verdict: Verdict = Verdict.NEXT

    def evaluate(self, route: Route, ctx: PeerContext) -> tuple[Verdict, Route]:
        """NEXT and the route unchanged when a condition fails; else the actions' result and verdict."""
        for cond in self.conditions:
            if not cond.matches(route, ctx):
                return Verdict.NEXT, route
        for action in self.actions:
            route = action.apply(route, ctx)
        return self.verdict, route


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict  # ACCEPT or REJECT, never NEXT
    route: Route
    rule: str  # the deciding statement's name, or "default"


DEFAULT_RULE: Final = "default"


@dataclass(frozen=True, slots=True)
class Policy:
    """Ordered statements with an explicit default verdict for its direction."""

    name: str
    direction: Direction
    default: Verdict
    statements: tuple[Statement, ...] = ()

    def __post_init__(self) -> None:
        if self.default is Verdict.NEXT:
            raise ValueError("a policy's default must be ACCEPT or REJECT")

    def evaluate(self, route: Route, ctx: PeerContext) -> Decision:
        """Reference evaluator: the first statement verdict that is not NEXT wins."""
        for statement in self.statements:
            verdict, route = statement.evaluate(route, ctx)
            if verdict is not Verdict.NEXT:
                return Decision(verdict, route, statement.name)
        return Decision(self.default, route, DEFAULT_RULE)


# ---------------------------------------------------------------------------------------------------
# Max-prefix: the chain reports, the daemon acts.


class LimitAction(enum.Enum):
    WARN = "warn"  # log once, accept everything
    REJECT = "reject"  # accept up to the limit, reject further new routes ("max-prefix")
    TEARDOWN = "teardown"  # shut the session down and keep it down
    RESTART = "restart"  # shut the session down, re-enable after ``restart_after`` seconds


@dataclass(frozen=True, slots=True)
class MaxPrefix:
    """Per-family prefix limits (None: no limit). Pathvector: import-limit4/6, import-limit-violation."""

    ipv4: int | None = None
    ipv6: int | None = None
    action: LimitAction = LimitAction.TEARDOWN
    restart_after: float = 300.0

    def limit(self, family: Family) -> int | None:
        return self.ipv4 if family is Family.IPV4 else self.ipv6


@dataclass(frozen=True, slots=True)
class LimitSignal:
    """The peer went over its limit with this UPDATE; the daemon performs ``action``."""

    family: Family
    limit: int
    count: int  # prefixes the peer would have after this UPDATE
    action: LimitAction
    restart_after: float


MAX_PREFIX_RULE: Final = "max-prefix"


@dataclass(slots=True)
class UpdateResult:
    """Outcome of one UPDATE's announced prefixes.

    ``accepted`` groups keys by the attribute set they are stored with (after import actions; one
    group per distinct output set, usually one). ``rejected`` names the rule per key.
    """

    accepted: list[tuple[Attributes, list[int]]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    limit: LimitSignal | None = None

    @property
    def accepted_count(self) -> int:
        return sum(len(keys) for _, keys in self.accepted)


# A compiled step: (key predicate or None = always, verdict, index into outputs, rule name).
_Step = tuple[KeyPredicate | None, Verdict, int, str]
_Program = tuple[tuple[_Step, ...], tuple[Attributes, ...]]


def _all_of(preds: Sequence[KeyPredicate]) -> KeyPredicate:
    def pred(key: int, network: int, length: int) -> bool:
        return all(p(key, network, length) for p in preds)

    return pred


class ImportChain:
    """A policy plus an optional max-prefix limit, with the per-UPDATE fast path.

    Holds a small cache of compiled programs (per attribute set); otherwise stateless. One instance
    per peer is the intended use, but the cache checks ``ctx`` identity, so sharing is safe.
    """

    CACHE_SIZE: Final = 4096

    def __init__(self, policy: Policy, max_prefix: MaxPrefix | None = None) -> None:
        if policy.direction is not Direction.IMPORT:
            raise ValueError("ImportChain needs an import policy")
        self.policy = policy
        self.max_prefix = max_prefix
        self._cache: dict[tuple[int, bool], tuple[Attributes, PeerContext, _Program | None]] = {}

    def _compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> _Program | None:
        """The program for one attribute set, or None when only the slow path is correct."""
        steps: list[_Step] = []
        outs: list[Attributes] = []
        current = attrs
        route = Route(family, 0, attrs)
        attrs_scope = Scope.ATTRS
        for st in self.policy.statements:
            preds: list[KeyPredicate] = []
            for cond in st.conditions:
                if cond.scope is attrs_scope:
                    if not cond.matches(route, ctx):
                        break
                    continue
                compiled = cond.compile(ctx, family, current)
                if compiled is False:
                    break
                if compiled is not True:
                    assert not isinstance(compiled, bool)
                    preds.append(compiled)
            else:
                if preds and st.actions and st.verdict is Verdict.NEXT:
                    return None  # per-prefix route modification that continues: slow path
                out = route
                for action in st.actions:
                    out = action.apply(out, ctx)
                if not preds:
                    if st.verdict is Verdict.NEXT:
                        route = out
                        current = out.attrs
                        continue
                    outs.append(out.attrs)
                    steps.append((None, st.verdict, len(outs) - 1, st.name))
                    return tuple(steps), tuple(outs)
                if st.verdict is not Verdict.NEXT:
                    outs.append(out.attrs)
                    steps.append((preds[0] if len(preds) == 1 else _all_of(preds), st.verdict,
                                  len(outs) - 1, st.name))
        outs.append(current)
        steps.append((None, self.policy.default, len(outs) - 1, DEFAULT_RULE))
        return tuple(steps), tuple(outs)

    def program(self, ctx: PeerContext, family: Family, attrs: Attributes) -> _Program | None:
        ck = (id(attrs), family is _V4)  # an Enum's __hash__ is Python code: avoid it here
        hit = self._cache.get(ck)
        if hit is not None and hit[0] is attrs and hit[1] is ctx:
            return hit[2]
        prog = self._compile(ctx, family, attrs)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()  # bounded; interned sets refill it cheaply
        self._cache[ck] = (attrs, ctx, prog)
        return prog

    def evaluate_update(self, ctx: PeerContext, family: Family, attrs: Attributes, keys: Sequence[int],
                        count: int | None = None) -> UpdateResult:
        """Run the chain over the prefixes of one UPDATE sharing ``attrs``.

        ``count`` is how many prefixes of ``family`` the peer has accepted before this UPDATE (the
        daemon's Adj-RIB-In count), used for max-prefix; None skips the limit. A key already held is
        counted as new here (conservative: the limit trips at most one UPDATE early on replacements).
        Pure: no side effects beyond the compile cache.
        """
        result = UpdateResult()
        prog = self.program(ctx, family, attrs)
        if prog is None:
            self._slow(ctx, family, attrs, keys, result)
        else:
            steps, outs = prog
            if steps[0][0] is None:
                # Decided by attributes alone (import none, a bogon ASN, accept-all): no per-prefix work.
                _, verdict, i, name = steps[0]
                if verdict is Verdict.ACCEPT:
                    result.accepted.append((outs[i], list(keys)))
                else:
                    result.rejected.extend([(k, name) for k in keys])
            else:
                self._loop(steps, outs, 32 if family is _V4 else 128, keys, result)
        if self.max_prefix is not None and count is not None:
            self._apply_limit(family, count, result)
        return result

    @staticmethod
    def _loop(steps: tuple[_Step, ...], outs: tuple[Attributes, ...], width: int, keys: Sequence[int],
              result: UpdateResult) -> None:
        rejected = result.rejected
        groups: list[list[int]] = [[] for _ in outs]
        accept = Verdict.ACCEPT
        for key in keys:
            # split_key, inlined
            if key:
                shift = ((key.bit_length() + 7) >> 3) - 1 << 3
                length = key >> shift
                network = (key ^ (length << shift)) << (width - shift)
            else:
                network = length = 0
            for pred, verdict, i, name in steps:
                if pred is None or pred(key, network, length):
                    if verdict is accept:
                        groups[i].append(key)
                    else:
                        rejected.append((key, name))
                    break
        if len(groups) == 2 and not groups[1]:  # the common shape: [accept step, default]
            if groups[0]:
                result.accepted.append((outs[0], groups[0]))
            return
        # Steps yield distinct objects unless an action returned its input: merge by identity only.
        by_id: dict[int, tuple[Attributes, list[int]]] = {}
        for i, ks in enumerate(groups):
            if ks:
                have = by_id.get(id(outs[i]))
                if have is None:
                    by_id[id(outs[i])] = (outs[i], ks)
                else:
                    have[1].extend(ks)
        result.accepted.extend(by_id.values())

    def _slow(self, ctx: PeerContext, family: Family, attrs: Attributes, keys: Iterable[int],
              result: UpdateResult) -> None:
        groups: dict[Attributes, list[int]] = {}
        for key in keys:
            d = self.policy.evaluate(Route(family, key, attrs), ctx)
            if d.verdict is Verdict.ACCEPT:
                groups.setdefault(d.route.attrs, []).append(key)
            else:
                result.rejected.append((key, d.rule))
        result.accepted.extend(groups.items())

    def _apply_limit(self, family: Family, count: int, result: UpdateResult) -> None:
        assert self.max_prefix is not None
        limit = self.max_prefix.limit(family)
        if limit is None:
            return
        total = count + result.accepted_count
        if total <= limit:
            return
        mp = self.max_prefix
        result.limit = LimitSignal(family, limit, total, mp.action, mp.restart_after)
        if mp.action is LimitAction.WARN:
            return
        room = max(0, limit - count) if mp.action is LimitAction.REJECT else 0
        kept: list[tuple[Attributes, list[int]]] = []
        for out, keys in result.accepted:
            take, drop = keys[:room], keys[room:]
            room -= len(take)
            if take:
                kept.append((out, take))
            result.rejected.extend((k, MAX_PREFIX_RULE) for k in drop)
        result.accepted = kept


def _merge_groups(groups: Iterable[tuple[Attributes, list[int]]]) -> list[tuple[Attributes, list[int]]]:
    merged: dict[Attributes, list[int]] = {}
    for out, keys in groups:
        have = merged.get(out)
        if have is None:
            merged[out] = keys
        else:
            have.extend(keys)
    return list(merged.items())


def with_attrs(route: Route, **changes: object) -> Route:
    """A copy of ``route`` with some attribute fields replaced."""
    return Route(route.family, route.key, replace(route.attrs, **changes))  # type: ignore[arg-type]
