"""Who may use the app: an API key for scripts, a password and a signed session cookie for browsers.

Authentication is on when IMAGEMATCH_API_KEY or IMAGEMATCH_UI_PASSWORD_HASH is set. Then every request but
the health check, static files and the login page needs either the key (header `X-API-Key` or
`Authorization: Bearer`) or the session cookie the login page sets; either works on every route, so a
logged-in browser can call the JSON API its pages use. Keys and signatures are compared in constant time.

The session cookie is `<issued>.<nonce>.<signature>`: an HMAC-SHA256 with a key derived from the session
secret and the current password hash (or API key), so changing either signs every browser out. It is
HttpOnly, SameSite=Lax, Secure over HTTPS, and expires after SESSION_MAX_AGE_S.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from imagematch.passwords import verify_password
from imagematch.settings import Settings
from imagematch.web.csrf import require_token
from imagematch.web.ratelimit import TokenBuckets, client_address, too_many_requests
from imagematch.web.refusals import refusal
from imagematch.web.schemas import API
from imagematch.web.templating import is_page_path, render

log = logging.getLogger(__name__)

SESSION_COOKIE = "imagematch_session"
SESSION_MAX_AGE_S = 14 * 24 * 3600
SECRET_FILE = "session-secret"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
HEALTH_PATH = f"{API}/health"
# Reachable without credentials: what a load balancer, the login page and its stylesheet need.
OPEN_PATHS = frozenset({HEALTH_PATH, LOGIN_PATH})
OPEN_PREFIXES = ("/static/",)
# Password guesses per minute per client address, on top of the general rate limit.
LOGIN_ATTEMPTS_PER_MINUTE = 10

Credential = Literal["key", "session"]


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def session_secret(settings: Settings) -> bytes:
    """IMAGEMATCH_SESSION_SECRET, or a random secret made once and kept in the data directory (mode 0600)."""
    if settings.session_secret:
        return settings.session_secret.encode()
    path = settings.data_dir / SECRET_FILE
    if not path.exists():
        _create_secret_file(path)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} holds no usable secret; delete it and restart to make a new one")
    return secret.encode()


def _create_secret_file(path: Path) -> None:
    """Write the whole secret under a temporary name, then link it into place: two processes starting at once
    agree on one secret, and a crash never leaves a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        Path(temporary).unlink(missing_ok=True)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class Authenticator:
    """Checks API keys, passwords and session cookies against the configured credentials."""

    def __init__(self, settings: Settings, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not settings.auth_enabled:
            raise ValueError("authentication is off: set IMAGEMATCH_API_KEY or IMAGEMATCH_UI_PASSWORD_HASH")
        self.api_key = settings.api_key
        self.password_hash = settings.ui_password_hash
        self.clock = clock
        bound_to = self.password_hash or _digest(self.api_key).hex()
        self._session_key = hmac.new(secret, b"imagematch-session\0" + bound_to.encode(), hashlib.sha256).digest()

    def key_matches(self, presented: str) -> bool:
        """Compared as digests of equal length, so that the time taken tells nothing, not even the key's length."""
        if not self.api_key:
            return False
        return hmac.compare_digest(_digest(presented), _digest(self.api_key))

    def password_matches(self, password: str) -> bool:
        """The UI password; without one configured, the login page takes the API key."""
        if self.password_hash:
            return verify_password(password, self.password_hash)
        return self.key_matches(password)

    def _sign(self, payload: str) -> str:
        return hmac.new(self._session_key, payload.encode(), hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        payload = f"{int(self.clock())}.{secrets.token_urlsafe(12)}"
        return f"{payload}.{self._sign(payload)}"

    def session_valid(self, value: str) -> bool:
        payload, _, signature = value.rpartition(".")
        issued = payload.partition(".")[0]
        if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
            return False
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return False
        return 0 <= self.clock() - int(issued) <= SESSION_MAX_AGE_S

    def identify(self, scope: Scope) -> Credential | None:
        """Which credential this request carries, if any valid one."""
        headers = Headers(scope=scope)
        presented = headers.get("x-api-key")
        if presented is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else None
        if presented and self.key_matches(presented):
            return "key"
        cookie = session_cookie(scope)
        if cookie and self.session_valid(cookie):
            return "session"
        return None


def session_cookie(scope: Scope) -> str:
    return cookie_parser(Headers(scope=scope).get("cookie", "")).get(SESSION_COOKIE, "")


class AccessGuard:
    """ASGI middleware: refuse requests without valid credentials before any work is done.

    The API and the schema answer 401 in JSON; a page asked for with GET redirects to the login page,
    which brings the visitor back afterwards; other page requests answer a 401 page.
    """

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.authenticator = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        credential = self.authenticator.identify(scope)
        if credential is not None:
            state = scope.setdefault("state", {})
            state["auth"] = credential
            if credential == "session":
                state["session"] = session_cookie(scope)  # what form tokens are bound to (csrf.py)
        elif not is_open(scope["path"]):
            await _refusal(scope)(scope, receive, send)
            return
        await self.app(scope, receive, send)


AUTHENTICATION_REQUIRED = "authentication required: send the API key as X-API-Key or Authorization: Bearer, or log in"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ImageMatch"'}  # on the API's 401, naming the scheme it takes


def _refusal(scope: Scope) -> Response:
    path: str = scope["path"]
    if not is_page_path(path):
        return refusal(scope, 401, AUTHENTICATION_REQUIRED, headers=CHALLENGE)
    if scope["method"] in ("GET", "HEAD"):
        query = scope.get("query_string", b"").decode("latin-1")
        target = path + (f"?{query}" if query else "")
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(target, safe='')}", status_code=303)
    return refusal(scope, 401, AUTHENTICATION_REQUIRED, page="This library is private: log in, then try again.")


def safe_next(target: str) -> str:
    """Where to go after logging in: a path on this site, never another site (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    return target


router = APIRouter(include_in_schema=False)


def _authenticator(request: Request) -> Authenticator | None:
    authenticator: Authenticator | None = request.app.state.authenticator
    return authenticator


def _login_context(authenticator: Authenticator, target: str, error: str = "") -> dict[str, object]:
    return {"section": "login", "next": target, "error": error, "has_password": bool(authenticator.password_hash)}


@router.get(LOGIN_PATH)
def login_page(request: Request, next: str = "/") -> Response:
    authenticator = _authenticator(request)
    if authenticator is None or getattr(request.state, "auth", None) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", _login_context(authenticator, safe_next(next)), public=True)


@router.post(LOGIN_PATH, dependencies=[Depends(require_token)])
def login(request: Request, password: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:
    authenticator = _authenticator(request)
    target = safe_next(next)
    if authenticator is None:
        return RedirectResponse(target, status_code=303)
    attempts: TokenBuckets = request.app.state.login_attempts
    wait = attempts.take(client_address(request.scope))
    if wait > 0:
        return too_many_requests(request.scope, wait)
    if not authenticator.password_matches(password):
        log.warning("failed login from %s", client_address(request.scope))
        context = _login_context(authenticator, target, "That password is not right.")
        return render(request, "login.html", context, status=401, public=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        authenticator.new_session(),
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post(LOGOUT_PATH, dependencies=[Depends(require_token)])
def logout() -> Response:
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response
