"""Which host names the app answers to: the defence against DNS rebinding.

A web page on another site can point its own name at 127.0.0.1 (a DNS rebinding attack); the browser then
sends the owner's requests to this server as same-origin requests of that site, with `Host: its.name`.
Answering only to names of this server stops it: the loopback names, the address or name the server is bound
to, and IMAGEMATCH_ALLOWED_HOSTS (`*` there turns the check off, for a proxy that checks Host itself).

IP addresses cannot be rebound (the page's origin would be the address itself), so when the server is bound
to every interface (0.0.0.0, ::) any address is answered, as it is reached by whichever of its addresses;
names, such as the machine's LAN name, must still be listed. Any port is accepted, names are compared without
case and a trailing dot, and a request without a Host header (HTTP/1.0; browsers always send one) passes.
Anything else gets 400 before any other work: JSON for the API, a page for people.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from imagematch.addresses import IPAddress, ip_address
from imagematch.settings import Settings
from imagematch.web.refusals import refusal

LOOPBACK_NAMES = ("localhost", "*.localhost")  # RFC 6761: always this machine, no one can register them
ANY_ADDRESS = frozenset({"0.0.0.0", "::", "[::]", ""})
# host[:port]: a name or IPv4 address, or an IPv6 address in brackets; the port digits only.
_HOST_HEADER = re.compile(r"(?P<name>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>[0-9]{0,5}))?")
_SHOWN_CHARACTERS = 100


def host_name(value: str) -> str | None:
    """The name in a Host header, lower-case, without port or trailing dot; None when it is no host at all."""
    match = _HOST_HEADER.fullmatch(value.strip())
    if match is None:
        return None
    return match["name"].lower().rstrip(".") or None


class HostAllowList:
    """Exact names and `*.domain` patterns (which match names under the domain, not the domain itself)."""

    def __init__(self, patterns: Iterable[str], *, any_address: bool = False) -> None:
        self.names: set[str] = set()
        self.addresses: set[IPAddress] = set()
        self.suffixes: list[str] = []
        self.any_address = any_address
        for pattern in (given.lower().rstrip(".") for given in patterns):
            address = ip_address(pattern)
            if address is not None:
                self.addresses.add(address)
            elif pattern.startswith("*."):
                self.suffixes.append(pattern[1:])
            else:
                self.names.add(pattern)

    def allows(self, name: str) -> bool:
        address = ip_address(name)
        if address is not None:
            return self.any_address or address.is_loopback or address in self.addresses
        return name in self.names or name.endswith(tuple(self.suffixes))


def host_allow_list(settings: Settings) -> HostAllowList | None:
    """What this server answers to; None when IMAGEMATCH_ALLOWED_HOSTS=* turns the check off."""
    if "*" in settings.allowed_hosts:
        return None
    bound = settings.host.strip().lower()
    any_address = bound in ANY_ADDRESS
    own = () if any_address else (bound,)
    return HostAllowList((*LOOPBACK_NAMES, *own, *settings.allowed_hosts), any_address=any_address)


class HostCheck:
    """ASGI middleware, outermost: a request for a host name that is not this server's gets 400."""

    def __init__(self, app: ASGIApp, allowed: HostAllowList) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            problem = self._problem(scope)
            if problem:
                page = f"This address is not one of this server's: {problem}."
                await refusal(scope, 400, problem, page=page)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> str:
        values = {value.decode("latin-1") for key, value in scope.get("headers", []) if key == b"host"}
        if not values:
            return ""
        if len(values) > 1:
            return "the request names more than one host"
        (value,) = values
        name = host_name(value)
        if name is not None and self.allowed.allows(name):
            return ""
        shown = value[:_SHOWN_CHARACTERS].encode("unicode_escape").decode("ascii")
        return (
            f"this server does not answer to the host name {shown!r}; if it is this server's, "
            "add it to IMAGEMATCH_ALLOWED_HOSTS"
        )
