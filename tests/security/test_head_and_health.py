"""HEAD answers like GET without the body (load balancers check with HEAD), and the health check, open to anyone
with authentication on, tells an anonymous caller only that the server is up; its warnings name no paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imagematch.factory import build_library
from imagematch.settings import DEFAULT_MODEL
from imagematch.web.app import create_app
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


def test_head_where_only_post_is_allowed_is_refused_as_get_is(harness: Harness) -> None:
    response = harness.client.head("/api/v1/reset")
    assert response.status_code == 405 and "POST" in response.headers["allow"] and response.content == b""
    assert harness.library.count() == 2


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
