"""The kernel FIB writer: best-path changes → batched netlink, via nexthop objects.

Model
-----
* desired state = ``installed`` + pending (``FibDiff``) + ``failed``; ``installed[family][key]`` is the
  nexthop id the kernel holds for a prefix (``0``: a route of ours whose attributes are wrong and that
  any desired op replaces). Only this writer changes the table: REPLACE (``NLM_F_CREATE|REPLACE``) for
  installed prefixes, ADD with ``NLM_F_EXCL`` for new ones, so a route someone else put at the same
  prefix/table/metric is reported (EEXIST) rather than clobbered.
* Every route points at a kernel nexthop object, one per (upstream peer, family, next hop). Changing
  an upstream's next hop is one RTM_NEWNEXTHOP replace; a peer going down is one replace (re-point at a
  fallback upstream) or one RTM_DELNEXTHOP (the kernel drops all its routes). Next hops the kernel will
  not accept as an object (not on-link, unreachable) are written as plain gateway routes so the kernel
  judges — and reports — each route.
* A route that fails is counted, logged with the kernel's reason (matched by netlink sequence number),
  kept in ``failed`` and retried by the periodic reconcile. If a REPLACE of an installed route fails,
  the old route is deleted: the kernel never keeps a route the RIB no longer explains.
* Graceful restart: ``stop()`` leaves everything in the kernel. ``start()`` dumps the table and the
  nexthop objects of our protocol, adopts them (routes become ``installed`` and *stale*, nexthop objects
  are reused by gateway), so re-learned routes cost nothing; ``sweep_stale()`` (after End-of-RIB from
  every peer, or ``stale_timeout``) deletes what was not re-learned.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno as errno_mod
import os
import socket
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.config import FibConfig, FibMode, LocalConfig
from orchestrator.errors import KernelInstallError, NotPermitted
from orchestrator.fib import netlink as nl
from orchestrator.fib.diff import FibDiff, NextHopRef
from orchestrator.rib.prefix import Family, format_prefix

CAP_NET_ADMIN = 12
NH_ID_BASE = 0x50000  # our nexthop ids start here (ids are global per namespace)
NH_ID_UPSTREAM = 1 << 31  # per-upstream tables' nexthop ids: NH_ID_UPSTREAM + table * NH_PER_UPSTREAM
NH_PER_UPSTREAM = 128
UPSTREAM_TABLE_MAX = (1 << 24) - 1  # so every per-upstream id range fits in 32 bits


def upstream_nh_range(table: int) -> tuple[int, int]:
    """The nexthop ids owned by the writer of per-upstream ``table`` (disjoint from the main writer's).

    Derived from the table number, not from the peer's position, so a restart adopts the same objects
    whatever the order of the peers in the config.
    """
    if not 0 < table <= UPSTREAM_TABLE_MAX:
        raise ValueError(f"per-upstream table {table} out of range 1..{UPSTREAM_TABLE_MAX}")
    lo = NH_ID_UPSTREAM + table * NH_PER_UPSTREAM
    return lo, lo + NH_PER_UPSTREAM
_FAMILIES = (Family.IPV4, Family.IPV6)
DRAIN_LIMIT = 32768  # prefixes taken from the pending changes per write round (see _write_pending)
_AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}


def has_net_admin() -> bool:
    """Whether this process has CAP_NET_ADMIN in its effective set."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


@dataclass(slots=True)
class _Nexthop:
    nhid: int
    family: Family
    gateway: bytes  # packed address
    oif: int = 0
    created: bool = False  # exists in the kernel as an object
    gateway_form: bool = False  # could not be an object: routes carry RTA_GATEWAY
    error: str = ""


class FibWriter:
    """Writes best routes into one kernel routing table. See the module docstring.

    Not thread-safe: call everything from the event loop that ran ``start()``.
    """

    def __init__(self, config: FibConfig, local: LocalConfig, log: Any, *, window: float = 0.02,
                 batch: int = 2048, reconcile_interval: float = 300.0, stale_timeout: float | None = None,
                 upstream_tables: Mapping[str, int] | None = None,
                 nh_range: tuple[int, int] = (NH_ID_BASE, NH_ID_UPSTREAM)) -> None:
        self.config = config
        self.nh_range = nh_range
        self._upstream_tables = dict(upstream_tables or {})
        self.upstreams: dict[str, FibWriter] = {}  # per-upstream table writers (fib.per_upstream_tables)
        self._secondary = False  # a per-upstream writer: the main writer prepared netns and sources
        self.local = local
        self.log = log
        self.window = window
        self.batch = batch
        self.reconcile_interval = reconcile_interval
        self.stale_timeout = config.stale_timeout if stale_timeout is None else stale_timeout
        self._diff = FibDiff()
        self._installed: dict[Family, dict[int, int]] = {f: {} for f in _FAMILIES}
        self._failed: dict[Family, dict[int, tuple[int, str]]] = {f: {} for f in _FAMILIES}
        self._stale: dict[Family, set[int]] = {f: set() for f in _FAMILIES}
        self._stray_metric: list[tuple[Family, int, int]] = []
        self._nh: dict[int, _Nexthop] = {}
        self._nh_by_upstream: dict[tuple[str | None, Family, str], int] = {}
        self._adoptable: dict[tuple[Family, bytes], int] = {}
        self._next_nhid = nh_range[0]
        self._chan: nl.Channel | None = None
        self._codec: dict[Family, nl.RouteCodec] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._io = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight = 0
        self.errors = 0
        self.last_error: str | None = None
        self.created: list[str] = []  # what start() created (namespace, interfaces), for the operator

    # ----------------------------------------------------------------------------------- lifecycle

    @property
    def enabled(self) -> bool:
        return self.config.mode is not FibMode.OFF

    async def start(self) -> None:
        """Check privilege, prepare the namespace and source addresses, adopt what the kernel holds.

        Raises NotPermitted (one line) without CAP_NET_ADMIN when mode is not off; KernelInstallError
        when the namespace or a source address cannot be set up. Side effects: may create the netns and
        the source interface (logged, listed in ``created``); marks adopted routes stale.
        """
        if not self.enabled:
            return
        if not has_net_admin():
            raise NotPermitted(
                f"fib.mode = {self.config.mode.value!r} needs CAP_NET_ADMIN to write routing table "
                f"{self.config.table}: run as root (or grant cap_net_admin), or set fib.mode = \"off\"")
        ns = self.config.netns
        if ns and not self._secondary:
            await asyncio.to_thread(self._ensure_netns, ns)
        try:
            self._chan = nl.Channel(ns)
        except OSError as exc:
            raise KernelInstallError(f"fib: cannot open netlink in netns {ns or '(current)'}: {exc}",
                                     exc.errno or 0) from None
        if not self._secondary:
            await asyncio.to_thread(self._ensure_sources)
        c = self.config
        self._codec = {
            Family.IPV4: nl.RouteCodec(Family.IPV4, c.table, c.protocol, c.metric, self.local.source4),
            Family.IPV6: nl.RouteCodec(Family.IPV6, c.table, c.protocol, c.metric, self.local.source6),
        }
        await self._adopt()
        self._tasks.append(asyncio.create_task(self._run(), name="fib-writer"))
        if self.reconcile_interval > 0:
            self._tasks.append(asyncio.create_task(self._periodic(), name="fib-reconcile"))
        if self.stale_timeout > 0 and any(self._stale.values()):
            self._tasks.append(asyncio.create_task(self._stale_timer(), name="fib-stale"))
        for peer, table in self._upstream_tables.items():
            log = self.log.bind(upstream=peer, table=table) if hasattr(self.log, "bind") else self.log
            child = FibWriter(replace(c, table=table, per_upstream_tables=False), self.local, log,
                              window=self.window, batch=self.batch,
                              reconcile_interval=self.reconcile_interval, stale_timeout=self.stale_timeout,
                              nh_range=upstream_nh_range(table))
            child._secondary = True
            await child.start()
            self.upstreams[peer] = child

    async def stop(self) -> None:
        """Write what is pending, stop the tasks, close the socket. Routes stay in the kernel."""
        for child in self.upstreams.values():
            await child.stop()
        self.upstreams.clear()
        if self._chan is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=30)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        async with self._io:  # a worker thread may still be inside transact (a cancelled write)
            self._chan.close()
            self._chan = None

    def _ensure_netns(self, ns: str) -> None:
        from pyroute2 import netns as p2netns

        try:
            if ns not in p2netns.listnetns():
                p2netns.create(ns)
                self.created.append(f"netns {ns}")
                self.log.info("fib_netns_created", netns=ns)
        except OSError as exc:
            raise KernelInstallError(f"fib: cannot create network namespace {ns!r}: {exc}") from None

    def _ensure_sources(self) -> None:
        """source4/source6 must be local addresses; create ``fib.source_interface`` to hold them if asked."""
        assert self._chan is not None
        sources = ((Family.IPV4, self.local.source4), (Family.IPV6, self.local.source6))
        wanted = [(f, a) for f, a in sources if a]
        present = nl.local_addresses(self._chan)
        missing = [(f, a) for f, a in wanted if socket.inet_pton(_AF[f], a) not in present]
        if not missing:
            return
        where = f"netns {self.config.netns}" if self.config.netns else "this namespace"
        names = ", ".join(f"local.source{4 if f is Family.IPV4 else 6} = {a}" for f, a in missing)
        if not self.config.source_interface:
            raise KernelInstallError(
                f"fib: {names} {'is' if len(missing) == 1 else 'are'} on no interface in {where}; "
                f"the kernel refuses routes whose preferred "
                f"source is not local. Add the address, or set fib.source_interface = \"peerctl0\" to let "
                f"peerctl create an interface holding it")
        self._create_source_interface(missing)

    def _create_source_interface(self, missing: list[tuple[Family, str]]) -> None:
        """A veth pair (this kernel has no ``dummy``) holding the addresses, both ends up.

        Addresses go on as /24 (IPv4) and /64 (IPv6, nodad) so next hops in the same subnet — the
        lab's feeders at .2/.3 and ::2/::3 — are connected and usable as nexthop objects.
        """
        from pyroute2 import IPRoute

        name = self.config.source_interface
        peer = (name + "-p")[:15]
        ns = self.config.netns or None
        try:
            with IPRoute(netns=ns) if ns else IPRoute() as ipr:
                if not ipr.link_lookup(ifname=name):
                    ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer})
                    self.created.append(f"veth {name} (peer {peer})")
                idx = ipr.link_lookup(ifname=name)[0]
                for ifname in (name, peer):
                    for i in ipr.link_lookup(ifname=ifname):
                        ipr.link("set", index=i, state="up")
                for family, addr in missing:
                    if family is Family.IPV4:
                        ipr.addr("add", index=idx, address=addr, prefixlen=24)
                    else:
                        ipr.addr("add", index=idx, address=addr, prefixlen=64, flags=0x02)  # IFA_F_NODAD
                    self.created.append(f"address {addr} on {name}")
        except Exception as exc:
            raise KernelInstallError(f"fib: cannot create source interface {name!r}: {exc}") from None
        # on this host's own links a warning (we changed them); inside our namespace (the lab) routine
        say = self.log.warning if not self.config.netns else self.log.info
        say("fib_source_interface_created", interface=name, peer_interface=peer, netns=self.config.netns,
            created=list(self.created))

    async def _adopt(self) -> None:
        """Start-up reconcile: routes and nexthop objects of our protocol become installed + stale."""
        assert self._chan is not None
        async with self._io:
            nhs, routes = await asyncio.to_thread(self._dump_all)
        lo, hi = self.nh_range
        for nh in nhs.values():
            if not lo <= nh.nhid < hi:  # another writer's (main table or another upstream table)
                continue
            self._nh[nh.nhid] = _Nexthop(nh.nhid, nh.family, nh.gateway, nh.oif, created=True)
            self._adoptable.setdefault((nh.family, nh.gateway), nh.nhid)
            self._next_nhid = max(self._next_nhid, nh.nhid + 1)
        for family in _FAMILIES:
            installed = self._installed[family]
            count = 0
            for key, route in routes[family].items():
                if not self._route_ok(family, route):
                    if route.metric != self._metric(family):
                        self._stray_metric.append((family, key, route.metric))
                        continue
                    installed[key] = 0  # ours but wrong: the next desired op replaces it
                else:
                    installed[key] = route.nhid
                count += 1
            self._stale[family] = set(installed)
            self.log.info("fib_adopted", afi_safi=family.value, routes=count, nexthops=len(self._nh))

    def _dump_all(self) -> tuple[dict[int, nl.KernelNexthop], dict[Family, dict[int, nl.KernelRoute]]]:
        assert self._chan is not None
        nhs = nl.dump_nexthops(self._chan, self.config.protocol)
        routes = {f: nl.dump_routes(self._chan, self._codec[f]) for f in _FAMILIES}
        return nhs, routes

    def _metric(self, family: Family) -> int:
        m = self.config.metric
        return nl.IP6_RT_PRIO_USER if family is Family.IPV6 and m == 0 else m

    def _route_ok(self, family: Family, route: nl.KernelRoute) -> bool:
        nh = self._nh.get(route.nhid)
        return (route.metric == self._metric(family) and route.prefsrc == self._codec[family].prefsrc
                and nh is not None and nh.created)

    # ----------------------------------------------------------------------------------- changes

    def submit(self, family: Family, key: int, next_hop: str | None, peer: str | None) -> None:
        """Queue the best route of one prefix (``next_hop`` None: no best route: remove it).

        Non-blocking; folded with later changes of the same prefix. In mode ``default`` only the
        default routes (key 0) are taken. Raises ValueError for a malformed next hop.
        """
        if self.config.mode is not FibMode.FULL and (self.config.mode is FibMode.OFF or key != 0):
            return
        if self._stale[family]:
            self._stale[family].discard(key)
        if next_hop is None:
            self._diff.add(family, key, None)
        else:
            nhid = self._nh_by_upstream.get((peer, family, next_hop))
            if nhid is None:
                nhid = self._nexthop_for(peer, family, next_hop)
            self._diff.add(family, key, NextHopRef(nhid))
        if not self._wake.is_set():
            self._wake.set()
            self._idle.clear()

    def _nexthop_for(self, peer: str | None, family: Family, next_hop: str) -> int:
        gw = socket.inet_pton(socket.AF_INET if family is Family.IPV4 else socket.AF_INET6, next_hop)
        nhid = self._adoptable.pop((family, gw), None)
        if nhid is None:
            nhid = self._alloc_nhid()
            self._nh[nhid] = _Nexthop(nhid, family, gw)
        self._nh_by_upstream[(peer, family, next_hop)] = nhid
        return nhid

    def _alloc_nhid(self) -> int:
        """A free id in this writer's range (wrapping around). Raises KernelInstallError when all are used."""
        lo, hi = self.nh_range
        nhid = self._next_nhid if lo <= self._next_nhid < hi else lo
        for _ in range(hi - lo):
            if nhid not in self._nh:
                self._next_nhid = nhid + 1
                return nhid
            nhid = nhid + 1 if nhid + 1 < hi else lo
        raise KernelInstallError(f"fib: table {self.config.table}: all {hi - lo} nexthop ids in use")

    async def flush(self) -> None:
        """Wait until everything submitted so far has been written (or has failed), per-upstream
        tables included."""
        while len(self._diff) or self._inflight or self._wake.is_set():
            await self._idle.wait()
            if len(self._diff) and not self._wake.is_set():
                self._wake.set()
            await asyncio.sleep(0)
        for child in list(self.upstreams.values()):
            await child.flush()

    def submit_peer(self, peer: str, family: Family, next_hop: str | None, announce: Sequence[int],
                    withdraw: Sequence[int]) -> None:
        """One accepted UPDATE of ``peer`` (post import policy) for its per-upstream table, if it has
        one: ``withdraw`` keys leave it, ``announce`` keys point at ``next_hop``. Non-blocking."""
        child = self.upstreams.get(peer)
        if child is None:
            return
        submit = child.submit
        for key in withdraw:
            submit(family, key, None, None)
        if next_hop is not None:
            for key in announce:
                submit(family, key, next_hop, peer)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.window > 0:
                await asyncio.sleep(self.window)  # the fold window: later changes overwrite earlier ones
            self._wake.clear()
            try:
                while len(self._diff):
                    await self._write_pending()
            except Exception as exc:  # a socket-level failure: log, keep going
                self._record_error(f"fib writer: {exc!r}")
                self.log.error("fib_writer_failed", reason=repr(exc))
                await asyncio.sleep(1)
            finally:
                if not len(self._diff):
                    self._idle.set()

    async def _write_pending(self) -> None:
        for family in _FAMILIES:
            # A bounded slice per call: draining a full table's worth at once is ~0.1-0.5 s of list
            # work with the event loop (and so the API) stalled.
            replaces, deletes = self._diff.drain_family(family, DRAIN_LIMIT)
            self._inflight += len(replaces) + len(deletes)
            try:
                if replaces:
                    # After the drain, not before: a route submitted while the previous family was being
                    # written may name a nexthop object allocated meanwhile; written before the object
                    # exists, the kernel refuses it ("Nexthop id does not exist").
                    async with self._io:
                        remap = await self._create_nexthops()
                    if remap:
                        replaces = [(k, NextHopRef(remap.get(n, n))) for k, n in replaces]
                await self._write_replaces(family, replaces)
                await self._write_deletes(family, deletes)
            finally:
                self._inflight = 0

    async def _create_nexthops(self) -> dict[int, int]:
        """Create the nexthop objects that pending routes need (rare: new upstream next hops).

        Returns ids that had to change (``old → new``: the id was taken by someone else).
        """
        chan = self._chan
        assert chan is not None
        remapped: dict[int, int] = {}
        for nh in list(self._nh.values()):
            if nh.created or nh.gateway_form:
                continue
            resolved = nl.resolve_oif(chan, nh.family, nh.gateway)
            if isinstance(resolved, nl.RouteError) or not resolved[1]:
                reason = resolved.describe() if isinstance(resolved, nl.RouteError) else "not on-link"
                nh.gateway_form, nh.error = True, reason
                self.log.warning("fib_nexthop_unusable", nexthop=self._gw_text(nh), reason=reason)
                continue
            nh.oif = resolved[0]
            err = chan.request(nl.nexthop_msg(chan.next_seq(1), nh.nhid, nh.family, nh.gateway, nh.oif,
                                              self.config.protocol))
            if err is not None and err.errno == errno_mod.EEXIST:  # id taken by someone else
                old = nh.nhid
                nh.nhid = self._alloc_nhid()
                self._nh[nh.nhid] = self._nh.pop(old)
                self._remap_nhid(old, nh.nhid)
                remapped[old] = nh.nhid
                err = chan.request(nl.nexthop_msg(chan.next_seq(1), nh.nhid, nh.family, nh.gateway, nh.oif,
                                                  self.config.protocol))
            if err is not None:
                nh.gateway_form, nh.error = True, err.describe()
                self.log.warning("fib_nexthop_unusable", nexthop=self._gw_text(nh), reason=nh.error)
            else:
                nh.created = True
                self.log.debug("fib_nexthop_created", nhid=nh.nhid, nexthop=self._gw_text(nh), oif=nh.oif)
        return remapped

    def _remap_nhid(self, old: int, new: int) -> None:
        for k, v in self._nh_by_upstream.items():
            if v == old:
                self._nh_by_upstream[k] = new
        for family in _FAMILIES:
            pending = self._diff.pending(family)
            for key, ref in pending.items():
                if ref == old:
                    pending[key] = NextHopRef(new)

    async def _write_replaces(self, family: Family, items: list[tuple[int, NextHopRef]]) -> None:
        if not items:
            return
        installed = self._installed[family]
        nhs = self._nh
        # already right (re-learned after a restart, or a next-hop change done by nexthop object)
        todo = [(k, n) for k, n in items if installed.get(k) != n and n in nhs]
        gw_form = [(k, n) for k, n in todo if nhs[n].gateway_form]
        if gw_form:
            todo = [(k, n) for k, n in todo if not nhs[n].gateway_form]
        codec = self._codec[family]
        chan = self._chan
        assert chan is not None
        step = self.batch
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            async with self._io:
                seq = chan.next_seq(len(chunk))
                # the kernel's work (most of a route's cost) in a thread: the event loop serves on
                errors = await asyncio.to_thread(chan.transact, codec.encode_nh(chunk, installed, seq))
            wrong = self._apply_replaces(family, chunk, seq, errors)
            if wrong:
                await self._send_deletes(family, wrong)
            self._inflight -= len(chunk)
            await asyncio.sleep(0)
        for start in range(0, len(gw_form), step):
            chunk = gw_form[start : start + step]
            async with self._io:
                seq = chan.next_seq(len(chunk))
                gws = [(k, nhs[n].gateway) for k, n in chunk]
                errors = await asyncio.to_thread(chan.transact, codec.encode_gw(gws, installed, seq))
            wrong = self._apply_replaces(family, chunk, seq, errors)
            if wrong:
                await self._send_deletes(family, wrong)
            await asyncio.sleep(0)

    def _apply_replaces(self, family: Family, chunk: list[tuple[int, NextHopRef]], seq: int,
                        errors: dict[int, nl.RouteError]) -> list[int]:
        """Record a written chunk; return installed prefixes whose REPLACE failed (to be deleted)."""
        installed = self._installed[family]
        failed = self._failed[family]
        if not errors:
            installed.update(chunk)
            if failed:
                for k, _ in chunk:
                    failed.pop(k, None)
            return []
        wrong: list[int] = []
        for i, (k, n) in enumerate(chunk):
            err = errors.get(seq + i)
            if err is None:
                installed[k] = n
                failed.pop(k, None)
                continue
            failed[k] = (n, err.describe())
            self._route_error(family, k, err)
            if k in installed:  # the old route is not what the RIB wants any more
                wrong.append(k)
        wrong.sort(reverse=True)
        return wrong

    async def _write_deletes(self, family: Family, keys: list[int]) -> None:
        """Withdrawals (``keys`` in descending order): the prefix is no longer wanted at all."""
        failed = self._failed[family]
        if failed:
            for k in keys:
                failed.pop(k, None)
        await self._send_deletes(family, keys)

    async def _send_deletes(self, family: Family, keys: list[int]) -> None:
        installed = self._installed[family]
        todo = [k for k in keys if k in installed]  # order kept: never ascending
        codec = self._codec[family]
        chan = self._chan
        assert chan is not None
        step = self.batch
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            async with self._io:
                seq = chan.next_seq(len(chunk))
                errors = await asyncio.to_thread(chan.transact, codec.encode_del(chunk, seq))
            for i, k in enumerate(chunk):
                err = errors.get(seq + i)
                if err is None or err.errno == errno_mod.ESRCH:  # ESRCH: already gone
                    installed.pop(k, None)
                else:
                    self._route_error(family, k, err)
            self._inflight -= len(chunk)
            await asyncio.sleep(0)

    def _route_error(self, family: Family, key: int, err: nl.RouteError) -> None:
        prefix = format_prefix(family, key)
        reason = err.describe()
        if err.errno == errno_mod.EEXIST:
            reason += " (a route peerctl did not install holds this prefix, table and metric)"
        self.errors += 1
        self.last_error = f"{prefix}: {reason}"
        self.log.debug("fib_route_failed", prefix=prefix, afi_safi=family.value, reason=reason,
                       errno=errno_mod.errorcode.get(err.errno, err.errno))
        now = time.monotonic()
        if now - self._last_warn > 5.0:
            self._last_warn = now
            self.log.warning("fib_route_errors", errors=self.errors, last_error=self.last_error)

    _last_warn = 0.0

    def _record_error(self, text: str) -> None:
        self.errors += 1
        self.last_error = text

    def failures(self, family: Family) -> dict[int, KernelInstallError]:
        """Routes the kernel refused and that are still wanted: key → error (prefix, errno, reason)."""
        out: dict[int, KernelInstallError] = {}
        for key, (_nh, reason) in self._failed[family].items():
            name = reason.split("(", 1)[-1].split(")", 1)[0]
            code = getattr(errno_mod, name, 0)
            out[key] = KernelInstallError(reason, code, format_prefix(family, key))
        return out

    # ----------------------------------------------------------------------------------- fast paths

    def peer_down(self, peer: str, fallback: str | None = None) -> Coroutine[Any, Any, int]:
        """Move or remove every route through ``peer`` at nexthop-object speed; the coroutine returns
        the objects touched (per-upstream table included).

        ``peer``'s nexthop objects are detached from it *now*, in this call, and the kernel work happens
        when the returned coroutine runs: routes re-learned from ``peer`` in between (a quick flap) get
        fresh objects that this peer-down never re-points or deletes. ``peer``'s own per-upstream table,
        if any, is emptied (its objects deleted).
        """
        mine = [(k, v) for k, v in self._nh_by_upstream.items() if k[0] == peer]
        for k, _ in mine:
            del self._nh_by_upstream[k]
        child = self.upstreams.get(peer)
        child_down = child.peer_down(peer) if child is not None else None
        return self._peer_down(peer, fallback, mine, child_down)

    async def _peer_down(self, peer: str, fallback: str | None,
                         mine: list[tuple[tuple[str | None, Family, str], int]],
                         child_down: Coroutine[Any, Any, int] | None) -> int:
        """The kernel side of ``peer_down`` (main table first: forwarding moves before the per-upstream
        table is emptied).

        With ``fallback`` (a peer with a next hop of the same family, typically the RIB's new best),
        each of ``peer``'s nexthop objects is re-pointed at the fallback's gateway in one operation, so
        forwarding moves at once; the RIB's per-prefix changes then settle routes onto the fallback's
        own object in the background. Without it, the objects are deleted and the kernel drops their
        routes at once. Raises KernelInstallError if the kernel refuses.
        """
        touched = 0
        chan = self._chan
        if chan is None:
            mine = []
        for (_p, family, _gw_text), nhid in mine:
            assert chan is not None
            nh = self._nh.get(nhid)
            if nh is None or any(v == nhid for v in self._nh_by_upstream.values()):
                continue  # shared with another upstream key: leave it
            target = None
            if fallback is not None:
                target = next((self._nh[v] for k, v in self._nh_by_upstream.items()
                               if k[0] == fallback and k[1] is family and self._nh[v].created), None)
            if nh.created and target is not None:
                msg = nl.nexthop_msg(chan.next_seq(1), nhid, family, target.gateway, target.oif,
                                     self.config.protocol, replace=True)
                async with self._io:
                    err = await asyncio.to_thread(chan.request, msg)
                if err is None:
                    nh.gateway, nh.oif = target.gateway, target.oif
                    touched += 1
                    continue
                self.log.warning("fib_repoint_failed", peer=peer, reason=err.describe())
            await self._delete_nexthop(nh)
            touched += 1
        if child_down is not None:
            touched += await child_down
        self.log.info("fib_peer_down", peer=peer, fallback=fallback, nexthops=touched)
        return touched

    async def _delete_nexthop(self, nh: _Nexthop, unused: bool = False) -> None:
        chan = self._chan
        assert chan is not None
        if nh.created:
            async with self._io:
                err = await asyncio.to_thread(chan.request, nl.del_nexthop_msg(chan.next_seq(1), nh.nhid))
            if err is not None and err.errno != errno_mod.ENOENT:
                raise KernelInstallError(f"fib: cannot delete nexthop {nh.nhid}: {err.describe()}", err.errno)
            if not unused:
                self._forget_routes_of(nh.nhid)  # the kernel removed them with the object
        elif nh.gateway_form:
            gone = [k for k, v in self._installed[nh.family].items() if v == nh.nhid]
            for k in gone:
                self._diff.add(nh.family, k, None)
            self._wake.set()
            self._idle.clear()
        del self._nh[nh.nhid]
        for family in _FAMILIES:
            pending = self._diff.pending(family)
            for k in [k for k, v in pending.items() if v == nh.nhid]:
                del pending[k]

    def _forget_routes_of(self, nhid: int) -> None:
        for family in _FAMILIES:
            installed = self._installed[family]
            for k in [k for k, v in installed.items() if v == nhid]:
                del installed[k]
                self._stale[family].discard(k)
            failed = self._failed[family]
            for k in [k for k, v in failed.items() if v[0] == nhid]:
                del failed[k]

    async def next_hop_changed(self, peer: str, old: str, new: str) -> int:
        """``peer``'s next hop moved from ``old`` to ``new``: re-point its objects in one operation each.

        Returns how many objects were re-pointed. Routes of ``peer`` re-submitted with ``new`` afterwards
        are already right and cost no kernel work. If the kernel refuses the new next hop, the object and
        its routes are removed (the kernel must not keep forwarding to ``old``).
        """
        chan = self._chan
        if chan is None:
            return 0
        done = 0
        for family in _FAMILIES:
            nhid = self._nh_by_upstream.get((peer, family, old))
            if nhid is None:
                continue
            nh = self._nh[nhid]
            try:
                gw = socket.inet_pton(socket.AF_INET if family is Family.IPV4 else socket.AF_INET6, new)
            except OSError:
                continue
            del self._nh_by_upstream[(peer, family, old)]
            self._nh_by_upstream[(peer, family, new)] = nhid
            if not nh.created:
                nh.gateway, nh.gateway_form = gw, False
                continue
            resolved = nl.resolve_oif(chan, family, gw)
            err: nl.RouteError | None
            if isinstance(resolved, nl.RouteError):
                err = resolved
            else:
                msg = nl.nexthop_msg(chan.next_seq(1), nhid, family, gw, resolved[0], self.config.protocol,
                                     replace=True)
                async with self._io:
                    err = await asyncio.to_thread(chan.request, msg)
            if err is None:
                assert not isinstance(resolved, nl.RouteError)
                nh.gateway, nh.oif = gw, resolved[0]
                done += 1
            else:
                self._record_error(f"nexthop {new} of {peer}: {err.describe()}")
                self.log.warning("fib_nexthop_change_failed", peer=peer, old=old, new=new,
                                 reason=err.describe())
                del self._nh_by_upstream[(peer, family, new)]
                await self._delete_nexthop(nh)
        child = self.upstreams.get(peer)
        if child is not None:
            done += await child.next_hop_changed(peer, old, new)
        self.log.info("fib_next_hop_changed", peer=peer, old=old, new=new, nexthops=done)
        return done

    # ----------------------------------------------------------------------------------- restart, reconcile

    def mark_stale(self) -> int:
        """Mark every installed route stale (kept, forwarding, until re-learned or swept). Returns count."""
        n = 0
        for family in _FAMILIES:
            self._stale[family] = set(self._installed[family])
            n += len(self._stale[family])
        return n

    async def sweep_stale(self) -> int:
        """Delete stale routes that were not re-learned (and routes of ours at a stale metric).

        Call after End-of-RIB from every peer; also runs after ``stale_timeout``. Returns how many
        routes were queued for deletion; waits until they are written.
        """
        n = 0
        for family in _FAMILIES:
            stale, self._stale[family] = self._stale[family], set()
            pending = self._diff.pending(family)
            for k in stale:
                if k not in pending:
                    self._diff.add(family, k, None)
                    n += 1
        if n:
            self._wake.set()
            self._idle.clear()
        await self.flush()
        await self._delete_stray_metrics()
        await self._collect_nexthops()
        self.log.info("fib_stale_swept", routes=n)
        for child in list(self.upstreams.values()):
            n += await child.sweep_stale()
        return n

    async def _delete_stray_metrics(self) -> None:
        chan = self._chan
        if not self._stray_metric or chan is None:
            return
        strays, self._stray_metric = self._stray_metric, []
        async with self._io:
            data = b"".join(self._codec[f].encode_del_metric(k, m, chan.next_seq(1)) for f, k, m in strays)
            chan.transact(data)

    async def _collect_nexthops(self) -> None:
        """Delete our nexthop objects that no route and no upstream uses any more."""
        used = set(self._nh_by_upstream.values())
        for family in _FAMILIES:
            used.update(self._installed[family].values())
            used.update(v for v in self._diff.pending(family).values() if v is not None)
            used.update(v[0] for v in self._failed[family].values())
        unused = [n for n in self._nh if n not in used]
        if unused:
            # Nothing may claim them while the deletions below await: an adoptable object handed to a
            # re-learned upstream meanwhile would be deleted under its fresh routes.
            drop = set(unused)
            self._adoptable = {k: v for k, v in self._adoptable.items() if v not in drop}
        for nhid in unused:
            nh = self._nh.get(nhid)
            if nh is None:
                continue
            if nh.created:
                await self._delete_nexthop(nh, unused=True)
            else:
                del self._nh[nhid]
        self._adoptable = {k: v for k, v in self._adoptable.items() if v in self._nh}

    async def _stale_timer(self) -> None:
        await asyncio.sleep(self.stale_timeout)
        if any(self._stale.values()):
            self.log.warning("fib_stale_timeout", seconds=self.stale_timeout)
            await self.sweep_stale()

    async def reconcile(self) -> dict[str, int]:
        """Compare the kernel with the desired state and queue repairs; return counts.

        Missing or changed routes are re-written, routes of our protocol that nothing explains are
        deleted, failed routes are retried. Safe while writing: every repair is idempotent.
        """
        if self._chan is None:
            return {}
        chan2 = await asyncio.to_thread(nl.Channel, self.config.netns)
        try:
            routes = await asyncio.to_thread(
                lambda: {f: nl.dump_routes(chan2, self._codec[f]) for f in _FAMILIES})
        finally:
            chan2.close()
        counts = {"missing": 0, "changed": 0, "stray": 0, "retried": 0}
        metric_of = {f: self._metric(f) for f in _FAMILIES}
        for family in _FAMILIES:
            kernel = routes[family]
            installed = self._installed[family]
            pending = self._diff.pending(family)
            prefsrc = self._codec[family].prefsrc
            for key, nhid in list(installed.items()):
                if key in pending:
                    continue
                route = kernel.get(key)
                if route is None or route.metric != metric_of[family]:
                    del installed[key]  # re-add (EXCL: a foreign route there is reported, not clobbered)
                    self._diff.add(family, key, NextHopRef(nhid) if nhid else None)
                    counts["missing"] += 1
                elif nhid and (route.nhid != nhid or route.prefsrc != prefsrc):
                    installed[key] = 0
                    self._diff.add(family, key, NextHopRef(nhid))
                    counts["changed"] += 1
            for key, route in kernel.items():
                if key not in installed and key not in pending and route.metric == metric_of[family]:
                    installed[key] = route.nhid  # so the delete goes out
                    self._diff.add(family, key, None)
                    counts["stray"] += 1
            for key, (nhid, _reason) in list(self._failed[family].items()):
                if key not in pending and nhid in self._nh:
                    self._diff.add(family, key, NextHopRef(nhid))
                    counts["retried"] += 1
        for nh in self._nh.values():  # next hops that may have become reachable
            if nh.gateway_form and not nh.created:
                nh.gateway_form = False
        if len(self._diff):
            self._wake.set()
            self._idle.clear()
        if any(counts.values()):
            self.log.info("fib_reconciled", **counts)
        return counts

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
            try:
                await self.reconcile()
                await self._collect_nexthops()
            except Exception as exc:
                self.log.error("fib_reconcile_failed", reason=repr(exc))

    # ----------------------------------------------------------------------------------- visibility

    def status(self) -> dict[str, Any]:
        """The GET /api/v1/fib body."""
        return {
            "netns": self.config.netns,
            "table": self.config.table,
            "protocol": self.config.protocol,
            "mode": self.config.mode.value,
            "installed": {"ipv4": len(self._installed[Family.IPV4]),
                          "ipv6": len(self._installed[Family.IPV6])},
            "pending": len(self._diff) + self._inflight,
            "stale": sum(len(v) for v in self._stale.values()),  # from before a restart, not re-learned
            "stale_timeout": self.stale_timeout,
            "errors": self.errors,
            "last_error": self.last_error,
        } | ({"upstreams": {peer: {k: v for k, v in child.status().items()
                                   if k in ("table", "installed", "pending", "errors", "last_error")}
                            for peer, child in self.upstreams.items()}} if self.upstreams else {})

    def is_installed(self, family: Family, key: int) -> bool:
        """Whether the kernel holds our route for this prefix (as last written or adopted)."""
        return key in self._installed[family]

    def installed_keys(self, family: Family) -> Iterable[int]:
        return self._installed[family].keys()

    def _gw_text(self, nh: _Nexthop) -> str:
        return socket.inet_ntop(socket.AF_INET if nh.family is Family.IPV4 else socket.AF_INET6, nh.gateway)
