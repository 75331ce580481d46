"""The API program ExaBGP runs: hands ExaBGP's pipes to peerctl, or copies bytes between them.

Run as ``/abs/python -I -S /abs/speakers/exabgp/relay.py SOCKET_PATH`` (stdlib only, no site: it
starts in ~15 ms and does not depend on the working directory).

Handshake on the unix socket: the relay sends one byte, ``HELLO_FDS`` with its stdin and stdout
attached (SCM_RIGHTS), or ``HELLO_COPY`` when it cannot pass descriptors; peerctl answers one byte.

* ``REPLY_FDS`` (descriptor mode, the normal case): peerctl reads ExaBGP's JSON from the pipe and
  writes commands into the other pipe itself; the relay moves no bytes. It only waits, blocked on
  the socket, because ExaBGP treats a dead API process as a failure: it exits when peerctl closes
  the socket (peerctl does when the JSON pipe reaches EOF, i.e. ExaBGP exited) or when ExaBGP
  terminates it. Its own copies of stdin/stdout stay open (harmless: it never reads them).
* ``REPLY_COPY`` (fallback: descriptors could not be passed or received): the relay copies,
  stdin (JSON lines and ``done``/``error`` acks written by ExaBGP) → socket, socket (command lines
  written by peerctl) → stdout (read by ExaBGP).

In copy mode bytes are moved in large chunks, never per line. All descriptors are non-blocking
and each direction holds at most one chunk: while a chunk waits for its destination, that
direction's source is not read, so backpressure passes through without unbounded buffering and
without the deadlock in which the relay blocks writing a command to ExaBGP while ExaBGP blocks
writing JSON to the relay.
Exits 0 when either side closes, 2 on a usage error, 1 when the socket cannot be reached.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import sys
import time

CHUNK = 1 << 18
COALESCE_BELOW = 1 << 16  # a read smaller than this waits COALESCE_S for more
COALESCE_S = 0.01
PIPE_SIZE = 1 << 20
HELLO_FDS = b"\x00"  # stdin, stdout attached
HELLO_COPY = b"\x01"  # no descriptors: copy mode, please
REPLY_FDS = b"F"
REPLY_COPY = b"C"


def _bigger_pipes(*fds: int) -> None:
    """Fewer wake-ups on both sides (Linux F_SETPIPE_SZ; best effort)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, 1031, PIPE_SIZE)


def handshake(sock: socket.socket, in_fd: int, out_fd: int) -> bytes:
    """Offer the descriptors; return peerctl's reply (b"" when it closed the socket)."""
    try:
        socket.send_fds(sock, [HELLO_FDS], [in_fd, out_fd])
    except OSError as exc:
        sys.stderr.write(f"relay: cannot pass descriptors ({exc}); copying instead\n")
        sock.sendall(HELLO_COPY)
    return sock.recv(1)


def wait_closed(sock: socket.socket) -> None:
    """Descriptor mode: block until peerctl closes the socket (ignores anything it sends)."""
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass


def relay(sock: socket.socket, in_fd: int, out_fd: int) -> None:
    """Copy until one side closes. Side effects: reads/writes the descriptors, closes nothing."""
    sock.setblocking(False)
    os.set_blocking(in_fd, False)
    os.set_blocking(out_fd, False)
    sfd = sock.fileno()
    to_sock = b""  # from ExaBGP, waiting for the socket
    to_out = b""  # from peerctl, waiting for ExaBGP's stdin
    while True:
        # Interest is recomputed from the two buffers: a source is read only when its buffer is empty.
        readable, writable, _ = select.select(
            [fd for fd, idle in ((in_fd, not to_sock), (sfd, not to_out)) if idle],
            [fd for fd, busy in ((sfd, to_sock), (out_fd, to_out)) if busy],
            [],
        )
        try:
            if in_fd in readable:
                to_sock = os.read(in_fd, CHUNK)
                if not to_sock:
                    return  # ExaBGP closed our stdin: it is exiting
                if len(to_sock) < COALESCE_BELOW:
                    # ExaBGP writes (and flushes) one JSON line at a time: waking per line costs
                    # ~50 µs here and again in peerctl, and each peerctl wake-up (read, session,
                    # queue, RIB task) ~130 µs. Let ~10 ms of output gather first (~30 kB at
                    # ExaBGP's full speed, well inside the 1 MB pipe; adds ≤ 10 ms of latency).
                    time.sleep(COALESCE_S)
                    with contextlib.suppress(BlockingIOError):
                        to_sock += os.read(in_fd, CHUNK - len(to_sock))
                writable.append(sfd)
            if sfd in readable:
                to_out = sock.recv(CHUNK)
                if not to_out:
                    return  # peerctl closed the socket
                writable.append(out_fd)
            if sfd in writable and to_sock:
                to_sock = to_sock[sock.send(to_sock) :]
            if out_fd in writable and to_out:
                to_out = to_out[os.write(out_fd, to_out) :]
        except (BlockingIOError, InterruptedError):
            continue
        except (BrokenPipeError, ConnectionResetError):
            return


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: relay.py SOCKET_PATH\n")
        return 2
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(argv[1])
    except OSError as exc:
        sys.stderr.write(f"relay: cannot connect to {argv[1]}: {exc}\n")
        return 1
    in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
    _bigger_pipes(in_fd, out_fd)
    try:
        reply = handshake(sock, in_fd, out_fd)
        if reply == REPLY_FDS:
            wait_closed(sock)
        elif reply == REPLY_COPY:
            relay(sock, in_fd, out_fd)
    except (KeyboardInterrupt, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
