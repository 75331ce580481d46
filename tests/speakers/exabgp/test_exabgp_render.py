"""render_config / render_env, checked by ExaBGP 5.0.15 itself (``exabgp validate``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import LocalConfig, PeerConfig, PeerKind
from orchestrator.rib.prefix import Family
from speakers.exabgp.render import render_config, render_env

EXABGP = Path(sys.executable).parent / "exabgp"
LOCAL = LocalConfig(asn=65001, router_id="127.0.50.1")
RELAY = ["/usr/bin/python3", "-I", "-S", "/opt/relay.py", "/run/peerctl/x/api.sock"]


def peer(**kw: object) -> PeerConfig:
    base: dict[str, object] = dict(name="up1", kind=PeerKind.UPSTREAM, neighbor="127.0.50.2", peer_as=65002)
    base.update(kw)
    return PeerConfig(**base)  # type: ignore[arg-type]


def validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    env = dict(os.environ)
    env.update(render_env())  # the env values must be accepted too (ExaBGP parses them at start)
    return subprocess.run(
        [str(EXABGP), "validate", str(conf)], capture_output=True, text=True, env=env, timeout=60
    )


def test_minimal_config_lines() -> None:
    text = render_config(peer(), LOCAL, RELAY)
    assert "run /usr/bin/python3 -I -S /opt/relay.py /run/peerctl/x/api.sock;" in text
    for line in (
        "router-id 127.0.50.1;",
        "local-as 65001;",
        "peer-as 65002;",
        "hold-time 90;",
        "adj-rib-in false;",
        "ipv4 unicast;",
        "ipv6 unicast;",
        "graceful-restart 120;",
        "route-refresh;",
        "neighbor-changes;",
        "receive { parsed; update; open; notification; }",
    ):
        assert line in text
    for absent in ("passive", "listen", "connect", "outgoing-ttl", "md5-password", "local-address"):
        assert absent not in text


def test_all_options_lines() -> None:
    text = render_config(
        peer(
            local_address="127.0.50.1",
            passive=True,
            multihop=3,
            password="s3cret",
            port=1179,
            families=(Family.IPV6,),
            hold_time=30,
        ),
        LOCAL,
        RELAY,
    )
    for line in (
        "local-address 127.0.50.1;",
        "passive true;",
        "listen 1179;",
        "connect 1179;",
        "outgoing-ttl 3;",
        'md5-password "s3cret";',
        "hold-time 30;",
    ):
        assert line in text
    assert "ipv4 unicast" not in text


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {
            "local_address": "127.0.50.1",
            "passive": True,
            "multihop": 3,
            "password": "s3cret",
            "port": 1179,
            "families": (Family.IPV4,),
        },
    ],
)
def test_exabgp_validates(tmp_path: Path, kw: dict[str, object]) -> None:
    result = validate(tmp_path, render_config(peer(**kw), LOCAL, RELAY))
    assert result.returncode == 0, result.stdout + result.stderr


def test_validate_rejects_garbage(tmp_path: Path) -> None:
    """Guards the test above: ``exabgp validate`` really fails on a broken config."""
    result = validate(tmp_path, render_config(peer(), LOCAL, RELAY).replace("peer-as", "peer-ass"))
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("kw", "argv"),
    [
        ({}, ["relative/relay.py"]),
        ({}, ["/usr/bin/python3", "a b"]),
        ({"neighbor": "127.0.0.1; }"}, RELAY),
        ({"passive": True}, RELAY),  # passive needs local_address to listen on
        ({"password": 'a"b'}, RELAY),
    ],
)
def test_unsafe_values_rejected(kw: dict[str, object], argv: list[str]) -> None:
    with pytest.raises(ValueError):
        render_config(peer(**kw), LOCAL, argv)


def test_env_runs_as_current_user_and_quiet() -> None:
    env = render_env()
    import pwd

    assert env["exabgp.daemon.user"] == pwd.getpwuid(os.getuid()).pw_name
    assert env["exabgp.daemon.drop"] == "false"
    assert env["exabgp.api.ack"] == "true"
    assert env["exabgp.api.cli"] == "false"
    assert env["exabgp.tcp.bind"] == ""
    assert env["exabgp.log.level"] == "ERROR"
