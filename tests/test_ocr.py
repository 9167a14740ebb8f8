"""Text in pictures, read with the real PP-OCRv4 models the rapidocr wheel ships: at upload, by `imagematch ocr`
and its job, corrected by the user, and found by search."""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

from imagematch.cli import app
from imagematch.factory import build_library
from imagematch.keywords import read_words
from imagematch.library import Library
from imagematch.records import ImageText, ModelUnavailable, Query, RecordPatch, TextLine, TextTerm
from imagematch.store import milvus
from imagematch.store.fields import FIELDS
from imagematch.web.app import create_app
from testkit.cli_env import env_for
from testkit.images import jpeg, photo
from testkit.tinymodel import tiny_settings

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def sign(text: str, on: str = "") -> bytes:
    """A picture with one line of text on it, as PNG: on a plain background, or on a light band across a photo
    (distinct photos, so that signs that differ only in their words are not duplicates)."""
    picture = photo(on).resize((900, 600)) if on else Image.new("RGB", (900, 600), (210, 225, 240))
    draw = ImageDraw.Draw(picture)
    if on:
        draw.rectangle((40, 280, 860, 370), fill=(240, 240, 232))
    draw.text((60, 300), text, fill=(25, 25, 25), font=ImageFont.truetype(FONT, 40))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def reading(tmp_path: Path, tiny_model_dir: Path, ocr: str = "on") -> Library:
    return build_library(tiny_settings(tmp_path, tiny_model_dir, runtime="torch", ocr=ocr, decode_workers=1))


def test_a_word_only_in_the_picture_is_read_at_upload_and_found(tmp_path: Path, tiny_model_dir: Path) -> None:
    library = reading(tmp_path, tiny_model_dir)
    signed = library.ingest.add(sign("Zanzibar ferry timetable"), filename="sign.png").record
    photo = library.ingest.add(jpeg("astronaut"), filename="astronaut.jpg").record
    others = [library.ingest.add(jpeg(name), filename=f"{name}.jpg").record for name in ("coffee", "rocket", "chelsea")]
    assert signed is not None and photo is not None and all(others)
    assert signed.ocr.text == "Zanzibar ferry timetable"
    (line,) = signed.ocr.lines
    left, top, right, bottom = line.box
    assert 0.03 < left < 0.1 and 0.45 < top < 0.55 and 0.5 < right < 0.9 and top < bottom < 0.6
    assert not photo.ocr.pending and photo.ocr.text == ""  # read, and nothing invented on a photo
    assert library.store.get_vectors([signed.id])[signed.id][1] is not None  # the words vector holds the text
    hits = library.search.run(Query((TextTerm("zanzibar"),), k=3, hybrid=True)).hits
    assert hits[0].record.id == signed.id
    assert library.info().ocr == "PP-OCRv4 mobile"


def test_a_correction_wins_over_what_was_read_and_is_searched(tmp_path: Path, tiny_model_dir: Path) -> None:
    library = reading(tmp_path, tiny_model_dir)
    record = library.ingest.add(sign("Grand Opeming Sale"), filename="sign.png").record
    assert record is not None
    corrected = library.catalog.update(record.id, RecordPatch(ocr_text="Grand Opening Sale"))
    assert corrected.ocr.text == "Grand Opening Sale" and corrected.ocr.lines  # the boxes read are kept
    assert library.maintenance.read_texts().total == 0  # corrected pictures are never read again
    hits = library.search.run(Query((TextTerm("opening"),), k=1, hybrid=True)).hits
    assert hits[0].record.id == record.id and library.catalog.get(record.id).ocr.correction == "Grand Opening Sale"


def test_imagematch_ocr_reads_a_library_stored_without_reading_and_resumes(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    before = reading(tmp_path, tiny_model_dir, ocr="off")
    backgrounds = ("astronaut", "coffee", "rocket", "camera")
    ids = [
        before.ingest.add(sign(f"Invoice number {n}", on), filename=f"invoice-{n}.png").record
        for n, on in enumerate(backgrounds)
    ]
    assert all(r is not None and r.ocr.pending for r in ids)
    before.close()

    library = reading(tmp_path, tiny_model_dir)
    stop = threading.Event()
    seen: list[int] = []

    def stop_after_one(done: int, total: int) -> None:
        seen.append(total)
        if done >= 1:
            stop.set()

    first = library.maintenance.read_texts(on_progress=stop_after_one, cancel=stop)
    assert seen[0] == 4 and first.done == first.with_text == 1 and first.failed == 0  # one worker: one in flight
    second = library.maintenance.read_texts()
    assert second.total == 3 and second.with_text == 3 and second.failed == 0
    texts = sorted(library.catalog.get(r.id).ocr.text for r in ids if r is not None)
    assert texts == [f"Invoice number {n}" for n in range(4)]
    assert library.maintenance.read_texts().total == 0


def test_the_ocr_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path) -> None:
    before = reading(tmp_path, tiny_model_dir, ocr="off")
    before.ingest.add(sign("Platform 9"), filename="platform.png")
    before.ingest.add(jpeg("coffee"), filename="coffee.jpg")
    before.close()
    for name, value in env_for(before.settings, ocr="auto", log_level="WARNING").items():  # auto: the default
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    done = runner.invoke(app, ["ocr"])
    assert done.exit_code == 0, done.output
    assert "read 2 pictures: 1 hold text; 0 could not be read" in done.output
    again = runner.invoke(app, ["ocr"])
    assert "read 0 pictures" in again.output
    info = runner.invoke(app, ["info"])
    assert "PP-OCRv4 mobile" in info.output

    monkeypatch.setenv("IMAGEMATCH_OCR", "off")
    off = runner.invoke(app, ["ocr"])
    assert off.exit_code != 0 and "reading text in pictures is off" in off.output


