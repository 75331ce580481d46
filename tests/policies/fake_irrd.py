"""A tiny IRRd server on loopback speaking the subset of the IRRd query protocol that bgpq4 1.9 uses.

bgpq4 opens with ``!!`` (keep the connection open, no answer) and ``!n<client>``, probes ``!a`` (an
``F Missing required set name for A query`` answer enables the one-shot ``!a4SET`` / ``!a6SET``
expansion), asks ``!s-lc`` for the source list, sets ``!s<sources>``, and ends with ``!q``. A single
ASN is expanded with ``!gASn`` / ``!6ASn``. Answers are ``A<length>\n<data>C\n`` (data), ``C\n``
(no data), ``D\n`` (key not found) or ``F <message>\n`` (IRRd's ``irrd/server/whois/query_parser``;
bgpq4 ``expander.c::bgpq_read``). ``silent`` accepts and never answers (for bgpq4 timeouts).
"""

from __future__ import annotations

import socket
import threading


class FakeIrrd:
    """Serves ``sets``: name (``AS-FOO`` or ``AS123``) → (IPv4 prefixes, IPv6 prefixes)."""

    def __init__(self, sets: dict[str, tuple[list[str], list[str]]], host: str = "127.77.1.1",
                 silent: bool = False) -> None:
        self.sets = sets
        self.silent = silent
        self.queries: list[str] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.addr = f"{host}:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    @staticmethod
    def _block(text: str) -> bytes:
        data = text.encode() + b"\n"
        return b"A%d\n" % len(data) + data + b"C\n"

    def answer(self, q: str) -> bytes | None:
        if q == "!!":
            return None
        if q.startswith("!n") or (q.startswith("!s") and q != "!s-lc"):
            return b"C\n"
        if q == "!a":
            return b"F Missing required set name for A query\n"
        if q == "!s-lc":
            return self._block("TEST")
        if q.startswith(("!a4", "!a6")):
            entry = self.sets.get(q[3:].upper())
            if entry is None:
                return b"D\n"
            prefixes = entry[0] if q[2] == "4" else entry[1]
            return self._block(" ".join(prefixes)) if prefixes else b"C\n"
        if q.startswith(("!g", "!6")):
            entry = self.sets.get(q[2:].upper())
            if entry is None:
                return b"D\n"
            prefixes = entry[0] if q[1] == "g" else entry[1]
            return self._block(" ".join(prefixes)) if prefixes else b"C\n"
        if q.startswith("!i"):
            return b"D\n"
        return b"F unsupported query\n"

    def _session(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    q = line.decode().strip()
                    self.queries.append(q)
                    if self.silent or q == "!q":
                        if q == "!q":
                            return
                        continue
                    out = self.answer(q)
                    if out is not None:
                        conn.sendall(out)
