"""Access control: the ``allow``/``deny`` CIDR lists of a listener.

Checked by the listener right after ``accept()`` (or, with the PROXY
protocol on, right after the header names the real client), before any
handler code runs. Deny wins over allow; an empty ``allow`` admits every
address that is not denied. IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``)
are matched as the IPv4 address they carry, and list entries written that
way as the IPv4 network they name. UNIX-socket peers have no
address and are always admitted: guard those with file permissions.

This module is sans-IO apart from logging: the caller passes the time.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from typing import Any, final

__all__ = ["AccessList", "RefusalLog", "parse_networks", "peer_ip"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Seconds between two "refused" log lines of one listener; refusals in
#: between are counted and reported with the next line.
REFUSAL_LOG_INTERVAL = 10.0


def parse_networks(values: Iterable[Any]) -> tuple[IPNetwork, ...]:
    """``["10.0.0.0/8", "::1"]`` -> networks (a bare address is a /32 or /128).

    Raises:
        ValueError: an entry is not a string naming an address or network
            (host bits set, as in ``10.0.0.1/8``, are an error too).
    """
    networks: list[IPNetwork] = []
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a string")
        try:
            network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address or network: {exc}") from None
        networks.append(_unmapped(network))
    return tuple(networks)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(network: IPNetwork) -> IPNetwork:
    """``::ffff:10.0.0.0/104`` -> ``10.0.0.0/8``: peers are matched as IPv4, so entries are."""
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        mapped = network.network_address.ipv4_mapped
        assert mapped is not None
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def peer_ip(peer: Any) -> IPAddress | None:
    """The IP address of an ``accept()`` peer tuple; None for a UNIX peer."""
    if not isinstance(peer, tuple) or not peer:
        return None
    try:
        address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@final
class AccessList:
    """An allow list and a deny list; :meth:`admits` decides for one peer.

    Args:
        allow: networks admitted; empty means every address not denied.
        deny: networks refused, whatever ``allow`` says.
    """

    __slots__ = ("allow", "deny")

    def __init__(self, allow: Sequence[IPNetwork] = (), deny: Sequence[IPNetwork] = ()) -> None:
        self.allow = tuple(allow)
        self.deny = tuple(deny)

    def admits(self, peer: Any) -> bool:
        """True if ``peer`` (an ``accept()`` address) may connect."""
        address = peer_ip(peer)
        if address is None:
            return isinstance(peer, str | bytes) or not peer  # UNIX peers are exempt
        if any(address in network for network in self.deny):
            return False
        return not self.allow or any(address in network for network in self.allow)

    def __repr__(self) -> str:
        allow = [str(n) for n in self.allow]
        deny = [str(n) for n in self.deny]
        return f"<AccessList allow={allow} deny={deny}>"


@final
class RefusalLog:
    """Logs refused connections at most once per ``interval`` seconds.

    Args:
        logger: where the lines go (at warning level).
        interval: seconds between two lines.
    """

    __slots__ = ("interval", "logger", "next_at", "suppressed")

    def __init__(self, logger: logging.Logger, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self.next_at = float("-inf")
        self.suppressed = 0

    def refused(self, now: float, message: str, *args: Any) -> None:
        """Log ``message % args`` unless a line went out less than ``interval`` ago."""
        if now < self.next_at:
            self.suppressed += 1
            return
        self.next_at = now + self.interval
        if self.suppressed:
            message += " (%d more refused in the last %.0fs, not logged)"
            args = (*args, self.suppressed, self.interval)
            self.suppressed = 0
        self.logger.warning(message, *args)