@pytest.fixture
def client(tmp_path: Path, tiny_model_dir: Path) -> Iterator[TestClient]:
    settings = tiny_settings(tmp_path, tiny_model_dir, runtime="torch", ocr="off")
    before = build_library(settings)
    before.ingest.add(sign("Biscuit the dog"), filename="biscuit.png")
    before.ingest.add(jpeg("rocket"), filename="rocket.jpg")
    before.close()
    reading_settings = tiny_settings(tmp_path, tiny_model_dir, runtime="torch", ocr="on")
    with TestClient(create_app(reading_settings, build_library(reading_settings))) as test_client:
        yield test_client


def _wait(client: TestClient, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.1)
    raise AssertionError("the job did not finish")


def test_the_ocr_job_the_api_and_the_pages(client: TestClient) -> None:
    images = {i["filename"]: i for i in client.get("/api/v1/images").json()["items"]}
    assert images["biscuit.png"]["ocr"] == {"text": "", "status": "pending", "engine": "", "lines": []}
    assert client.get("/api/v1/health").json()["ocr"] == "PP-OCRv4 mobile"

    started = client.post("/api/v1/jobs/ocr")
    assert started.status_code == 202 and started.json()["kind"] == "ocr"
    job = _wait(client, started.json()["id"])
    assert job["state"] == "done" and job["done"] == 2 and job["added"] == 1
    assert job["message"] == "Read 2 pictures: 1 hold text."

    biscuit = client.get(f"/api/v1/images/{images['biscuit.png']['id']}").json()["ocr"]
    assert biscuit["status"] == "read" and biscuit["text"] == "Biscuit the dog" and len(biscuit["lines"]) == 1
    assert client.get(f"/api/v1/images/{images['rocket.jpg']['id']}").json()["ocr"]["status"] == "read"
    found = client.post("/api/v1/search", data={"text": "biscuit", "hybrid": "true", "k": "1"}).json()
    assert found["hits"][0]["id"] == images["biscuit.png"]["id"]

    edited = client.patch(f"/api/v1/images/{images['biscuit.png']['id']}", json={"ocr_text": "Biscuit, good dog"})
    assert edited.status_code == 200 and edited.json()["ocr"]["status"] == "edited"
    assert client.patch(f"/api/v1/images/{images['biscuit.png']['id']}", json={"ocr_text": 5}).status_code == 422

    page = client.get(f"/images/{images['biscuit.png']['id']}").text
    assert "Biscuit, good dog" in page and "(corrected by you)" in page and 'name="ocr_text"' in page
    rocket = client.get(f"/images/{images['rocket.jpg']['id']}").text
    assert "none found" in rocket
    model = client.get(f"/model?job={started.json()['id']}").text
    assert "Read 2 pictures: 1 hold text." in model and "Read the pictures not read yet" in model


