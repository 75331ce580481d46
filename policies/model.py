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

Two things keep the per-set and per-prefix costs small (a full table has ~1 attribute set per
UPDATE of ~6 prefixes, so the compile runs about once per UPDATE):

* Conditions whose predicate does not depend on the attribute set (``uses_attrs = False``: prefix
  lists, length bounds) are compiled once per family and chain, not per set.
* The per-prefix loop is *generated* Python source, one function per program shape (which
  statements survived, in which order; a handful per chain): predicates that carry an ``Inline``
  (their source, see ``inline_predicate``) are pasted into the loop body, so a prefix costs no Python
  call at all; others are called. Per-set values reach the loop as arguments (``origin``, the set's
  origin AS, is the one inline sources may read), so sets share the generated function.

Where a C compiler was available, three optional accelerators (``policies/_match.c``, wired in by
``policies.accel``; ``PEERCTL_PURE=1`` turns them off) take the remaining Python costs, each falling
back to the Python code above, which stays the reference, for anything it does not take as is:

* the generated loop of an IPv4 shape whose steps all carry an ``Inline.native`` form (prefix
  lists, length bounds, RPKI states, their negations) runs as one C call per UPDATE over flat
  arrays (``_match.Loop``);
* the leading gates of the simple plan that carry a native form (``native_gate``) run as one C
  call per attribute set over the AS path (``_match.Gates``);
* the import action's output set is a slot copy of the received one (``_match.Copier``).

Pure: no I/O, no clock; the max-prefix state (how many prefixes the peer already has) is passed in.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Final

from orchestrator.config import PeerKind
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family
from policies import accel

#: (key, network as an int of the family's width, prefix length) -> matches?
KeyPredicate = Callable[[int, int, int], bool]

_V4: Final = Family.IPV4


