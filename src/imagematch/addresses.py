"""IP addresses as people and programs write them: in a Host header, a setting, a forwarded hop."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_address(text: str) -> IPAddress | None:
    """The address in `text` (IPv6 in brackets or not), or None when it is no address. An IPv4-mapped IPv6
    address (`::ffff:10.0.0.5`, what dual-stack sockets report) is the IPv4 address it carries, so it matches
    the same names and networks."""
    try:
        address = ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address
