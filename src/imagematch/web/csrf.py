"""Cross-site request forgery defences.

Pages: a double-submit token. Each browser gets a random token in a cookie (HttpOnly, SameSite=Lax) and every
form carries the same token in a hidden field; a POST whose field does not match its cookie is refused with 403.
Another site can make a browser send the cookie, but it cannot read it, so it cannot fill in the field.

API: the JSON routes are called by scripts and by our own pages' JavaScript, which sends no token. There,
browsers' Fetch Metadata says where a request came from: a state-changing request that a browser marks as
coming from another site is refused (requests without the header, from curl or SDKs, pass).
"""

from __future__ import annotations

import hmac
import re
import secrets
from typing import Annotated

from fastapi import Form, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE_NAME = "imagematch_csrf"
FIELD_NAME = "csrf_token"
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALLOWED_FETCH_SITES = frozenset({b"same-origin", b"none"})
REFUSED_MESSAGE = (
    "This form could not be verified: it has expired or it was not sent from an ImageMatch page. "
    "Reload the page and try again."
)


def _cookie_token(request: Request) -> str:
    token = request.cookies.get(COOKIE_NAME, "")
    return token if _TOKEN_SHAPE.fullmatch(token) else ""


def token_for(request: Request) -> str:
    """This browser's token: the one in its cookie, or a new one that the response must set."""
    token = _cookie_token(request)
    if token:
        return token
    issued: str | None = getattr(request.state, "issued_csrf_token", None)
    if issued is None:
        issued = secrets.token_urlsafe(32)
        request.state.issued_csrf_token = issued
    return issued


def issued_token(request: Request) -> str | None:
    """A token created while handling this request, which the response has to store in the cookie."""
    issued: str | None = getattr(request.state, "issued_csrf_token", None)
    return issued


def require_token(request: Request, csrf_token: Annotated[str, Form()] = "") -> None:
    """A dependency of every page route that changes something: the form's token must match the cookie."""
    expected = _cookie_token(request)
    if not expected or not hmac.compare_digest(expected.encode(), csrf_token.encode()):
        raise HTTPException(403, REFUSED_MESSAGE)


class CrossSiteApiGuard:
    """Refuse state-changing /api requests that a browser says come from another site (403, JSON)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS and scope["path"].startswith("/api/"):
            site = dict(scope.get("headers", [])).get(b"sec-fetch-site")
            if site is not None and site not in _ALLOWED_FETCH_SITES:
                response = JSONResponse({"detail": "cross-site requests may not change the library"}, 403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
