"""HEAD answers like GET without the body (load balancers check with HEAD), and the health check, open to anyone
with authentication on, tells an anonymous caller only that the server is up; its warnings name no paths."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient

from imagematch.factory import build_library
from imagematch.settings import DEFAULT_MODEL
from imagematch.web.app import create_app
from testkit.images import jpeg
from tests.security.conftest import Harness, app_routes, make_settings

KEY = "k3y-for-the-tests-0123456789abcdef"
# Headers that differ between two answers to the same request.
_PER_RESPONSE = {"date", "set-cookie"}


def _concrete(path: str, harness: Harness) -> str:
    return path.replace("{image_id}", harness.stored_id).replace("{job_id}", "job").replace("{token}", "t" * 22)


def test_every_get_route_answers_head_with_the_same_status_and_headers(harness: Harness) -> None:
    paths = [_concrete(p, harness) for m, p in app_routes(harness.client.app) if m == "HEAD"]  # type: ignore[arg-type]
    assert "/api/v1/health" in paths and f"/api/v1/images/{harness.stored_id}/file" in paths
    for path in [*paths, "/static/style.css", "/api/v1/images/0000/file", "/no-such-page"]:
        got = harness.client.get(path, follow_redirects=False)
        head = harness.client.head(path, follow_redirects=False)
        assert head.status_code == got.status_code and head.status_code != 405, path
        assert head.content == b"", path
        shown = {k: v for k, v in got.headers.items() if k not in _PER_RESPONSE}
        assert {k: v for k, v in head.headers.items() if k not in _PER_RESPONSE} == shown, path


def test_head_of_an_original_gives_its_size_without_sending_it(harness: Harness) -> None:
    head = harness.client.head(f"/api/v1/images/{harness.stored_id}/file")
    original = harness.library.blobs.original_path(harness.stored_id)
    assert original is not None
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "image/jpeg"
    assert int(head.headers["content-length"]) == original.stat().st_size


@pytest.fixture
def stored_files(harness: Harness) -> Iterator[list[str]]:
    """An image with all three stored files (original, thumbnail, cut-out), and a static file; deleted after."""
    added = harness.library.ingest.add(jpeg("coffee"), filename="coffee.jpg")
    assert added.record is not None
    image_id = added.record.id
    harness.library.blobs.put_cutout(image_id, jpeg("chelsea"))
    yield [f"/api/v1/images/{image_id}/{kind}" for kind in ("file", "thumbnail", "cutout")] + ["/static/style.css"]
    harness.library.catalog.delete(image_id)


def test_head_of_a_file_gives_its_headers_from_its_size_without_reading_it(
    harness: Harness, stored_files: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What GET says about an original, a thumbnail, a cut-out or a static file (length, type, validators,
    disposition), HEAD says too, and sends no body; the file is never opened for it, only looked up."""
    opened: list[str] = []
    real_open = anyio.open_file

    async def recording_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return await real_open(file, *args, **kwargs)

    monkeypatch.setattr(anyio, "open_file", recording_open)
    for path in stored_files:
        opened.clear()
        got = harness.client.get(path)
        assert got.status_code == 200 and got.content and len(opened) == 1, path  # GET reads the file
        opened.clear()
        head = harness.client.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert opened == [], f"HEAD {path} opened {opened}"
        for name in ("content-length", "content-type", "etag", "last-modified"):
            assert head.headers[name] == got.headers[name], (path, name)
        assert int(head.headers["content-length"]) == len(got.content), path
        assert head.headers.get("content-disposition") == got.headers.get("content-disposition"), path


def test_head_never_sends_a_file_by_path(harness: Harness, stored_files: list[str]) -> None:
    """A server that can send a file by its path (the ASGI pathsend extension) is never asked to for a HEAD."""
    for path in stored_files:
        messages = _asgi_request(harness, "HEAD", path, extensions={"http.response.pathsend": {}})
        assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"], path
        assert messages[0]["status"] == 200 and messages[-1]["body"] == b"", path
        assert [m["type"] for m in _asgi_request(harness, "GET", path, extensions={"http.response.pathsend": {}})] == [
            "http.response.start",
            "http.response.pathsend",
        ], path


def _asgi_request(harness: Harness, method: str, path: str, *, extensions: dict[str, Any]) -> list[dict[str, Any]]:
    """Calls the app as a server would, with the given ASGI extensions, in an event loop of its own."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
        "extensions": extensions,
    }
    with ThreadPoolExecutor(1) as fresh:  # its own event loop, whatever another test left running in this thread
        fresh.submit(asyncio.run, harness.client.app(scope, receive, send)).result()  # type: ignore[arg-type]
    return messages


def test_head_where_only_post_is_allowed_is_refused_as_get_is(harness: Harness) -> None:
    response = harness.client.head("/api/v1/reset")
    assert response.status_code == 405 and "POST" in response.headers["allow"] and response.content == b""
    assert harness.library.catalog.count() == 2


@pytest.fixture
def locked(tmp_path: Path, tiny_model_dir: Path) -> TestClient:
    """Authentication on, and background removal asked for with a model file that is not there."""
    settings = make_settings(
        tmp_path, tiny_model_dir, api_key=KEY, background_removal="auto", rembg_model_path=tmp_path / "u2netp.onnx"
    )
    return TestClient(create_app(settings, build_library(settings)))


def test_anonymous_health_says_only_that_the_server_is_up(locked: TestClient) -> None:
    with locked:
        anonymous = locked.get("/api/v1/health")
        assert anonymous.status_code == 200 and anonymous.json() == {"status": "ok"}
        head = locked.head("/api/v1/health")  # what a load balancer sends
        assert head.status_code == 200 and head.content == b""
        keyed = locked.get("/api/v1/health", headers={"X-API-Key": KEY}).json()
        assert keyed["status"] == "ok" and keyed["images"] == 0 and keyed["model"].startswith("local-dir:")
        assert keyed["background_removal"] == "off" and keyed["warnings"]


def test_warnings_name_no_paths_or_exception_text(locked: TestClient, tmp_path: Path) -> None:
    with locked:
        [warning] = locked.get("/api/v1/health", headers={"X-API-Key": KEY}).json()["warnings"]
        page = locked.get("/", headers={"X-API-Key": KEY}).text
    assert warning.startswith("background removal is off") and "server log" in warning
    for leak in (str(tmp_path), "u2netp.onnx", "/", "Error", "Errno"):
        assert leak not in warning
    assert str(tmp_path) not in page


def test_the_demo_model_warning_names_no_paths(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the hub is unreachable
    settings = make_settings(tmp_path, tiny_model_dir, model=DEFAULT_MODEL)
    [warning] = build_library(settings).warnings
    assert "demo model" in warning and "IMAGEMATCH_MODEL=local-dir:" in warning
    for leak in (str(tmp_path), str(settings.model_cache_dir), "127.0.0.1", "Errno", "refused"):
        assert leak not in warning
