"""HEAD on every GET route (load balancers and link checkers ask with HEAD): the same status and headers, no body.

FastAPI routes answer only the methods they name, so a HEAD request is handled as the GET it stands for, by
every layer inside (access, rate limit, the route), and only the body is left out on the way back.

Stored files and static files answer a HEAD themselves: Starlette's FileResponse and StaticFiles send the
size, type and validators from the file's stat without opening it, when they see the method. The GET that
HeadAsGet passes on is marked as a HEAD in its scope (HEAD_REQUEST), and they are given the method back, so a
HEAD on a large original costs a stat, not a read of the whole file that is then thrown away.
"""

from __future__ import annotations

from fastapi.responses import FileResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEAD_REQUEST = "imagematch.head_request"  # in the scope of a GET that stands for a HEAD request
_BODY_MESSAGES = frozenset({"http.response.body", "http.response.pathsend"})


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        finished = False

        async def headers_only(message: Message) -> None:
            nonlocal finished
            if message["type"] not in _BODY_MESSAGES:
                await send(message)
            elif not finished and (message["type"] == "http.response.pathsend" or not message.get("more_body", False)):
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET", HEAD_REQUEST: True}, receive, headers_only)


def as_sent(scope: Scope) -> Scope:
    """The scope with the method the client sent: HEAD again where HeadAsGet passed it on as GET."""
    return {**scope, "method": "HEAD"} if scope.get(HEAD_REQUEST) else scope


class StoredFileResponse(FileResponse):
    """A file on disk that answers a HEAD request with its headers only, never opening the file."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(as_sent(scope), receive, send)


class AnswersHead:
    """Wraps an ASGI app that answers HEAD itself (StaticFiles), giving it the method the client sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(as_sent(scope), receive, send)
