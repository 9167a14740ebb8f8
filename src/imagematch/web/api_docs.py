"""The API's documentation pages, /docs (Swagger UI) and /redoc (ReDoc), served from this server alone.

FastAPI's own pages load a floating CDN script without an integrity hash, same-origin with the session, and
start it with an inline <script>. Here the viewers come from the fastapi-offline wheel (only its static folder:
Swagger UI and ReDoc as released) under /static/api-docs/, are started by our static/api-docs.js, and the
pages get a Content-Security-Policy that allows no inline or foreign script, so the docs also work offline.
Like every page but the login page, they need credentials when authentication is on.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from imagematch.web.head import AnswersHead
from imagematch.web.templating import environment

ASSETS_URL = "/static/api-docs"
ASSETS_PACKAGE = ("fastapi_offline", "static")
# Scripts only from this server, never inline. Both viewers set styles from their scripts and ReDoc adds
# <style> elements, hence 'unsafe-inline' for styles (which cannot run code); Swagger UI's stylesheet draws
# its icons from data: URLs; ReDoc runs its search in a worker that its own script makes from a blob: URL.
# ReDoc's "by Redocly" logo, from its CDN, is refused (it then hides itself).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; worker-src blob:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# viewer: its name, its scripts and its stylesheets among the package's assets
VIEWERS = {
    "swagger": ("Swagger UI", ("swagger-ui-bundle.js",), ("swagger-ui.css",)),
    "redoc": ("ReDoc", ("redoc.standalone.js",), ()),
}

router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets; before the pages' own /static mount, which would hide the assets."""
    app.mount(ASSETS_URL, AnswersHead(StaticFiles(packages=[ASSETS_PACKAGE])), name="api-docs-assets")
    app.include_router(router)


def _page(request: Request, viewer: str) -> HTMLResponse:
    name, scripts, stylesheets = VIEWERS[viewer]
    html = environment.get_template("api_docs.html").render(
        {
            "title": f"{request.app.title} API · {name}",
            "viewer": viewer,
            "openapi_url": request.app.openapi_url,
            "scripts": [f"{ASSETS_URL}/{script}" for script in scripts],
            "stylesheets": [f"{ASSETS_URL}/{sheet}" for sheet in stylesheets],
        }
    )
    response = HTMLResponse(html)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return _page(request, "swagger")


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    return _page(request, "redoc")
