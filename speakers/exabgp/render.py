"""exabgp.conf and environment for one peer (pure).

Facts about ExaBGP 5.0.15 this relies on (read from its source in site-packages):

* ``connect PORT;`` is the peer's port, ``listen PORT;`` makes ExaBGP bind ``local-address:PORT`` for
  this neighbor. ``passive;`` alone only stops ExaBGP from connecting: it listens only with ``listen``
  (or ``exabgp.tcp.bind``), so a passive peer gets ``listen 179`` and needs ``local_address``.
* ``outgoing-ttl N;`` is the multihop TTL; without it the OS default TTL is used.
* ExaBGP always calls ``drop_privileges()`` and setuid()s to ``exabgp.daemon.user`` (default
  ``nobody``); ``exabgp.daemon.drop=false`` only means API processes are started *before* the drop.
  We set the user to whoever runs peerctl, which makes the drop a no-op (also as root).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence

from orchestrator.config import LocalConfig, PeerConfig

PROCESS_NAME = "peerctl"

_GRACEFUL_RESTART_TIME = 120


def _check_token(value: str, what: str) -> str:
    """Config values are written bare; refuse anything that would break ExaBGP's tokeniser."""
    if not value or any(c in value for c in " \t\n;{}[]\"'#"):
        raise ValueError(f"{what}: unusable in exabgp.conf: {value!r}")
    return value


def render_config(peer: PeerConfig, local: LocalConfig, relay_argv: Sequence[str]) -> str:
    """exabgp.conf text for ``peer``. ``relay_argv`` is the API program (absolute path first).

    Raises ValueError when a value cannot be written safely (spaces, semicolons, relative program).
    """
    if not relay_argv or not os.path.isabs(relay_argv[0]):
        raise ValueError(f"relay program must be an absolute path: {relay_argv!r}")
    for arg in relay_argv:
        _check_token(arg, "relay argument")
    if peer.passive and not peer.local_address:
        raise ValueError(f"{peer.name}: a passive peer needs local_address to listen on")
    lines = [
        f"process {PROCESS_NAME} {{",
        f"    run {' '.join(relay_argv)};",
        "    encoder json;",
        "}",
        "",
        f"neighbor {_check_token(peer.neighbor, 'neighbor')} {{",
        f'    description "{peer.name}";' if _safe_description(peer.name) else "",
        f"    router-id {_check_token(local.router_id, 'router_id')};",
    ]
    if peer.local_address:
        lines.append(f"    local-address {_check_token(peer.local_address, 'local_address')};")
    lines += [
        f"    local-as {local.asn};",
        f"    peer-as {peer.peer_as};",
        f"    hold-time {peer.hold_time};",
        "    adj-rib-in false;",  # we keep the RIB; ExaBGP's costs 1.45 GB and 1.5x time per 1M prefixes
    ]
    if peer.port != 179:
        lines.append(f"    connect {peer.port};")
    if peer.passive:
        lines += ["    passive true;", f"    listen {peer.port};"]
    if peer.multihop is not None:
        lines.append(f"    outgoing-ttl {peer.multihop};")
    if peer.password:
        lines.append(f'    md5-password "{_quote(peer.password)}";')
    lines += ["    family {"]
    for family in peer.families:
        lines.append(f"        {family.value};")
    lines += [
        "    }",
        "    capability {",
        f"        graceful-restart {_GRACEFUL_RESTART_TIME};",
        "        route-refresh;",
        "    }",
        "    api {",
        f"        processes [ {PROCESS_NAME} ];",
        "        neighbor-changes;",
        "        receive { parsed; update; open; notification; }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(line for line in lines if line)


def _safe_description(text: str) -> bool:
    return all(c.isalnum() or c in "-_.:@/+" for c in text) and bool(text)


def _quote(text: str) -> str:
    if any(c in text for c in '"\\\n;'):
        raise ValueError("md5 password must not contain quotes, backslashes, ';' or newlines")
    return text


def render_env(pipename: str = "peerctl") -> dict[str, str]:
    """Environment variables for one ExaBGP process (added to the parent's environment).

    Logging: only errors, on stderr (the process captures them). Acks on (flow control), no CLI
    named pipes, no listening socket except the per-neighbor ``listen`` in the config, no respawn of
    the relay (when the relay dies the peerctl side is gone: ExaBGP must exit so we restart it).
    """
    user = pwd.getpwuid(os.getuid()).pw_name
    return {
        "exabgp.daemon.user": user,
        "exabgp.daemon.drop": "false",
        "exabgp.daemon.daemonize": "false",
        "exabgp.daemon.pid": "",
        "exabgp.log.enable": "true",
        "exabgp.log.level": "ERROR",
        "exabgp.log.destination": "stderr",
        "exabgp.log.short": "true",
        "exabgp.log.routes": "false",
        "exabgp.log.packets": "false",
        "exabgp.api.ack": "true",
        "exabgp.api.cli": "false",
        "exabgp.api.pipename": pipename,
        "exabgp.api.encoder": "json",
        "exabgp.api.compact": "true",  # NLRI as plain strings: fewer bytes for ExaBGP and us
        "exabgp.api.respawn": "false",
        "exabgp.api.terminate": "true",
        "exabgp.tcp.bind": "",
        "exabgp.bgp.passive": "false",
        "exabgp.cache.attributes": "true",
    }


__all__ = ["PROCESS_NAME", "render_config", "render_env"]
