"""Policy parts of the TOML config → frozen dataclasses (wired into ``orchestrator.config`` later).

Peer / template table keys (all optional)::

    import = "none" | "all" | { bogon_prefixes = true, accept_default = false, bogon_asns = true,
              prefix_length = true, min4 = 8, max4 = 24, min6 = 12, max6 = 48, local_as = true,
              max_path_length = 100, first_as = true, transit_asns = false, transit_asn_list = [..],
              next_hop = true, local_pref = 100, communities = ["65000:1"],
              large_communities = ["65000:1:2"], tag_kind = true }
    max_prefix = { ipv4 = 1000000, ipv6 = 300000, action = "warn|reject|teardown|restart",
                   restart_after = 300 }
    irr = { as_set = "AS-FOO", file = "foo.txt", child_prefixes = false }   # as_set, file or both
    rpki = { vrp_file = "vrps.json", invalid = "reject|accept", not_found = "accept|reject" }
    dampening = { enabled = true, half_life = 900, suppress = 6000, reuse = 750, max_suppress = 3600,
                  withdraw = 1000, readvertise = 1000, attribute_change = 500 }
    export = "none" | "all" | { prefixes = ["198.51.100.0/24 le 24"], allow_poisoning = true,
              prepend = 0, communities = ["65000:1"], large_communities = ["65000:1:2"],
              max_path_length = 5 }

``import = "all"`` turns every filter off (iBGP / lab feeders); a table applies Pathvector's defaults
for the peer kind (``ImportRules.for_kind``) with the given overrides. ``export`` filters *our*
announcements towards the peer (``ExportRules``; peerctl re-exports nothing it learned): absent or
``"all"`` lets every announcement through, ``"none"`` refuses them all. Top level::

    [safety]   # PEERING announcement rules
    allocated = ["184.164.224.0/19"] | allocated_file = "prefixes.txt"
    max4 = 24, max6 = 48, max_path_length = 5, max_as_set = 5, max_communities = 5,
    min_interval = 600, allow_poisoning = false, origins = [47065]

Every problem raises ``ConfigError(file, key_path, message)``; unknown keys are rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from orchestrator.config import PeerKind
from orchestrator.errors import ConfigError
from orchestrator.rib.attrs import parse_community, parse_large_community
from policies.dampening import DampeningParams
from policies.model import LimitAction, MaxPrefix, Verdict
from policies.prefixset import parse_lines
from policies.rules import ExportRules, ImportRules
from policies.safety import SafetyRules


@dataclass(frozen=True, slots=True)
class IrrConfig:
    as_set: str | None = None  # AS-SET or ASnnn for ``peerctl irr refresh`` (bgpq4)
    file: Path | None = None  # the list read (and written by refresh); None: runtime.dir/irr/PEER.json
    child_prefixes: bool = False  # Pathvector irr-accept-child-prefixes


@dataclass(frozen=True, slots=True)
class RpkiConfig:
    vrp_file: Path | None = None
    invalid: Verdict = Verdict.REJECT
    not_found: Verdict = Verdict.ACCEPT


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    import_rules: ImportRules
    irr: IrrConfig | None = None
    rpki: RpkiConfig | None = None
    dampening: DampeningParams = field(default_factory=DampeningParams)
    export: ExportRules = field(default_factory=ExportRules)

    @property
    def export_all(self) -> bool:
        """``export = "all"`` (or absent): every announcement passes unchanged."""
        return self.export == ExportRules()


POLICY_KEYS = frozenset({"import", "max_prefix", "irr", "rpki", "dampening", "export"})


class _Ctx:
    def __init__(self, file: str, base: str) -> None:
        self.file, self.base = file, base

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError(self.file, f"{self.base}.{key}" if self.base else key, msg)

    def table(self, value: Any, key: str, allowed: set[str] | frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.err(key, "expected a table")
        for k in value:
            if k not in allowed:
                raise self.err(f"{key}.{k}", f"unknown key (expected one of {', '.join(sorted(allowed))})")
        return value

    def typed(self, value: Any, key: str, kind: type | tuple[type, ...]) -> Any:
        if isinstance(value, bool) and kind is not bool and (kind != (int, float)):
            raise self.err(key, f"expected {getattr(kind, '__name__', 'a number')}, got a boolean")
        if isinstance(value, bool) and kind == (int, float):
            raise self.err(key, "expected a number, got a boolean")
        if not isinstance(value, kind):
            name = kind.__name__ if isinstance(kind, type) else "a number"
            raise self.err(key, f"expected {name}, got {type(value).__name__}")
        return value

    def path(self, value: Any, key: str, root: Path) -> Path:
        p = Path(self.typed(value, key, str))
        return p if p.is_absolute() else root / p


def _verdict(c: _Ctx, value: Any, key: str) -> Verdict:
    text = c.typed(value, key, str)
    if text not in ("accept", "reject"):
        raise c.err(key, f"expected 'accept' or 'reject', got {text!r}")
    return Verdict(text)


_RULE_FIELDS = {f.name: f for f in fields(ImportRules)} .keys() - {"enabled", "max_prefix", "rpki_invalid",
                                                                 "rpki_not_found", "irr"}


def parse_import(c: _Ctx, value: Any, kind: PeerKind) -> ImportRules:
    if value == "none":
        return ImportRules.none()
    if value == "all":
        return ImportRules(bogon_prefixes=False, bogon_asns=False, prefix_length=False, local_as=False,
                           max_path_length=None, first_as=False, transit_asns=False, next_hop=False,
                           rpki_invalid=Verdict.ACCEPT, irr=False, max_prefix=None)
    if isinstance(value, str):
        raise c.err("import", f"expected 'none', 'all' or a table, got {value!r}")
    table = c.table(value, "import", _RULE_FIELDS)
    over: dict[str, Any] = {}
    for k, v in table.items():
        key = f"import.{k}"
        if k in ("communities",):
            try:
                over[k] = tuple(parse_community(x) for x in c.typed(v, key, list))
            except (ValueError, TypeError) as exc:
                raise c.err(key, str(exc)) from None
        elif k == "large_communities":
            try:
                over[k] = tuple(parse_large_community(x) for x in c.typed(v, key, list))
            except (ValueError, TypeError, AttributeError) as exc:
                raise c.err(key, str(exc)) from None
        elif k == "transit_asn_list":
            over[k] = tuple(c.typed(x, f"{key}[{i}]", int) for i, x in enumerate(c.typed(v, key, list)))
        elif k in ("min4", "max4", "min6", "max6", "max_path_length", "local_pref"):
            over[k] = c.typed(v, key, int)
            if over[k] < 0:
                raise c.err(key, "must be >= 0")
        else:
            over[k] = c.typed(v, key, bool)
    rules = ImportRules.for_kind(kind, **over)
    if not rules.min4 <= rules.max4 <= 32 or not rules.min6 <= rules.max6 <= 128:
        raise c.err("import", "need min4 <= max4 <= 32 and min6 <= max6 <= 128")
    return rules


def parse_max_prefix(c: _Ctx, value: Any) -> MaxPrefix:
    t = c.table(value, "max_prefix", {"ipv4", "ipv6", "action", "restart_after"})
    action = t.get("action", "teardown")
    try:
        act = LimitAction(action)
    except ValueError:
        raise c.err("max_prefix.action", f"expected warn, reject, teardown or restart, got {action!r}") \
            from None
    limits = {}
    for fam in ("ipv4", "ipv6"):
        if fam in t:
            n = c.typed(t[fam], f"max_prefix.{fam}", int)
            if n < 1:
                raise c.err(f"max_prefix.{fam}", "must be >= 1")
            limits[fam] = n
    delay = float(c.typed(t.get("restart_after", 300), "max_prefix.restart_after", (int, float)))
    return MaxPrefix(limits.get("ipv4"), limits.get("ipv6"), act, delay)


def parse_peer_policy(table: Mapping[str, Any], *, kind: PeerKind, file: str = "config.toml",
                      key_path: str = "", root: Path | None = None) -> PeerPolicy:
    """The policy keys of one peer/template table (other keys are ignored: the peer loader owns them)."""
    c = _Ctx(file, key_path)
    root = root or Path(file).parent
    rules = parse_import(c, table["import"], kind) if "import" in table else ImportRules.for_kind(kind)
    if "max_prefix" in table:
        if not rules.enabled:
            raise c.err("max_prefix", "meaningless with import = \"none\"")
        rules = replace(rules, max_prefix=parse_max_prefix(c, table["max_prefix"]))
    irr = rpki = None
    if "irr" in table:
        t = c.table(table["irr"], "irr", {"as_set", "file", "child_prefixes"})
        if "as_set" not in t and "file" not in t:
            raise c.err("irr", "give as_set (bgpq4 fills runtime.dir/irr/PEER.json, or file), file, or both")
        irr = IrrConfig(c.typed(t["as_set"], "irr.as_set", str) if "as_set" in t else None,
                        c.path(t["file"], "irr.file", root) if "file" in t else None,
                        c.typed(t.get("child_prefixes", False), "irr.child_prefixes", bool))
    if "rpki" in table:
        t = c.table(table["rpki"], "rpki", {"vrp_file", "invalid", "not_found"})
        if "vrp_file" not in t:
            raise c.err("rpki.vrp_file", "required")
        rpki = RpkiConfig(c.path(t["vrp_file"], "rpki.vrp_file", root),
                          _verdict(c, t.get("invalid", "reject"), "rpki.invalid"),
                          _verdict(c, t.get("not_found", "accept"), "rpki.not_found"))
    damp = DampeningParams()
    if "dampening" in table:
        names = {f.name for f in fields(DampeningParams)}
        t = c.table(table["dampening"], "dampening", names)
        args: dict[str, Any] = {}
        for k, v in t.items():
            args[k] = c.typed(v, f"dampening.{k}", bool) if k == "enabled" else \
                float(c.typed(v, f"dampening.{k}", (int, float)))
        args.setdefault("enabled", True)
        try:
            damp = DampeningParams(**args)
        except ValueError as exc:
            raise c.err("dampening", str(exc)) from None
    export = parse_export(c, table["export"]) if "export" in table else ExportRules()
    return PeerPolicy(rules, irr, rpki, damp, export)


_EXPORT_KEYS = frozenset({"prefixes", "allow_poisoning", "prepend", "communities", "large_communities",
                          "max_path_length"})


def parse_export(c: _Ctx, value: Any) -> ExportRules:
    if value == "none":
        return ExportRules.none()
    if value == "all":
        return ExportRules()
    if isinstance(value, str):
        raise c.err("export", f"expected 'none', 'all' or a table, got {value!r}")
    t = c.table(value, "export", _EXPORT_KEYS)
    prefixes = None
    if "prefixes" in t:
        try:
            prefixes = tuple(parse_lines(c.typed(t["prefixes"], "export.prefixes", list)))
        except (ValueError, TypeError) as exc:
            raise c.err("export.prefixes", str(exc)) from None
    try:
        comms = tuple(parse_community(x) for x in c.typed(t.get("communities", []), "export.communities",
                                                          list))
        large = tuple(parse_large_community(x)
                      for x in c.typed(t.get("large_communities", []), "export.large_communities", list))
    except (ValueError, TypeError, AttributeError) as exc:
        raise c.err("export.communities", str(exc)) from None
    prepend = c.typed(t.get("prepend", 0), "export.prepend", int)
    if not 0 <= prepend <= 10:
        raise c.err("export.prepend", "must be 0..10")
    mpl = t.get("max_path_length")
    if mpl is not None and c.typed(mpl, "export.max_path_length", int) < 1:
        raise c.err("export.max_path_length", "must be >= 1")
    poisoning = c.typed(t.get("allow_poisoning", True), "export.allow_poisoning", bool)
    return ExportRules(True, prefixes, poisoning, prepend, comms, large, mpl)


SAFETY_KEYS = frozenset({"allocated", "allocated_file", "max4", "max6", "max_path_length", "max_as_set",
                         "max_communities", "min_interval", "allow_poisoning", "origins"})


def parse_safety(table: Mapping[str, Any], *, local_asn: int, file: str = "config.toml",
                 key_path: str = "safety", root: Path | None = None) -> SafetyRules:
    c = _Ctx(file, "")
    t = c.table(table, key_path, SAFETY_KEYS)
    root = root or Path(file).parent
    k = key_path + "."
    prefixes: list[str] = []
    if "allocated" in t:
        prefixes += [c.typed(p, f"{k}allocated[{i}]", str)
                     for i, p in enumerate(c.typed(t["allocated"], k + "allocated", list))]
    if "allocated_file" in t:
        path = c.path(t["allocated_file"], k + "allocated_file", root)
        try:
            prefixes += [str(e).split()[0] for e in parse_lines(path.read_text().splitlines())]
        except (OSError, ValueError) as exc:
            raise c.err(k + "allocated_file", str(exc)) from None
    if not prefixes:
        raise c.err(k + "allocated", "at least one allocated prefix is required")

    def num(name: str, default: int) -> int:
        v = c.typed(t.get(name, default), k + name, int)
        if v < 0:
            raise c.err(k + name, "must be >= 0")
        return int(v)

    try:
        allocated = SafetyRules.allocation(prefixes, num("max4", 24), num("max6", 48))
    except ValueError as exc:
        raise c.err(k + "allocated", str(exc)) from None
    return SafetyRules(
        local_asn=local_asn, allocated=allocated, max_path_length=num("max_path_length", 5),
        max_as_set=num("max_as_set", 5), max_communities=num("max_communities", 5),
        min_interval=float(c.typed(t.get("min_interval", 600), k + "min_interval", (int, float))),
        allow_poisoning=c.typed(t.get("allow_poisoning", False), k + "allow_poisoning", bool),
        origins=tuple(c.typed(x, f"{k}origins[{i}]", int)
                      for i, x in enumerate(c.typed(t.get("origins", []), k + "origins", list))))
