"""PROXY protocol v1 and v2 headers: a sans-IO parser.

A load balancer (HAProxy ``send-proxy``/``send-proxy-v2``, AWS NLB...) opens
each connection with one header naming the client it accepted. This module
turns bytes into one :class:`ProxyHeader`; it never imports ``socket``,
``selectors`` or the reactor. The shape is h11's: ``feed(data)``, then
``next_event()`` returns :data:`NEED_DATA` until the header is complete,
then the :class:`ProxyHeader`; ``trailing_data`` is what followed it (the
client's first bytes, which belong to the handler).

Limits: a v1 header is at most 107 bytes (the specification's bound); a v2
header's payload at most ``max_v2_payload`` bytes (addresses plus TLVs).
Anything else raises :class:`~reactorkit.errors.ProxyProtocolError` as soon
as the bytes seen prove it wrong, without waiting for more.

Reference: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from typing import Any, Final, final

import attrs

from reactorkit.errors import ProxyProtocolError

__all__ = [
    "DEFAULT_MAX_V2_PAYLOAD",
    "MAX_V1_HEADER",
    "NEED_DATA",
    "V1_PREFIX",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyParser",
]

V1_PREFIX: Final = b"PROXY "
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest v1 header, CRLF included (the specification's bound).
MAX_V1_HEADER: Final = 107
#: The most bytes of addresses and TLVs a v2 header may carry here.
DEFAULT_MAX_V2_PAYLOAD: Final = 4096
_MODES = ("v1", "v2", "any")


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"


#: Returned by :meth:`ProxyParser.next_event` while the header is incomplete.
NEED_DATA: Final = _NeedData.NEED_DATA


@attrs.frozen(kw_only=True)
class ProxyHeader:
    """One parsed header.

    Attributes:
        version: 1 or 2.
        command: ``"PROXY"`` (a relayed client) or ``"LOCAL"`` (the proxy's
            own connection, e.g. a health check; v1 ``UNKNOWN`` is LOCAL too).
        family: ``"TCP4"``, ``"TCP6"``, ``"UDP4"``, ``"UDP6"``, ``"UNIX"``
            or ``"UNSPEC"``.
        source: the client's ``(ip, port)``, or None when the header
            carries no IP address (LOCAL, UNKNOWN, UNIX, UNSPEC).
        destination: the address the client connected to, likewise.
        tlvs: the raw v2 TLV bytes (empty for v1).
    """

    version: int
    command: str
    family: str
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    tlvs: bytes = b""


@final
class ProxyParser:
    """Reads one PROXY header from the start of a stream.

    Args:
        mode: ``"v1"``, ``"v2"`` or ``"any"`` (either, told apart by the
            first bytes).
        max_v2_payload: the longest v2 payload accepted.

    Raises:
        ValueError: ``mode`` is not one of the three.
    """

    __slots__ = ("_buffer", "_done", "max_v2_payload", "mode")

    def __init__(self, mode: str = "any", *, max_v2_payload: int = DEFAULT_MAX_V2_PAYLOAD) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        self.mode = mode
        self.max_v2_payload = max_v2_payload
        self._buffer = bytearray()
        self._done: ProxyHeader | None = None

    def feed(self, data: bytes) -> None:
        """Add received bytes (after the header they are kept as ``trailing_data``)."""
        self._buffer += data

    @property
    def trailing_data(self) -> bytes:
        """The bytes after the header (only meaningful once it is parsed)."""
        return bytes(self._buffer) if self._done is not None else b""

    def next_event(self) -> ProxyHeader | _NeedData:
        """The header, or :data:`NEED_DATA`.

        Raises:
            ProxyProtocolError: the bytes cannot start a valid header, or the
                header is malformed or too long.
        """
        if self._done is not None:
            return self._done
        buffer = self._buffer
        version = self._version(bytes(buffer[: len(V2_SIGNATURE)]))
        if version == 0:
            return NEED_DATA
        header = self._parse_v1() if version == 1 else self._parse_v2()
        if header is NEED_DATA:
            return NEED_DATA
        assert isinstance(header, ProxyHeader)
        self._done = header
        return header

    def _version(self, head: bytes) -> int:
        """1 or 2 once the first bytes tell; 0 while they could still be either."""
        v1 = self.mode != "v2" and V1_PREFIX.startswith(head[: len(V1_PREFIX)])
        v2 = self.mode != "v1" and V2_SIGNATURE.startswith(head)
        if v1 and len(head) >= len(V1_PREFIX):
            return 1
        if v2 and len(head) == len(V2_SIGNATURE):
            return 2
        if v1 or v2:
            return 0
        wanted = {"v1": "a v1 header", "v2": "a v2 header"}.get(self.mode, "a PROXY header")
        raise ProxyProtocolError(f"expected {wanted}, got {head[:16]!r}")

    def _parse_v1(self) -> ProxyHeader | _NeedData:
        buffer = self._buffer
        end = buffer.find(b"\r\n", 0, MAX_V1_HEADER)
        if end < 0:
            if len(buffer) >= MAX_V1_HEADER:
                raise ProxyProtocolError(f"v1 header longer than {MAX_V1_HEADER} bytes")
            if b"\n" in buffer:
                raise ProxyProtocolError("v1 header ends without CRLF")
            return NEED_DATA
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise ProxyProtocolError("v1 header is not ASCII") from None
        parts = text.split(" ")
        if len(parts) < 2:
            raise ProxyProtocolError(f"v1 header has no protocol: {text!r}")
        family = parts[1]
        if family == "UNKNOWN":
            return ProxyHeader(version=1, command="LOCAL", family="UNKNOWN")
        if family not in ("TCP4", "TCP6"):
            raise ProxyProtocolError(f"v1 protocol must be TCP4, TCP6 or UNKNOWN, got {family!r}")
        if len(parts) != 6:
            raise ProxyProtocolError(f"v1 {family} header needs 4 fields: {text!r}")
        want = 4 if family == "TCP4" else 6
        source = (_v1_ip(parts[2], want), _v1_port(parts[4]))
        destination = (_v1_ip(parts[3], want), _v1_port(parts[5]))
        return ProxyHeader(
            version=1, command="PROXY", family=family, source=source, destination=destination
        )

    def _parse_v2(self) -> ProxyHeader | _NeedData:
        buffer = self._buffer
        if len(buffer) < 16:
            return NEED_DATA
        ver_cmd, fam, length = struct.unpack_from("!BBH", buffer, 12)
        if ver_cmd >> 4 != 2:
            raise ProxyProtocolError(f"v2 header has version {ver_cmd >> 4}, not 2")
        command = {0: "LOCAL", 1: "PROXY"}.get(ver_cmd & 0xF)
        if command is None:
            raise ProxyProtocolError(f"v2 header has unknown command {ver_cmd & 0xF}")
        family, address_length = _V2_FAMILIES.get(fam, (None, 0))
        if family is None:
            raise ProxyProtocolError(f"v2 header has unknown address family 0x{fam:02x}")
        if length > self.max_v2_payload:
            raise ProxyProtocolError(
                f"v2 header payload of {length} bytes exceeds {self.max_v2_payload}"
            )
        if length < address_length:
            raise ProxyProtocolError(
                f"v2 {family} header needs {address_length} address bytes, has {length}"
            )
        if len(buffer) < 16 + length:
            return NEED_DATA
        payload = bytes(buffer[16 : 16 + length])
        del buffer[: 16 + length]
        source = destination = None
        if command == "PROXY" and family in ("TCP4", "UDP4", "TCP6", "UDP6"):
            size = 4 if family.endswith("4") else 16
            src = ipaddress.ip_address(payload[:size])
            dst = ipaddress.ip_address(payload[size : 2 * size])
            sport, dport = struct.unpack_from("!HH", payload, 2 * size)
            source, destination = (str(src), sport), (str(dst), dport)
        return ProxyHeader(
            version=2,
            command=command,
            family=family,
            source=source,
            destination=destination,
            tlvs=payload[address_length:],
        )


_V2_FAMILIES: dict[int, tuple[str, int]] = {
    0x00: ("UNSPEC", 0),
    0x11: ("TCP4", 12),
    0x12: ("UDP4", 12),
    0x21: ("TCP6", 36),
    0x22: ("UDP6", 36),
    0x31: ("UNIX", 216),
    0x32: ("UNIX", 216),
}


def _v1_ip(text: str, version: int) -> str:
    try:
        if "%" in text:  # ipaddress takes a zone (any text): not in the specification
            raise ValueError
        address: Any = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"v1 header has a bad address {text!r}") from None
    if address.version != version:
        raise ProxyProtocolError(f"v1 header: {text!r} is not an IPv{version} address")
    return str(address)


def _v1_port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise ProxyProtocolError(f"v1 header has a bad port {text!r}")
    return int(text)