def test_the_ocr_job_is_refused_when_reading_is_off(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = tiny_settings(tmp_path, tiny_model_dir, runtime="torch", ocr="off")
    with TestClient(create_app(settings, build_library(settings))) as client:
        refused = client.post("/api/v1/jobs/ocr")
        assert refused.status_code == 422 and "IMAGEMATCH_OCR" in refused.json()["detail"]
        assert client.get("/api/v1/health").json()["ocr"] == "off"
        assert "Reading text in pictures is off" in client.get("/model").text


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a Python the OCR wheel does not support: the package cannot be imported."""
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)


@pytest.mark.usefixtures("no_engine")
def test_without_the_engine_auto_stores_pictures_unread_and_on_refuses(tmp_path: Path, tiny_model_dir: Path) -> None:
    library = reading(tmp_path / "auto", tiny_model_dir, ocr="auto")
    library.open(ingest=True)
    added = library.ingest.add(sign("Zanzibar"), filename="sign.png").record
    assert added is not None and added.ocr.pending  # `imagematch ocr` reads it once the engine is there
    assert library.info().ocr == "off"
    assert any("reading text in pictures is off" in warning for warning in library.warnings)

    strict = reading(tmp_path / "on", tiny_model_dir, ocr="on")
    with pytest.raises(ModelUnavailable, match="rapidocr-onnxruntime"):
        strict.open(ingest=True)


def screenshot(lines: list[str], size: int = 15) -> bytes:
    """A 1920×1080 screenshot-like picture: lines of UI-sized text on a flat background."""
    picture = Image.new("RGB", (1920, 1080), (248, 248, 250))
    draw = ImageDraw.Draw(picture)
    for n, line in enumerate(lines):
        draw.text((80, 60 + n * 48), line, fill=(30, 30, 30), font=ImageFont.truetype(FONT, size))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def test_small_print_in_a_screenshot_is_read_and_found(tmp_path: Path, tiny_model_dir: Path) -> None:
    """UI text is a few pixels tall in the reduced picture an upload is decoded to: a page-like picture is
    searched for text near its full size."""
    lines = ["Settings", "Account recovery email", "Quarterly Wombat report", "Sign out of all devices"]
    library = reading(tmp_path, tiny_model_dir)
    record = library.ingest.add(screenshot(lines), filename="screenshot.png").record
    assert record is not None
    read = record.ocr.text.lower().replace(" ", "")
    assert all(line.lower().replace(" ", "") in read for line in lines)
    hits = library.search.run(Query((TextTerm("wombat"),), k=1, hybrid=True)).hits
    assert hits[0].record.id == record.id


def test_words_run_together_by_the_reader_count_as_keywords_apart() -> None:
    assert read_words("QuarterlyWombatReport 2024") == "QuarterlyWombatReport 2024\nQuarterly Wombat Report 2024"
    assert read_words("plain words") == "plain words"


class _EngineError(Exception):
    """Like cv2.error: an exception of the engine's own kind."""


def test_a_picture_the_engine_fails_on_is_stored_unread(tmp_path: Path, tiny_model_dir: Path) -> None:
    library = reading(tmp_path, tiny_model_dir)
    library.open(ingest=True)
    reader = library.embedding.text_reader
    assert reader is not None

    def broken(*args: object) -> None:
        raise _EngineError("cv::warpPerspective: bad size")

    reader._ocr.text_rec = broken  # type: ignore[attr-defined]
    record = library.ingest.add(sign("Zanzibar ferry"), filename="sign.png").record
    assert record is not None and record.ocr.pending  # stored; `imagematch ocr` reads it later


def test_a_long_thin_strip_is_read_without_a_huge_detector_input(tmp_path: Path, tiny_model_dir: Path) -> None:
    strip = Image.new("RGB", (16, 16000), (240, 240, 240))
    buffer = io.BytesIO()
    strip.save(buffer, "PNG")
    library = reading(tmp_path, tiny_model_dir)
    record = library.ingest.add(buffer.getvalue(), filename="strip.png").record
    assert record is not None and not record.ocr.pending and record.ocr.text == ""


def test_saving_the_image_page_untouched_keeps_the_text_as_read(client: TestClient) -> None:
    """Browsers send a textarea's line breaks as CRLF: lines read and saved untouched are no correction."""
    image = next(i for i in client.get("/api/v1/images").json()["items"] if i["filename"] == "biscuit.png")
    library: Library = client.app.state.library  # type: ignore[attr-defined]
    record = library.catalog.get(image["id"])
    lines = (TextLine("BISCUIT", (0.1, 0.1, 0.5, 0.2), 0.99), TextLine("good dog", (0.1, 0.3, 0.5, 0.4), 0.95))
    library.store.update(replace(record, ocr=ImageText("PP-OCRv4 mobile", lines)), None)
    page = client.get(f"/images/{image['id']}").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    saved = client.post(
        f"/images/{image['id']}/edit",
        data={"csrf_token": token.group(1), "description": "our dog", "ocr_text": "BISCUIT\r\ngood dog"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    after = client.get(f"/api/v1/images/{image['id']}").json()
    assert after["description"] == "our dog" and after["ocr"]["status"] == "read" and len(after["ocr"]["lines"]) == 2
    job = client.post("/api/v1/jobs/ocr").json()
    assert job["links"]["page"] == f"/model?job={job['id']}"


def test_the_ocr_job_on_a_collection_made_before_text_was_kept_says_to_reindex(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Milvus collection made before the text in pictures was stored cannot keep it: the job ends saying to
    reindex, not to start it again (which would fail the same way)."""
    settings = tiny_settings(
        tmp_path, tiny_model_dir, runtime="torch", ocr="off", store="milvus", milvus_uri=str(tmp_path / "milvus.db")
    )
    with monkeypatch.context() as old_version:
        old_version.setattr(milvus, "FIELDS", tuple(field for field in FIELDS if field.name != "ocr"))
        before = build_library(settings)
        before.ingest.add(sign("Biscuit the dog"), filename="biscuit.png")
        before.close()
    reading_settings = settings.model_copy(update={"ocr": "on"})
    with TestClient(create_app(reading_settings, build_library(reading_settings))) as client:
        job = _wait(client, client.post("/api/v1/jobs/ocr").json()["id"])
    message = str(job["message"])
    assert job["state"] == "failed" and "imagematch reindex" in message and "start it again" not in message
