"""Form tokens against cross-site request forgery on the pages.

A signed double-submit token. Each browser gets a random value in a cookie (HttpOnly, SameSite=Lax, Secure
over HTTPS); every form carries an HMAC-SHA256 of that value, keyed by the server's secret and, once the browser
is logged in, bound to its session cookie. A POST whose token does not match is refused with 403.

Another site may be able to plant the cookie (cookies do not keep ports apart, so a page on another port of
this host can set one) but it cannot make the matching token without the secret; a token made before logging
in, or for another session, stops matching once the browser logs in. The login form itself carries a token
bound to no session, still signed.

Where a request comes from (Origin, Sec-Fetch-Site) is checked for pages and API alike in cross_site.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Annotated

from fastapi import Form, HTTPException, Request
from fastapi.responses import Response

COOKIE_NAME = "imagematch_csrf"
FIELD_NAME = "csrf_token"
_BROWSER_VALUE_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
REFUSED_MESSAGE = (
    "This form could not be verified: it was opened before you logged in or out, or it was not sent from an "
    "ImageMatch page. Reload the page and try again."
)


class FormTokens:
    """Makes and checks form tokens with a key derived from the server's secret."""

    def __init__(self, secret: bytes) -> None:
        self._key = hmac.new(secret, b"imagematch-form-token", hashlib.sha256).digest()

    def token(self, browser_value: str, session: str) -> str:
        mac = hmac.new(self._key, f"{browser_value}\0{session}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def matches(self, presented: str, browser_value: str, session: str) -> bool:
        expected = self.token(browser_value, session)
        return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))


def _form_tokens(request: Request) -> FormTokens:
    tokens: FormTokens = request.app.state.form_tokens
    return tokens


def _browser_value(request: Request) -> str:
    value = request.cookies.get(COOKIE_NAME, "")
    return value if _BROWSER_VALUE_SHAPE.fullmatch(value) else ""


def _session(request: Request) -> str:
    """The session cookie the access guard accepted for this request; empty before login or without auth."""
    session: str = getattr(request.state, "session", "")
    return session


def token_for(request: Request) -> str:
    """The token for this browser's forms; a browser without the cookie gets a new value the response must set."""
    value = _browser_value(request) or issued_cookie(request)
    if not value:
        value = secrets.token_urlsafe(32)
        request.state.issued_csrf_cookie = value
    return _form_tokens(request).token(value, _session(request))


def issued_cookie(request: Request) -> str:
    """The cookie value created while handling this request, which the response has to store; empty if none."""
    issued: str = getattr(request.state, "issued_csrf_cookie", "")
    return issued


def store_cookie(request: Request, response: Response) -> None:
    """Store a newly issued cookie value in the response (Secure when the request came over HTTPS)."""
    issued = issued_cookie(request)
    if issued:
        response.set_cookie(
            COOKIE_NAME, issued, httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/"
        )


def require_token(request: Request, csrf_token: Annotated[str, Form()] = "") -> None:
    """A dependency of every page route that changes something: the form's token must be this browser's."""
    value = _browser_value(request)
    if not value or not _form_tokens(request).matches(csrf_token, value, _session(request)):
        raise HTTPException(403, REFUSED_MESSAGE)
