from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.images import encode, jpeg, photo


def upload(client: TestClient, name: str, data: bytes | None = None, **form: str) -> Any:
    return client.post(
        "/api/v1/images",
        files={"file": (f"{name}.jpg", data if data is not None else jpeg(name), "image/jpeg")},
        data=form,
    )


def count(client: TestClient) -> int:
    total: int = client.get("/api/v1/images").json()["total"]
    return total


def test_upload_returns_the_record(client: TestClient) -> None:
    response = upload(client, "astronaut", description="first woman to command", metadata='{"crew": 5, "nasa": true}')
    assert response.status_code == 201
    body = response.json()
    assert body["filename"] == "astronaut.jpg"
    assert (body["width"], body["height"], body["format"]) == (512, 512, "JPEG")
    assert body["id"].startswith(body["phash"])
    assert body["metadata"] == {"crew": 5, "nasa": True}
    assert body["description"] == "first woman to command"
    assert client.get(body["links"]["self"]).json() == body


def test_duplicate_answers_409_with_existing_id(client: TestClient) -> None:
    first = upload(client, "coffee").json()
    response = upload(client, "coffee-again", data=encode(photo("coffee"), "PNG"))
    assert response.status_code == 409
    body = response.json()
    assert body["existing_id"] == first["id"]
    assert "duplicate" in body["detail"]
    assert body["existing"]["filename"] == "coffee.jpg"
    assert count(client) == 1


@pytest.mark.parametrize(
    ("data", "form", "status"),
    [
        (b"", {}, 422),
        (b"hello, I am text", {}, 415),
        (b"<html><script>alert(1)</script></html>", {}, 415),
        (jpeg("rocket")[:3000], {}, 422),
        (encode(Image.new("RGB", (8, 8)), "ICO"), {}, 415),
        (jpeg("rocket"), {"metadata": "{not json"}, 422),
        (jpeg("rocket"), {"metadata": '{"deep": {"er": 1}}'}, 422),
        (jpeg("rocket"), {"metadata": "[1, 2]"}, 422),
        (jpeg("rocket"), {"description": "y" * 10_000}, 422),
    ],
    ids=["empty", "text", "html", "truncated", "ico", "bad-json", "nested", "array", "long-description"],
)
def test_bad_uploads_get_4xx_and_change_nothing(
    client: TestClient, data: bytes, form: dict[str, str], status: int
) -> None:
    upload(client, "astronaut")
    response = upload(client, "bad", data=data, **form)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    assert count(client) == 1


def test_oversized_upload_is_413(settings: Settings, library: Any) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 20_000})
    library.settings = small
    with TestClient(create_app(small, library)) as client:
        response = upload(client, "retina")
        assert response.status_code == 413
        assert response.json()["detail"].endswith("; the limit is 19.5 KB")
        just_over = upload(client, "astronaut", data=b"\xff" * 20_001)  # within the form's overhead
        assert just_over.status_code == 413
        assert just_over.json()["detail"] == "the file is larger than the limit of 19.5 KB"
        assert count(client) == 0


