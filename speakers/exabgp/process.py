"""asyncio edge of the ExaBGP speaker: one supervised ExaBGP process per peer.

Pipes only; all meaning is in ``session.py``. Layout under ``runtime_dir/<peer>/``: ``exabgp.conf``
and ``api.sock``, the unix socket on which the relay (``relay.py``, run by ExaBGP as its API
process) connects back to us.

Backpressure: relay bytes are read in large chunks, fed to the session, and the events of each read
are awaited through ``emit_many`` (or ``emit`` per event) before the next read. When the consumer
is slow, the socket, then the relay, then ExaBGP's pipe fill up and ExaBGP stops reading its BGP
socket: nothing is buffered without bound. (If the consumer stalls for longer than the hold time
the session drops: keeping up is the RIB's job.)
Commands go the other way, at most ``max_in_flight`` unacknowledged (``session.commands_to_send``),
so the write buffer is bounded too and ``drain()`` is never awaited in the read loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from orchestrator.config import LocalConfig, PeerConfig
from speakers.events import SpeakerEvent
from speakers.exabgp import render
from speakers.exabgp.session import DEFAULT_MAX_IN_FLIGHT, ExaBGPSession, State

RELAY = Path(__file__).with_name("relay.py").resolve()
READ_CHUNK = 1 << 18
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0
LOG_BURST = 20  # ExaBGP log lines at INFO per LOG_WINDOW, then a summary
LOG_WINDOW = 10.0


def _die_with_parent() -> None:
    """In the child: SIGTERM when peerctl dies, so no ExaBGP outlives us (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ExaBGPSpeaker:
    """Run and supervise ExaBGP for ``peer``; events go to ``emit`` (awaited: backpressure)."""

    def __init__(
        self,
        peer: PeerConfig,
        local: LocalConfig,
        runtime_dir: Path,
        emit: Callable[[SpeakerEvent], Awaitable[None]],
        log: Any,
        *,
        exabgp: Path | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        stop_timeout: float = 5.0,
        backoff_first: float = BACKOFF_FIRST,
        emit_many: Callable[[list[SpeakerEvent]], Awaitable[None]] | None = None,
    ) -> None:
        self.peer = peer
        self.local = local
        self.dir = Path(runtime_dir).resolve() / peer.name
        self.emit = emit
        self.emit_many = emit_many  # when given: one call per relay read instead of one per event
        self.log = log.bind(peer=peer.name)
        self.exabgp = exabgp or Path(sys.executable).parent / "exabgp"
        self.stop_timeout = stop_timeout
        self.backoff_first = backoff_first
        self.session = ExaBGPSession(peer.name, peer.families, None, max_in_flight, self.log)
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._relay_done: asyncio.Event = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._log_window = (0.0, 0, 0)  # window start, lines logged, lines suppressed

    @property
    def state(self) -> State:
        return self.session.state

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _is_stopping(self) -> bool:  # a call, so that mypy does not narrow the flag across awaits
        return self._stopping

    @property
    def socket_path(self) -> Path:
        return self.dir / "api.sock"

    async def start(self) -> None:
        """Write the config, listen on the relay socket, start ExaBGP (and keep it running).

        Raises ValueError for a config ExaBGP cannot take or a socket path that is too long.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        if len(os.fsencode(self.socket_path)) >= 108:
            raise ValueError(f"unix socket path too long (max 107 bytes): {self.socket_path}")
        argv = [sys.executable, "-I", "-S", str(RELAY), str(self.socket_path)]
        (self.dir / "exabgp.conf").write_text(render.render_config(self.peer, self.local, argv))
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._relay_connected, path=str(self.socket_path))
        self._stopping = False
        self._supervisor = asyncio.create_task(self._supervise(), name=f"exabgp-{self.peer.name}")

    async def stop(self) -> None:
        """Stop ExaBGP (SIGTERM, SIGKILL after ``stop_timeout``); PeerDown(ADMIN_SHUTDOWN) if up."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._terminate()
        self.session.stop()
        await self._emit_pending()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def send(self, command_line: str) -> None:
        """Queue an API command (sent when the window allows). ValueError for a bad line."""
        self.session.command(command_line)
        self._flush_commands()

    # -- supervision -----------------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.backoff_first
        while not self.stopping:
            started = time.monotonic()
            try:
                returncode = await self._run_once()
            except OSError as exc:  # exabgp missing / not executable: keep retrying with backoff
                self.log.error("exabgp_start_failed", error=str(exc))
                returncode = None
            if self._is_stopping():  # stop() owns the PeerDown then
                return
            self.session.process_exited(returncode)
            await self._emit_pending()
            self.restarts += 1
            if time.monotonic() - started >= STABLE_AFTER:
                delay = self.backoff_first
            self.log.warning("exabgp_exited", returncode=returncode, restart_in=delay, restarts=self.restarts)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _run_once(self) -> int | None:
        env = dict(os.environ)
        env.update(render.render_env())
        self.session.process_started()
        self._relay_done = asyncio.Event()
        proc = self._proc = await asyncio.create_subprocess_exec(
            str(self.exabgp), str(self.dir / "exabgp.conf"),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=str(self.dir), env=env, start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        self.log.info("exabgp_started", pid=proc.pid)
        assert proc.stdout is not None and proc.stderr is not None
        loggers = [asyncio.create_task(self._capture(s)) for s in (proc.stdout, proc.stderr)]
        try:
            returncode = await proc.wait()
            # the relay sees EOF when ExaBGP dies: let it deliver what was still in the pipes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._relay_done.wait(), 2.0)
            return returncode
        finally:
            for task in loggers:
                task.cancel()
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    async def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.stop_timeout)
        except TimeoutError:
            self.log.warning("exabgp_kill", pid=proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # the relay follows: its stdin reaches EOF
            await proc.wait()
        self.log.info("exabgp_stopped", returncode=proc.returncode)

    # -- relay stream ----------------------------------------------------------------------------

    async def _relay_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # a stale relay from a previous ExaBGP: the new one wins
            self._writer.close()
        self._writer = writer
        done = self._relay_done
        session = self.session
        self._flush_commands()  # commands queued while ExaBGP was down
        try:
            while data := await reader.read(READ_CHUNK):
                session.feed(data)
                await self._emit_pending()
                self._flush_commands()
                if session.restart_requested:
                    session.restart_requested = False
                    self._restart_process(f"protocol error: {session.last_error}")
        except ConnectionError:
            pass
        finally:
            current = self._writer is writer
            if current:
                self._writer = None
            writer.close()
            done.set()
            # ExaBGP 5.0.15 does not exit when its API process dies (with respawn off it logs
            # "EXABGP MISBEHAVED" and runs on, deaf): a lost relay means restarting ExaBGP.
            if current and not self._stopping:
                self._restart_process("relay connection lost")

    def _restart_process(self, why: str) -> None:
        """SIGTERM the running ExaBGP (the supervisor restarts it), SIGKILL if it lingers."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self.log.error("exabgp_restarting", reason=why, pid=proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        loop = asyncio.get_running_loop()
        loop.call_later(self.stop_timeout, self._kill_if_alive, proc)

    def _kill_if_alive(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def _emit_pending(self) -> None:
        events = self.session.events()
        if self.emit_many is not None:
            await self.emit_many(events)
            return
        for event in events:
            await self.emit(event)

    def _flush_commands(self) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            return
        data = self.session.commands_to_send()
        if data:
            writer.write(data)  # bounded by the in-flight window

    async def _capture(self, stream: asyncio.StreamReader) -> None:
        """ExaBGP's own log lines → structlog, rate limited at INFO."""
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if not text or text.startswith("advice "):  # "environment file missing": expected
                self.log.debug("exabgp_log", line=text)
                continue
            now = time.monotonic()
            start, logged, suppressed = self._log_window
            if now - start >= LOG_WINDOW:
                if suppressed:
                    self.log.info("exabgp_log_suppressed", lines=suppressed)
                start, logged, suppressed = now, 0, 0
            if logged < LOG_BURST:
                self.log.info("exabgp_log", line=text)
                logged += 1
            else:
                self.log.debug("exabgp_log", line=text)
                suppressed += 1
            self._log_window = (start, logged, suppressed)
