"""The daemon: one RIB task fed by supervised speakers; FIB, API and lab around it.

Theory of operation
-------------------
Every peer in the config gets a speaker (ExaBGP by default, native when ``speaker = "native"``). A
speaker turns its BGP session into ``speakers.events`` and awaits ``Daemon.emit`` for each, which puts
the event on one bounded queue. When the queue is full, ``emit`` blocks, the speaker stops reading its
pipe or socket, and the peer slows down: backpressure instead of unbounded buffering.

One task, ``_rib_loop``, is the only writer of RIB state. It takes events in batches, runs the import
policy, applies them to the RIB, and hands every best-path change to the FIB writer (if any) and to
change subscribers (stream, collector). A run of UPDATEs from one peer without an import policy is
one ``Rib.update_many`` call (``_apply_updates``; event listeners still get each UPDATE first);
anything else goes through ``_apply`` event by event, which stays the reference the runs are tested
against. Between batches it yields, so API handlers (which read the RIB directly; they run between
batches and so see a consistent RIB) stay responsive.

Reload parses the new config first; if it fails the old one stays. Otherwise it diffs the peers: removed
and changed peers' speakers stop (their paths leave the RIB), added and changed peers' speakers start,
unchanged peers are not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from orchestrator.config import Config, PeerConfig, SpeakerKind, diff_peers, load_config
from orchestrator.errors import OrchestratorError
from orchestrator.importer import ImportPolicies
from orchestrator.log import get_logger
from orchestrator.rib.decide import DecisionOptions
from orchestrator.rib.prefix import Family
from orchestrator.rib.table import DISCARD, BestChange, PeerInfo, Rib
from orchestrator.status import PeerStatus
from speakers.events import (
    DownReason,
    EndOfRib,
    Notification,
    PeerDown,
    PeerUp,
    SessionState,
    SpeakerEvent,
    Update,
)

EVENT_QUEUE_SIZE = 512  # events (each up to a few hundred prefixes)
BATCH_PREFIXES = 512  # prefixes (about 1-3 ms of RIB work) applied before yielding to the loop
GC_INTERVAL = 1.0  # seconds between young-generation collections (see _gc_loop)

ChangeSubscriber = Callable[[list[BestChange]], None]
EventListener = Callable[[float, SpeakerEvent], None]  # (wall-clock time, event), before the RIB applies it


class Speaker(Protocol):
    """What the daemon needs of any speaker (ExaBGP process, native session)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, command: str) -> None: ...

    @property
    def restarts(self) -> int: ...


