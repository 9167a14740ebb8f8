"""Every layer that turns a request away answers the same way (web/refusals.py): JSON {"detail": ...} under
/api, a small error page for people, each with the headers its refusal needs. One table: the host check, the
access guard, the cross-site guard, the body limit and the rate limit, each asked by an API client and by a
browser."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message

from imagematch.factory import build_library
from imagematch.library import Library
from imagematch.web.app import create_app
from imagematch.web.refusals import refusal
from imagematch.web.templating import ERROR_TITLES
from tests.security.conftest import make_settings

KEY = "k3y-for-the-refusal-tests-0123456789abcdef"
Send = Callable[[TestClient, str], Any]  # TestClient's response class depends on the installed httpx


@dataclass(frozen=True, slots=True)
class Layer:
    settings: dict[str, Any]
    send: Send  # the refused request, to the path given
    api_path: str
    page_path: str
    status: int
    page_words: str  # how the page for people begins (before escaping)
    api_headers: tuple[str, ...] = ()  # headers the API's refusal carries
    page_headers: tuple[str, ...] = ()  # and the page's


def _after_one_allowed(client: TestClient, path: str) -> Any:
    client.get("/api/v1/images")  # the budget of one request a minute is spent
    return client.get(path)


LAYERS = {
    "host": Layer(
        {},
        lambda client, path: client.get(path, headers={"Host": "rebound.example"}),
        "/api/v1/images",
        "/images",
        400,
        "This address is not one of this server",
    ),
    "access": Layer(
        {"api_key": KEY},
        lambda client, path: client.get(path) if path.startswith("/api/") else client.post(path),
        "/api/v1/images",
        "/upload",
        401,
        "This library is private",
        api_headers=("www-authenticate",),
    ),
    "cross-site": Layer(
        {},
        lambda client, path: client.post(path, headers={"Origin": "https://elsewhere.example"}),
        "/api/v1/reset",
        "/upload",
        403,
        "This form could not be verified",
    ),
    "body limit": Layer(
        {"max_upload_bytes": 1024},
        lambda client, path: client.post(path, content=b"x" * 200_000, headers={"Content-Type": "image/jpeg"}),
        "/api/v1/images",
        "/upload",
        413,
        "The upload is too large",
    ),
    "rate limit": Layer(
        {"rate_limit": 1},
        _after_one_allowed,
        "/api/v1/images",
        "/images",
        429,
        "Slow down a little",
        api_headers=("retry-after",),
        page_headers=("retry-after",),
    ),
}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Library]:
    shared = build_library(make_settings(tmp_path_factory.mktemp("refusals"), tiny_model_dir))
    yield shared
    shared.close()


@pytest.mark.parametrize("name", list(LAYERS))
def test_api_clients_get_json_and_people_a_page(name: str, library: Library, tiny_model_dir: Path) -> None:
    layer = LAYERS[name]
    settings = make_settings(library.settings.data_dir.parent, tiny_model_dir, **layer.settings)
    for path, is_page in ((layer.api_path, False), (layer.page_path, True)):
        with TestClient(create_app(settings, library)) as client:
            response = layer.send(client, path)
        assert response.status_code == layer.status, (path, response.text[:300])
        assert response.headers["x-content-type-options"] == "nosniff", path  # outer layers' answers too
        if is_page:
            assert response.headers["content-type"].startswith("text/html"), path
            assert response.headers["cache-control"] == "no-store", path
            assert "default-src 'none'" in response.headers["content-security-policy"], path
            assert f'data-status="{layer.status}"' in response.text, path
            title = re.search(r"<h1>(.*?)</h1>", response.text)
            assert title is not None and title.group(1) == ERROR_TITLES[layer.status], path
            message = re.search(r'<p class="error-message">(.*?)</p>', response.text, re.S)
            assert message is not None and message.group(1).startswith(layer.page_words), path
            present = {h for h in ("www-authenticate", "retry-after") if h in response.headers}
            assert present == set(layer.page_headers), path
        else:
            assert response.headers["content-type"] == "application/json", path
            body = response.json()
            assert list(body) == ["detail"] and isinstance(body["detail"], str) and body["detail"], path
            present = {h for h in ("www-authenticate", "retry-after") if h in response.headers}
            assert present == set(layer.api_headers), path


def _answer(scope: dict[str, Any], status: int, detail: str, **options: Any) -> tuple[Message, bytes]:
    """The start message and the body that refusal's response sends for this scope."""
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    with ThreadPoolExecutor(1) as fresh:  # its own event loop, whatever another test left running in this thread
        fresh.submit(asyncio.run, refusal(scope, status, detail, **options)(scope, receive, send)).result()
    return messages[0], b"".join(m.get("body", b"") for m in messages[1:])


def test_refusal_chooses_by_path_and_keeps_the_page_wording_and_headers() -> None:
    scope = {"type": "http", "method": "POST", "path": "/api/v1/images", "headers": []}
    start, body = _answer(scope, 429, "too many", page="Slow down.", headers={"Retry-After": "7"})
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 429 and headers["content-type"] == "application/json"
    assert body == b'{"detail":"too many"}' and headers["retry-after"] == "7"
    for path in ("/", "/upload", "/apis", "/static/app.js"):
        start, body = _answer({**scope, "path": path}, 429, "too many", page="Slow down.", headers={"Retry-After": "7"})
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        assert headers["content-type"].startswith("text/html") and headers["retry-after"] == "7", path
        assert b"Slow down." in body and b"too many" not in body, path
    _, body = _answer({**scope, "path": "/upload"}, 400, "<b>not this host</b>")
    assert b"<b>" not in body and b"&lt;b&gt;not this host&lt;/b&gt;" in body  # the page escapes what it says
