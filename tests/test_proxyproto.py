"""The PROXY protocol parser: v1, v2, every split point, malformed and truncated headers."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactorkit.errors import ProxyProtocolError
from reactorkit.proxyproto import (
    MAX_V1_HEADER,
    NEED_DATA,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyParser,
)


def v2(
    command: int = 1,
    family: int = 0x11,
    src: str = "192.0.2.1",
    dst: str = "198.51.100.2",
    sport: int = 40000,
    dport: int = 443,
    tlvs: bytes = b"",
) -> bytes:
    if family in (0x11, 0x12, 0x21, 0x22):
        payload = (
            ipaddress.ip_address(src).packed
            + ipaddress.ip_address(dst).packed
            + struct.pack("!HH", sport, dport)
        )
    elif family in (0x31, 0x32):
        payload = b"\0" * 216
    else:
        payload = b""
    payload += tlvs
    head = bytes([0x20 | command, family]) + struct.pack("!H", len(payload))
    return V2_SIGNATURE + head + payload


def parse(data: bytes, mode: str = "any") -> tuple[ProxyHeader, bytes]:
    parser = ProxyParser(mode)
    parser.feed(data)
    event = parser.next_event()
    assert isinstance(event, ProxyHeader)
    return event, parser.trailing_data


def test_v1_tcp4() -> None:
    header, rest = parse(b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\nGET /")
    assert header == ProxyHeader(
        version=1,
        command="PROXY",
        family="TCP4",
        source=("192.0.2.1", 40000),
        destination=("198.51.100.2", 443),
    )
    assert rest == b"GET /"


def test_v1_tcp6_and_unknown() -> None:
    header, _ = parse(b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n")
    assert header.source == ("2001:db8::1", 1)
    header, rest = parse(b"PROXY UNKNOWN whatever\r\nx")
    assert (header.command, header.source, rest) == ("LOCAL", None, b"x")


def test_v2_tcp4_tcp6_local_and_tlvs() -> None:
    header, rest = parse(v2(tlvs=b"\x04\x00\x01x") + b"hello")
    assert header.source == ("192.0.2.1", 40000)
    assert header.destination == ("198.51.100.2", 443)
    assert header.tlvs == b"\x04\x00\x01x"
    assert rest == b"hello"
    header, _ = parse(v2(family=0x21, src="2001:db8::7", dst="::1"))
    assert (header.family, header.source) == ("TCP6", ("2001:db8::7", 40000))
    header, _ = parse(v2(command=0, family=0x00))
    assert (header.command, header.source) == ("LOCAL", None)
    header, _ = parse(v2(family=0x31))
    assert (header.family, header.source) == ("UNIX", None)


HEADERS = [
    b"PROXY TCP4 192.0.2.1 198.51.100.2 40000 443\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(),
    v2(family=0x21, src="2001:db8::1", dst="2001:db8::2"),
    v2(command=0, family=0),
]


@given(
    index=st.sampled_from(range(len(HEADERS))),
    after=st.binary(max_size=64),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_every_split_gives_the_same_header_and_keeps_the_rest(
    index: int, after: bytes, cuts: list[int]
) -> None:
    data = HEADERS[index] + after
    whole, rest = parse(data)
    assert rest == after
    parser = ProxyParser("any")
    points = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    start = 0
    event: object = NEED_DATA
    for point in points:
        parser.feed(data[start:point])
        start = point
        event = parser.next_event()
        if event is not NEED_DATA:
            break
    parser.feed(data[start:])
    assert event == whole
    assert parser.trailing_data == after


@pytest.mark.parametrize("header", HEADERS)
def test_every_strict_prefix_needs_data(header: bytes) -> None:
    for cut in range(len(header)):
        parser = ProxyParser("any")
        parser.feed(header[:cut])
        assert parser.next_event() is NEED_DATA, cut


@given(st.binary(min_size=1, max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    parser = ProxyParser("any")
    parser.feed(data)
    try:
        event = parser.next_event()
    except ProxyProtocolError:
        return
    assert event is NEED_DATA or isinstance(event, ProxyHeader)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "expected a PROXY header"),
        (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", "needs 4 fields"),
        (b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n", "bad address"),
        (b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", "not an IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "not an IPv6"),
        (b"PROXY TCP6 fe80::1%\x1b[2J\x00 ::1 1 2\r\n", "bad address"),  # a zone: log injection
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad address"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 -1 2\r\n", "bad port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "without CRLF"),
        (b"PROXY " + b"x" * MAX_V1_HEADER, "longer than"),
        (b"PROXY TCP4 \xff\r\n", "not ASCII"),
        (V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\0" * 12, "version 3"),
        (V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\0" * 12, "unknown command"),
        (V2_SIGNATURE + b"\x21\x41\x00\x0c" + b"\0" * 12, "unknown address family"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\0" * 4, "needs 12 address bytes"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "exceeds"),
    ],
)
def test_malformed_headers_are_errors(data: bytes, message: str) -> None:
    parser = ProxyParser("any")
    parser.feed(data)
    with pytest.raises(ProxyProtocolError, match=message):
        parser.next_event()


def test_mode_restricts_the_version() -> None:
    parser = ProxyParser("v1")
    parser.feed(v2())
    with pytest.raises(ProxyProtocolError, match="v1 header"):
        parser.next_event()
    parser = ProxyParser("v2")
    parser.feed(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\n")
    with pytest.raises(ProxyProtocolError, match="v2 header"):
        parser.next_event()
    with pytest.raises(ValueError, match="mode"):
        ProxyParser("v3")


def test_wrong_first_byte_is_an_error_at_once() -> None:
    parser = ProxyParser("any")
    parser.feed(b"\x16")  # a TLS ClientHello where a header belongs
    with pytest.raises(ProxyProtocolError):
        parser.next_event()
