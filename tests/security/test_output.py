"""What the app sends back: user text escaped on every page, stored files never served as something a browser
would run, and no way out of the library's folders, neither through file routes nor through the samples folder."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from imagematch.blobs import LocalBlobStore
from imagematch.records import RecordPatch
from testkit.images import encode, jpeg, photo
from tests.security.conftest import Harness, app_routes, snapshot

# One payload per field, each breaking out of a different place (element text, attribute, URL).
PAYLOADS = {
    "description": '"\'><script>alert("description")</script>',
    "caption": '<script>alert("caption")</script>',
    "key": '<svg onload=alert("key")>',
    "value": '"><img src=x onerror=alert("value")>',
    "filename": '<img src=x onerror=alert("filename")>.jpg',
}
# What each page shows of a record.
SHOWN = {
    "home": ("filename", "description", "caption"),
    "browse": ("filename", "description", "caption"),
    "browse-filtered-by-it": ("filename", "description", "caption", "key", "value"),
    "search-results": ("filename", "description", "caption"),
    "similar": ("filename", "description", "caption"),
    "image": ("filename", "description", "caption", "key", "value"),
    "delete": ("filename",),
}
RUNNABLE = re.compile(r"<script>alert|<svg onload|<img src=x")


@pytest.fixture(scope="module")
def marked(harness: Harness) -> str:
    """A stored image with a payload in every text field."""
    result = harness.library.ingest.add(
        jpeg("rocket"),
        filename=PAYLOADS["filename"],
        description=PAYLOADS["description"],
        metadata={PAYLOADS["key"]: PAYLOADS["value"]},
    )
    assert result.record is not None
    harness.library.catalog.update(result.record.id, RecordPatch(caption=PAYLOADS["caption"]))
    return result.record.id


def _pages(harness: Harness, image_id: str) -> dict[str, Any]:
    get = harness.client.get
    return {
        "home": get("/"),
        "browse": get("/images"),
        "browse-filtered-by-it": get("/images", params={"key": PAYLOADS["key"], "value": PAYLOADS["value"]}),
        "search-results": get("/search", params={"text": "a rocket", "k": "5"}),
        "similar": get("/search", params={"image_id": harness.stored_id}),  # lists the marked image
        "image": get(f"/images/{image_id}"),
        "delete": get(f"/images/{image_id}/delete"),
    }


def test_every_text_field_is_escaped_wherever_it_is_shown(harness: Harness, marked: str) -> None:
    for page, response in _pages(harness, marked).items():
        assert response.status_code == 200, page
        assert not RUNNABLE.search(response.text), page
        for field in SHOWN[page]:
            assert str(escape(PAYLOADS[field])) in response.text, (page, field)


def test_text_sent_back_to_its_sender_is_escaped(harness: Harness) -> None:
    """Reflected input: queries, filters, unknown ids and refused uploads' names all come back escaped."""
    script = "<img src=x onerror=alert('reflected')>"
    token = harness.token()
    responses = [
        harness.client.get("/search", params={"text": script}),
        harness.client.get("/search", params={"text": script, "k": script}),
        harness.client.get("/images", params={"key": script, "value": script}),
        harness.client.get("/images", params={"value": script}),
        harness.client.get(f"/images/{script}"),
        harness.client.get("/upload-samples", params={"job": script}),
        harness.client.post(
            "/upload", data={"csrf_token": token}, files={"files": (f"{script}.jpg", b"x", "image/jpeg")}
        ),
        harness.client.post("/upload", data={"csrf_token": token, "description": script, "meta_key": [script, script]}),
    ]
    for response in responses:
        assert response.headers["content-type"].startswith("text/html")
        assert not RUNNABLE.search(response.text), response.url
        assert str(escape(script)) in response.text, response.url


def _file_routes(harness: Harness) -> list[str]:
    routes = [path for method, path in app_routes(harness.client.app) if method == "GET"]  # type: ignore[arg-type]
    served = [p for p in routes if p.endswith(("/file", "/thumbnail", "/cutout")) or "query-image" in p]
    assert len(served) >= 4
    return served


