"""The BGP decision process (RFC 4271 9.1.2): which of a prefix's paths is best, and why.

Theory of operation
-------------------
Phase 2 of RFC 4271 9.1 picks, per prefix, the best of the paths received from all peers. We run
the steps of 9.1.2.2 plus the usual tie-breaks, in this order (``STEPS`` below is the same list as
data, and the ``Reason`` values are the step numbers):

====  ================  ===========================================================  ==============
step  Reason            rule                                                         RFC 4271
====  ================  ===========================================================  ==============
0     ONLY_PATH         a single candidate wins without comparison                   9.1.2
1     LOCAL_PREF        highest effective LOCAL_PREF (eBGP: the peer's configured    9.1.1, 5.1.5
                        default, a received LOCAL_PREF is ignored)
2     AS_PATH           shortest AS_PATH (AS_SET counts 1, confed segments 0)        9.1.2.2 a)
3     ORIGIN            lowest ORIGIN (IGP < EGP < INCOMPLETE)                       9.1.2.2 b)
4     MED               lowest MED, only among paths from the same neighbor AS       9.1.2.2 c)
                        unless ``always_compare_med``; a missing MED is 0
                        (or worst with ``missing_med_worst``)
5     EBGP_OVER_IBGP    paths from eBGP peers over paths from iBGP peers             9.1.2.2 d)
6     ROUTER_ID         lowest BGP identifier of the advertising peer                9.1.2.2 f)
7     PEER_ADDRESS      lowest peer address (as an integer, IPv4 before IPv6)        9.1.2.2 g)
====  ================  ===========================================================  ==============

Step 9.1.2.2 e) (IGP cost to the NEXT_HOP) is skipped: the orchestrator has no IGP, every next hop
costs the same. Two paths of one prefix always come from two different peers (no ADD-PATH), and
peer addresses are unique, so step 7 makes the order total; a tie after it is a bug
(``AssertionError``, OpenBGPD's "Uh, oh a politician").

Set elimination, not pairwise sorting. Because MED is only compared inside a neighbor AS, the
pairwise "better than" relation is not transitive (A beats B on MED, B beats C on router id,
C beats A on router id), and the result of a pairwise scan depends on the arrival order. We follow
RFC 4271 9.1.2.2 literally: each step removes from the *whole candidate set* every path that is
not best on that step (for MED: not best inside its neighbor-AS group). The result, and the
``Reason`` kept with it (the step at which the set shrank to one path, as GoBGP and BIRD report
it), depend only on the set.

Speed: ranks. Every step but MED is a property of one path alone, and MED is one too whenever the
candidates it sees share a neighbor AS. So each path carries a precomputed ``rank`` integer, the
fields packed so that a lower integer is better, most significant step first::

    bit 131..162  0xFFFFFFFF - local_pref        (step 1)
    bit 115..130  AS_PATH length, capped         (step 2)
    bit 113..114  ORIGIN                         (step 3)
    bit  81..112  MED                            (step 4)
    bit  80       1 for iBGP                     (step 5)
    bit  48..79   router id                      (step 6)
    bit  32..47   ordinal of the peer address    (step 7)
    bit   0..31   neighbor AS (not a step: the MED group; below step 7, so it never decides)

Carrying the neighbor AS inside the rank saves a slot and an int object per path (memory budget).

The table computes it once per interned (peer, attribute set) object, so choosing between paths
is integer comparison, and the deciding step of two ranks is the field holding the highest bit of
``a ^ b``. Only when two or more paths tie on steps 1-3 and come from different neighbor ASes
(without ``always_compare_med``) does ``order`` fall back to the per-step elimination.

``reference_select`` implements the same steps directly from ``STEPS`` over plain ``PathFacts``,
without ranks; the property tests check the fast path against it.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Final, NamedTuple, Protocol, TypeVar

from orchestrator.rib.attrs import Attributes


class Reason(enum.IntEnum):
    """Why the best path won: the decision step at which it was the only candidate left."""

    ONLY_PATH = 0
    LOCAL_PREF = 1
    AS_PATH = 2
    ORIGIN = 3
    MED = 4
    EBGP_OVER_IBGP = 5
    ROUTER_ID = 6
    PEER_ADDRESS = 7

    @property
    def text(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class DecisionOptions:
    """Knobs of the decision process; passed to the RIB, never read from module globals."""

    always_compare_med: bool = False
    """Compare MED between paths from different neighbor ASes (RFC 4271 9.1.2.2 c) allows it)."""
    missing_med_worst: bool = False
    """Treat a missing MED as the worst value (4294967295) instead of 0 (RFC 4271 default)."""


# Rank layout: (shift, width) per field; lower rank is better.
NAS_MASK: Final = 0xFFFFFFFF
ADDR_SHIFT: Final = 32
ADDR_BITS: Final = 16
RID_SHIFT: Final = 48
EBGP_SHIFT: Final = 80
MED_SHIFT: Final = 81
ORIGIN_SHIFT: Final = 113
ASPATH_SHIFT: Final = 115
LP_SHIFT: Final = 131
_U32: Final = 0xFFFFFFFF
_ASPATH_MAX: Final = 0xFFFF
_TAIL_MASK: Final = (1 << MED_SHIFT) - 1  # steps 5-7
MAX_PEERS: Final = 1 << ADDR_BITS


class Ranked(Protocol):
    """What ``order`` needs from a path: its packed rank (neighbor AS in the low 32 bits)."""

    @property
    def rank(self) -> int: ...


P = TypeVar("P", bound=Ranked)
_by_rank: Final = attrgetter("rank")


def router_id_int(router_id: str) -> int:
    """Dotted-quad BGP identifier → int; ValueError when it is not one."""
    return int(ipaddress.IPv4Address(router_id))


def address_sort_key(address: str) -> tuple[int, int]:
    """Peer address → sort key for step 7: IPv4 before IPv6, then numerically."""
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


def pack_rank(
    *,
    local_pref: int,
    as_path_length: int,
    origin: int,
    med: int,
    ebgp: bool,
    router_id: int,
    address_ordinal: int,
    neighbor_as: int,
) -> int:
    """Pack the per-path inputs of the steps into one integer; lower is better."""
    return (
        ((_U32 - (local_pref & _U32)) << LP_SHIFT)
        | (min(as_path_length, _ASPATH_MAX) << ASPATH_SHIFT)
        | ((origin & 3) << ORIGIN_SHIFT)
        | ((med & _U32) << MED_SHIFT)
        | ((0 if ebgp else 1) << EBGP_SHIFT)
        | ((router_id & _U32) << RID_SHIFT)
        | ((address_ordinal & (MAX_PEERS - 1)) << ADDR_SHIFT)
        | (neighbor_as & NAS_MASK)
    )


def rank_of(
    attrs: Attributes,
    *,
    ebgp: bool,
    default_local_pref: int,
    router_id: int,
    address_ordinal: int,
    options: DecisionOptions,
) -> int:
    """Rank of ``attrs`` received from a peer (see the module docstring for the layout)."""
    return pack_rank(
        local_pref=effective_local_pref(attrs, ebgp, default_local_pref),
        as_path_length=attrs.as_path_length,
        origin=int(attrs.origin),
        med=effective_med(attrs.med, options),
        ebgp=ebgp,
        router_id=router_id,
        address_ordinal=address_ordinal,
        neighbor_as=attrs.neighbor_as or 0,
    )


def effective_local_pref(attrs: Attributes, ebgp: bool, default_local_pref: int) -> int:
    """RFC 4271 5.1.5: LOCAL_PREF from an eBGP peer is ignored; a missing one takes the default."""
    if ebgp or attrs.local_pref is None:
        return default_local_pref
    return attrs.local_pref


def effective_med(med: int | None, options: DecisionOptions) -> int:
    if med is None:
        return _U32 if options.missing_med_worst else 0
    return med


def local_pref_from_rank(rank: int) -> int:
    return _U32 - (rank >> LP_SHIFT)


def with_peer_fields(rank: int, *, router_id: int, address_ordinal: int) -> int:
    """``rank`` with steps 6 and 7 replaced (a peer's router id or address ordinal changed)."""
    peer_mask = ((1 << EBGP_SHIFT) - 1) & ~NAS_MASK
    return (
        (rank & ~peer_mask)
        | ((router_id & _U32) << RID_SHIFT)
        | ((address_ordinal & (MAX_PEERS - 1)) << ADDR_SHIFT)
    )


def reason_from_xor(diff: int) -> Reason:
    """The step deciding between two ranks, from ``a ^ b``. AssertionError when they are equal."""
    bits = diff.bit_length()
    if bits > LP_SHIFT:
        return Reason.LOCAL_PREF
    if bits > ASPATH_SHIFT:
        return Reason.AS_PATH
    if bits > ORIGIN_SHIFT:
        return Reason.ORIGIN
    if bits > MED_SHIFT:
        return Reason.MED
    if bits > EBGP_SHIFT:
        return Reason.EBGP_OVER_IBGP
    if bits > RID_SHIFT:
        return Reason.ROUTER_ID
    assert bits > ADDR_SHIFT, "two paths tie on every decision step (same peer twice?)"
    return Reason.PEER_ADDRESS


def better2(a: Ranked, b: Ranked, always_compare_med: bool) -> tuple[bool, Reason]:
    """Pairwise: is ``a`` better than ``b``, and which step decided. For exactly two candidates
    this is the same as set elimination. Antisymmetric: ``better2(b, a)`` gives the opposite."""
    ra = a.rank
    rb = b.rank
    diff = ra ^ rb
    if always_compare_med or (diff >> ORIGIN_SHIFT) or not (diff & NAS_MASK):
        return ra < rb, reason_from_xor(diff)
    # Same steps 1-3, different neighbor AS: MED is not compared, go on with steps 5-7.
    ta = ra & _TAIL_MASK
    tb = rb & _TAIL_MASK
    return ta < tb, reason_from_xor(ta ^ tb)


def order(paths: list[P], always_compare_med: bool) -> tuple[tuple[P, ...], Reason]:
    """Best path first, the others by rank; with the reason the best one won.

    ``paths`` (at least two, from distinct peers) is sorted in place. The result depends only on
    the set of paths, not on the order of the list. AssertionError when two paths tie completely.
    """
    paths.sort(key=_by_rank)
    r0 = paths[0].rank
    diff = r0 ^ paths[1].rank
    if always_compare_med or (diff >> ORIGIN_SHIFT):
        return tuple(paths), reason_from_xor(diff)
    # Two or more tie on steps 1-3: MED is a plain rank field only if they share a neighbor AS.
    pre = r0 >> ORIGIN_SHIFT
    nas0 = r0 & NAS_MASK
    count = len(paths)
    end = 1
    mixed = False
    while end < count and paths[end].rank >> ORIGIN_SHIFT == pre:
        if paths[end].rank & NAS_MASK != nas0:
            mixed = True
        end += 1
    if not mixed:
        return tuple(paths), reason_from_xor(diff)
    best, reason = _eliminate_med(paths[:end])
    rest = tuple(p for p in paths if p is not best)
    return (best, *rest), reason


def _eliminate_med(tied: list[P]) -> tuple[P, Reason]:
    """Steps 4-7 over candidates equal on steps 1-3 with several neighbor ASes (9.1.2.2 c)."""
    group_min: dict[int, int] = {}
    for p in tied:  # rank >> MED_SHIFT: steps 1-4, of which 1-3 are equal here
        m = p.rank >> MED_SHIFT
        nas = p.rank & NAS_MASK
        if m < group_min.get(nas, m + 1):
            group_min[nas] = m
    left = [p for p in tied if p.rank >> MED_SHIFT == group_min[p.rank & NAS_MASK]]
    if len(left) == 1:
        return left[0], Reason.MED
    left.sort(key=lambda p: p.rank & _TAIL_MASK)
    t0 = left[0].rank & _TAIL_MASK
    return left[0], reason_from_xor(t0 ^ (left[1].rank & _TAIL_MASK))


def select(paths: Sequence[P], always_compare_med: bool) -> tuple[P, Reason]:
    """Best of ``paths`` (non-empty) and why; order-independent."""
    if len(paths) == 1:
        return paths[0], Reason.ONLY_PATH
    ordered, reason = order(list(paths), always_compare_med)
    return ordered[0], reason


# ---------------------------------------------------------------------------------------------
# Reference implementation: the steps as a table over plain facts, no ranks. Slow and obvious;
# the tests hold the ranked code above to it.


class PathFacts(NamedTuple):
    """What the decision process looks at, for one path (test and documentation helper)."""

    local_pref: int  # effective
    as_path_length: int
    origin: int
    med: int | None
    neighbor_as: int
    ebgp: bool
    router_id: int
    address: tuple[int, int]  # address_sort_key()


# (step, Reason, RFC section, key: lower is better, groups: only compared inside equal group keys)
Step = tuple[int, Reason, str, Callable[[PathFacts, DecisionOptions], object]]
STEPS: Final[tuple[Step, ...]] = (
    (1, Reason.LOCAL_PREF, "RFC 4271 9.1.1", lambda p, o: -p.local_pref),
    (2, Reason.AS_PATH, "RFC 4271 9.1.2.2 a)", lambda p, o: min(p.as_path_length, _ASPATH_MAX)),
    (3, Reason.ORIGIN, "RFC 4271 9.1.2.2 b)", lambda p, o: p.origin),
    (4, Reason.MED, "RFC 4271 9.1.2.2 c)", lambda p, o: effective_med(p.med, o)),
    (5, Reason.EBGP_OVER_IBGP, "RFC 4271 9.1.2.2 d)", lambda p, o: 0 if p.ebgp else 1),
    (6, Reason.ROUTER_ID, "RFC 4271 9.1.2.2 f)", lambda p, o: p.router_id),
    (7, Reason.PEER_ADDRESS, "RFC 4271 9.1.2.2 g)", lambda p, o: p.address),
)


def reference_select(paths: Sequence[PathFacts], options: DecisionOptions) -> tuple[int, Reason]:
    """Index of the best path in ``paths`` and the reason, by literal set elimination."""
    left = list(range(len(paths)))
    if len(left) == 1:
        return 0, Reason.ONLY_PATH
    for _step, reason, _rfc, key in STEPS:
        if reason is Reason.MED and not options.always_compare_med:
            best_in_group: dict[int, object] = {}
            for i in left:
                k = key(paths[i], options)
                g = paths[i].neighbor_as
                if g not in best_in_group or k < best_in_group[g]:  # type: ignore[operator]
                    best_in_group[g] = k
            left = [i for i in left if key(paths[i], options) == best_in_group[paths[i].neighbor_as]]
        else:
            best = min(key(paths[i], options) for i in left)  # type: ignore[type-var]
            left = [i for i in left if key(paths[i], options) == best]
        if len(left) == 1:
            return left[0], reason
    raise AssertionError("two paths tie on every decision step")


def compare(a: PathFacts, b: PathFacts, options: DecisionOptions) -> tuple[int, Reason]:
    """Pairwise reference: -1 when ``a`` is better, 1 when ``b`` is; and the deciding step."""
    index, reason = reference_select((a, b), options)
    return (-1 if index == 0 else 1), reason