def test_an_upload_over_the_limit_is_told_in_megabytes(client: TestClient) -> None:
    """The default limit is 50 MiB; a 57 MB photo was told "larger than 52,494,336 bytes"."""
    response = upload(client, "photo", data=b"\xff" * (57 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["detail"] == "the upload is 57 MB; the limit is 50 MB"
    page = client.post("/upload", files={"files": ("photo.jpg", b"\xff" * (57 * 1024 * 1024), "image/jpeg")})
    assert page.status_code == 413 and "the upload is 57 MB; the limit is 50 MB" in page.text
    assert count(client) == 0


@pytest.mark.parametrize(
    ("path", "what_to_send"),
    [("/api/v1/search", "POST /api/v1/search/query"), ("/api/v1/images", "a field named file")],
)
def test_json_sent_to_a_form_route_is_415_saying_what_to_send(client: TestClient, path: str, what_to_send: str) -> None:
    response = client.post(path, json={"text": "a dog"})
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert "not application/json" in detail and "multipart/form-data" in detail and what_to_send in detail
    assert count(client) == 0


def test_listing_follows_next_without_repeats_while_images_are_added(client: TestClient) -> None:
    ids = [upload(client, name).json()["id"] for name in ("astronaut", "coffee", "rocket")]
    first = client.get("/api/v1/images", params={"limit": 2}).json()
    assert [i["id"] for i in first["items"]] == ids[::-1][:2] and first["next"]
    newer = upload(client, "camera").json()["id"]  # would shift an offset page: astronaut's place moves
    second = client.get("/api/v1/images", params={"limit": 2, "cursor": first["next"]}).json()
    assert [i["id"] for i in second["items"]] == [ids[0]] and second["next"] is None and second["total"] == 4
    by_offset = client.get("/api/v1/images", params={"limit": 2, "offset": 2}).json()  # still served as before
    assert [i["id"] for i in by_offset["items"]] == [ids[1], ids[0]] and by_offset["offset"] == 2
    oldest = client.get("/api/v1/images", params={"limit": 3, "sort": "oldest"}).json()
    rest = client.get("/api/v1/images", params={"limit": 3, "sort": "oldest", "cursor": oldest["next"]}).json()
    assert [i["id"] for i in oldest["items"] + rest["items"]] == [*ids, newer]
    bad = client.get("/api/v1/images", params={"cursor": "page-two"})
    assert bad.status_code == 422 and "not a page cursor" in bad.json()["detail"]


def test_list_get_patch_delete(client: TestClient) -> None:
    ids = [upload(client, name).json()["id"] for name in ("astronaut", "coffee", "rocket")]
    page = client.get("/api/v1/images", params={"limit": 2}).json()
    assert page["total"] == 3 and [i["id"] for i in page["items"]] == ids[::-1][:2]
    oldest = client.get("/api/v1/images", params={"limit": 2, "sort": "oldest"}).json()
    assert [i["id"] for i in oldest["items"]] == ids[:2]

    patched = client.patch(f"/api/v1/images/{ids[1]}", json={"description": "espresso", "metadata": {"cafe": "x"}})
    assert patched.status_code == 200 and patched.json()["description"] == "espresso"
    assert client.get(f"/api/v1/images/{ids[1]}").json()["metadata"] == {"cafe": "x"}
    filtered = client.get("/api/v1/images", params={"filter": json.dumps({"cafe": "x"})}).json()
    assert [i["id"] for i in filtered["items"]] == [ids[1]]

    assert client.patch(f"/api/v1/images/{ids[1]}", json={"metadata": {"k": [1]}}).status_code == 422
    assert client.patch(f"/api/v1/images/{ids[1]}", json={"unknown": 1}).status_code == 422
    assert client.delete(f"/api/v1/images/{ids[0]}").status_code == 204
    assert client.get(f"/api/v1/images/{ids[0]}").status_code == 404
    assert client.delete(f"/api/v1/images/{ids[0]}").status_code == 404
    assert count(client) == 2


def test_files_are_served_with_their_type_and_nosniff(client: TestClient) -> None:
    data = encode(photo("chelsea"), "PNG")
    record = client.post("/api/v1/images", files={"file": ("cat.png", data, "image/png")}).json()
    original = client.get(record["links"]["file"])
    assert original.status_code == 200
    assert original.content == data
    assert original.headers["content-type"] == "image/png"
    assert original.headers["x-content-type-options"] == "nosniff"
    thumb = client.get(record["links"]["thumbnail"])
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(__import__("io").BytesIO(thumb.content)).size) <= 384
    assert client.get("/api/v1/images/../../etc/passwd/file").status_code == 404
    assert client.get("/api/v1/images/ffffffffffffffff-00000000/thumbnail").status_code == 404


def test_search_by_text_image_id_and_both(client: TestClient) -> None:
    ids = {name: upload(client, name).json()["id"] for name in ("astronaut", "coffee", "rocket", "coins")}
    by_image = client.post("/api/v1/search", files={"image": ("q.jpg", jpeg("coins"), "image/jpeg")}, data={"k": "2"})
    assert by_image.status_code == 200
    hits = by_image.json()["hits"]
    assert len(hits) == 2 and hits[0]["id"] == ids["coins"] and hits[0]["score"] >= 0.99
    assert hits[0]["thumbnail_url"].endswith("/thumbnail")

    by_id = client.post("/api/v1/search", data={"image_id": ids["rocket"], "k": "3"}).json()
    assert {h["id"] for h in by_id["hits"]} == {ids["astronaut"], ids["coffee"], ids["coins"]}  # not itself

    text = client.post("/api/v1/search", data={"text": "a rocket", "k": "4"}).json()
    assert len(text["hits"]) == 4 and text["truncated"] is False
    assert 0 < text["encode_ms"] <= text["took_ms"]  # the model's share of the time is reported

    both = client.post(
        "/api/v1/search",
        files={"image": ("q.jpg", jpeg("coins"), "image/jpeg")},
        data={"text": "a rocket", "image_weight": "1.0", "k": "4"},
    ).json()
    image_only = client.post(
        "/api/v1/search", files={"image": ("q.jpg", jpeg("coins"), "image/jpeg")}, data={"k": "4"}
    ).json()
    assert [h["id"] for h in both["hits"]] == [h["id"] for h in image_only["hits"]]

    long_text = client.post("/api/v1/search", data={"text": "many words " * 60}).json()
    assert long_text["truncated"] is True


@pytest.mark.parametrize(
    "form",
    [
        {},
        {"text": "x", "k": "0"},
        {"text": "x", "k": "-1"},
        {"text": "x", "k": "1000000000"},
        {"text": "x", "k": "ten"},
        {"text": "x", "image_id": "nope", "image_weight": "1.5"},
        {"text": "x", "image_id": "nope", "image_weight": "nan"},
        {"text": "x", "filter": "{broken"},
        {"text": "x", "filter": '{"a": {"$regex": "."}}'},
    ],
)
def test_bad_searches_are_4xx(client: TestClient, form: dict[str, str]) -> None:
    upload(client, "astronaut")
    response = client.post("/api/v1/search", data=form)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


def test_unknown_image_id_in_search_is_404(client: TestClient) -> None:
    upload(client, "astronaut")
    assert client.post("/api/v1/search", data={"image_id": "0123456789abcdef-01234567"}).status_code == 404


def test_reset_requires_confirmation(client: TestClient) -> None:
    upload(client, "astronaut")
    upload(client, "coffee")
    for body in ({}, {"confirm": "yes"}, {"confirm": "delete all"}):
        assert client.post("/api/v1/reset", json=body).status_code == 422
    assert count(client) == 2
    response = client.post("/api/v1/reset", json={"confirm": "DELETE ALL"})
    assert response.status_code == 200 and response.json() == {"deleted": 2}
    assert count(client) == 0


def test_health_names_model_store_and_count(client: TestClient) -> None:
    upload(client, "astronaut")
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok"
    assert health["model"].startswith("local-dir:tiny-clip@")
    assert health["store"] == "lancedb" and health["images"] == 1
    assert health["dimensions"] == 64 and health["context_length"] == 77


def test_openapi_schema_is_served(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert "/api/v1/search" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404 and response.json()["detail"]


def _wait_for(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 60
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(job["links"]["self"]).json()
    return job


def test_samples_job_indexes_the_folder_with_a_report(client: TestClient, settings: Settings) -> None:
    folder = settings.samples_dir
    (folder / "trip").mkdir(parents=True)
    for name in ("astronaut", "coffee", "rocket"):
        (folder / f"{name}.jpg").write_bytes(jpeg(name))
    (folder / "trip" / "coffee-copy.png").write_bytes(encode(photo("coffee"), "PNG"))
    (folder / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / ".hidden.jpg").write_bytes(jpeg("moon"))
    started = client.post("/api/v1/jobs/samples")
    assert started.status_code == 202
    job = _wait_for(client, started.json())
    assert job["state"] == "done"
    assert (job["total"], job["done"], job["added"], job["duplicates"], job["failed"]) == (5, 5, 3, 1, 1)
    by_name = {item["filename"]: item for item in job["items"]}
    assert by_name["trip/broken.jpg"]["status"] == "failed" and by_name["trip/broken.jpg"]["reason"]
    assert by_name["trip/coffee-copy.png"]["status"] == "duplicate"
    assert client.get("/api/v1/jobs").json()[0]["id"] == job["id"]
    again = _wait_for(client, client.post("/api/v1/jobs/samples").json())
    assert again["added"] == 0 and again["duplicates"] == 4
    assert count(client) == 3


def test_samples_job_without_folder_is_a_clear_error(client: TestClient) -> None:
    response = client.post("/api/v1/jobs/samples")
    assert response.status_code == 422 and "does not exist" in response.json()["detail"]
    assert client.get("/api/v1/jobs/nope").status_code == 404


def test_tags_are_stored_as_lists_and_filters_join_with_or_and_none_of(client: TestClient) -> None:
    """Lists of strings were refused and `{"$or": [...]}` matched nothing: the first ten minutes of a new user."""
    beach = upload(client, "astronaut", metadata='{"tags": ["beach", "sunset"], "album": "trip"}')
    assert beach.status_code == 201 and beach.json()["metadata"]["tags"] == ["beach", "sunset"]
    city = upload(client, "coffee", metadata='{"tags": ["city"], "album": "home"}').json()["id"]
    plain = upload(client, "rocket", metadata='{"album": "space"}').json()["id"]

    def found(spec: object) -> set[str]:
        response = client.get("/api/v1/images", params={"filter": json.dumps(spec)})
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["items"]}

    assert found({"tags": "beach"}) == {beach.json()["id"]}
    assert found({"tags": {"$in": ["city", "snow"]}}) == {city}
    assert found({"$or": [{"tags": "city"}, {"album": "space"}]}) == {city, plain}
    assert found({"album": {"$nin": ["trip", "home"]}}) == {plain}
    searched = client.post("/api/v1/search/query", json={"terms": [{"text": "a photo"}], "filter": {"tags": "city"}})
    assert searched.status_code == 200 and [h["id"] for h in searched.json()["hits"]] == [city]

    unknown = client.get("/api/v1/images", params={"filter": '{"$xor": [{"tags": "city"}]}'})
    assert unknown.status_code == 422 and "use $and or $or" in unknown.json()["detail"]
    reserved = client.patch(f"/api/v1/images/{city}", json={"metadata": {"image.format": "mine"}})
    assert reserved.status_code == 422 and "built-in field" in reserved.json()["detail"]
    assert client.get(f"/api/v1/images/{city}").json()["metadata"] == {"tags": ["city"], "album": "home"}
