"""Who the client is behind a reverse proxy: X-Forwarded-For and X-Forwarded-Proto, from trusted proxies only.

Anyone can send these headers, and a forwarder that sets none (ssh -L, socat, a plain TCP proxy) passes the
client's own through from a loopback address. So they are believed only from the proxies listed in
IMAGEMATCH_TRUSTED_PROXIES (addresses or networks), none by default. The app decides this itself rather than
the ASGI server, so that every server (and the tests' client) behaves the same.

The client is the right-most address of X-Forwarded-For that is not a trusted proxy: each proxy appends the
address it was reached from, so entries to the left of it may be made up by the client. The scheme
(https: the session cookie is `Secure`) comes from the right-most X-Forwarded-Proto.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from imagematch.addresses import ip_address

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SCHEMES = frozenset({"http", "https"})


class TrustedProxies:
    def __init__(self, entries: Iterable[str]) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)

    def trusts(self, address: str) -> bool:
        ip = ip_address(address)
        return ip is not None and any(ip.version == network.version and ip in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The right-most address that no trusted proxy put there; the left-most when every one is trusted."""
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer


class ProxyHeaders:
    """ASGI middleware: from a trusted proxy, the client address and scheme it forwards replace the peer's."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] == "http" and client and self.proxies.trusts(str(client[0])):
            scope = dict(scope)
            forwarded_for = _joined(scope, b"x-forwarded-for")
            if forwarded_for:
                scope["client"] = (self.proxies.client(str(client[0]), forwarded_for), 0)
            proto = _joined(scope, b"x-forwarded-proto").rpartition(",")[2].strip().lower()
            if proto in _SCHEMES:
                scope["scheme"] = proto
        await self.app(scope, receive, send)


def _joined(scope: Scope, name: bytes) -> str:
    """Every value of a header, in order, as one comma-separated list (a header may be sent more than once)."""
    return ",".join(value.decode("latin-1") for key, value in scope.get("headers", []) if key == name)
