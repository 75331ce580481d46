"""The daemon's route collector: every update and session change into MRT files, periodic RIB dumps.

Theory of operation
-------------------
``Collector.on_event`` sits on ``Daemon.event_listeners``: the RIB task calls it with each speaker
event, whichever speaker produced it, before the RIB applies it (wall-clock time of arrival). It
only queues the event (immutable) behind its timestamp; a ``call_soon`` armed by the first queued
event encodes the whole batch with ``record.RecordEncoder.encode`` when the RIB task yields (run
back to back, the encoding costs about half what it does interleaved with decoding and RIB work).
The encoded records go to the ``files.UpdateFileWriter`` thread as one ``write_chunk`` once they
number ``CHUNK_RECORDS``, within ``HANDOFF_S`` seconds otherwise, and at once when a record belongs
to the next ``updates_interval`` period (a chunk never spans two files). File I/O and compression
run in the writer thread (zlib and bz2 release the GIL for these large buffers).

Nothing is lost at rotation (the writer picks the file from each chunk's period) or at shutdown:
``aclose`` runs after the daemon has drained its event queue and stopped the RIB task, flushes the
pending list and closes the writer, which renames the last file. A killed process leaves earlier
files complete and the current one as ``.partial``. A background task rotates at each period end
even without traffic, and dumps the RIB every ``rib_interval`` seconds (aligned to the epoch, as
RouteViews' two-hourly ``rib.*``).

RIB dumps (``dump``): one PEER_INDEX_TABLE entry per configured peer (config order, the router id
its session reported), then TABLE_DUMP_V2 RIB records. The RIB's paths are listed in the loop in
slices (``Rib.iter_paths``) with the RIB task held (``Daemon.rib_hold``), so the loop stays free
and the slices are one consistent snapshot (``Path`` objects are immutable), then encoded,
compressed and written in a worker thread. Post-policy is the RIB itself;
pre-policy needs the routes as received, which the RIB does not keep for peers with an import policy
(it keeps refused routes but not the received attributes of accepted ones), so with ``rib_policy``
``pre``/``both`` the collector keeps, for those peers only, a key → attributes table per family,
updated from the same events (one dict entry per prefix; the attribute objects are shared).

Counters (``records``, ``bytes``, ``errors``) feed ``GET /api/v1/collector`` and ``/metrics``. A
write error (disk full, directory removed) is counted and logged; the chunk is lost and the writer
is recreated on the next chunk, at most every ``RETRY_S`` seconds (records meanwhile are counted
as errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from orchestrator.collector.files import Compression, UpdateFileWriter, dump_rib, period_start
from orchestrator.collector.mrt import MrtWriter, PeerEntry
from orchestrator.collector.record import RecordEncoder, RibRow, StateTracker, merge_pre_policy, rib_entries
from orchestrator.config import CollectorConfig, PeerConfig, RibPolicy
from orchestrator.rib.attrs import Attributes
from orchestrator.rib.prefix import Family
from speakers.events import EndOfRib, PeerDown, PeerUp, SpeakerEvent, Update

if TYPE_CHECKING:
    from orchestrator.daemon import Daemon

CHUNK_RECORDS: Final = 1024  # records (~130 kB on a table load) per write_chunk, at most a few more
SNAPSHOT_CHUNK: Final = 8_192  # prefixes listed per loop slice of a RIB dump (~10-40 ms)
HANDOFF_S: Final = 1.0  # encoded records wait at most this long for the writer
RETRY_S: Final = 10.0
_FAMILIES: Final = (Family.IPV4, Family.IPV6)


class Collector:
    """One per daemon with ``[collector] enabled``. Create and ``start`` it inside the loop."""

    def __init__(self, config: CollectorConfig, daemon: Daemon) -> None:
        self.config = config
        self.daemon = daemon
        self.log = daemon.log.bind(component="collector")
        self.compression: Compression = None if config.compression == "none" else config.compression  # type: ignore[assignment]
        self.encoder = RecordEncoder(daemon.config.local.asn)
        self.states = StateTracker()
        self._records = 0  # records handed to the writer
        self._bytes = 0  # uncompressed MRT bytes handed to the writer
        self.errors = 0  # records lost to write errors
        self.dumps = 0
        self.last_error = ""
        self.last_rib_file: Path | None = None
        self.last_rib_files: list[Path] = []
        self.up_since: dict[str, int] = {}  # peer -> wall-clock second its session came up
        self.keep_received = config.rib_policy is not RibPolicy.POST
        # pre-policy: peer -> per family (IPv4, IPv6) key -> attributes as received
        self.received: dict[str, tuple[dict[int, Attributes], dict[int, Attributes]]] = {}
        self._writer: UpdateFileWriter | None = None
        self._retry_at = 0.0
        # Events queued by on_event, encoded in one go when the RIB task yields: an int is the
        # timestamp of the events after it (the list always starts with one), bytes a record
        # already encoded (state changes, End-of-RIB).
        self._events: list[Update | int | bytes] = []
        self._ts = -1  # timestamp last put in _events (-1: none since the last encoding)
        self._period = -1  # updates period of everything in _events and _parts
        self._parts: list[bytes] = []  # encoded records (parts of), not yet handed to the writer
        self._parts_records = 0
        self._armed = False
        self._handoff_at: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._dump_lock = asyncio.Lock()

    # -- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the directory and the writer thread, register the configured peers, start the
        rotation / RIB-dump task. Raises OSError when the directory cannot be created."""
        self._loop = asyncio.get_running_loop()
        self.config.dir.mkdir(parents=True, exist_ok=True)
        self._writer = self._new_writer()
        for peer in self.daemon.config.peers:
            self.add_peer(peer)
        self._task = asyncio.create_task(self._ticker(), name="collector")
        self.log.info("collector_started", dir=str(self.config.dir), compression=self.config.compression,
                      updates_interval=self.config.updates_interval, rib_interval=self.config.rib_interval)

    async def aclose(self) -> None:
        """Write everything recorded so far and rename the current file. Call after the RIB task
        stopped (no event can arrive any more)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._flush()
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                await writer.aclose()
            except OSError as exc:
                self._failed(exc, 0)
        self.log.info("collector_stopped", records=self.records, errors=self.errors)

    def _new_writer(self) -> UpdateFileWriter:
        return UpdateFileWriter(self.config.dir, interval=self.config.updates_interval,
                                compression=self.compression)

    def add_peer(self, peer: PeerConfig) -> None:
        """Register a peer's addresses for its records (at start and when a reload adds it)."""
        self.encoder.set_peer(peer.name, peer.neighbor, peer.peer_as, peer.local_address)

    # -- recording (called by the RIB task for every event) -----------------------------------------

    def on_event(self, now: float, event: SpeakerEvent) -> None:
        """``Daemon.event_listeners`` hook: record ``event`` as it arrived. Never raises.

        Per UPDATE this only queues the event (it is immutable): the encoding runs once per RIB
        batch in ``_encode``, back to back, where it costs about half as much as interleaved with
        the decoder and the RIB (measured: benchmarks/RESULTS.md, MRT)."""
        ts = int(now)
        if ts != self._ts:
            period = ts - ts % self.config.updates_interval
            if period != self._period:
                if self._events or self._parts:
                    self._flush()  # a chunk never spans two periods
                self._period = period
            self._ts = ts
            self._events.append(ts)
        events = self._events
        if type(event) is Update:
            events.append(event)
            if self.keep_received:
                self._keep(event)
        else:
            self._other(ts, event)
        if not self._armed and self._loop is not None:
            self._armed = True
            self._loop.call_soon(self._encode)  # runs when the RIB task yields after its batch
        elif len(events) >= CHUNK_RECORDS:
            self._encode()

    def _other(self, ts: int, event: SpeakerEvent) -> None:
        enc = self.encoder
        peer = event.peer
        if not enc.has_peer(peer):
            self._register_late(peer)
            if not enc.has_peer(peer):
                return
        if type(event) is EndOfRib:
            self._events.append(enc.end_of_rib(ts, peer, event.family))
            return
        move = self.states.move(event)
        if move is not None:
            self._events.append(enc.state_change(ts, peer, *move))
        if type(event) is PeerUp:
            self.up_since[peer] = ts
        elif type(event) is PeerDown:
            self.received.pop(peer, None)

    def _register_late(self, name: str) -> None:
        with contextlib.suppress(KeyError):
            self.add_peer(self.daemon.config.peer(name))

    def _keep(self, event: Update) -> None:
        peer = event.peer
        tables = self.received.get(peer)
        if tables is None:
            if peer not in self.daemon.imports.peers:  # no import policy: pre == post, the RIB has it
                return
            tables = self.received[peer] = ({}, {})
        table = tables[0 if event.family is Family.IPV4 else 1]
        for key in event.withdraw:
            table.pop(key, None)
        if event.attrs is not None and event.announce:
            table.update(dict.fromkeys(event.announce, event.attrs))

    @property
    def records(self) -> int:
        """Records recorded: handed to the writer or encoded and waiting for the next hand-off."""
        return self._records + self._parts_records

    @property
    def bytes(self) -> int:
        """Uncompressed MRT bytes of ``records``."""
        return self._bytes + sum(map(len, self._parts))

    def _encode(self) -> None:
        """Encode the queued events (``RecordEncoder.encode``); hand the result to the writer once it
        holds ``CHUNK_RECORDS`` records, else within ``HANDOFF_S`` seconds. Large hand-offs keep the
        writer thread's wake-ups (and GIL hand-overs) few, and give the compressor large buffers,
        for which zlib and bz2 release the GIL."""
        self._armed = False
        events = self._events
        if not events:
            return
        self._events = []
        self._ts = -1
        self._parts_records += self.encoder.encode(events, self._parts, self._register_late)
        if self.encoder.skipped:
            self.errors += self.encoder.skipped
            self.encoder.skipped = 0
        if self._parts_records >= CHUNK_RECORDS:
            self._handoff()
        elif self._parts and self._handoff_at is None and self._loop is not None:
            self._handoff_at = self._loop.call_later(HANDOFF_S, self._handoff)

    def _flush(self) -> None:
        """Encode what is queued and hand everything to the writer now."""
        self._encode()
        self._handoff()

    def _handoff(self) -> None:
        if self._handoff_at is not None:
            self._handoff_at.cancel()
            self._handoff_at = None
        parts, records = self._parts, self._parts_records
        if not parts:
            return
        self._parts = []
        self._parts_records = 0
        writer = self._writer
        if writer is None:
            if self._loop is None or time.monotonic() < self._retry_at:
                self.errors += records
                return
            try:
                writer = self._writer = self._new_writer()
            except OSError as exc:
                self._failed(exc, records)
                return
        data = b"".join(parts)
        try:
            writer.write_chunk(data, self._period, records)
        except Exception as exc:  # the writer thread died (its error surfaces here)
            self._failed(exc, records)
            return
        self._records += records
        self._bytes += len(data)

    def _failed(self, exc: BaseException, lost: int) -> None:
        self.errors += lost
        self.last_error = str(exc)
        self._writer = None
        self._retry_at = time.monotonic() + RETRY_S
        self.log.error("collector_write_failed", reason=str(exc), lost=lost)

    async def flush(self) -> None:
        """Hand pending records to the writer and wait until they are in the file (tests, API)."""
        self._flush()
        if self._writer is not None:
            try:
                await self._writer.flush()
            except OSError as exc:
                self._failed(exc, 0)

    # -- RIB dumps ---------------------------------------------------------------------------------

    def _peer_table(self) -> tuple[list[PeerEntry], dict[str, int]]:
        entries: list[PeerEntry] = []
        index: dict[str, int] = {}
        for peer in self.daemon.config.peers:
            st = self.daemon.status.get(peer.name)
            index[peer.name] = len(entries)
            rid = st.router_id if st is not None and _dotted_quad(st.router_id) else "0.0.0.0"
            entries.append(PeerEntry(peer.neighbor, peer.peer_as, rid))
        return entries, index

    async def dump(self, now: float | None = None) -> list[Path]:
        """Write the RIB dump(s) of ``rib_policy`` now; returns the files (post-policy first).
        Raises OSError when a file cannot be written."""
        async with self._dump_lock:
            ts = int(time.time() if now is None else now)
            peers, index = self._peer_table()
            originated = dict(self.up_since)
            snapshot = await self._snapshot()
            policy = self.config.rib_policy
            received = {name: (dict(t[0]), dict(t[1])) for name, t in self.received.items()} \
                if policy is not RibPolicy.POST else {}  # fmt: skip
            files: list[Path] = []
            if policy is not RibPolicy.PRE:
                rows = rib_entries(snapshot, index, originated)
                files.append(await self._write_dump("rib", ts, peers, "post-policy", rows))
            if policy is not RibPolicy.POST:
                rows = _pre_rows(snapshot, received, index, originated)
                files.append(await self._write_dump("rib-pre", ts, peers, "pre-policy", rows))
            self.last_rib_file = files[0]
            self.last_rib_files = files
            self.dumps += 1
            self.log.info("collector_rib_dumped", files=[str(f) for f in files], prefixes=len(snapshot))
            # Freeing a full table's snapshot (millions of tuples) took ~0.4 s: not in the loop.
            await asyncio.to_thread(_release, snapshot, received)
            return files

    async def _snapshot(self) -> list[tuple[Family, int, Sequence[Any]]]:
        """Every prefix with its paths (tuples of immutable ``Path`` objects), listed in slices of
        ``SNAPSHOT_CHUNK`` prefixes with the loop free in between (a full table listed in one go
        held the loop ~2 s per million prefixes). The RIB task is held meanwhile
        (``Daemon.rib_hold``), so the slices make one consistent snapshot; speakers, timers and the
        API keep running, and events queue. A change from outside the RIB task (a reload removing a
        peer) restarts the listing in one go."""
        rib = self.daemon.rib
        hold = asyncio.Event()
        self.daemon.rib_hold = hold
        try:
            snapshot: list[tuple[Family, int, Sequence[Any]]] = []
            try:
                for family in _FAMILIES:
                    rows = rib.iter_paths(family)
                    while True:
                        before = len(snapshot)
                        snapshot += [(family, key, paths) for key, paths in islice(rows, SNAPSHOT_CHUNK)]
                        if len(snapshot) - before < SNAPSHOT_CHUNK:
                            break
                        await asyncio.sleep(0)
            except RuntimeError:  # dictionary changed size during iteration
                snapshot = [(f, key, paths) for f in _FAMILIES for key, paths in rib.iter_paths(f)]
            return snapshot
        finally:
            self.daemon.rib_hold = None
            hold.set()

    async def _write_dump(self, kind: str, ts: int, peers: Sequence[PeerEntry], view: str,
                          rows: Iterator[RibRow]) -> Path:
        records = _dump_records(peers, self.daemon.config.local.router_id, view, ts, rows)
        return await dump_rib(self.config.dir, ts, records, kind=kind, compression=self.compression)

    async def _ticker(self) -> None:
        """Rotate at each updates period end; dump the RIB every rib_interval (aligned)."""
        upd, rib = self.config.updates_interval, self.config.rib_interval
        now = time.time()
        next_rotate = period_start(now, upd) + upd
        next_dump = period_start(now, rib) + rib if rib else float("inf")
        while True:
            await asyncio.sleep(max(0.0, min(next_rotate, next_dump) - time.time()))
            now = time.time()
            if now >= next_rotate:
                next_rotate = period_start(now, upd) + upd
                self._flush()
                if self._writer is not None:
                    try:
                        self._writer.rotate(now)
                    except OSError as exc:
                        self._failed(exc, 0)
            if now >= next_dump:
                next_dump = period_start(now, rib) + rib
                try:
                    await self.dump(now)
                except OSError as exc:
                    self.last_error = str(exc)
                    self.log.error("collector_rib_dump_failed", reason=str(exc))

    # -- views -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        writer = self._writer
        current = writer.current if writer is not None else None
        return {
            "enabled": True,
            "updates_file": str(current) if current is not None else None,
            "last_rib_file": str(self.last_rib_file) if self.last_rib_file else None,
            "last_rib_files": [str(f) for f in self.last_rib_files],
            "records_written": writer.records_written if writer is not None else 0,
            "records": self.records,
            "bytes": self.bytes,
            "errors": self.errors,
            "rib_dumps": self.dumps,
            "last_error": self.last_error,
            **_settings(self.config),
            "pre_policy_prefixes": sum(len(a) + len(b) for a, b in self.received.values()),
        }


