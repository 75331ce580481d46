"""The RIB task's slices (``Daemon._apply_slice``: runs of one peer's UPDATEs as one
``Rib.update_many``) against ``Daemon._apply`` per event, the reference: for any stream of events
from peers with and without an import policy, cut into queue items anywhere, with and without event
listeners, the same best-path changes in order, the same RIB and the same peer status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.config import PeerConfig, PeerKind
from orchestrator.daemon import BATCH_PREFIXES, Daemon
from orchestrator.rib.attrs import AS_SEQUENCE, Attributes
from orchestrator.rib.prefix import Family, key_from_parts
from orchestrator.rib.table import BestChange
from policies.config import parse_peer_policy
from speakers.events import DownReason, EndOfRib, PeerDown, PeerUp, SpeakerEvent, Update
from tests.orchestrator.test_import_policy import make as make_daemon

V4 = Family.IPV4
PEERS = (
    PeerConfig(name="a", kind=PeerKind.UPSTREAM, neighbor="192.0.2.2", peer_as=65001),
    PeerConfig(name="b", kind=PeerKind.UPSTREAM, neighbor="192.0.2.3", peer_as=65002),
    PeerConfig(
        name="c",
        kind=PeerKind.UPSTREAM,
        neighbor="192.0.2.4",
        peer_as=3333,
        policy=parse_peer_policy({"import": {"next_hop": False}}, kind=PeerKind.UPSTREAM),
    ),
)
ATTRS = [
    Attributes(next_hop="192.0.2.9", as_path=((AS_SEQUENCE, path),), med=med)
    for path, med in [
        ((65001,), None),
        ((65001, 7), 5),
        ((3333,), None),
        ((3333, 65535), 1),
        ((65002, 9), None),
    ]
]
KEYS = [
    key_from_parts((net << 8), ln, V4) for net in (0x100000, 0x100001, 0x110000, 0x0A0000) for ln in (16, 24)
]


def make(tmp_path: Path) -> Daemon:
    return make_daemon(tmp_path, *PEERS)


_peer = st.sampled_from(["a", "a", "b", "c", "gone"])  # "gone": removed by a reload, events ignored
_event = st.one_of(
    st.builds(
        lambda p, a, ann, wd: Update(
            p, V4, ATTRS[a] if ann else None, [KEYS[i] for i in ann], [KEYS[i] for i in wd]
        ),
        _peer,
        st.integers(0, len(ATTRS) - 1),
        st.lists(st.integers(0, len(KEYS) - 1), max_size=6),
        st.lists(st.integers(0, len(KEYS) - 1), max_size=3),
    ),
    st.builds(lambda p: PeerUp(p, 65001, "1.1.1.1"), _peer),
    st.builds(lambda p: PeerDown(p, DownReason.CONNECTION_LOST), _peer),
    st.builds(lambda p: EndOfRib(p, V4), _peer),
)
_stream = st.lists(st.tuples(_event, st.integers(1, 400)), max_size=40)  # (event, prefixes of filler)


def _state(d: Daemon) -> Any:
    best = sorted((k, p.peer, p.blob) for k, p in d.rib.iter_best(V4))
    status = {
        n: (s.state, s.updates, s.announced, s.withdrawn, sorted(f.value for f in s.end_of_rib), s.flaps)
        for n, s in d.status.items()
    }
    return best, d.rib.counts(), status


def _norm(changes: list[BestChange]) -> list[Any]:
    return [
        (c.key, c.old and (c.old.peer, c.old.blob), c.new and (c.new.peer, c.new.blob), c.reason)
        for c in changes
    ]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(_stream, st.lists(st.integers(1, 6), min_size=1), st.booleans(), st.booleans())
def test_slices_apply_as_events_one_by_one(
    tmp_path: Path, stream: list[tuple[SpeakerEvent, int]], cuts: list[int], listen: bool, big: bool
) -> None:
    events: list[SpeakerEvent] = []
    for event, filler in stream:
        events.append(event)
        if big and type(event) is Update:  # long UPDATEs: the slice budget ends runs early
            events.append(
                Update(
                    event.peer,
                    V4,
                    ATTRS[0],
                    [key_from_parts(0x20000000 + (i << 8), 24, V4) for i in range(filler)],
                    (),
                )
            )
    ref, acc = make(tmp_path), make(tmp_path)
    heard: list[list[SpeakerEvent]] = [[], []]
    if listen:
        ref.event_listeners.append(lambda _t, e: heard[0].append(e))
        acc.event_listeners.append(lambda _t, e: heard[1].append(e))
    want: list[BestChange] = []
    for e in events:
        ref._apply(e, want)
    i = k = 0
    while i < len(events):  # queue items of any size (never empty)
        n = cuts[k % len(cuts)]
        acc.events.put_nowait(events[i : i + n])
        i += n
        k += 1
    got: list[BestChange] = []
    slices = 0
    while acc._backlog or not acc.events.empty():
        if not acc._backlog:
            acc._backlog.extend(acc.events.get_nowait())
        acc._apply_slice(got)
        slices += 1
    assert _norm(got) == _norm(want)
    assert _state(acc) == _state(ref)
    assert heard[1] == heard[0]
    total = sum(len(e.announce) + len(e.withdraw) + 1 if type(e) is Update else 1 for e in events)
    assert slices <= total // BATCH_PREFIXES + 1 + sum(
        1 for e in events if type(e) is Update and len(e.announce) + len(e.withdraw) + 1 > BATCH_PREFIXES
    )
