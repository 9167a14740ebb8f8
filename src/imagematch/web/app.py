"""The FastAPI application: one Library per process, JSON errors, limits and security headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagematch import __version__
from imagematch.factory import build_caption_worker, build_library
from imagematch.jobs import JobRunner
from imagematch.library import Library
from imagematch.records import ImageMatchError
from imagematch.settings import Settings
from imagematch.web import api, api_docs, auth, pages
from imagematch.web.auth import LOGIN_ATTEMPTS_PER_MINUTE, AccessGuard, Authenticator, session_secret
from imagematch.web.cross_site import CrossSiteGuard
from imagematch.web.csrf import FormTokens
from imagematch.web.errors import status_for
from imagematch.web.head import HeadAsGet
from imagematch.web.hosts import HostCheck, host_allow_list
from imagematch.web.proxies import ProxyHeaders, TrustedProxies
from imagematch.web.ratelimit import RateLimit, TokenBuckets
from imagematch.web.refusals import refusal
from imagematch.web.templating import human_bytes

log = logging.getLogger(__name__)


FORM_OVERHEAD_BYTES = 64 * 1024  # a request body may be this much larger than the largest accepted file


class BodyLimit:
    """Refuse request bodies over the limit before they are parsed or spooled to disk (413).

    A body without a declared length (chunked) is counted as it arrives. The error raised when it passes the
    limit may be caught on the way out (FastAPI turns any failure while reading a form into a 400), so once
    the limit is passed, whatever response the app starts is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, file_limit: int) -> None:
        self.app = app
        self.file_limit = file_limit
        self.limit = file_limit + FORM_OVERHEAD_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send, scope, int(declared))
            return
        seen = 0
        exceeded = started = refused = False

        async def limited() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def answer(message: Message) -> None:
            nonlocal started, refused
            if exceeded and not started:  # the app's answer to the error it caught: the 413 goes instead
                if not refused:
                    refused = True
                    await self._refuse(send, scope)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, answer)
        except _BodyTooLarge:
            if not (started or refused):
                await self._refuse(send, scope)

    async def _refuse(self, send: Send, scope: Scope, size: int | None = None) -> None:
        """The limit people know, in the unit their file manager shows: the file limit, not the form's overhead."""
        limit = human_bytes(self.file_limit)
        message = (
            f"the upload is larger than the limit of {limit}"
            if size is None
            else f"the upload is {human_bytes(size)}; the limit is {limit}"
        )
        page = f"The upload is too large: {message}. Send fewer or smaller files at once."
        await refusal(scope, 413, message, page=page)(scope, _empty_receive, send)


class SecurityHeaders:
    """Headers every answer carries, refusals of the outer layers included: no sniffing, no framing, no
    referrer beyond this site. An answer that sets its own keeps it."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", b"DENY"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(header for header in self.HEADERS if header[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class _BodyTooLarge(Exception):
    pass


async def _empty_receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{where or 'request'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(settings: Settings, library: Library | None = None) -> FastAPI:
    """The web app. Pass a Library to share one (tests); otherwise it is built from settings at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = getattr(app.state, "library", None) is None  # a library passed in is its caller's to close
        if owned:
            app.state.library = build_library(settings)
        app.state.library.verify_model()
        app.state.library.open(ingest=True)  # load the model now, so the first search is fast
        app.state.library.pairing.keeps_house = True  # carries changes into a new generation, drops retired ones
        app.state.jobs = JobRunner(app.state.library)
        app.state.captions = build_caption_worker(settings, app.state.library)
        app.state.captions.start()
        log.info("serving %d images with %s", app.state.library.catalog.count(), app.state.library.embedder.model_id)
        yield
        app.state.captions.stop()
        app.state.jobs.cancel()
        app.state.jobs.wait(timeout=30)
        if owned:
            app.state.library.close()

    app = FastAPI(
        title="ImageMatch",
        version=__version__,
        description="Find images by an example image, by a sentence, or both.",
        lifespan=lifespan,
        docs_url=None,  # web/api_docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.library = library
    app.state.settings = settings
    app.add_middleware(BodyLimit, file_limit=settings.max_upload_bytes)
    # Before any body is read, the client's request budget and then its credentials are checked (each
    # add_middleware wraps what was added before).
    secret = session_secret(settings)
    app.state.form_tokens = FormTokens(secret)
    app.state.authenticator = Authenticator(settings, secret) if settings.auth_enabled else None
    if app.state.authenticator is not None:
        app.add_middleware(AccessGuard, authenticator=app.state.authenticator)
    if settings.rate_limit:
        app.add_middleware(RateLimit, buckets=TokenBuckets(settings.rate_limit))
    app.state.login_attempts = TokenBuckets(LOGIN_ATTEMPTS_PER_MINUTE)

    # Pages get a friendly HTML page; the API keeps its JSON errors.
    @app.exception_handler(ImageMatchError)
    async def library_error(request: Request, error: ImageMatchError) -> Response:
        return refusal(request.scope, status_for(error), str(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        return refusal(request.scope, 422, _validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        detail: Any = error.detail  # the API's JSON keeps it as raised; the page shows it as text
        return refusal(request.scope, error.status_code, detail, page=str(detail), headers=error.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        page = "An unexpected error happened; the server log has the details."
        return refusal(request.scope, 500, "internal error; the server log has the details", page=page)

    app.add_middleware(CrossSiteGuard)
    # Outermost, in this order: the client's address from a trusted proxy (before the rate limit counts it),
    # HEAD as GET for every layer inside, and first of all the host name (DNS rebinding), before any work.
    if settings.trusted_proxies:
        app.add_middleware(ProxyHeaders, proxies=TrustedProxies(settings.trusted_proxies))
    app.add_middleware(HeadAsGet)
    allowed_hosts = host_allow_list(settings)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(SecurityHeaders)  # around everything, so every refusal above carries them too
    app.include_router(api.router)
    app.include_router(auth.router)
    api_docs.install(app)
    pages.install(app)
    return app
