"""Scheduled experiments: a named timeline of announce/withdraw steps, checked whole before it starts.

Theory of operation
-------------------
An experiment is a name, a start time and a list of steps, each ``at`` seconds after the start:
announce a prefix (targets and attributes exactly as ``peerctl announce`` takes them) or withdraw
it. It arrives as JSON (``POST /api/v1/experiments``; the CLI reads a TOML file and posts it).

``plan`` is pure. It parses every step into an ``Announcement`` and its targets, checks every
announce against the safety rules (allocation, AS-path length, communities, poisoning, origin) and
simulates the rate rule over the whole timeline: consecutive changes to one prefix must be at least
``min_interval`` apart, and the first one that far from the prefix's last change before the
experiment. A withdraw must find the prefix announced at that point of the timeline. So an
experiment that would be refused half-way is refused before its first step, naming the step and
the rule; nothing is sent. An announce identical to what is already announced is not a change.

``ExperimentRunner`` holds the experiments: one asyncio task each, sleeping until each step's time
(in slices, so a clock step is noticed) and calling the ``AnnouncementManager``, which checks the
rules again at that moment (someone may have changed the prefix by hand meanwhile): a refusal then
is recorded on the step and the experiment goes on. Every step keeps its state (``pending``,
``done``, ``refused``, ``missed``, ``cancelled``), when it ran and the outcome. The experiments are
persisted in ``runtime_dir/experiments.json`` (temporary file, fsync, rename) after every change.
After a restart, pending steps resume; a step whose time passed while peerctl was down by more than
``LATE_GRACE`` seconds is marked ``missed`` and not run: a change made late would confound the
measurement it was scheduled for.

``from_peering_experiment`` reads the PEERING client's experiment JSON (``{"experiment": {"rounds":
[{prefix: {"announce": [...], "withdraw": [mux, ...]}}]}}``) into the same request: round *i* runs
at ``i * round_interval``; placeholder prefixes ("A", "B" in PEERING's examples) are bound to real
ones by the caller; PEERING peer ids become ``47065:id`` communities and its ``prepend`` list
becomes poisoning, as in ``policies.safety.parse_peering``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from orchestrator.announce import ATTR_KEYS, parse_per_peer, parse_targets, request_state
from orchestrator.errors import ApiError, PolicyError
from orchestrator.rib.prefix import Family, format_prefix, parse_prefix
from policies.safety import PEERING_ASN, Announcement, parse_peering

STATE_FILE = "experiments.json"
LATE_GRACE = 30.0
"""A step that comes up this many seconds late (peerctl was down) still runs; later ones are missed."""
SLEEP_SLICE = 30.0
MAX_STEPS = 1000
STEP_KEYS = frozenset({"at", "action", "prefix", "peers", "all", "kind", "per_peer", *ATTR_KEYS})
EXPERIMENT_KEYS = frozenset({"name", "start", "delay", "steps", "description"})


class Announcer(Protocol):
    """What the runner needs of ``orchestrator.announce.AnnouncementManager``."""

    @property
    def wanted(self) -> Mapping[str, Any]: ...
    def resolve(
        self,
        peers: Sequence[str] = (),
        all_peers: bool = False,
        kind: str | None = None,
        family: Family | None = None,
    ) -> tuple[str, ...]: ...
    def check_rules(self, ann: Announcement, now: float, explicit: Sequence[str] = (),
                    variants: Mapping[str, Announcement] | None = None) -> None: ...
    def last_change(self, prefix: str) -> float | None: ...
    def min_interval(self) -> float: ...
    async def announce(self, ann: Announcement, targets: Sequence[str], *, group: bool = False,
                       at: float | None = None,
                       variants: Mapping[str, Announcement] | None = None) -> Any: ...
    async def withdraw(self, prefix: str, targets: Sequence[str] = (), *,
                       at: float | None = None) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    at: float
    action: str  # "announce" | "withdraw"
    prefix: str
    targets: tuple[str, ...]
    announcement: Announcement | None
    body: dict[str, Any]
    group: bool = False  # targets from all/kind: members whose export policy refuses are left out
    variants: tuple[tuple[str, Announcement], ...] = ()  # peers with an attribute set of their own
    state: str = "pending"
    ran_at: float | None = None
    outcome: str = ""

    def json(self, start: float) -> dict[str, Any]:
        return {"index": self.index, "at": self.at, "time": _iso(start + self.at), "action": self.action,
                "prefix": self.prefix, "peers": list(self.targets), "state": self.state,
                "ran_at": _iso(self.ran_at) if self.ran_at is not None else None,
                "outcome": self.outcome, "request": self.body}  # fmt: skip


@dataclass(slots=True)
class Experiment:
    name: str
    start: float
    steps: list[Step]
    description: str = ""
    created: float = field(default_factory=time.time)

    @property
    def state(self) -> str:
        states = {s.state for s in self.steps}
        if "pending" in states:
            return "scheduled" if all(s.state == "pending" for s in self.steps) else "running"
        return "cancelled" if "cancelled" in states else "finished"

    def json(self) -> dict[str, Any]:
        nxt = next((s for s in self.steps if s.state == "pending"), None)
        end = self.start + max((s.at for s in self.steps), default=0)
        return {"name": self.name, "description": self.description, "state": self.state,
                "start": _iso(self.start), "end": _iso(end),
                "next_step": nxt.index if nxt is not None else None,
                "next_time": _iso(self.start + nxt.at) if nxt is not None else None,
                "steps": [s.json(self.start) for s in self.steps]}  # fmt: skip


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _reason(exc: PolicyError) -> str:
    """The refusal without its ``rule: `` prefix."""
    return str(exc).removeprefix(f"{exc.rule}: ")


def parse_start(value: Any, now: float) -> float:
    """``start``: epoch seconds, an ISO 8601 time with a zone (``2026-11-27T13:00:00Z``) or "now"."""
    if value is None or value == "now":
        return now
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(400, f"start: not an ISO 8601 time: {value!r}") from None
        if when.tzinfo is None:
            raise ApiError(400, f"start: {value!r} has no time zone (add Z for UTC)")
        return when.timestamp()
    raise ApiError(400, "start: expected epoch seconds, an ISO 8601 time or 'now'")


def plan(
    body: Mapping[str, Any],
    announcer: Announcer,
    now: float,
    parse_request: Callable[[dict[str, Any]], Announcement],
) -> Experiment:
    """Check a whole experiment (see the module docstring). Raises ApiError(400) for a malformed
    request and PolicyError (rule, "steps[i] (at +T s): ...") for a step the rules would refuse."""
    unknown = set(body) - EXPERIMENT_KEYS
    if unknown:
        raise ApiError(400, f"unknown keys {sorted(unknown)} (expected {sorted(EXPERIMENT_KEYS)})")
    name = body.get("name")
    if (
        not isinstance(name, str)
        or not name
        or len(name) > 100
        or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise ApiError(400, "name: required, letters, digits, '-', '_' or '.' (at most 100)")
    delay = body.get("delay", 0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        raise ApiError(400, "delay: expected seconds >= 0")
    if "start" in body and delay:
        raise ApiError(400, "give start or delay, not both")
    start = parse_start(body.get("start"), now) + float(delay)
    raw_steps = body.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ApiError(400, "steps: expected a non-empty list of steps")
    if len(raw_steps) > MAX_STEPS:
        raise ApiError(400, f"steps: at most {MAX_STEPS}")
    steps = [_parse_step(i, raw, announcer, parse_request) for i, raw in enumerate(raw_steps)]
    order = sorted(steps, key=lambda s: (s.at, s.index))
    if start + order[0].at < now - 1:
        raise ApiError(400, f"steps[{order[0].index}]: its time {_iso(start + order[0].at)} is in the past")
    _simulate(order, start, announcer)
    desc = body.get("description", "")
    return Experiment(name, start, order, desc if isinstance(desc, str) else "")


def _parse_step(
    i: int, raw: Any, announcer: Announcer, parse_request: Callable[[dict[str, Any]], Announcement]
) -> Step:
    if not isinstance(raw, dict):
        raise ApiError(400, f"steps[{i}]: expected a table/object")
    unknown = set(raw) - STEP_KEYS
    if unknown:
        raise ApiError(400, f"steps[{i}]: unknown keys {sorted(unknown)} (expected {sorted(STEP_KEYS)})")
    at = raw.get("at")
    if not isinstance(at, int | float) or isinstance(at, bool) or not 0 <= at <= 366 * 86400:
        raise ApiError(400, f"steps[{i}].at: required, seconds after the start (0 .. one year)")
    action = raw.get("action")
    if action not in ("announce", "withdraw"):
        raise ApiError(400, f"steps[{i}].action: expected 'announce' or 'withdraw', got {action!r}")
    prefix = raw.get("prefix")
    if not isinstance(prefix, str):
        raise ApiError(400, f"steps[{i}].prefix: required, a string")
    try:
        family, key = parse_prefix(prefix)
    except ValueError as exc:
        raise ApiError(400, f"steps[{i}].prefix: {exc}") from None
    prefix = format_prefix(family, key)
    body = {k: v for k, v in raw.items() if k not in ("at", "action")}
    body["prefix"] = prefix
    variants: tuple[tuple[str, Announcement], ...] = ()
    if action == "announce" and body.get("per_peer"):
        try:
            own = parse_per_peer(body["per_peer"], prefix, announcer.resolve, parse_request)
            variants = tuple(own.items())
        except ApiError as exc:
            raise ApiError(400, f"steps[{i}].{exc}") from None
        except PolicyError as exc:
            raise PolicyError(exc.rule, f"steps[{i}].per_peer: {_reason(exc)}") from None
    if action == "withdraw":
        extra = set(body) - {"prefix", "peers", "all", "kind"}
        if extra:
            raise ApiError(400, f"steps[{i}]: a withdraw takes only prefix and targets, not {sorted(extra)}")
    try:
        peers, every, kind = parse_targets(body)
        ann = parse_request(body) if action == "announce" else None
    except ApiError as exc:
        raise ApiError(400, f"steps[{i}].{exc}") from None
    if action == "withdraw" and not peers and not every and kind is None:
        targets: tuple[str, ...] = ()  # from every peer that has it at that time
    else:
        try:
            targets = announcer.resolve(peers, every, kind, family)
        except PolicyError as exc:
            raise PolicyError(exc.rule, f"steps[{i}]: {_reason(exc)}") from None
    targets = (*targets, *(n for n, _ in variants if n not in targets))
    return Step(i, float(at), action, prefix, targets, ann, body, group=not peers, variants=variants)


_State = tuple[Announcement, tuple[str, ...], tuple[Any, ...]]  # announcement, targets, per-peer variants


def _simulate(order: Sequence[Step], start: float, announcer: Announcer) -> None:
    """The rate rule and withdraw-needs-announced over the timeline (announce rules checked too)."""
    interval = announcer.min_interval()
    last: dict[str, float | None] = {}
    current: dict[str, _State | None] = {}
    for s in order:
        t = start + s.at
        where = f"steps[{s.index}] (at +{s.at:g} s)"
        if s.prefix not in last:
            last[s.prefix] = announcer.last_change(s.prefix)
            w = announcer.wanted.get(s.prefix)
            current[s.prefix] = (w.announcement, tuple(w.targets), tuple(v[:2] for v in w.variants)) \
                if w is not None else None
        now_state = current[s.prefix]
        if s.action == "announce":
            assert s.announcement is not None
            own = dict(s.variants)
            ann, targets, variants = request_state(s.announcement, s.targets, own)
            try:
                announcer.check_rules(ann, t, () if s.group else s.targets, own)
            except PolicyError as exc:
                raise PolicyError(exc.rule, f"{where}: {_reason(exc)}") from None
            if now_state is not None and now_state == (ann, targets, variants):
                continue  # the same announcement again: not a change (compared as Wanted keeps it)
            new_state: _State | None = (ann, targets, variants)
        else:
            if now_state is None:
                raise PolicyError("not-announced", f"{where}: {s.prefix} is not announced at that point")
            left = tuple(p for p in now_state[1] if p not in s.targets) if s.targets else ()
            if s.targets and len(left) == len(now_state[1]):
                raise PolicyError(
                    "not-announced", f"{where}: {s.prefix} is not announced to {', '.join(s.targets)} then"
                )
            new_state = (replace(now_state[0], muxes=tuple(p for p in left if p in now_state[0].muxes)), left,
                         tuple(v for v in now_state[2] if v[0] in left)) if left else None
        prev = last[s.prefix]
        if prev is not None and t - prev < interval:
            raise PolicyError(
                "rate",
                f"{where}: {s.prefix} changes {t - prev:.0f} s after its previous change; "
                f"at least {interval:g} s between changes: "
                f"move it {math.ceil(interval - (t - prev))} s later",
            )
        last[s.prefix] = t
        current[s.prefix] = new_state


class ExperimentRunner:
    """The scheduled experiments of one daemon: tasks, state, persistence (module docstring)."""

    def __init__(
        self,
        announcer: Announcer,
        runtime_dir: Path,
        log: Any,
        parse_request: Callable[[dict[str, Any]], Announcement],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.announcer = announcer
        self.path = runtime_dir / STATE_FILE
        self.log = log
        self.parse_request = parse_request
        self.clock = clock
        self.experiments: dict[str, Experiment] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._unrestored: list[dict[str, Any]] = []  # saved items the current config cannot run

    def start(self, body: Mapping[str, Any]) -> Experiment:
        """Plan and schedule. Raises ApiError(409) when an unfinished experiment has the name."""
        name = body.get("name")
        old = self.experiments.get(name) if isinstance(name, str) else None
        if old is not None and old.state in ("scheduled", "running"):
            raise ApiError(409, f"experiment {name!r} is {old.state}; cancel it first")
        exp = plan(body, self.announcer, self.clock(), self.parse_request)
        self.experiments[exp.name] = exp
        self._save()
        self._spawn(exp)
        self.log.info(
            "experiment_scheduled", experiment=exp.name, start=_iso(exp.start), steps=len(exp.steps)
        )
        return exp

    def dry_run(self, body: Mapping[str, Any]) -> Experiment:
        return plan(body, self.announcer, self.clock(), self.parse_request)

    async def cancel(self, name: str, withdraw: bool = False) -> tuple[Experiment, list[str]]:
        """Stop the pending steps; with ``withdraw``, also withdraw what its steps announced (each
        refusal, e.g. the rate rule, is returned as a message)."""
        exp = self.experiments.get(name)
        if exp is None:
            raise ApiError(404, f"no experiment named {name!r}")
        task = self._tasks.pop(name, None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        exp.steps = [replace(s, state="cancelled") if s.state == "pending" else s for s in exp.steps]
        problems: list[str] = []
        if withdraw:
            for prefix in dict.fromkeys(
                s.prefix for s in exp.steps if s.action == "announce" and s.state == "done"
            ):
                if prefix in self.announcer.wanted:
                    try:
                        await self.announcer.withdraw(prefix)
                    except PolicyError as exc:
                        problems.append(f"{prefix}: {exc}")
        self._save()
        self.log.info("experiment_cancelled", experiment=name, withdraw=withdraw, problems=problems)
        return exp, problems

    async def stop(self) -> None:
        """Daemon shutdown: stop the tasks; pending steps stay pending and resume at the next start."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def forget(self, name: str) -> None:
        exp = self.experiments.get(name)
        if exp is None:
            raise ApiError(404, f"no experiment named {name!r}")
        if exp.state in ("scheduled", "running"):
            raise ApiError(409, f"experiment {name!r} is {exp.state}; cancel it first")
        del self.experiments[name]
        self._save()

    def _spawn(self, exp: Experiment) -> None:
        task = asyncio.get_running_loop().create_task(self._run(exp), name=f"experiment-{exp.name}")
        self._tasks[exp.name] = task

        def ended(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self.log.error("experiment_task_failed", experiment=exp.name, detail=repr(t.exception()))

        task.add_done_callback(ended)

    async def _run(self, exp: Experiment) -> None:
        for i, step in enumerate(exp.steps):
            if step.state != "pending":
                continue
            due = exp.start + step.at
            while (left := due - self.clock()) > 0:
                await asyncio.sleep(min(left, SLEEP_SLICE))
            now = self.clock()
            if now - due > LATE_GRACE:
                exp.steps[i] = replace(
                    step,
                    state="missed",
                    ran_at=None,
                    outcome=f"peerctl was not running at {_iso(due)} ({now - due:.0f} s ago)",
                )
                self.log.warning(
                    "experiment_step_missed", experiment=exp.name, step=step.index, prefix=step.prefix
                )
                self._save()
                continue
            exp.steps[i] = await self._execute(exp, step, now, due)
            self._save()
        self._tasks.pop(exp.name, None)
        self.log.info("experiment_finished", experiment=exp.name,
                      refused=sum(s.state == "refused" for s in exp.steps))  # fmt: skip

    async def _execute(self, exp: Experiment, step: Step, now: float, due: float) -> Step:
        """Run one step. The change counts at its scheduled time (``due``) for the rate rule, the
        time plan() checked, so steps exactly ``min_interval`` apart are not refused for running a
        few ms late. Any failure is recorded on the step; the experiment goes on."""
        at = min(now, due)
        try:
            if step.action == "announce":
                assert step.announcement is not None
                ann = replace(step.announcement, prefix=step.prefix)
                await self.announcer.announce(ann, step.targets, group=step.group, at=at,
                                              variants=dict(step.variants))
                outcome = f"announced to {', '.join(step.targets)}"
            else:
                done = await self.announcer.withdraw(step.prefix, step.targets, at=at)
                outcome = f"withdrawn from {', '.join(done)}"
        except PolicyError as exc:
            self.log.warning("experiment_step_refused", experiment=exp.name, step=step.index,
                             prefix=step.prefix, rule=exc.rule, detail=_reason(exc))  # fmt: skip
            return replace(step, state="refused", ran_at=now, outcome=f"{exc.rule}: {_reason(exc)}")
        except Exception as exc:  # a speaker that cannot take the command, a disk error...
            self.log.error("experiment_step_failed", experiment=exp.name, step=step.index,
                           prefix=step.prefix, detail=repr(exc))  # fmt: skip
            return replace(step, state="error", ran_at=now, outcome=f"error: {exc!r}")
        self.log.info("experiment_step", experiment=exp.name, step=step.index, action=step.action,
                      prefix=step.prefix, peers=list(step.targets))  # fmt: skip
        return replace(step, state="done", ran_at=now, outcome=outcome)

    # -- persistence -------------------------------------------------------------------------------

    def _save(self) -> None:
        doc = [{"name": e.name, "start": e.start, "description": e.description, "created": e.created,
                "steps": [{"at": s.at, "action": s.action, **s.body, "_state": s.state, "_ran_at": s.ran_at,
                           "_outcome": s.outcome} for s in sorted(e.steps, key=lambda s: s.index)]}
               for e in self.experiments.values()]  # fmt: skip
        doc += [item for item in self._unrestored if item.get("name") not in self.experiments]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def load(self) -> int:
        """Read the saved experiments back and resume their pending steps. An unreadable file is
        logged and set aside (``.bad``), never fatal. Returns the number of experiments resumed."""
        if not self.path.exists():
            return 0
        try:
            doc = orjson.loads(self.path.read_bytes())
            assert isinstance(doc, list)
        except (orjson.JSONDecodeError, AssertionError, OSError) as exc:
            self.log.error("experiments_unreadable", file=str(self.path), detail=str(exc))
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_suffix(".bad"))
            return 0
        resumed = 0
        for item in doc:
            try:
                exp = self._restore(item)
            except (ApiError, PolicyError, KeyError, TypeError, ValueError, AttributeError) as exc:
                # e.g. a step's peer was removed from the config: kept as saved (written back by every
                # save), not run; it comes back when the config has that peer again
                self.log.error("experiment_not_restored", experiment=str(item.get("name", "?"))[:100],
                               detail=str(exc))  # fmt: skip
                self._unrestored.append(item)
                continue
            self.experiments[exp.name] = exp
            if exp.state in ("scheduled", "running"):
                self._spawn(exp)
                resumed += 1
        return resumed

    def _restore(self, item: dict[str, Any]) -> Experiment:
        steps: list[Step] = []
        for i, saved in enumerate(item["steps"]):
            raw = dict(saved)
            state, ran_at, outcome = raw.pop("_state"), raw.pop("_ran_at"), raw.pop("_outcome")
            s = _parse_step(i, raw, self.announcer, self.parse_request)
            steps.append(replace(s, state=state, ran_at=ran_at, outcome=outcome))
        steps.sort(key=lambda s: (s.at, s.index))
        return Experiment(
            item["name"],
            float(item["start"]),
            steps,
            item.get("description", ""),
            float(item.get("created", 0)),
        )


