"""Rendering the HTML pages: one Jinja2 environment (autoescaping everything), the filters the templates use,
and the headers every page gets (Content-Security-Policy, no caching of pages that carry a form token).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from imagematch import __version__
from imagematch.library import RESET_PHRASE, Library
from imagematch.media import ACCEPTED_FORMATS, THUMBNAIL_SIZE
from imagematch.records import ImageRecord
from imagematch.shapes import why_summary
from imagematch.web import csrf
from imagematch.web.forms import FILTER_OPERATOR_LABELS, METADATA_KINDS, shown_value

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"

# Only our own files: no inline scripts or styles, nothing from other origins.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

ERROR_TITLES = {
    400: "That request did not work",
    401: "Log in first",
    403: "Not allowed",
    404: "Page not found",
    405: "That action is not available here",
    409: "That clashes with what is going on",
    413: "Too large",
    415: "Unsupported format",
    422: "That input cannot be used",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Not available right now",
}

CAPTION_STATES = {
    "none": "no captioner",
    "pending": "waiting for a caption",
    "done": "captioned",
    "failed": "captioning failed",
}

# Formats that browsers show; others (TIFF, HEIF) are shown through their JPEG thumbnail.
BROWSER_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "AVIF"})


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB"):
        if value < 1024:
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f}".removesuffix(".0") + f" {unit}"
        value /= 1024
    return f"{value:.1f}".removesuffix(".0") + " GB"


def when(moment: datetime | str | None) -> str:
    """A date as people read it, in UTC so every page and every viewer agrees."""
    if not moment:
        return ""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def thumbnail_size(record: ImageRecord) -> tuple[int, int]:
    """The stored thumbnail's size, for width/height attributes that reserve its space before it loads."""
    scale = min(1.0, THUMBNAIL_SIZE / max(record.width, record.height))
    return max(1, round(record.width * scale)), max(1, round(record.height * scale))


def thumbnail_url(image_id: str) -> str:
    return f"/api/v1/images/{image_id}/thumbnail"


def display_url(record: ImageRecord) -> str:
    """The original when browsers can show its format, else the thumbnail."""
    if record.format in BROWSER_FORMATS:
        return f"/api/v1/images/{record.id}/file"
    return thumbnail_url(record.id)


environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(human_bytes=human_bytes, when=when, shown_value=shown_value, why=why_summary)
environment.globals.update(
    thumbnail_size=thumbnail_size,
    thumbnail_url=thumbnail_url,
    display_url=display_url,
    reset_phrase=RESET_PHRASE,
    caption_states=CAPTION_STATES,
    version=__version__,
    csrf_field=csrf.FIELD_NAME,
    filter_operator_labels=FILTER_OPERATOR_LABELS,
    metadata_kinds=METADATA_KINDS,
    image_formats=sorted(set(ACCEPTED_FORMATS) - {"MPO"}),
    signed_in=False,
)


@dataclass(frozen=True, slots=True)
class Banner:
    """A library-wide warning as the pages show it: a headline, and the rest folded under it, so that a few of
    them stay short on a phone. `text` is the warning whole (it names the banner a browser was told to hide)."""

    text: str
    headline: str
    detail: str

    @classmethod
    def of(cls, text: str) -> Banner:
        """Warnings read "what is wrong: why, and what to do"; the part before the first ': ' is the headline."""
        headline, _, detail = text.partition(": ")
        return cls(text, _sentence(headline), _sentence(detail))


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _respond(html: str, status: int) -> HTMLResponse:
    response = HTMLResponse(html, status_code=status)
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


def render(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200, public: bool = False
) -> HTMLResponse:
    """A page with the navigation, the footer's library facts and this browser's form token.

    A public page (the login page) shows nothing about the library.
    """
    library: Library = request.app.state.library
    token = csrf.token_for(request)
    info = None if public else library.info()
    html = environment.get_template(template).render(
        {
            "csrf_token": token,
            "info": info,
            "settings": library.settings,
            "notices": [Banner.of(text) for text in [*info.warnings, *_caption_notices(request)]] if info else [],
            "signed_in": getattr(request.state, "auth", None) == "session",
            **context,
        }
    )
    response = _respond(html, status)
    csrf.store_cookie(request, response)
    return response


def _caption_notices(request: Request) -> list[str]:
    worker = getattr(request.app.state, "captions", None)
    if worker is None or not worker.paused:
        return []
    return [f"Captions are paused: {worker.message}"]


def error_page(status: int, message: str) -> HTMLResponse:
    """A friendly error page; it needs nothing from the library, so it renders even when the library fails."""
    title = ERROR_TITLES.get(status, "That request did not work" if status < 500 else "Something went wrong")
    html = environment.get_template("error.html").render(
        {"status": status, "title": title, "message": message, "section": "", "info": None, "notices": []}
    )
    return _respond(html, status)


def is_page_path(path: str) -> bool:
    """Pages answer errors in HTML; the API (anything under /api) and its schema in JSON."""
    return not (path in ("/api", "/openapi.json") or path.startswith("/api/"))