def split_key(key: int, width: int) -> tuple[int, int]:
    """Prefix key → ``(network, length)``, the network as an int ``width`` bits wide.

    By table in ``generate_loop`` for speed; keep the two in step.
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


_new_route = object.__new__
_route_slots = (Route.__dict__["family"].__set__, Route.__dict__["key"].__set__,
                Route.__dict__["attrs"].__set__)


def make_route(family: Family, key: int, attrs: Attributes) -> Route:
    """``Route(family, key, attrs)`` without the frozen dataclass ``__init__`` (~3x cheaper; the
    import fast path builds one per attribute set). Same object, equal and hashing alike."""
    route = _new_route(Route)
    set_family, set_key, set_attrs = _route_slots
    set_family(route, family)
    set_key(route, key)
    set_attrs(route, attrs)
    return route


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


@dataclass(frozen=True, eq=False, slots=True)
class Inline:
    """A key predicate's source for the generated per-prefix loop (see the module docstring).

    ``lines`` are statements setting ``{hit}`` to the verdict from ``key``, ``network``, ``length``
    and ``origin`` (the attribute set's origin AS, or None); names of ``ns`` are written ``{name}``
    (``str.format``: no other braces). Shared by every attribute set: it must not capture per-set
    values. Hashes by identity: programs with the same Inline objects share a generated loop.

    ``native`` says the same for the C loop (``policies.accel``), or None (the Python loop runs):
    ``(op, negate, *tables)`` with an ``accel.OP_*`` code and the flat tables of ``_match.Loop``.
    """

    lines: tuple[str, ...]
    ns: Mapping[str, Any]
    native: tuple[Any, ...] | None = None


def inline_predicate(pred: KeyPredicate, inline: Inline) -> KeyPredicate:
    """Attach ``inline`` (equivalent source) to ``pred``; ``ImportChain`` pastes it into its loop."""
    pred.inline = inline  # type: ignore[attr-defined]
    return pred


def native_gate(test: Callable[[Attributes], bool],
                native: tuple[Any, ...] | None) -> Callable[[Attributes], bool]:
    """Attach ``native`` (the same test for ``_match.Gates``, see ``accel.gates``) to a bound test."""
    if native is not None:
        test.native = native  # type: ignore[attr-defined]
    return test


def inline_of(pred: KeyPredicate) -> Inline | None:
    inline = getattr(pred, "inline", None)
    return inline if isinstance(inline, Inline) else None


class Condition(abc.ABC):
    """A test on a route. Subclasses set ``scope`` and implement ``matches``; may override ``compile``.

    ``uses_attrs = False`` declares that ``compile`` ignores ``ctx`` and ``attrs`` (its predicate
    depends on the prefix only), so a chain compiles it once per family.
    """

    scope: ClassVar[Scope] = Scope.ATTRS
    uses_attrs: ClassVar[bool] = True

    @abc.abstractmethod
    def matches(self, route: Route, ctx: PeerContext) -> bool: ...

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], bool] | None:
        """ATTRS scope: ``matches`` for one peer as a test on the attributes alone, with what depends
        on ``ctx`` precomputed, or None (``matches`` is then called). The fast path runs it once per
        attribute set, about once per UPDATE on a table load."""
        return None

    def source(self, family: Family) -> Inline | None:
        """Loop source equivalent to ``compile(ctx, family, attrs)`` for *every* ``ctx`` and ``attrs``
        (it may read ``origin``), or None. When given, the fast path uses it and does not compile
        the condition per attribute set. Only meaningful for PREFIX scope."""
        return None

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

    @property
    def uses_attrs(self) -> bool:  # type: ignore[override]
        return self.inner.uses_attrs

    def matches(self, route: Route, ctx: PeerContext) -> bool:
        return not self.inner.matches(route, ctx)

    def compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> bool | KeyPredicate:
        compiled = self.inner.compile(ctx, family, attrs)
        if isinstance(compiled, bool):
            return not compiled
        inner = compiled

        def pred(key: int, network: int, length: int) -> bool:
            return not inner(key, network, length)

        src = inline_of(inner)
        if src is not None:
            native = None if src.native is None else (src.native[0], not src.native[1], *src.native[2:])
            inline_predicate(pred, Inline((*src.lines, "{hit} = not {hit}"), src.ns, native))
        return pred


class Action(abc.ABC):
    """A change to a route. ``apply`` returns a new Route and never mutates its argument.

    Actions may depend on the attributes and the peer only, not on the prefix (so the fast path can
    apply them once per attribute set); a prefix-dependent change is a separate statement per prefix set.
    """

    @abc.abstractmethod
    def apply(self, route: Route, ctx: PeerContext) -> Route: ...

    def apply_attrs(self, attrs: Attributes, ctx: PeerContext) -> Attributes:
        """``apply`` on the attributes alone (actions do not see the prefix); override when cheaper."""
        return self.apply(make_route(Family.IPV4, 0, attrs), ctx).attrs

    def bind(self, ctx: PeerContext) -> Callable[[Attributes], Attributes]:
        """``apply_attrs`` for one peer; override to precompute what depends on ``ctx`` only (the
        import fast path calls it once per attribute set)."""
        def apply(attrs: Attributes) -> Attributes:
            return self.apply_attrs(attrs, ctx)

        return apply


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


class UpdateResult:
    """Outcome of one UPDATE's announced prefixes.

    ``accepted`` groups keys by the attribute set they are stored with (after import actions; one
    group per distinct output set, usually one). ``rejected`` names the rule per key. (A plain
    slotted class: a dataclass with default factories costs ~1 µs per UPDATE.)
    """

    __slots__ = ("accepted", "limit", "rejected")

    def __init__(self) -> None:
        self.accepted: list[tuple[Attributes, list[int]]] = []
        self.rejected: list[tuple[int, str]] = []
        self.limit: LimitSignal | None = None

    @property
    def accepted_count(self) -> int:
        return sum([len(keys) for _, keys in self.accepted])


# A compiled step: (key predicate or None = always, verdict, index into outputs, rule name).
_Step = tuple[KeyPredicate | None, Verdict, int, str]
#: The generated loop: (keys, origin, predicates by step, accepted key lists by output, rejected).
_Loop = Callable[[Sequence[int], "int | None", tuple[Any, ...], list[list[int]], list[tuple[int, str]]], None]
# Per attribute set: (loop or None when one step decides every prefix, outputs of the accepting steps,
# predicates the loop calls by step, origin AS, (accepts?, rule) when the loop is None).
_Program = tuple[_Loop | None, tuple[Attributes, ...], tuple[Any, ...], "int | None",
                 "tuple[bool, str] | None"]
# Per signature: (statement index of each accepting step, -1 = default; loop; static predicates by step
# (``_CALL`` where a per-set one goes), decision when the loop is None; whether the loop reads ``origin``).
_Skeleton = tuple[tuple[int, ...], _Loop | None, tuple[Any, ...], "tuple[bool, str] | None", bool]

_Gates = tuple[tuple[int, Callable[[Attributes], bool]], ...]  # (statement index, bound test)
# Per fired gate of the simple plan: (skeleton or None = slow path, the accepting step's bound action:
# None = the set itself (the default accepts), ``_MANY`` = several accepting steps; reads origin?).
_Entry = tuple["_Skeleton | None", Any, bool]
# The simple plan bound to one peer and family: (ctx, v4, every gate, the leading gates in C or None,
# the gates after those, entries by fired gate index, -1 = none fired).
_Bound = tuple[PeerContext, bool, _Gates, "Callable[[Any], int | None] | None", _Gates, dict[int, _Entry]]

_CALL: Final = "call"  # shape marker: a predicate without an Inline, called per prefix
_GATES: Final = "gates"  # run markers of ImportChain._group_runs
_FIXED: Final = "fixed"
_ANY: Final = "any"
_MANY: Final = "many"  # _Entry marker: several accepting steps, outputs by ImportChain._output


def _compose(fns: Sequence[Callable[[Attributes], Attributes]]) -> Callable[[Attributes], Attributes]:
    if len(fns) == 1:
        return fns[0]

    def apply(attrs: Attributes) -> Attributes:
        for fn in fns:
            attrs = fn(attrs)
        return attrs

    return apply


def _all_of(preds: Sequence[KeyPredicate]) -> KeyPredicate:
    def pred(key: int, network: int, length: int) -> bool:
        return all(p(key, network, length) for p in preds)

    return pred


def generate_loop(width: int, shape: Sequence[tuple[Inline | str | None, bool, int]],
                  names: Sequence[str]) -> _Loop:
    """Source for one program shape → the per-prefix loop function.

    ``shape[i]`` is (Inline, ``_CALL`` or None = always, accept?, output index); ``names[i]`` the rule.
    The body splits each key into (network, length) once (``split_key``, by table) and tests the steps
    in order; the first that hits appends the key to its output group or to ``rejected``.
    """
    # split_key by tables indexed by the key's bit length (one byte of length above the network
    # bytes): two lookups instead of the arithmetic, and key 0 (bit length 0) needs no branch.
    shifts = [((bl + 7) >> 3) - 1 << 3 if bl else 0 for bl in range(width + 9)]
    ns: dict[str, Any] = {"_sh": shifts, "_low": [(1 << sh) - 1 for sh in shifts],
                          "_up": [width - sh if bl else 0 for bl, sh in enumerate(shifts)]}
    head = ["    rej = rejected.append"]
    head += [f"    g{o} = groups[{o}].append" for o in sorted({o for _, acc, o in shape if acc})]
    body = ["    for key in keys:",
            "        bl = key.bit_length()",
            "        length = key >> _sh[bl]",
            "        network = (key & _low[bl]) << _up[bl]"]
    for i, (kind, acc, o) in enumerate(shape):
        ns[f"n{i}"] = names[i]
        action = f"g{o}(key)" if acc else f"rej((key, n{i}))"
        if kind is None:
            body += [f"        {action}", "        continue"]
            break
        if isinstance(kind, Inline):
            subst = {k: f"s{i}_{k}" for k in kind.ns} | {"hit": f"h{i}"}
            ns.update({f"s{i}_{k}": v for k, v in kind.ns.items()})
            body += ["        " + line.format(**subst) for line in kind.lines]
            body.append(f"        if h{i}:")
        else:
            head.append(f"    p{i} = preds[{i}]")
            body.append(f"        if p{i}(key, network, length):")
        body += [f"            {action}", "            continue"]
    # Namespace values become default arguments: locals in the loop (LOAD_FAST, no dict lookups).
    params = "".join(f", {k}={k}" for k in ns)
    src = "\n".join([f"def run(keys, origin, preds, groups, rejected{params}):", *head, *body]) + "\n"
    exec(compile(src, f"<import loop {'/'.join(names)}>", "exec"), ns)  # our own source, from trusted Inlines
    run: _Loop = ns["run"]
    return run


def _native(width: int, kinds: Sequence[Inline | str | None], flags: Sequence[tuple[bool, int]],
            names: Sequence[str], loop: _Loop) -> _Loop:
    """``loop`` in C (``accel.native_loop``) when every step has a native form, else ``loop``."""
    steps: list[tuple[Any, ...]] = []
    for kind, (accepts, out), name in zip(kinds, flags, names, strict=True):
        if kind is None:
            native: tuple[Any, ...] = (accel.OP_ALWAYS, False)
        elif isinstance(kind, Inline) and kind.native is not None:
            native = kind.native
        else:
            return loop  # a called predicate or one without a native form: the Python loop
        steps.append((native[0], native[1], accepts, out, name, *native[2:]))
    return accel.native_loop(width, steps, loop)


class ImportChain:
    """A policy plus an optional max-prefix limit, with the per-UPDATE fast path.

    Holds caches (programs per attribute set, attrs-free predicates per family, skeletons and their
    generated loops per shape); otherwise stateless. One instance per peer is the intended use, but
    the program cache checks ``ctx`` identity, so sharing is safe.

    Compiling one attribute set (about once per UPDATE on a table load) is split so that little of it
    is per set: the set's attribute conditions pick the *live* statements (and the kinds of their
    attrs-dependent predicates); that signature keys a cached ``_Skeleton`` (rule names, attrs-free
    predicates, the generated loop). Per set remain the actions of accepting steps and the origin AS
    (only when the loop can read it). For the simple plan (every built-in chain) the gates, the
    skeleton per fired gate and its bound action are held for the last ``(ctx, family)`` seen
    (``_fast``), so a set's compile is the gates' C call, one dict lookup and the action.
    """

    CACHE_SIZE: Final = 16384

    def __init__(self, policy: Policy, max_prefix: MaxPrefix | None = None) -> None:
        if policy.direction is not Direction.IMPORT:
            raise ValueError("ImportChain needs an import policy")
        self.policy = policy
        self.max_prefix = max_prefix
        self._cache: dict[tuple[int, bool], tuple[Attributes, PeerContext, _Program | None]] = {}
        # Per statement: attribute conditions, attrs-free key conditions, attrs-dependent key conditions
        # compiled per set, and the sources (per family) of those that have one (``Condition.source``).
        plan = []
        for st in policy.statements:
            keyed = [c for c in st.conditions if c.scope is not Scope.ATTRS]
            src4 = [c.source(Family.IPV4) if c.uses_attrs else None for c in keyed]
            src6 = [c.source(Family.IPV6) if c.uses_attrs else None for c in keyed]
            sourced = [a is not None and b is not None for a, b in zip(src4, src6, strict=True)]
            plan.append((
                st,
                tuple(c for c in st.conditions if c.scope is Scope.ATTRS),
                tuple(c for c in keyed if not c.uses_attrs),
                tuple(c for c, ok in zip(keyed, sourced, strict=True) if c.uses_attrs and not ok),
                (tuple(x for x, ok in zip(src4, sourced, strict=True) if ok),
                 tuple(x for x, ok in zip(src6, sourced, strict=True) if ok)),
            ))
        self._plan: tuple[tuple[Statement, tuple[Condition, ...], tuple[Condition, ...],
                                tuple[Condition, ...], tuple[tuple[Any, ...], tuple[Any, ...]]], ...] = \
            tuple(plan)
        self._runs = self._group_runs()
        # A chain of only gates, fixed runs and one unconditional final statement (every built-in
        # chain) has a signature fixed by which gate fires: ``_simple`` lists (gate index, match)
        # in order, and the signature per fired gate (or none: -1) is precomputed.
        self._simple = self._simple_plan()
        # The simple plan bound per (id(ctx), v4), see _Bound; its entries stay with it, so a
        # dual-stack peer's sets alternating families keep both families' entries.
        self._gates: dict[tuple[int, bool], _Bound] = {}
        # The last of those used: one peer per chain is the intended use, so a set's compile
        # usually starts with two identity checks instead of a dict lookup.
        self._fast: _Bound | None = None
        # Bound actions per (statement index, id(ctx)): (ctx, the statement's actions composed).
        self._bound: dict[tuple[int, int], tuple[PeerContext, Callable[[Attributes], Attributes]]] = {}
        self._keypreds: dict[tuple[int, bool], bool | KeyPredicate] = {}
        self._skeletons: dict[tuple[Any, ...], _Skeleton | None] = {}
        self._loops: dict[tuple[Any, ...], _Loop] = {}

    def _group_runs(self) -> tuple[tuple[Any, ...], ...]:
        """The plan as runs the per-set walk handles in bulk (the walk is ~1/UPDATE on table loads):

        * ``(_GATES, ((i, match), ...))``: statements with one attribute condition, no key condition,
          no action and a final verdict (bogon ASN, AS path...): the first that matches decides;
        * ``(_FIXED, sig_part)``: statements with only attrs-free or sourced key conditions, no
          action, a final verdict: always live, their signature part is constant;
        * ``(_ANY, i)``: anything else, walked generically.
        """
        runs: list[tuple[Any, ...]] = []
        for i, (st, aconds, sconds, dconds, _) in enumerate(self._plan):
            final = st.verdict is not Verdict.NEXT and not st.actions
            if final and len(aconds) == 1 and not sconds and not dconds and not st.conditions[1:]:
                if runs and runs[-1][0] is _GATES:
                    runs[-1] = (_GATES, (*runs[-1][1], (i, aconds[0].matches)))
                else:
                    runs.append((_GATES, ((i, aconds[0].matches),)))
            elif final and not aconds and not dconds and len(st.conditions) > 0:
                if runs and runs[-1][0] is _FIXED:
                    runs[-1] = (_FIXED, (*runs[-1][1], i, None))
                else:
                    runs.append((_FIXED, (i, None)))
            else:
                runs.append((_ANY, i))
        return tuple(runs)

    def _simple_plan(self) -> tuple[tuple[tuple[int, Any], ...], dict[int, tuple[Any, ...]]] | None:
        runs = self._runs
        final: int | None = None
        if runs and runs[-1][0] is _ANY:
            st = self._plan[runs[-1][1]][0]
            if not st.conditions and st.verdict is not Verdict.NEXT:
                final = runs[-1][1]
                runs = runs[:-1]
        if any(r[0] is _ANY for r in runs):
            return None
        gates: list[tuple[int, Any]] = []
        sigs: dict[int, tuple[Any, ...]] = {}
        prefix: list[Any] = []
        for what, part in runs:
            if what is _FIXED:
                prefix.extend(part)
                continue
            for i, match in part:
                gates.append((i, match))
                sigs[i] = (*prefix, i, None)
        sigs[-1] = (*prefix, final, None) if final is not None else (*prefix, -1, None)
        return tuple(gates), sigs

    def _compile(self, ctx: PeerContext, family: Family, attrs: Attributes) -> _Program | None:
        """The program for one attribute set, or None when only the slow path is correct.

        Builds the signature: per live statement its index, the kinds of its per-set predicates, then
        None; ``-1`` stands for the default. A NEXT statement's actions change the route that later
        statements see (``seen``: statement index → attributes, only when that happened).
        """
        v4 = family is _V4
        if self._simple is not None:
            fast = self._fast
            if fast is None or fast[0] is not ctx or fast[1] is not v4:
                fast = self._bind_fast(ctx, family)
            fired = -1
            todo = fast[2]
            fused = fast[3]
            if fused is not None:  # the leading gates in one C call (None: a path it leaves to us)
                first = fused(attrs.as_path)
                if first is not None:
                    if first >= 0:
                        fired = todo[first][0]
                    todo = fast[4] if first < 0 else ()
            for i, test in todo:
                if test(attrs):
                    fired = i
                    break
            entry = fast[5].get(fired)
            if entry is None:
                entry = self._simple_entry(fast, fired, ctx, family, attrs)
            sk, act, reads_origin = entry
            if sk is None:
                return None
            if act is _MANY:
                outs: tuple[Attributes, ...] = tuple([self._output(i, attrs, ctx) for i in sk[0]])
            else:
                outs = (attrs if act is None else act(attrs),)
            return sk[1], outs, sk[2], attrs.origin_as if reads_origin else None, sk[3]
        route = make_route(family, 0, attrs)
        sig: list[Any] = [v4]
        seen: dict[int, Attributes] | None = None
        dpreds: list[KeyPredicate] = []  # attrs-dependent predicates without source: called per prefix
        next_ = Verdict.NEXT
        plan = self._plan
        decided = False
        for run in self._runs:
            what = run[0]
            if what is _GATES:
                for i, match in run[1]:
                    if match(route, ctx):
                        sig.append(i)
                        sig.append(None)
                        if seen is not None:
                            seen[i] = route.attrs
                        decided = True
                        break
                if decided:
                    break
                continue
            if what is _FIXED:
                sig.extend(run[1])
                if seen is not None:
                    for i in run[1][::2]:
                        seen[i] = route.attrs
                continue
            i = run[1]
            st, aconds, sconds, dconds, srcs = plan[i]
            ok = True
            for cond in aconds:
                if not cond.matches(route, ctx):
                    ok = False
                    break
            if not ok:
                continue
            src = srcs[0] if v4 else srcs[1]
            if sconds or dconds or src:
                if st.verdict is next_:
                    if st.actions:
                        return None  # per-prefix route modification that continues: slow path
                    continue  # a NEXT statement without actions changes nothing
                kinds: list[Any] = []
                for cond in dconds:
                    compiled = cond.compile(ctx, family, route.attrs)
                    if compiled is False:
                        ok = False
                        break
                    if compiled is not True:
                        inline = inline_of(compiled)
                        if inline is None:
                            dpreds.append(compiled)
                            kinds.append(_CALL)
                        else:
                            kinds.append(inline)
                if not ok:
                    continue
                sig.append(i)
                sig.extend(kinds)
                sig.append(None)
                if seen is not None:
                    seen[i] = route.attrs
                continue
            if st.verdict is next_:
                for action in st.actions:
                    route = make_route(family, 0, action.apply_attrs(route.attrs, ctx))
                seen = seen if seen is not None else {}
                continue
            sig.append(i)  # an attribute-only statement decides every prefix still undecided
            sig.append(None)
            if seen is not None:
                seen[i] = route.attrs
            decided = True
            break
        if not decided:
            sig.append(-1)
            sig.append(None)
            if seen is not None:
                seen[-1] = route.attrs
        if seen is not None and route.attrs.origin_as != attrs.origin_as:
            return None  # an action changed the origin midway: sourced predicates read one origin
        return self._program_for(tuple(sig), ctx, family, attrs, seen, dpreds)

    def _program_for(self, key: tuple[Any, ...], ctx: PeerContext, family: Family, attrs: Attributes,
                     seen: dict[int, Attributes] | None, dpreds: Sequence[KeyPredicate]) -> _Program | None:
        """Skeleton of signature ``key`` + this set's outputs, per-set predicates and origin AS."""
        sk = self._skeleton_of(key, ctx, family, attrs)
        if sk is None:
            return None
        accepts, loop, preds, decision, _ = sk
        if seen is None:
            if len(accepts) == 1:
                outs: tuple[Attributes, ...] = (self._output(accepts[0], attrs, ctx),)
            else:
                outs = tuple([self._output(i, attrs, ctx) for i in accepts])
        else:
            outs = tuple([self._output(i, seen.get(i, attrs), ctx) for i in accepts])
        if dpreds:
            fill = iter(dpreds)
            preds = tuple(next(fill) if p is _CALL else p for p in preds)
        return loop, outs, preds, attrs.origin_as, decision

    def _bind_gates(self, ctx: PeerContext, family: Family) -> _Bound:
        """The simple plan's gates bound to ``ctx``; those up to the first without a native form
        (``native_gate``) also as one C call (``accel.gates``)."""
        assert self._simple is not None
        gates: list[tuple[int, Callable[[Attributes], bool]]] = []
        natives: list[tuple[Any, ...]] = []
        for i, _ in self._simple[0]:
            cond = self._plan[i][1][0]
            test = cond.bind(ctx)
            if test is None:
                def test(attrs: Attributes, match: Any = cond.matches) -> bool:
                    return bool(match(make_route(family, 0, attrs), ctx))
            native = getattr(test, "native", None)
            if len(natives) == len(gates) and isinstance(native, tuple):
                natives.append(native)
            gates.append((i, test))
        fused = accel.gates(natives) if natives else None
        if len(self._gates) >= 256:
            self._gates.clear()
        rest = tuple(gates[len(natives):]) if fused is not None else tuple(gates)
        v4 = family is _V4
        bound = self._gates[id(ctx), v4] = (ctx, v4, tuple(gates), fused, rest, {})
        return bound

    def _bind_fast(self, ctx: PeerContext, family: Family) -> _Bound:
        bound = self._gates.get((id(ctx), family is _V4))
        if bound is None or bound[0] is not ctx:
            bound = self._bind_gates(ctx, family)
        self._fast = bound
        return bound

    def _simple_entry(self, fast: _Bound, fired: int, ctx: PeerContext, family: Family,
                      attrs: Attributes) -> _Entry:
        """The skeleton of the simple plan when gate ``fired`` fires (-1: none), with its output's
        bound action, for ``fast``'s peer and family."""
        assert self._simple is not None
        sk = self._skeleton_of((family is _V4, *self._simple[1][fired]), ctx, family, attrs)
        entry: _Entry
        if sk is None:
            entry = (None, None, False)
        elif len(sk[0]) != 1:
            entry = (sk, _MANY, sk[4])
        else:
            entry = (sk, None if sk[0][0] < 0 else self._action(sk[0][0], ctx), sk[4])
        fast[5][fired] = entry
        return entry

    def _skeleton_of(self, key: tuple[Any, ...], ctx: PeerContext, family: Family,
                     attrs: Attributes) -> _Skeleton | None:
        skeletons = self._skeletons
        if key in skeletons:
            return skeletons[key]
        if len(skeletons) >= 1024:
            skeletons.clear()  # bounded: signatures are few unless per-set kinds vary wildly
        sk = skeletons[key] = self._skeleton(ctx, family, attrs, key)
        return sk

    def _output(self, index: int, attrs: Attributes, ctx: PeerContext) -> Attributes:
        if index < 0:
            return attrs
        return self._action(index, ctx)(attrs)

    def _action(self, index: int, ctx: PeerContext) -> Callable[[Attributes], Attributes]:
        """Statement ``index``'s actions bound to ``ctx`` and composed."""
        bound = self._bound.get((index, id(ctx)))
        if bound is None or bound[0] is not ctx:
            if len(self._bound) >= 256:
                self._bound.clear()
            bound = self._bound[index, id(ctx)] = (ctx, _compose([a.bind(ctx) for a in
                                                                   self._plan[index][0].actions]))
        return bound[1]

    def _skeleton(self, ctx: PeerContext, family: Family, attrs: Attributes,
                  sig: tuple[Any, ...]) -> _Skeleton | None:
        """Steps of one signature; None when a statement needs several predicates (slow path)."""
        accept = Verdict.ACCEPT
        v4 = family is _V4
        entries: list[tuple[int, list[Any]]] = []  # (statement index, its per-set kinds)
        for item in sig[1:]:
            if isinstance(item, int):
                entries.append((item, []))
            elif item is not None:
                entries[-1][1].append(item)
        kinds: list[Inline | str | None] = []
        preds: list[Any] = []
        names: list[str] = []
        flags: list[tuple[bool, int]] = []  # (accepts?, output index)
        accepts: list[int] = []  # statement index (-1: default) per output
        for i, dkinds in entries:
            static: list[bool | KeyPredicate] = []
            if i < 0:
                verdict, name = self.policy.default, DEFAULT_RULE
                src: tuple[Any, ...] = ()
            else:
                st, _, sconds, _, srcs = self._plan[i]
                verdict, name = st.verdict, st.name
                src = srcs[0] if v4 else srcs[1]
                for cond in sconds:
                    ck = (id(cond), v4)  # the condition lives as long as the chain: id is stable
                    compiled = self._keypreds.get(ck)
                    if compiled is None:
                        compiled = self._keypreds[ck] = cond.compile(ctx, family, attrs)
                    static.append(compiled)
                if any(p is False for p in static):
                    continue
            step: list[tuple[Any, Any]] = [(inline_of(p) or _CALL, p) for p in static
                                           if not isinstance(p, bool)]
            step += [(k, None) for k in src]
            step += [(k, _CALL if k is _CALL else None) for k in dkinds]
            if len(step) > 1:
                return None
            kind, pred = step[0] if step else (None, None)
            if verdict is accept:
                accepts.append(i)
            kinds.append(kind)
            preds.append(pred if kind is _CALL else None)
            names.append(name)
            flags.append((verdict is accept, len(accepts) - 1))
            if kind is None:
                break
        if kinds[0] is None:
            return tuple(accepts), None, (), (flags[0][0], names[0]), False
        width = 32 if v4 else 128
        shape = (width, *kinds, *names, *flags)
        loop = self._loops.get(shape)
        if loop is None:
            loop = self._loops[shape] = _native(width, kinds, flags, names, generate_loop(
                width, [(k, a, o) for k, (a, o) in zip(kinds, flags, strict=True)], names))
        # Only inline sources see ``origin`` (called predicates get key, network, length): a set's
        # origin AS (a Python property, ~0.2 µs) is left out of programs whose loop cannot read it.
        # Any mention counts, so the test errs on the side of passing it.
        reads = any(isinstance(k, Inline) and any("origin" in line for line in k.lines) for k in kinds)
        return tuple(accepts), loop, tuple(preds), None, reads

    def program(self, ctx: PeerContext, family: Family, attrs: Attributes) -> _Program | None:
        """The program for ``attrs`` (cached per set), or None: the slow path. ``evaluate_update``
        inlines its cache hit and calls this on a miss."""
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
        Pure: no side effects beyond the caches.
        """
        result = UpdateResult()
        # ``program``'s cache hit inlined (this runs once per UPDATE: each Python call saved is ~0.1 µs;
        # a miss compiles, which costs far more than the call).
        hit = self._cache.get((id(attrs), family is _V4))
        if hit is not None and hit[0] is attrs and hit[1] is ctx:
            prog = hit[2]
        else:
            prog = self.program(ctx, family, attrs)
        if prog is None:
            self._slow(ctx, family, attrs, keys, result)
        else:
            loop, outs, preds, origin, decided = prog
            if loop is None:
                # Decided by attributes alone (import none, a bogon ASN, accept-all): no per-prefix work.
                assert decided is not None
                if decided[0]:
                    result.accepted.append((outs[0], list(keys)))
                else:
                    result.rejected.extend([(k, decided[1]) for k in keys])
            elif len(outs) == 1:  # the common shape: one accepting step (``_group`` inlined)
                group: list[int] = []
                loop(keys, origin, preds, [group], result.rejected)
                if group:
                    result.accepted.append((outs[0], group))
            else:
                groups: list[list[int]] = [[] for _ in outs]
                loop(keys, origin, preds, groups, result.rejected)
                self._group(outs, groups, result)
        mp = self.max_prefix
        if mp is not None and count is not None:
            limit = mp.ipv4 if family is _V4 else mp.ipv6  # MaxPrefix.limit, without the call
            if limit is not None:
                accepted = result.accepted
                n = len(accepted[0][1]) if len(accepted) == 1 else result.accepted_count if accepted else 0
                if count + n > limit:
                    self._apply_limit(family, limit, count, result)
        return result

    @staticmethod
    def _group(outs: tuple[Attributes, ...], groups: list[list[int]], result: UpdateResult) -> None:
        """The keys of several accepting steps (one step is inlined in ``evaluate_update``).
        Steps yield distinct objects unless an action returned its input: merge by identity only."""
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

    def _apply_limit(self, family: Family, limit: int, count: int, result: UpdateResult) -> None:
        """``count`` held plus ``result``'s accepted prefixes exceed ``limit``: signal, and keep or
        drop per the max-prefix action."""
        mp = self.max_prefix
        assert mp is not None
        total = count + result.accepted_count
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