def _attr_body(ann: Announcement) -> dict[str, Any]:
    """A PEERING announcement's attributes as request keys (PEERING peer ids become communities)."""
    out: dict[str, Any] = {}
    if ann.origin is not None:
        out["origin"] = ann.origin
    if ann.poison:
        out["poison"] = list(ann.poison)
    comms = [f"{c >> 16}:{c & 0xFFFF}" for c in ann.communities]
    comms += [f"{PEERING_ASN}:{p}" for p in ann.peers]
    if comms:
        out["communities"] = comms
    if ann.large_communities:
        out["large_communities"] = [f"{a}:{b}:{c}" for a, b, c in ann.large_communities]
    return out


def from_peering_experiment(
    doc: Any,
    round_interval: float,
    bindings: Mapping[str, str] | None = None,
    name: str = "peering-experiment",
) -> dict[str, Any]:
    """PEERING experiment JSON → the body of ``POST /api/v1/experiments`` (module docstring).

    Raises ApiError(400) naming the place: ``rounds[1]['A']: placeholder prefix, bind it with --bind
    A=PREFIX``, ``rounds[0]['184.164.224.0/24'].announce: mux amsterdam01 given two attribute sets in
    one round``. Muxes given different attributes for one prefix get them (``per_peer``)."""
    bindings = bindings or {}
    body = doc.get("experiment", doc) if isinstance(doc, dict) else doc
    if not isinstance(body, dict) or not isinstance(body.get("rounds"), list) or not body["rounds"]:
        raise ApiError(400, 'not a PEERING experiment: expected {"experiment": {"rounds": [...]}}')
    steps: list[dict[str, Any]] = []
    for r, round_ in enumerate(body["rounds"]):
        if not isinstance(round_, dict) or not round_:
            raise ApiError(400, f"rounds[{r}]: expected an object of prefix -> {{announce, withdraw}}")
        bound: dict[str, Any] = {}
        for key, spec in round_.items():
            prefix = bindings.get(key, key)
            try:
                parse_prefix(prefix)
            except ValueError:
                raise ApiError(
                    400,
                    f"rounds[{r}][{key!r}]: not a prefix; a placeholder? bind it with --bind {key}=PREFIX",
                ) from None
            bound[prefix] = spec
        try:
            request = parse_peering(bound)
        except PolicyError as exc:
            raise ApiError(400, f"rounds[{r}]: {_reason(exc)}") from None
        by_prefix: dict[str, list[Announcement]] = {}
        for ann in request.announcements:
            by_prefix.setdefault(ann.prefix, []).append(ann)
        at = r * round_interval
        for prefix, anns in by_prefix.items():
            first = anns[0]
            # The first entry's attribute set goes to its muxes and every mux given the same set;
            # muxes given another set get it as their own (``per_peer``), as PEERING sends per mux.
            main = replace(first, muxes=())
            muxes = [m for a in anns if replace(a, muxes=()) == main for m in a.muxes]
            own: dict[str, dict[str, Any]] = {}
            for a in anns:
                if replace(a, muxes=()) != main:
                    if "all" in a.muxes or "all" in muxes:
                        raise ApiError(400, f"rounds[{r}][{prefix!r}].announce: different attributes for "
                                       "one prefix on 'all' muxes and on some: name the muxes")
                    for m in a.muxes:
                        if m in own or m in muxes:
                            raise ApiError(400, f"rounds[{r}][{prefix!r}].announce: mux {m} given two "
                                           "attribute sets in one round")
                        own[m] = _attr_body(a)
            step: dict[str, Any] = {"at": at, "action": "announce", "prefix": prefix}
            step.update({"all": True} if "all" in muxes else {"peers": list(dict.fromkeys(muxes))})
            step.update(_attr_body(first))
            if own:
                step["per_peer"] = own
            steps.append(step)
        gone: dict[str, list[str]] = {}
        for prefix, mux in request.withdrawals:
            gone.setdefault(prefix, []).append(mux)
        for prefix, muxes in gone.items():
            if prefix in by_prefix:
                # A round states where the prefix is announced: the announce step's targets replace
                # the previous ones, so withdrawing from the others is already part of it.
                both = set(muxes) & {m for a in by_prefix[prefix] for m in a.muxes}
                if both or "all" in muxes:
                    raise ApiError(400, f"rounds[{r}][{prefix!r}]: announced to and withdrawn from "
                                   f"{', '.join(sorted(both or {'all'}))} in the same round")
                continue
            w: dict[str, Any] = {"at": at, "action": "withdraw", "prefix": prefix}
            if "all" not in muxes:
                w["peers"] = muxes
            steps.append(w)
    out: dict[str, Any] = {"name": name, "steps": steps}
    if isinstance(body.get("description"), str):
        out["description"] = body["description"]
    return out