def _pre_rows(snapshot: list[tuple[Family, int, Any]],
              received: dict[str, tuple[dict[int, Attributes], dict[int, Attributes]]],
              index: dict[str, int], originated: dict[str, int]) -> Iterator[RibRow]:
    post = list(rib_entries(snapshot, index, originated))  # in the dump thread
    for fi, family in enumerate(_FAMILIES):
        yield from merge_pre_policy(post, {n: t[fi] for n, t in received.items()}, family, index, originated)


def _dump_records(peers: Sequence[PeerEntry], collector_id: str, view: str, ts: int,
                  rows: Iterator[RibRow]) -> Iterator[bytes]:
    """``MrtWriter.rib_records``, with the writer made and dropped in the thread that consumes this
    (its attribute cache holds an Attributes object per set: freeing them held the loop ~0.3 s)."""
    writer = MrtWriter(peers, collector_id=collector_id, view_name=view, timestamp=ts)
    yield from writer.rib_records(rows)


def _release(snapshot: list[Any], received: dict[str, Any]) -> None:
    # In slices: one list.clear() of a million rows holds the GIL (one C call) for ~0.15 s.
    while snapshot:
        del snapshot[-SNAPSHOT_CHUNK:]
    received.clear()  # copies: their keys and values are shared with the live tables


def _dotted_quad(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _settings(config: CollectorConfig) -> dict[str, Any]:
    return {"dir": str(config.dir), "updates_interval": config.updates_interval,
            "rib_interval": config.rib_interval, "compression": config.compression,
            "rib_policy": config.rib_policy.value}  # fmt: skip


def disabled_status(config: CollectorConfig) -> dict[str, Any]:
    """``GET /api/v1/collector`` when the collector is off."""
    return {"enabled": False, **_settings(config), "updates_file": None, "last_rib_file": None,
            "records_written": 0, "records": 0, "bytes": 0, "errors": 0}  # fmt: skip
