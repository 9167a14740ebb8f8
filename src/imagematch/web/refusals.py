"""Turning a request away in the form its client reads: JSON `{"detail": ...}` for the API and its schema, a small
HTML page for people. The path decides (templating.is_page_path), the same way for every layer that refuses: the
host check, the access guard, the cross-site guard, the body limit and the rate limit, and the app's error
handlers after them.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi.responses import JSONResponse, Response
from starlette.types import Scope

from imagematch.web.templating import error_page, is_page_path


def refusal(
    scope: Scope, status: int, detail: str, *, page: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """The answer refusing the request of `scope` (an ASGI app: call it with the scope, receive and send).

    API clients get `detail` as JSON; people get an error page saying `page`, or `detail` when there is no
    wording of its own for them. `headers` (Retry-After, WWW-Authenticate) go on either.
    """
    response: Response
    if is_page_path(scope["path"]):
        response = error_page(status, detail if page is None else page)
    else:
        response = JSONResponse({"detail": detail}, status_code=status)
    response.headers.update(headers or {})
    return response