class Daemon:
    """Owns the config, the RIB, the speakers, the FIB writer and the lab feeders."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.log = get_logger()
        self.rib = Rib(DecisionOptions(always_compare_med=config.decision.always_compare_med))
        # Items are non-empty lists: one event (``emit``) or one speaker read's worth (``emit_many``).
        self.events: asyncio.Queue[list[SpeakerEvent]] = asyncio.Queue(EVENT_QUEUE_SIZE)
        self.speakers: dict[str, Speaker] = {}
        self.status: dict[str, PeerStatus] = {}
        self.subscribers: list[ChangeSubscriber] = []
        self.event_listeners: list[EventListener] = []
        # Set by a reader that needs the RIB unchanged across awaits (the collector's chunked RIB
        # snapshot): the RIB task applies nothing while it is there and not set.
        self.rib_hold: asyncio.Event | None = None
        # Awaited after every successful reload, with the new config in place (e.g. announcements
        # re-checked against changed export policies).
        self.reload_hooks: list[Callable[[], Awaitable[object]]] = []
        self.fib: Any = None  # orchestrator.fib.writer.FibWriter when fib.mode != off
        self.lab: Any = None  # orchestrator.lab.runner.LabRunner when lab.enabled
        self.collector: Any = None  # orchestrator.collector.service.Collector when collector.enabled
        self.started_at = time.time()
        self.stopping = asyncio.Event()
        self._exiting = False  # set by stop(): the RIB is about to be dropped whole
        self._backlog: deque[SpeakerEvent] = deque()  # taken from the queue, not yet applied
        self._rib_task: asyncio.Task[None] | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._fib_swept = False
        self._reload_lock = asyncio.Lock()
        self.runtime_dir = config.runtime.dir
        # Import policies (issue 4): peers without a policy are absent and skip the chain entirely.
        # IRR lists fetched by `peerctl irr refresh` live in runtime.dir/irr/PEER.json.
        self.imports = ImportPolicies(config.local.asn, self.runtime_dir / "irr", self.log)
        self._tasks: set[asyncio.Task[Any]] = set()  # max-prefix restarts, dampening reuse

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start FIB, RIB task, lab feeders and speakers. Raises OrchestratorError on a fatal problem."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self._gc_task = asyncio.create_task(self._gc_loop(), name="gc")
        await self.start_collector()
        if self.config.fib.mode.value != "off":
            from orchestrator.fib.writer import FibWriter

            tables = {p.name: p.table for p in self.config.peers if p.table is not None}
            self.fib = FibWriter(self.config.fib, self.config.local, self.log.bind(component="fib"),
                                 upstream_tables=tables)
            await self.fib.start()
            if tables:  # per-upstream tables: each peer's accepted routes (after import policy)
                self.rib.on_update = self._fib_adj_rib_in
        self._rib_task = asyncio.create_task(self._rib_loop(), name="rib")
        self._spawn(self._dampening_loop())
        if self.config.lab.enabled:
            from orchestrator.lab.runner import LabRunner

            self.lab = LabRunner(self.config, self.runtime_dir / "lab", self.log.bind(component="lab"))
            await self.lab.start()
        for peer in self.config.peers:
            await self._start_peer(peer)
        self.log.info(
            "daemon_started",
            peers=len(self.config.peers),
            api=f"{self.config.api.host}:{self.config.api.port}",
        )

    async def stop(self) -> None:
        """Stop the FIB writer first (kernel routes stay: a restart must not blackhole), then the
        speakers (paths leave the RIB) and the lab."""
        if self.fib is not None:
            fib, self.fib = self.fib, None
            await fib.stop()
        # All speakers at once (each ExaBGP takes ~0.4 s to leave), and their PeerDown events are
        # not purged from the RIB: it is dropped whole at exit, and purging a full table costs seconds.
        self._exiting = True
        speakers = list(self.speakers.values())
        self.speakers.clear()
        await asyncio.gather(*(speaker.stop() for speaker in speakers))
        await self._drain_events()
        if self.lab is not None:
            await self.lab.stop()
        for task in list(self._tasks):
            task.cancel()
        await self._drain_events()
        if self._gc_task is not None:
            self._gc_task.cancel()
        if self._rib_task is not None:
            self._rib_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rib_task
        await self.stop_collector()  # after the RIB task: every event it applied is recorded
        self.log.info("daemon_stopped")

    async def start_collector(self) -> None:
        """Start MRT recording when ``[collector] enabled`` (before any speaker: nothing missed)."""
        if self.config.collector.enabled and self.collector is None:
            from orchestrator.collector.service import Collector

            self.collector = Collector(self.config.collector, self)
            await self.collector.start()
            self.event_listeners.append(self.collector.on_event)

    async def stop_collector(self) -> None:
        collector, self.collector = self.collector, None
        if collector is not None:
            with contextlib.suppress(ValueError):
                self.event_listeners.remove(collector.on_event)
            await collector.aclose()

    async def _gc_loop(self) -> None:
        """Cyclic GC on our schedule instead of the allocator's.

        With automatic collection a full-table load spends most of its time in the collector
        (DESIGN.md measured ~40%; here it was more), traversing millions of RIB containers that
        can never be cyclic garbage. So automatic collection is off; every second the youngest
        generation (what was allocated since: a second of a load's survivors costs a few ms;
        collecting ten seconds of them at once stalled the loop, and the API, for 0.1-0.5 s) is
        collected and the survivors are frozen, which keeps them out of later collections. Cyclic
        garbage is almost always young; RIB structures hold no reference cycles, and their memory is
        freed by reference counting as usual.
        """
        gc.disable()
        gc.freeze()
        try:
            while True:
                await asyncio.sleep(GC_INTERVAL)
                gc.collect(0)
                gc.freeze()
        finally:
            gc.enable()

    async def _drain_events(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while (not self.events.empty() or self._backlog) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # -- peers ------------------------------------------------------------------------------------

    def _make_speaker(self, peer: PeerConfig) -> Speaker:
        log = self.log.bind(peer=peer.name)
        if peer.speaker is SpeakerKind.NATIVE:
            from speakers.native.speaker import NativeSpeaker

            native: Speaker = NativeSpeaker(peer, self.config.local, self.emit, log, emit_many=self.emit_many)
            return native
        from speakers.exabgp.process import ExaBGPSpeaker

        exa: Speaker = ExaBGPSpeaker(
            peer, self.config.local, self.runtime_dir, self.emit, log, emit_many=self.emit_many
        )
        return exa

    async def _start_peer(self, peer: PeerConfig) -> None:
        self.imports.configure(peer, str(self.config.path))
        self.rib.add_peer(
            PeerInfo(
                name=peer.name,
                peer_as=peer.peer_as,
                address=peer.neighbor,
                local_as=self.config.local.asn,
                local_pref=peer.local_pref,
                allow_own_as=peer.allow_own_as,
            )
        )
        self.status[peer.name] = PeerStatus(state="connect", since=time.monotonic())
        if self.collector is not None:
            self.collector.add_peer(peer)  # a reload may have changed its addresses
        speaker = self._make_speaker(peer)
        self.speakers[peer.name] = speaker
        await speaker.start()

    async def _stop_peer(self, name: str) -> None:
        speaker = self.speakers.pop(name, None)
        if speaker is not None:
            await speaker.stop()
        await self._drain_events()
        self._publish(self.rib.peer_down(name))

    async def _remove_peer(self, name: str) -> None:
        await self._stop_peer(name)
        self._publish(self.rib.remove_peer(name))
        self.status.pop(name, None)
        self.imports.remove(name)

    async def reload(self, path: Path | None = None) -> dict[str, list[str]]:
        """Re-read the config and apply peer changes. Raises ConfigError (old config kept)."""
        async with self._reload_lock:
            new = load_config(path or self.config.path)
            diff = diff_peers(self.config, new)
            before = {p.name: p for p in self.config.peers}
            # A change of import/export policy alone keeps the session: the new chain is swapped in
            # and the peer is asked to send its routes again (RFC 2918), as BIRD's `reload in` does.
            policy_only = [p for p in diff.changed
                           if dataclasses.replace(before[p.name], policy=p.policy) == p]  # fmt: skip
            rebuilt = {p.name: await asyncio.to_thread(self.imports.build, p, str(new.path))
                       for p in policy_only}  # fmt: skip
            restart = [p for p in diff.changed if p.name not in rebuilt]
            for name in diff.removed:
                await self._remove_peer(name)
            for peer in restart:
                await self._remove_peer(peer.name)
            self.config = new
            for peer in (*diff.added, *restart):
                await self._start_peer(peer)
            for peer in policy_only:
                self.imports.refresh(peer, rebuilt[peer.name])
                await self.request_refresh(peer.name)
            for hook in self.reload_hooks:
                await hook()
            summary = {
                "added": [p.name for p in diff.added],
                "removed": list(diff.removed),
                "changed": [p.name for p in restart],
                "policy_changed": [p.name for p in policy_only],
                "unchanged": list(diff.unchanged),
            }
            self.log.info("config_reloaded", **summary)
            return summary

    async def request_refresh(self, name: str) -> list[str]:
        """Ask an established peer to send its routes again, per family (ROUTE-REFRESH, RFC 2918),
        so a new import policy applies to what it already sent. Returns the families asked; a
        speaker that cannot (no capability, not established) is logged, not raised."""
        peer = next((p for p in self.config.peers if p.name == name), None)
        speaker = self.speakers.get(name)
        status = self.status.get(name)
        if peer is None or speaker is None or status is None or status.state != "established":
            return []
        asked: list[str] = []
        for family in peer.families:
            try:
                await speaker.send(f"neighbor {peer.neighbor} announce route-refresh {family.value}")
            except (ValueError, OSError) as exc:
                self.log.warning("route_refresh_failed", peer=name, afi_safi=family.value, detail=str(exc))
                continue
            asked.append(family.value)
        self.log.info("route_refresh_requested", peer=name, families=asked)
        return asked

    # -- events -----------------------------------------------------------------------------------

    async def emit(self, event: SpeakerEvent) -> None:
        """Called by speakers for every event; blocks when the RIB is behind (backpressure)."""
        await self.events.put([event])

    async def emit_many(self, events: list[SpeakerEvent]) -> None:
        """``emit`` for the events of one speaker read (one queue slot, one wake-up: a per-event
        put and get cost more than the RIB work of an UPDATE). Keep lists to one read's worth."""
        if events:
            await self.events.put(events)

    async def _rib_loop(self) -> None:
        """Apply queued events in slices of about BATCH_PREFIXES prefixes, yielding between slices
        so the API, the FIB writer and the speakers run. A queue item may be one speaker read's
        list of thousands of events: what is left of it waits in ``_backlog`` for the next slice
        (``_drain_events`` waits for it too, so stop and reload lose nothing)."""
        queue = self.events
        backlog = self._backlog
        apply_slice = self._apply_slice
        while True:
            if not backlog:
                backlog.extend(await queue.get())
            while (hold := self.rib_hold) is not None and not hold.is_set():
                await hold.wait()
            # Nobody to hand best-path changes to (no FIB, no subscriber): the RIB skips building them.
            changes: list[BestChange] = [] if self.fib is not None or self.subscribers else DISCARD
            apply_slice(changes)
            if changes:
                self._publish(changes)
            await asyncio.sleep(0)

    def _apply_slice(self, changes: list[BestChange]) -> None:
        """One slice of ``_rib_loop``: events from the backlog, then from the queue without waiting,
        until about BATCH_PREFIXES prefixes (an UPDATE counts its prefixes + 1, any other event 1)
        are applied or none is left."""
        queue = self.events
        backlog = self._backlog
        take = backlog.popleft
        apply = self._apply
        apply_updates = self._apply_updates
        done = 0
        while done < BATCH_PREFIXES:
            if not backlog:
                try:
                    backlog.extend(queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            if type(backlog[0]) is Update:  # queued lists are never empty (emit_many drops empty ones)
                done += apply_updates(changes, BATCH_PREFIXES - done)
                continue
            apply(take(), changes)
            done += 1

    def _apply_updates(self, changes: list[BestChange], budget: int) -> int:
        """Apply the run of ``Update``s from one peer at the head of the backlog (at least one, and
        until about ``budget`` prefixes) as ``_apply`` would one by one; return the prefixes + 1
        per UPDATE applied. Without an import policy for the peer, the run is one ``Rib.update_many``
        and its status counters are added once (a table load brings ~7 prefixes per UPDATE: a call
        and these checks per UPDATE cost about as much as the RIB work); event listeners (collector,
        stream, announcements) get each UPDATE of the run first, as ``_apply`` gives it them (none of
        them reads the RIB when called)."""
        backlog = self._backlog
        take = backlog.popleft
        first = cast(Update, take())  # the caller saw an Update
        peer = first.peer
        run = [first]
        announced = len(first.announce)
        withdrawn = len(first.withdraw)
        done = announced + withdrawn + 1
        while done < budget and backlog:
            head = backlog[0]
            if type(head) is not Update or head.peer != peer:
                break
            take()
            run.append(head)
            a = len(head.announce)
            w = len(head.withdraw)
            announced += a
            withdrawn += w
            done += a + w + 1
        status = self.status.get(peer)
        if status is None or peer in self.imports.peers:
            for event in run:
                self._apply(event, changes)
            return done
        status.updates += len(run)
        status.announced += announced
        status.withdrawn += withdrawn
        if self.event_listeners:
            now = time.time()
            for event in run:
                for listener in self.event_listeners:
                    listener(now, event)
        self.rib.update_many(peer, run, changes)
        return done

    def _apply(self, event: SpeakerEvent, changes: list[BestChange]) -> None:
        """Apply one speaker event to the RIB and the peer status. Never raises for bad events."""
        status = self.status.get(event.peer)
        if status is None:  # a late event from a peer removed by reload
            return
        if self.event_listeners:
            now = time.time()
            for listener in self.event_listeners:
                listener(now, event)
        match event:
            case Update():
                status.updates += 1
                status.announced += len(event.announce)
                status.withdrawn += len(event.withdraw)
                policy = self.imports.peers.get(event.peer)
                if policy is None:
                    self.rib.update(
                        event.peer, event.family, event.attrs, event.announce, event.withdraw, changes
                    )
                else:
                    limit = policy.update(
                        self.rib, event.family, event.attrs, event.announce, event.withdraw, changes
                    )
                    if limit is not None:
                        self._max_prefix(event.peer, limit)
            case PeerUp():
                status.state = "established"
                status.since = status.established_at = time.monotonic()
                status.router_id = event.router_id
                status.end_of_rib.clear()
                changes.extend(self.rib.peer_up(event.peer, event.router_id))
                if (policy := self.imports.peers.get(event.peer)) is not None:
                    policy.down = False
                self.log.info("peer_up", peer=event.peer, peer_as=event.peer_as, router_id=event.router_id)
            case PeerDown():
                was_up = status.state == "established"
                status.state = "down" if event.reason is not DownReason.ADMIN_SHUTDOWN else "stopped"
                status.since = time.monotonic()
                status.established_at = None
                status.last_error = (
                    f"{event.reason.value}: {event.detail}" if event.detail else event.reason.value
                )
                if event.reason is DownReason.SPEAKER_EXITED:
                    status.speaker_restarts += 1
                if was_up:
                    status.flaps += 1
                if not self._exiting:
                    changes.extend(self.rib.peer_down(event.peer))
                if (policy := self.imports.peers.get(event.peer)) is not None:
                    policy.peer_down()
                if self.fib is not None and was_up:
                    # Forwarding switches at once by re-pointing the peer's nexthop objects at the
                    # peer now holding most best routes; the per-prefix changes then settle each route.
                    self._spawn(self.fib.peer_down(event.peer, fallback=self._fib_fallback(event.peer)))
                self.log.info("peer_down", peer=event.peer, reason=event.reason.value, detail=event.detail)
            case EndOfRib():
                status.end_of_rib.setdefault(event.family, time.monotonic())  # the first one counts
                load_s = status.table_load_s(event.family)
                self.log.info("end_of_rib", peer=event.peer, afi_safi=event.family.value,
                              table_load_s=None if load_s is None else round(load_s, 3))  # fmt: skip
                if self.fib is not None and not self._fib_swept and self.tables_complete():
                    # Graceful restart of peerctl: kernel routes adopted at start stay until every
                    # peer has sent End-of-RIB; now those the RIB did not confirm go.
                    self._fib_swept = True
                    self._spawn(self._sweep_fib())
            case Notification():
                direction = "sent" if event.sent else "received"
                status.last_error = (
                    f"notification {direction} ({event.code},{event.subcode}) {event.message}".strip()
                )
                self.log.info(
                    "notification",
                    peer=event.peer,
                    code=event.code,
                    subcode=event.subcode,
                    direction=direction,
                    reason=event.message,
                )
            case SessionState():
                if status.state != "established" or event.state != "connected":
                    status.state = event.state
                    status.since = time.monotonic()

    # -- max-prefix and dampening (issue 4) ----------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _max_prefix(self, name: str, limit: Any) -> None:
        """Carry out a max-prefix LimitSignal (``policies.model``): warn, reject further (the chain
        already did), or tear the session down (Cease 6/1, RFC 4486) and maybe restart it later."""
        from policies.model import LimitAction

        action = limit.action
        self.log.warning(
            "max_prefix_exceeded",
            peer=name,
            afi_safi=limit.family.value,
            limit=limit.limit,
            count=limit.count,
            action=action.value,
        )
        if action is LimitAction.WARN or action is LimitAction.REJECT:
            return
        policy = self.imports.peers.get(name)
        if policy is not None:
            policy.down = True
        status = self.status.get(name)
        if status is not None:
            status.last_error = f"max-prefix: {limit.count} {limit.family.short} prefixes > {limit.limit}"
        delay = limit.restart_after if action is LimitAction.RESTART else None
        self._spawn(self._teardown(name, delay))

    async def _teardown(self, name: str, restart_after: float | None) -> None:
        speaker = self.speakers.get(name)
        if speaker is None:
            return
        try:
            peer = self.config.peer(name)
        except KeyError:
            return
        with contextlib.suppress(Exception):  # best effort: the stop below ends the session anyway
            await speaker.send(f"neighbor {peer.neighbor} teardown 1")  # Cease, max prefixes (RFC 4486)
            await asyncio.sleep(0.5)
        await self._stop_peer(name)
        if (policy := self.imports.peers.get(name)) is not None:
            policy.peer_down()
        status = self.status.get(name)
        if status is not None:
            status.state = "idle"
            status.since = time.monotonic()
            status.last_error = "max-prefix: torn down" + (
                f", restart in {restart_after:g} s" if restart_after is not None else ""
            )
        if restart_after is None:
            return
        await asyncio.sleep(restart_after)
        if self.stopping.is_set() or name in self.speakers:
            return
        try:
            peer = self.config.peer(name)  # the config may have been reloaded meanwhile
        except KeyError:
            return
        self.log.info("max_prefix_restart", peer=name)
        speaker = self._make_speaker(peer)
        self.speakers[name] = speaker
        if status is not None:
            status.state = "connect"
        await speaker.start()

    async def _dampening_loop(self, interval: float = 10.0) -> None:
        """Re-install routes whose dampening suppression ended (RFC 2439 4.8.3 reuse)."""
        while True:
            await asyncio.sleep(interval)
            if any(p.damp is not None for p in self.imports.peers.values()):
                self._publish(self.imports.reuse(self.rib, time.monotonic()))

    def _fib_fallback(self, down: str) -> str | None:
        counts = self.rib.counts()["peers"]
        best: tuple[int, str] | None = None
        for name, st in self.status.items():
            if name == down or st.state != "established" or name not in counts:
                continue
            n = sum(c["best"] for c in counts[name].values())
            if best is None or n > best[0]:
                best = (n, name)
        return best[1] if best is not None else None

    async def _sweep_fib(self) -> None:
        if self.fib is None:
            return
        await self.fib.flush()
        swept = await self.fib.sweep_stale()
        self.log.info("fib_stale_swept", routes=swept)

    def _fib_adj_rib_in(
        self, peer: str, family: Family, attrs: Any, announce: Sequence[int], withdraw: Sequence[int]
    ) -> None:
        """``Rib.on_update``: one peer's accepted announcements/withdrawals to its per-upstream table."""
        if self.fib is not None:
            next_hop = attrs.next_hop if attrs is not None else None
            self.fib.submit_peer(peer, family, next_hop, announce, withdraw)

    def _publish(self, changes: list[BestChange]) -> None:
        if not changes:
            return
        if self.fib is not None:
            submit = self.fib.submit
            for change in changes:
                new = change.new
                if new is None:
                    submit(change.family, change.key, None, None)
                else:
                    submit(change.family, change.key, new.next_hop, new.peer)
        for subscriber in self.subscribers:
            subscriber(changes)

    # -- views for the API ------------------------------------------------------------------------

    def established(self) -> int:
        return sum(1 for s in self.status.values() if s.state == "established")

    def tables_complete(self) -> bool:
        """Every configured peer is up and has sent End-of-RIB for all its families (then routes
        kept from before a restart that nobody re-sent can go: ``FibWriter.sweep_stale``)."""
        for peer in self.config.peers:
            st = self.status.get(peer.name)
            if st is None or st.state != "established" or not set(peer.families) <= st.end_of_rib.keys():
                return False
        return True

    def loading(self) -> bool:
        """What status shows: ``tables_complete`` not yet, except that a peer down for longer than
        ``[fib] stale_timeout`` (the time its routes from before a restart are kept) no longer
        counts: it does not keep peerctl "loading" for ever."""
        wait = self.config.fib.stale_timeout
        now = time.monotonic()
        for peer in self.config.peers:
            st = self.status.get(peer.name)
            if st is not None and st.state == "established":
                if not set(peer.families) <= st.end_of_rib.keys():
                    return True
            elif not wait or st is None or now - st.since < wait:
                return True
        return False


def run_daemon(config: Config, *, progress: bool) -> int:
    """Run until SIGINT/SIGTERM. SIGHUP reloads. Returns the process exit code."""
    return asyncio.run(_main(config, progress=progress))


async def _main(config: Config, *, progress: bool) -> int:
    from orchestrator.api.app import ApiServer

    log = get_logger()
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    api = ApiServer(daemon)
    try:
        await api.start()  # first, so a port clash fails before anything else starts
        await daemon.start()
    except OrchestratorError as exc:
        log.error("start_failed", reason=str(exc))
        print(f"peerctl: {exc}", file=sys.stderr)
        await daemon.stop()
        await api.stop()
        return 2
    except OSError as exc:
        log.error("start_failed", reason=str(exc))
        print(f"peerctl: cannot start: {exc}", file=sys.stderr)
        await daemon.stop()
        await api.stop()
        return 2

    def request_reload() -> None:
        async def do() -> None:
            try:
                await daemon.reload()
            except OrchestratorError as exc:
                log.error("reload_failed", reason=str(exc))

        _keep(asyncio.create_task(do()))

    loop.add_signal_handler(signal.SIGHUP, request_reload)
    loop.add_signal_handler(signal.SIGTERM, daemon.stopping.set)
    loop.add_signal_handler(signal.SIGINT, daemon.stopping.set)
    bar = asyncio.create_task(_progress(daemon)) if progress else None
    await daemon.stopping.wait()
    log.info("daemon_stopping")
    if bar is not None:
        bar.cancel()
    await daemon.stop()
    await api.stop()
    return 0


_background: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _progress(daemon: Daemon) -> None:
    """A one-line progress display on the terminal while tables load."""
    out = sys.stderr
    expected = 0
    if daemon.lab is not None:
        expected = daemon.lab.expected_paths()
    started = time.monotonic()
    while True:
        await asyncio.sleep(0.5)
        counts = daemon.rib.counts()
        paths = sum(counts["families"][f.short]["paths"] for f in Family)
        prefixes = sum(counts["families"][f.short]["prefixes"] for f in Family)
        rate = paths / max(time.monotonic() - started, 1e-3)
        if expected:
            done = min(paths / expected, 1.0)
            filled = int(done * 30)
            bar = "#" * filled + "." * (30 - filled)
            line = (
                f"\r[{bar}] {done:6.1%} {paths:,}/{expected:,} paths, {prefixes:,} prefixes, {rate:,.0f}/s "
            )
        else:
            line = f"\rloading: {paths:,} paths, {prefixes:,} prefixes, {rate:,.0f} paths/s "
        out.write(line + f"peers up {daemon.established()}/{len(daemon.config.peers)}")
        out.flush()
        if not daemon.loading():
            out.write(
                f"\rtables loaded: {paths:,} paths, {prefixes:,} prefixes "
                f"in {time.monotonic() - started:.1f} s"
                + " " * 30
                + "\n"
            )
            out.flush()
            return
