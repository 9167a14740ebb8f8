"""Refuse state-changing requests that a browser says come from elsewhere, pages and API alike.

Browsers tell where a request comes from: `Sec-Fetch-Site` (same-origin, same-site, cross-site, none) and
`Origin`. Only this server's own origin may change something: a page on another port of the same host is
"same-site" but not same-origin, and is refused like another site. Requests without these headers (curl, SDKs,
old browsers) pass here; page forms still need their token (csrf.py) and the API its credentials.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import URL, Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from imagematch.web.csrf import REFUSED_MESSAGE
from imagematch.web.refusals import refusal

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# `none`: the user started the request (a resubmitted form after a reload can carry it).
_ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
FROM_ELSEWHERE = "requests from another origin may not change the library"


def _origin_key(scheme: str, host: str | None, port: int | None) -> tuple[str, str, int | None]:
    scheme = scheme.lower()
    return scheme, (host or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _own_origin(scope: Scope) -> tuple[str, str, int | None] | None:
    """scheme://host:port as this request arrived (the scheme a trusted proxy reported, the Host header)."""
    url = URL(scope=scope)
    try:
        return _origin_key(url.scheme, url.hostname, url.port)
    except ValueError:  # a Host header that is no host
        return None


def _claimed_origin(origin: str) -> tuple[str, str, int | None] | None:
    """An Origin header as scheme, host and port; None for `null` or anything that is not an origin."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment:
        return None
    return _origin_key(parts.scheme, parts.hostname, port)


def comes_from_elsewhere(scope: Scope) -> bool:
    """Whether the browser's own headers say another origin sent this request."""
    headers = Headers(scope=scope)
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in _ALLOWED_FETCH_SITES:
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    claimed = _claimed_origin(origin)
    return claimed is None or claimed != _own_origin(scope)


class CrossSiteGuard:
    """ASGI middleware: a state-changing request from another origin gets 403 (a page, or JSON for the API)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS and comes_from_elsewhere(scope):
            await refusal(scope, 403, FROM_ELSEWHERE, page=REFUSED_MESSAGE)(scope, receive, send)
            return
        await self.app(scope, receive, send)
