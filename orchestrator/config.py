"""The one validated configuration model, loaded from TOML.

``load_config(path) -> Config`` is the only entry point. ``Config`` is a tree of frozen, slotted
dataclasses; every problem raises ``ConfigError`` naming the file, the line where it can be found,
and the key path (``config.toml:27: peers[2].peer_as: expected an integer``).

CONTRACT (fields below are what the rest of peerctl reads; loading/validation is implemented below).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.rib.prefix import Family


class PeerKind(enum.Enum):
    MUX = "mux"
    UPSTREAM = "upstream"
    ROUTE_SERVER = "route-server"
    IXP_PEER = "ixp-peer"
    COLLECTOR = "collector"


class SpeakerKind(enum.Enum):
    EXABGP = "exabgp"
    NATIVE = "native"


class FibMode(enum.Enum):
    OFF = "off"
    DEFAULT = "default"
    FULL = "full"


DEFAULT_LOCAL_PREF: dict[PeerKind, int] = {
    PeerKind.UPSTREAM: 100,
    PeerKind.MUX: 100,
    PeerKind.ROUTE_SERVER: 140,
    PeerKind.IXP_PEER: 150,
    PeerKind.COLLECTOR: 100,
}


@dataclass(frozen=True, slots=True)
class LocalConfig:
    asn: int
    router_id: str
    source4: str | None = None
    source6: str | None = None


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8179


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    dir: Path = Path("run")  # resolved relative to the config file
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class DecisionConfig:
    always_compare_med: bool = False


@dataclass(frozen=True, slots=True)
class FibConfig:
    mode: FibMode = FibMode.OFF
    table: int = 254
    protocol: int = 201
    metric: int = 0
    netns: str = ""
    source_interface: str = ""
    per_upstream_tables: bool = False


@dataclass(frozen=True, slots=True)
class PeerConfig:
    name: str
    kind: PeerKind
    neighbor: str
    peer_as: int
    local_address: str | None = None
    families: tuple[Family, ...] = (Family.IPV4, Family.IPV6)
    hold_time: int = 90
    passive: bool = False
    multihop: int | None = None  # TTL; None = directly connected (ExaBGP/BIRD default)
    password: str | None = None  # TCP-MD5
    speaker: SpeakerKind = SpeakerKind.EXABGP
    local_pref: int = 100  # resolved from DEFAULT_LOCAL_PREF by kind unless set
    port: int = 179
    description: str = ""
    template: str | None = None


@dataclass(frozen=True, slots=True)
class LabConfig:
    enabled: bool = False
    feeders: tuple[str, ...] = ()
    seed: int = 1
    ipv4_prefixes: int = 200_000
    ipv6_prefixes: int = 50_000
    overlap: float = 0.6


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    local: LocalConfig
    api: ApiConfig = field(default_factory=ApiConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    fib: FibConfig = field(default_factory=FibConfig)
    peers: tuple[PeerConfig, ...] = ()
    lab: LabConfig = field(default_factory=LabConfig)

    def peer(self, name: str) -> PeerConfig:
        for p in self.peers:
            if p.name == name:
                return p
        raise KeyError(name)


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve ``path``. Raises ConfigError."""
    raise NotImplementedError  # implemented by the config work