@pytest.mark.parametrize(
    ("filename", "data", "media_type"),
    [
        ("page.html", jpeg("clock"), "image/jpeg"),
        ("drawing.svg", encode(photo("coins"), "PNG"), "image/png"),
        ("anim.gif", encode(photo("camera"), "GIF"), "image/gif"),
        ("photo.webp", encode(photo("page"), "WEBP"), "image/webp"),
    ],
)
def test_every_file_route_serves_an_image_type_with_nosniff(
    harness: Harness, filename: str, data: bytes, media_type: str
) -> None:
    """Whatever an upload was called, its bytes go out as the image format they are, never as HTML or SVG."""
    before = snapshot(harness.library)
    added = harness.client.post("/api/v1/images", files={"file": (filename, data, "text/html")})
    assert added.status_code == 201
    image_id = added.json()["id"]
    harness.library.blobs.put_cutout(image_id, jpeg("coffee"))
    query = harness.client.post(
        "/search", data={"csrf_token": harness.token()}, files={"image": (filename, data, "text/html")}
    )
    token = re.search(r"/search/query-image/([A-Za-z0-9_-]{22})", query.text)
    assert token is not None
    for route in _file_routes(harness):
        url = route.replace("{image_id}", image_id).replace("{token}", token.group(1))
        response = harness.client.get(url)
        assert response.status_code == 200, url
        expected = media_type if route.endswith("/file") else "image/jpeg"
        assert response.headers["content-type"] == expected, url
        assert response.headers["x-content-type-options"] == "nosniff", url
        if url.startswith("/api/"):
            assert response.headers["content-security-policy"] == "default-src 'none'; sandbox", url
    disposition = harness.client.get(f"/api/v1/images/{image_id}/file").headers["content-disposition"]
    saved_as = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)", disposition)
    assert saved_as is not None and saved_as.group(1).startswith(filename)
    assert saved_as.group(1).endswith((".jpg", ".png", ".gif", ".webp"))
    harness.library.catalog.delete(image_id)
    assert snapshot(harness.library) == before


@pytest.mark.parametrize(
    "image_id", ["../../etc/passwd", "..", "/etc/passwd", "ab/../../cd", "x" * 10, "0123\x00abcd", "ABCDEF-0"]
)
def test_the_blob_store_takes_nothing_but_ids(tmp_path: Path, image_id: str) -> None:
    blobs = LocalBlobStore(tmp_path / "data")
    with pytest.raises(ValueError, match="not an image id"):
        blobs.put_original(image_id, "jpg", b"data")
    with pytest.raises(ValueError, match="not an image id"):
        blobs.original_path(image_id)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("path", ["/static/../settings.py", "/static/..%2f..%2fsettings.py", "/static/%2e%2e/app.py"])
def test_static_files_stay_in_their_folder(harness: Harness, path: str) -> None:
    response = harness.client.get(path)
    assert response.status_code == 404
    assert "import" not in response.text


def test_the_samples_folder_cannot_reach_files_outside_it(harness: Harness, tmp_path: Path) -> None:
    """Links in the samples folder that lead elsewhere are skipped, so the batch job reads nothing outside it."""
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg("moon"))
    (outside / "album").mkdir()
    (outside / "album" / "hidden.jpg").write_bytes(jpeg("retina"))
    folder = harness.settings.samples_dir
    folder.mkdir(parents=True)
    (folder / "inside.jpg").write_bytes(jpeg("page"))
    (folder / "link-to-secret.jpg").symlink_to(outside / "secret.jpg")
    (folder / "link-to-album").symlink_to(outside / "album", target_is_directory=True)
    before = snapshot(harness.library)
    try:
        assert "<strong>1</strong> image file in the folder" in harness.client.get("/upload-samples").text
        job = harness.client.post("/api/v1/jobs/samples").json()
        deadline = time.monotonic() + 30
        while job["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
            job = harness.client.get(job["links"]["self"]).json()
        assert (job["state"], job["total"], job["added"]) == ("done", 1, 1)
        assert [item["filename"] for item in job["items"]] == ["inside.jpg"]
        harness.library.catalog.delete(job["items"][0]["id"])
    finally:
        shutil.rmtree(folder)
    assert snapshot(harness.library) == before
