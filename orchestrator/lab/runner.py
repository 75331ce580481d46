"""The lab: real feeder BGP speakers on loopback that peerctl starts for the peers named in ``[lab]``.

Each feeder is ``python -m speakers.native.feeder``, a separate process listening on the peer's
neighbor address, serving a seeded generated table (``orchestrator.lab.tablegen``) to whoever connects
(our ExaBGP speaker), and recording what it receives from us (the lab's view of the other side).
Feeder ``i`` uses next hops 192.0.2.(2+i) and 2001:db8::(2+i), inside source4/source6's subnets, so
the kernel FIB in the lab namespace can install its routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from orchestrator.config import Config
from orchestrator.errors import OrchestratorError
from speakers.exabgp.process import die_with_parent

FEEDER_NICE = 10  # the lab's stand-in peers run below peerctl and its ExaBGP speakers


class LabError(OrchestratorError):
    """A lab feeder could not start."""


def feeder_next_hops(index: int) -> tuple[str, str]:
    return f"192.0.2.{2 + index}", f"2001:db8::{2 + index:x}"


class LabRunner:
    """Starts, watches and stops the feeder processes."""

    def __init__(self, config: Config, directory: Path, log: Any) -> None:
        self.config = config
        self.dir = directory
        self.log = log
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._last_problem: dict[str, str] = {}  # feeder -> its last warning/error, for LabError

    def expected_paths(self) -> int:
        """Paths the feeders announce in total (for the progress bar)."""
        lab = self.config.lab
        return len(lab.feeders) * (lab.ipv4_prefixes + lab.ipv6_prefixes)

    def received_file(self, peer: str) -> Path:
        return self.dir / f"{peer}.received.jsonl"

    def argv(self, index: int, name: str) -> list[str]:
        lab = self.config.lab
        peer = self.config.peer(name)
        nh4, nh6 = feeder_next_hops(index)
        return [
            sys.executable,
            "-m",
            "speakers.native.feeder",
            "--listen",
            peer.neighbor,
            "--port",
            str(peer.port),
            "--asn",
            str(peer.peer_as),
            "--peer-as",
            str(self.config.local.asn),
            "--router-id",
            peer.neighbor if ":" not in peer.neighbor else f"10.255.0.{index + 1}",
            "--hold-time",
            str(peer.hold_time or 90),
            "--seed",
            str(lab.seed),
            "--index",
            str(index),
            "--ipv4",
            str(lab.ipv4_prefixes),
            "--ipv6",
            str(lab.ipv6_prefixes),
            "--overlap",
            str(lab.overlap),
            "--next-hop4",
            nh4,
            "--next-hop6",
            nh6,
            "--record",
            str(self.received_file(name)),
            "--ready-file",
            str(self.dir / f"{name}.ready"),
        ]

    async def start(self) -> None:
        """Start every feeder and wait until each listens. Raises LabError naming the feeder."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for index, name in enumerate(self.config.lab.feeders):
            ready = self.dir / f"{name}.ready"
            ready.unlink(missing_ok=True)
            self.received_file(name).unlink(missing_ok=True)
            argv = self.argv(index, name)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                cwd=str(Path(__file__).resolve().parents[2]),
                preexec_fn=die_with_parent,  # a killed peerctl leaves no feeder holding the address
            )
            self.procs[name] = proc
            with contextlib.suppress(OSError):  # the lab's stand-in peers yield the CPU to peerctl
                os.setpriority(os.PRIO_PROCESS, proc.pid, os.getpriority(os.PRIO_PROCESS, 0) + FEEDER_NICE)
            self._watchers.append(asyncio.create_task(self._watch(name, proc)))
            deadline = time.monotonic() + 20
            while not ready.exists():
                if proc.returncode is not None or time.monotonic() > deadline:
                    if proc.returncode is not None:
                        await asyncio.sleep(0.1)  # let the watcher read its last words
                    problem = self._last_problem.get(name)
                    raise LabError(
                        f"lab feeder {name} did not start (exit code {proc.returncode})"
                        + (f": {problem}" if problem else f"; see the log lines with feeder={name}")
                    )
                await asyncio.sleep(0.05)
            self.log.info(
                "lab_feeder_started", feeder=name, pid=proc.pid, listen=self.config.peer(name).neighbor
            )

    async def _watch(self, name: str, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        log = self.log.bind(feeder=name)
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            try:
                record = orjson.loads(line)
                event = str(record.pop("event", "feeder_log"))
                level = str(record.pop("level", "info"))
                record.pop("timestamp", None)
                if level in ("warning", "error"):
                    detail = record.get("detail") or record.get("error") or ""
                    self._last_problem[name] = f"{event}: {detail}" if detail else event
                getattr(log, level if level in ("debug", "info", "warning", "error") else "info")(
                    f"feeder_{event}", **{k: v for k, v in record.items() if isinstance(k, str)}
                )
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                log.info("feeder_output", line=line[:300])
        code = await proc.wait()
        if not self._stopping:
            log.error("lab_feeder_exited", code=code)

    async def stop(self) -> None:
        self._stopping = True
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._watchers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.procs.clear()

    def received(self, peer: str) -> list[dict[str, Any]]:
        """What the feeder at ``peer`` received from us, as it saw it on the wire."""
        path = self.received_file(peer)
        if not path.exists():
            return []
        out: list[dict[str, Any]] = []
        with path.open("rb") as fh:
            for line in fh:
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(line))
        return out
