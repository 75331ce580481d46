"""asyncio edge of the ExaBGP speaker: one supervised ExaBGP process per peer.

Pipes only; all meaning is in ``session.py``. Layout under ``runtime_dir/<peer>/``: ``exabgp.conf``
and ``api.sock``, the unix socket on which the relay (``relay.py``, run by ExaBGP as its API
process) connects back to us.

Descriptor mode (normal): the relay passes its stdin and stdout, i.e. ExaBGP's two API pipes, over
the socket (SCM_RIGHTS, see ``relay.py``) and then only waits. We read ExaBGP's JSON straight from
the pipe and write commands into the other one: no byte is copied through the relay, and EOF on the
JSON pipe means ExaBGP exited. The socket stays open as the relay's lifeline: when it closes, the
relay is gone and ExaBGP is restarted, as in copy mode. Copy mode (fallback, chosen during the
handshake when descriptors cannot be passed or received, and logged): the relay copies bytes
between the pipes and the socket, which we read and write instead.

Reads are large (up to ``READ_CHUNK``); after a small one we wait ``COALESCE_S`` before reading
again, so that one wake-up handles ~10 ms of ExaBGP output rather than one JSON line.

Backpressure: bytes are fed to the session and the events of each read are awaited through
``emit_many`` (or ``emit`` per event) before the next read. When the consumer is slow, the pipe
(and in copy mode the socket and the relay) fill up and ExaBGP stops reading its BGP socket:
nothing is buffered without bound. (If the consumer stalls for longer than the hold time the
session drops: keeping up is the RIB's job.)
Commands go the other way through a non-blocking writer, at most ``max_in_flight`` unacknowledged
(``session.commands_to_send``), so its buffer is bounded too and the read loop never waits for
ExaBGP to read its commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from orchestrator.config import LocalConfig, PeerConfig
from speakers.events import SpeakerEvent
from speakers.exabgp import relay as relay_mod
from speakers.exabgp import render
from speakers.exabgp.session import DEFAULT_MAX_IN_FLIGHT, ExaBGPSession, State

RELAY = Path(__file__).with_name("relay.py").resolve()
READ_CHUNK = 1 << 18
COALESCE_BELOW = 1 << 16  # a read smaller than this waits COALESCE_S before the next
COALESCE_S = 0.01
# ExaBGP runs this much nicer than peerctl: when the two compete for a core (a full table arriving),
# the scheduler favours the daemon that answers the API and writes the FIB; ExaBGP still gets every
# cycle nobody else wants, so on an otherwise idle host its speed is unchanged.
SPEAKER_NICE = 5
HANDSHAKE_TIMEOUT = 10.0
FD_PASSING = True
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 60.0
LOG_BURST = 20  # ExaBGP log lines at INFO per LOG_WINDOW, then a summary
LOG_WINDOW = 10.0


def die_with_parent() -> None:
    """In the child: SIGTERM when peerctl dies (even by kill -9), so no ExaBGP or lab feeder outlives
    it (Linux prctl PR_SET_PDEATHSIG; use as ``preexec_fn``)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Link:
    """One relay connection: where ExaBGP's output is read and our commands are written.

    Descriptor mode: ``read_fd``/``write_fd`` are ExaBGP's pipes, the socket is only watched (EOF:
    the relay is gone, and ``closed`` is set). Copy mode: both are the socket.
    ``close()`` may be called by anyone; the descriptors stay open (so their numbers cannot be
    reused under the reading task) until the reading task calls ``dispose()``.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, json_fd: int | None, cmd_fd: int | None
    ) -> None:
        self._loop = loop
        self.sock = sock
        self.passed = json_fd is not None and cmd_fd is not None
        self.read_fd = json_fd if json_fd is not None else sock.fileno()
        self.write_fd = cmd_fd if cmd_fd is not None else sock.fileno()
        self.closed = False
        self._write_dead = False
        self._out = bytearray()  # commands ExaBGP has not taken yet (bounded by the ack window)
        self._waiter: asyncio.Future[None] | None = None
        if self.passed:
            loop.add_reader(sock.fileno(), self._sock_event)

    def _sock_event(self) -> None:
        """Descriptor mode: the relay sends nothing after the handshake; EOF means it is gone."""
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()

    async def readable(self) -> None:
        """Wait until ``read_fd`` is readable or the link is closed."""
        if self.closed:
            return
        fut = self._waiter = self._loop.create_future()
        self._loop.add_reader(self.read_fd, self._wake)
        try:
            await fut
        finally:
            self._waiter = None
            self._loop.remove_reader(self.read_fd)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def write(self, data: bytes) -> None:
        """Non-blocking; what the pipe does not take now is written when it has room."""
        if self.closed or self._write_dead:
            return
        if self._out:
            self._out += data
            return
        try:
            n = os.write(self.write_fd, data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:  # EPIPE: ExaBGP (or the relay) is gone; the read side ends the link
            self._write_failed()
            return
        if n < len(data):
            self._out += data[n:]
            self._loop.add_writer(self.write_fd, self._flush)

    def _flush(self) -> None:
        try:
            n = os.write(self.write_fd, self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._write_failed()
            return
        del self._out[:n]
        if not self._out:
            self._loop.remove_writer(self.write_fd)

    def _write_failed(self) -> None:
        self._write_dead = True
        if self._out:
            self._out.clear()
            self._loop.remove_writer(self.write_fd)

    def close(self) -> None:
        """Stop using the link (idempotent): the relay sees EOF, the reading task ends."""
        if self.closed:
            return
        self.closed = True
        if self._out:
            self._out.clear()
            self._loop.remove_writer(self.write_fd)
        if self.passed:
            self._loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._wake()

    def dispose(self) -> None:
        """Close the descriptors (the reading task, last)."""
        self.close()
        if self.passed:
            for fd in (self.read_fd, self.write_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.sock.close()


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
        self.fd_passing = FD_PASSING  # False: always copy through the relay (tests, benchmarks)
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._relay_tasks: set[asyncio.Task[None]] = set()
        self._writer: _Link | None = None  # the current relay link
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
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            listener.listen(8)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        name = f"exabgp-accept-{self.peer.name}"
        self._accept_task = asyncio.create_task(self._accept(listener), name=name)
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
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
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
            cwd=str(self.dir), env=env, start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip
        with contextlib.suppress(OSError):  # below peerctl, so the API and FIB stay responsive
            os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + SPEAKER_NICE)
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

    async def _accept(self, listener: socket.socket) -> None:
        """Accept relays for as long as the speaker runs: one ``_relay_connected`` task each."""
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            task = asyncio.create_task(self._relay_connected(conn), name=f"exabgp-relay-{self.peer.name}")
            self._relay_tasks.add(task)
            task.add_done_callback(self._relay_tasks.discard)

    async def _handshake(self, conn: socket.socket) -> tuple[_Link, bytes]:
        """Take the relay's descriptors (descriptor mode) or settle on copying through it.

        Returns the link and bytes already read that belong to the stream (copy mode of a relay
        without the handshake). Raises ConnectionError when the relay goes away first.
        """
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(conn.fileno(), wake)
        try:
            await asyncio.wait_for(ready, HANDSHAKE_TIMEOUT)
        except TimeoutError:
            raise ConnectionError("relay sent no handshake") from None
        finally:
            loop.remove_reader(conn.fileno())
        fds: list[int] = []
        try:
            msg, fds, flags, _ = socket.recv_fds(conn, 4096, 2)
        except OSError as exc:
            raise ConnectionError(f"relay handshake: {exc}") from None
        if not msg:
            raise ConnectionError("relay closed before its handshake")
        why = ""
        if msg[:1] == relay_mod.HELLO_FDS:
            if len(fds) == 2 and not flags & socket.MSG_CTRUNC and len(msg) == 1 and self.fd_passing:
                try:
                    for fd in fds:
                        os.set_inheritable(fd, False)
                        os.set_blocking(fd, False)
                    conn.send(relay_mod.REPLY_FDS)
                except OSError as exc:
                    why = f"descriptors unusable: {exc}"
                else:
                    self.log.info("exabgp_relay_mode", mode="descriptors")
                    return _Link(loop, conn, fds[0], fds[1]), b""
            else:
                why = "descriptors disabled" if not self.fd_passing else f"{len(fds)} descriptors received"
        elif msg[:1] == relay_mod.HELLO_COPY:
            why = "the relay could not pass descriptors"
        else:  # a relay without the handshake: the stream itself
            for fd in fds:
                os.close(fd)
            self.log.warning("exabgp_relay_mode", mode="copy", reason="no handshake")
            return _Link(loop, conn, None, None), msg
        for fd in fds:
            os.close(fd)
        try:
            conn.send(relay_mod.REPLY_COPY)
        except OSError as exc:
            raise ConnectionError(f"relay handshake: {exc}") from None
        self.log.warning("exabgp_relay_mode", mode="copy", reason=why)
        return _Link(loop, conn, None, None), msg[1:]

    async def _relay_connected(self, conn: socket.socket) -> None:
        done = self._relay_done
        try:
            link, data = await self._handshake(conn)
        except ConnectionError as exc:
            self.log.warning("exabgp_relay_rejected", error=str(exc))
            conn.close()
            return
        except BaseException:
            conn.close()
            raise
        if self._writer is not None:  # a stale relay from a previous ExaBGP: the new one wins
            self._writer.close()
        self._writer = link
        session = self.session
        fd = link.read_fd
        self._flush_commands()  # commands queued while ExaBGP was down
        try:
            while True:
                if data:
                    session.feed(data)
                    await self._emit_pending()
                    self._flush_commands()
                    if session.restart_requested:
                        session.restart_requested = False
                        self._restart_process(f"protocol error: {session.last_error}")
                if link.closed:
                    break
                try:
                    data = os.read(fd, READ_CHUNK)
                except BlockingIOError:
                    data = b""
                    await link.readable()
                    continue
                if not data:
                    break  # EOF: ExaBGP exited (descriptor mode) or the relay did (copy mode)
                if len(data) < COALESCE_BELOW:
                    # ExaBGP writes and flushes one JSON line at a time: each wake-up of ours
                    # (read, session, queue, RIB task) costs ~130 µs, more than an UPDATE's work.
                    # Let ~10 ms of output gather (~40 kB at ExaBGP's full speed, far inside its
                    # 1 MB pipe; ≤ 10 ms more latency on acks).
                    await asyncio.sleep(COALESCE_S)
                    with contextlib.suppress(BlockingIOError):
                        data += os.read(fd, READ_CHUNK - len(data))
        except OSError:  # ConnectionResetError on the socket, EBADF never (we close our fds last)
            pass
        finally:
            current = self._writer is link
            if current:
                self._writer = None
            link.close()
            link.dispose()
            done.set()
            # ExaBGP 5.0.15 does not exit when its API process dies (with respawn off it logs
            # "EXABGP MISBEHAVED" and runs on, deaf): a lost relay means restarting ExaBGP. In
            # descriptor mode EOF on the JSON pipe means ExaBGP exited; restarting is a no-op then.
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
        link = self._writer
        if link is None or link.closed:
            return
        data = self.session.commands_to_send()
        if data:
            link.write(data)  # bounded by the in-flight window

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
