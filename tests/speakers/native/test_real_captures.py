"""The native codec and session on 20 captures of real BGP sessions (../shared/data/real/pcap/bgp:
Cisco, Juniper, FRR, GoBGP, ExaBGP peers; 2- and 4-byte ASNs, ADD-PATH, MP-BGP, flowspec, VPN,
labeled unicast, notifications, route refresh), checked against Wireshark's decoder: the message
types, the announced and withdrawn prefixes and the AS_SET of every capture equal what tshark
printed for the same files (tests/speakers/native/data/pcap_bgp_tshark.json). Families we do not
carry (flowspec, VPNv4, labeled unicast) are skipped and reported, never an exception."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.rib.attrs import AS_SET
from orchestrator.rib.prefix import Family, format_prefix
from speakers.events import PeerUp, Update
from speakers.native import codec
from speakers.native.session import BgpSession, SessionConfig, State

from .pcapstreams import Flow, bgp_streams

CAPTURES = Path(__file__).resolve().parents[4] / "shared" / "data" / "real" / "pcap" / "bgp"
ORACLE = json.loads((Path(__file__).parent / "data" / "pcap_bgp_tshark.json").read_text())["captures"]


def _messages(name: str) -> dict[Flow, list[tuple[int, bytes]]]:
    path = CAPTURES / name
    if not path.exists():
        pytest.skip(f"{path} absent (../shared beside the repository)")
    out = {}
    for flow, data in bgp_streams(path.read_bytes()).items():
        buf = bytearray(data)
        out[flow] = [(t, bytes(b)) for t, b in codec.split_messages(buf, codec.MAX_EXTENDED_MESSAGE)]
        assert not buf, f"{name}: {len(buf)} bytes left after the last whole message"
    return out


def _decoded(name: str) -> Iterator[tuple[Flow, codec.DecodedUpdate]]:
    """Every UPDATE decoded as its session negotiated it (2- or 4-byte ASNs, ADD-PATH); without an
    OPEN in the capture, as 4-byte first and 2-byte when that shows attribute errors."""
    flows = _messages(name)
    opens = [codec.decode_open(b) for msgs in flows.values() for t, b in msgs if t == codec.MSG_OPEN]
    asn4 = all(o.asn4 for o in opens) if opens else None
    add_path = bool(opens) and all(o.add_path for o in opens)
    for flow, msgs in flows.items():
        for t, body in msgs:
            if t != codec.MSG_UPDATE:
                continue
            if asn4 is not None:
                yield flow, codec.decode_update(body, asn4=asn4, add_path=add_path)
                continue
            first = codec.decode_update(body, asn4=True)
            yield flow, (first if not first.errors else codec.decode_update(body, asn4=False))


def _address(family: Family, key: int) -> str:
    return format_prefix(family, key).split("/")[0]


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_message_types_as_wireshark_sees_them(name: str) -> None:
    types = sorted(t for msgs in _messages(name).values() for t, _ in msgs)
    assert types == ORACLE[name]["types"]


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_prefixes_and_paths_as_wireshark_sees_them(name: str) -> None:
    announced: list[str] = []
    withdrawn: list[str] = []
    as_set = False
    for _, update in _decoded(name):
        assert not update.errors, update.errors
        for fu in update.families:
            announced += [_address(fu.family, k) for k in fu.announce]
            withdrawn += [_address(fu.family, k) for k in fu.withdraw]
            as_set |= fu.attrs is not None and any(seg == AS_SET for seg, _ in fu.attrs.as_path)
    # tshark prints IPv6 prefixes compressed, as we do; compare as multisets
    assert sorted(announced) == ORACLE[name]["announced"]
    assert sorted(withdrawn) == ORACLE[name]["withdrawn"]
    assert as_set == ORACLE[name]["as_set"]


@pytest.mark.parametrize(("name", "unsupported"), [
    ("BGP_flowspec_v4.cap", {(1, 133)}), ("BGP_flowspec_v6.cap", {(2, 133)}),
    ("BGP_flowspec_dscp.cap", {(2, 133)}), ("BGP_flowspec_redirect.cap", {(2, 133)}),
    ("BGP_redist.cap", {(1, 128)}), ("bgplu.cap", {(1, 4)}),
])  # fmt: skip
def test_families_we_do_not_carry_are_skipped_and_named(name: str, unsupported: set[tuple[int, int]]) -> None:
    seen = {pair for _, update in _decoded(name) for pair in update.unsupported}
    assert seen == unsupported


def test_open_messages() -> None:
    four = [codec.decode_open(b) for msgs in _messages("4-byte_AS_numbers_Full_Support.cap").values()
            for t, b in msgs if t == codec.MSG_OPEN]  # fmt: skip
    assert sorted(o.asn for o in four) == ORACLE["4-byte_AS_numbers_Full_Support.cap"]["open_4byte_as"]
    assert all(o.asn4 and o.asn > 65535 for o in four)  # AS 10.1 and 40.1 in asdot
    addpath = [codec.decode_open(b) for msgs in _messages("bgp-add-path.cap").values()
               for t, b in msgs if t == codec.MSG_OPEN]  # fmt: skip
    assert all(o.add_path == ((Family.IPV4, 3),) for o in addpath)
    notes = [codec.decode_notification(b)[:2]
             for name in ("BGP_notification.cap", "BGP_notification_msg.cap")
             for msgs in _messages(name).values()
             for t, b in msgs if t == codec.MSG_NOTIFICATION]  # fmt: skip
    assert notes == [(2, 2), (2, 2)]  # OPEN message error, bad peer AS


SESSIONS = ["16-bit-asn.cap", "4-byte_AS_numbers_Full_Support.cap", "BGP_AS_set.cap", "BGP_MP_NLRI.cap",
            "BGP_hard_reset.cap", "EBGP_adjacency.cap", "IBGP_adjacency.cap", "bgp-add-path.cap"]


@pytest.mark.parametrize("accelerated", [True, False], ids=["c", "pure"])
@pytest.mark.parametrize("name", SESSIONS)
def test_our_session_takes_each_real_peer(
    name: str, accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each side's byte stream, as sent by the real router, fed to our FSM as the peer: the session
    comes up and carries exactly the prefixes the codec found in that stream. With the C accelerator
    (when built) and with the pure-Python reference."""
    if not accelerated:
        monkeypatch.setattr(codec, "plain_updates", None)
        monkeypatch.setattr(codec, "decode_plain_update", codec.decode_plain_update_py)
    flows = _messages(name)
    checked = 0
    for msgs in flows.values():
        opens = [codec.decode_open(b) for t, b in msgs if t == codec.MSG_OPEN]
        if len(opens) != 1:
            continue
        peer = opens[0]
        cfg = SessionConfig(peer="real", local_as=64999, peer_as=peer.asn, router_id="192.0.2.254",
                            hold_time=180, add_path_receive=bool(peer.add_path))  # fmt: skip
        session = BgpSession(cfg)
        session.start(0.0)
        session.connection_made(0.0)
        stream = b"".join(codec._header(codec.HEADER_LEN + len(b), t) + b for t, b in msgs
                          if t != codec.MSG_NOTIFICATION)  # fmt: skip
        events: list[Any] = []
        for i in range(0, len(stream), 1000):  # as TCP may cut it
            session.receive_data(stream[i:i + 1000], 1.0)
            events += list(session.events())
        assert session.state is State.ESTABLISHED, (name, session.state)
        (up,) = [e for e in events if isinstance(e, PeerUp)]
        assert up.peer_as == peer.asn
        got = sum(len(e.announce) for e in events if isinstance(e, Update))
        want = 0
        negotiated = session.negotiated
        assert negotiated is not None
        for t, body in msgs:
            if t == codec.MSG_UPDATE:
                d = codec.decode_update(body, asn4=negotiated.asn4, add_path=negotiated.add_path)
                want += sum(len(fu.announce) for fu in d.families if fu.family in negotiated.families)
        assert got == want
        checked += 1
    assert checked >= 1
