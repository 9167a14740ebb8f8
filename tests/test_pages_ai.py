"""What the pages show of captions, background removal and degraded features."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imagematch.factory import build_library
from imagematch.library import Library
from imagematch.records import CaptionStatus
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.fake_moondream import FakeMoondream, running
from tests.test_pages import add, token


@pytest.fixture
def fake() -> Iterator[FakeMoondream]:
    with running() as server:
        yield server


def test_caption_can_be_corrected_and_retried_from_the_image_page(settings: Settings, fake: FakeMoondream) -> None:
    captioned = settings.model_copy(
        update={"captioner": "moondream", "moondream_endpoint": fake.endpoint, "caption_rate": 50.0}
    )
    library = build_library(captioned)
    with TestClient(create_app(captioned, library)) as client:
        image_id = add(library, "coffee")
        csrf = token(client)
        page = client.get(f"/images/{image_id}").text
        assert 'data-testid="edit-caption"' in page
        saved = client.post(
            f"/images/{image_id}/edit", data={"csrf_token": csrf, "description": "", "caption": "my espresso"}
        )
        assert saved.status_code == 200 and "Changes saved" in saved.text
        record = library.catalog.get(image_id)
        assert record.caption == "my espresso" and record.caption_edited
        assert "(corrected by you)" in saved.text
        queued = client.post(f"/images/{image_id}/caption/retry", data={"csrf_token": csrf})
        assert "Captioning again" in queued.text
        assert library.catalog.get(image_id).caption_status in (CaptionStatus.PENDING, CaptionStatus.DONE)
        refused = client.post(f"/images/{image_id}/caption/retry", data={})
        assert refused.status_code == 403


def test_unchanged_caption_is_not_marked_as_corrected(client: TestClient, library: Library) -> None:
    image_id = add(library, "rocket")
    library.captions.apply(image_id, "a rocket")
    client.post(
        f"/images/{image_id}/edit", data={"csrf_token": token(client), "description": "x", "caption": "a rocket"}
    )
    assert not library.catalog.get(image_id).caption_edited


def test_warnings_are_a_banner_on_every_page(settings: Settings, tmp_path: Path) -> None:
    degraded = settings.model_copy(update={"background_removal": "auto", "rembg_model_path": tmp_path / "none.onnx"})
    with TestClient(create_app(degraded, build_library(degraded))) as client:
        for path in ("/", "/images", "/search", "/upload-samples", "/reset"):
            page = client.get(path).text
            assert 'data-testid="banner"' in page and "background removal is off" in page
        assert "background removal is off" in client.get("/api/v1/health").json()["warnings"][0]


def test_paused_captions_are_a_banner(settings: Settings) -> None:
    no_key = settings.model_copy(update={"captioner": "moondream"})
    with TestClient(create_app(no_key, build_library(no_key))) as client:
        assert "Captions are paused" in client.get("/").text
        assert client.get("/api/v1/health").json()["captioner"]["state"] == "error"


def test_the_cutout_is_shown_on_the_image_page(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("U2NET_HOME", str(Path(__file__).resolve().parents[1] / ".cache" / "u2net"))
    auto = settings.model_copy(update={"background_removal": "auto"})
    library = build_library(auto)
    with TestClient(create_app(auto, library)) as client:
        image_id = add(library, "astronaut")
        page = client.get(f"/images/{image_id}").text
        assert 'data-testid="cutout"' in page and f"/api/v1/images/{image_id}/cutout" in page
