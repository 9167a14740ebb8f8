"""The HTML pages through FastAPI's TestClient: rendering, the no-JavaScript flows, CSRF and escaping."""

from __future__ import annotations

import html
import re
import threading
from pathlib import Path
from typing import Protocol

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imagematch.jobs import JobRunner
from imagematch.library import Library
from imagematch.records import RecordPatch
from imagematch.settings import Settings
from imagematch.web import pages
from imagematch.web.app import create_app
from imagematch.web.forms import editable_value, typed_value
from testkit.images import encode, jpeg, photo

SCRIPT = "<script>alert(1)</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
# A filename keeps only its last path part, so its payload has no slash.
FILENAME = "<img src=x onerror=alert(1)>.jpg"
ESCAPED_FILENAME = "&lt;img src=x onerror=alert(1)&gt;.jpg"


class Page(Protocol):
    """What the tests read of a response (TestClient's response class depends on the installed httpx)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...


def token(client: TestClient) -> str:
    """The CSRF token the pages give this client (and set in its cookie)."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert match is not None
    return match.group(1)


def heading(response: Page) -> str:
    match = re.search(r"<h1[^>]*>(.*?)</h1>", response.text, re.S)
    assert match is not None, response.text[:500]
    return match.group(1).strip()


def statuses(response: Page) -> list[str]:
    return re.findall(r'data-testid="upload-result" data-status="(\w+)"', response.text)


def add(library: Library, name: str, **fields: object) -> str:
    result = library.ingest.add(jpeg(name), filename=f"{name}.jpg", **fields)  # type: ignore[arg-type]
    assert result.record is not None
    return result.record.id


def form_upload(client: TestClient, files: list[tuple[str, bytes]], **form: str | list[str]) -> Page:
    return client.post(
        "/upload",
        data={"csrf_token": token(client), **form},
        files=[("files", (name, data, "image/jpeg")) for name, data in files],
    )


def test_every_page_renders_with_navigation_and_security_headers(client: TestClient, library: Library) -> None:
    image_id = add(library, "astronaut")
    for url, title in [
        ("/", "Upload and search"),
        ("/search", "Search"),
        ("/search?text=astronaut", "Search"),
        ("/images", "Browse"),
        (f"/images/{image_id}", "astronaut.jpg"),
        (f"/images/{image_id}/delete", "Delete this image?"),
        ("/upload-samples", "Upload samples"),
        ("/reset", "Reset the library"),
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert heading(response) == title
        assert 'href="/images"' in response.text and 'href="/upload-samples"' in response.text
        assert "1 image<" in response.text  # the footer's count
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "<script>" not in response.text  # scripts come from /static only
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_csrf_cookie_is_http_only_and_same_site(client: TestClient) -> None:
    cookie = client.get("/").headers["set-cookie"]
    assert cookie.startswith("imagematch_csrf=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "set-cookie" not in client.get("/").headers  # the same token for the whole session


@pytest.mark.parametrize("how", ["missing", "wrong", "no-cookie"])
def test_every_form_refuses_a_bad_csrf_token_and_changes_nothing(
    client: TestClient, library: Library, settings: Settings, how: str
) -> None:
    image_id = add(library, "astronaut", description="before", metadata={"k": 1})
    settings.samples_dir.mkdir()
    (settings.samples_dir / "coffee.jpg").write_bytes(jpeg("coffee"))
    sent = {"missing": {}, "wrong": {"csrf_token": "x" * 43}, "no-cookie": {"csrf_token": token(client)}}[how]
    if how == "no-cookie":
        client.cookies.clear()
    posts = [
        ("/upload", {"description": "new"}, {"files": ("coffee.jpg", jpeg("coffee"), "image/jpeg")}),
        ("/search", {"text": "cat"}, {"image": ("q.jpg", jpeg("coffee"), "image/jpeg")}),
        (f"/images/{image_id}/edit", {"description": "after", "meta_key": "k", "meta_value": "2"}, None),
        (f"/images/{image_id}/delete", {}, None),
        ("/upload-samples", {}, None),
        ("/reset", {"confirm": "DELETE ALL"}, None),
    ]
    for url, form, files in posts:
        response = client.post(url, data={**form, **sent}, files=files, follow_redirects=False)
        assert response.status_code == 403, url
        assert response.headers["content-type"].startswith("text/html")
        assert "could not be verified" in response.text
    record = library.catalog.get(image_id)
    assert library.catalog.count() == 1 and record.description == "before" and record.metadata == {"k": 1}
    jobs: JobRunner = client.app.state.jobs  # type: ignore[attr-defined]
    assert jobs.recent() == []


def test_user_text_is_escaped_on_every_page_that_shows_it(
    client: TestClient, library: Library, settings: Settings
) -> None:
    result = library.ingest.add(
        jpeg("astronaut"), filename=FILENAME, description=SCRIPT, metadata={SCRIPT: SCRIPT, "plain": "x"}
    )
    assert result.record is not None
    image_id = result.record.id
    library.catalog.update(image_id, RecordPatch(caption=SCRIPT))
    settings.samples_dir.mkdir()
    (settings.samples_dir / FILENAME).write_bytes(jpeg("coffee"))
    job_url = client.post("/upload-samples", data={"csrf_token": token(client)}, follow_redirects=False).headers[
        "location"
    ]
    client.app.state.jobs.wait(30)  # type: ignore[attr-defined]
    report = form_upload(client, [(FILENAME, jpeg("rocket")), (FILENAME, jpeg("astronaut"))], description=SCRIPT)
    assert statuses(report) == ["added", "duplicate"]

    pages_showing_it: dict[str, Page] = {
        "home": client.get("/"),
        "upload report": report,
        "browse": client.get("/images"),
        "image": client.get(f"/images/{image_id}"),
        "delete": client.get(f"/images/{image_id}/delete"),
        "search": client.get("/search", params={"text": "astronaut", "k": "5"}),
        "similar": client.get("/search", params={"image_id": image_id}),
        "samples report": client.get(job_url),
    }
    for page, response in pages_showing_it.items():
        assert response.status_code == 200, page
        assert SCRIPT not in response.text, page
        assert "<img src=x" not in response.text, page
        assert ESCAPED_FILENAME in response.text, page
        if page not in ("samples report", "similar"):
            assert ESCAPED_SCRIPT in response.text, page
    image_page = pages_showing_it["image"].text
    assert image_page.count(ESCAPED_SCRIPT) >= 5  # description, caption, metadata key and value, edit fields


def test_not_found_is_a_page_for_pages_and_json_for_the_api(client: TestClient) -> None:
    for url in ("/images/0123456789abcdef-01234567", "/no/such/page", "/upload-samples?job=nope"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.headers["content-type"].startswith("text/html")
        assert heading(response) == "Page not found"
        assert 'href="/"' in response.text
    for url in ("/api/v1/images/0123456789abcdef-01234567", "/api/v1/no-such-route"):
        response = client.get(url)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"
        assert response.json()["detail"]


@pytest.mark.parametrize("url", ["/images?page=0", "/images?page=two", "/images?sort=size", "/reset?deleted=-1"])
def test_bad_input_on_a_page_gets_a_friendly_page(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 422
    assert heading(response) == "That input cannot be used"
    assert "Traceback" not in response.text


def test_api_refuses_writes_a_browser_sends_from_another_site(client: TestClient) -> None:
    files = {"file": ("a.jpg", jpeg("astronaut"), "image/jpeg")}
    refused = client.post("/api/v1/images", files=files, headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403 and refused.json()["detail"]
    assert (
        client.post(
            "/api/v1/reset", json={"confirm": "DELETE ALL"}, headers={"Sec-Fetch-Site": "same-site"}
        ).status_code
        == 403
    )
    assert client.post("/api/v1/images", files=files, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 201


def test_form_upload_reports_every_file(client: TestClient, library: Library) -> None:
    response = form_upload(
        client,
        [
            ("astronaut.jpg", jpeg("astronaut")),
            ("coffee.jpg", jpeg("coffee")),
            ("astronaut-again.png", encode(photo("astronaut"), "PNG")),
            ("notes.jpg", b"this is not an image"),
        ],
        description="holiday",
        meta_key=["year", "favourite", "ratio", "code", "place", "tags", ""],
        meta_type=["value", "value", "value", "value", "value", "list", "value"],
        meta_value=["2024", "true", "1.5", '"007"', "Biarritz", 'surf, "Biarritz, France"', ""],
    )
    assert response.status_code == 200
    assert statuses(response) == ["added", "added", "duplicate", "failed"]
    assert "2 added, 1 duplicate, 1 failed." in response.text
    astronaut = next(r for r in library.catalog.page() if r.filename == "astronaut.jpg")
    assert astronaut.description == "holiday"
    assert astronaut.metadata == {
        "year": 2024,
        "favourite": True,
        "ratio": 1.5,
        "code": "007",
        "place": "Biarritz",
        "tags": ["surf", "Biarritz, France"],
    }
    duplicate = response.text.split('data-status="duplicate"')[1].split("</li>")[0]
    assert f'href="/images/{astronaut.id}"' in duplicate
    assert f"/api/v1/images/{astronaut.id}/thumbnail" in duplicate
    failed = response.text.split('data-status="failed"')[1].split("</li>")[0]
    assert "not an image we can read" in failed
    assert library.catalog.count() == 2


def test_too_large_uploads_are_refused_with_a_page(settings: Settings, library: Library) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 40_000})
    library.settings = small
    with TestClient(create_app(small, library)) as client:
        one_too_large = form_upload(client, [("coins.jpg", jpeg("coins")), ("astronaut.jpg", jpeg("astronaut"))])
        assert statuses(one_too_large) == ["added", "failed"]
        assert "larger than the limit of 39.1 KB" in one_too_large.text
        request_too_large = form_upload(client, [("retina.jpg", jpeg("retina"))])
        assert request_too_large.status_code == 413
        assert heading(request_too_large) == "Too large" and "Send fewer or smaller files" in request_too_large.text
        assert library.catalog.count() == 1


def test_form_upload_without_files_or_with_clashing_keys_says_what_to_fix(client: TestClient, library: Library) -> None:
    empty = client.post(
        "/upload", data={"csrf_token": token(client)}, files={"files": ("", b"", "application/octet-stream")}
    )
    assert empty.status_code == 422 and "Choose at least one image" in empty.text
    clash = form_upload(client, [("a.jpg", jpeg("astronaut"))], meta_key=["a", "a"], meta_value=["1", "2"])
    assert clash.status_code == 422 and "appears twice" in clash.text
    assert library.catalog.count() == 0


def test_edit_changes_description_and_metadata_and_keeps_types(client: TestClient, library: Library) -> None:
    image_id = add(library, "coffee", description="old", metadata={"cafe": "x", "year": "2024", "cups": 2})
    page = client.get(f"/images/{image_id}").text
    assert 'value="&#34;2024&#34;"' in page  # text that looks like a number is shown quoted, so it stays text
    response = client.post(
        f"/images/{image_id}/edit",
        data={
            "csrf_token": token(client),
            "description": "espresso",
            "meta_key": ["cafe", "year", "", "open"],
            "meta_value": ["Le Zinc", '"2024"', "", "true"],
        },
    )
    assert response.status_code == 200 and str(response.url).endswith("?notice=saved")
    assert "Changes saved." in response.text
    record = library.catalog.get(image_id)
    assert record.description == "espresso"
    assert record.metadata == {"cafe": "Le Zinc", "year": "2024", "open": True}
    assert "Le Zinc" in client.get(f"/images/{image_id}").text


def test_a_value_without_a_key_is_refused_not_dropped_with_changes_saved(client: TestClient, library: Library) -> None:
    """The edit form dropped a value whose key was empty and still said "Changes saved."."""
    image_id = add(library, "coffee", metadata={"cafe": "x"})
    response = client.post(
        f"/images/{image_id}/edit",
        data={"csrf_token": token(client), "description": "d", "meta_key": ["cafe", ""], "meta_value": ["y", "orphan"]},
    )
    assert response.status_code == 422 and "Changes saved." not in response.text
    assert "has the value &#39;orphan&#39; but no key" in response.text
    assert 'value="orphan"' in response.text and 'value="y"' in response.text  # what was typed is kept
    assert library.catalog.get(image_id).metadata == {"cafe": "x"} and library.catalog.get(image_id).description == ""


def test_tags_are_edited_as_a_list_row_and_shown_as_links(client: TestClient, library: Library) -> None:
    image_id = add(library, "coffee", metadata={"tags": ["espresso", "Rome, Italy"], "cafe": "x"})
    page = client.get(f"/images/{image_id}").text
    row = page.split('name="meta_key" value="tags"')[1].split("</div>")[0]
    assert '<option value="list" selected>' in row and 'value="espresso, &#34;Rome, Italy&#34;"' in row
    shown = page.split('data-testid="metadata"')[1].split("</dl>")[0]
    assert re.findall(r'<li class="tag"><a href="/images\?([^"]+)">([^<]+)</a>', shown) == [
        ("key=tags&amp;value=%22espresso%22", "espresso"),
        ("key=tags&amp;value=%22Rome%2C+Italy%22", "Rome, Italy"),
    ]
    browse = client.get("/images", params={"key": "tags", "value": '"Rome, Italy"'})
    assert 'data-testid="browse-total">1 image' in browse.text
    saved = client.post(
        f"/images/{image_id}/edit",
        data={
            "csrf_token": token(client),
            "meta_key": ["tags", "cafe"],
            "meta_type": ["list", "value"],
            "meta_value": ['espresso, "Rome, Italy", crema,', "x"],
        },
    )
    assert saved.status_code == 200 and "Changes saved." in saved.text
    assert library.catalog.get(image_id).metadata == {"tags": ["espresso", "Rome, Italy", "crema"], "cafe": "x"}
    empty = client.post(
        f"/images/{image_id}/edit",
        data={"csrf_token": token(client), "meta_key": ["tags"], "meta_type": ["list"], "meta_value": [" , "]},
    )
    assert empty.status_code == 422 and "add at least one tag" in empty.text


def test_keys_a_filter_would_read_as_a_built_in_field_are_refused(client: TestClient, library: Library) -> None:
    """A user key `image.format` was accepted but could never be filtered: the built-in field won."""
    image_id = add(library, "coffee")
    response = client.post(
        f"/images/{image_id}/edit",
        data={"csrf_token": token(client), "meta_key": ["image.format"], "meta_value": ["mine"]},
    )
    assert response.status_code == 422 and "Changes saved." not in response.text
    assert "starts with &#39;image.&#39;, which filters read as a built-in field" in response.text
    assert library.catalog.get(image_id).metadata == {}


def test_image_page_shows_every_detail_including_exif(client: TestClient, library: Library) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
    details = exif.get_ifd(0x8769)
    details[0x9003], details[0x9011], details[0xA434] = "2023:07:14 18:30:05", "+02:00", "RF24-105mm F4 L IS USM"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 29.6), "E", (2.0, 17.0, 40.2)
    result = library.ingest.add(encode(photo("rocket"), "JPEG", exif=exif.tobytes()), filename="eiffel.jpg")
    assert result.record is not None
    record = result.record
    facts = client.get(f"/images/{record.id}").text.split('data-testid="facts"')[1].split("</dl>")[0]
    details_shown = dict(re.findall(r"<dt>([^<]*)</dt>\s*<dd[^>]*>(.*?)</dd>", facts, re.S))
    assert record.phash in details_shown["pHash"] and record.id in details_shown["Id"]
    assert details_shown["Format"] == "JPEG"
    assert details_shown["Size"] == f"{record.width} × {record.height} px, {record.size / 1024:.1f} KB"
    assert details_shown["Taken"] == "2023-07-14 16:30 UTC"
    assert details_shown["Camera"] == "Canon EOS R5" and details_shown["Lens"] == "RF24-105mm F4 L IS USM"
    assert details_shown["Location"] == "48.85822, 2.29450"
    assert "no captioner" in details_shown["Caption"]


def test_a_refused_edit_keeps_what_was_typed(client: TestClient, library: Library) -> None:
    image_id = add(library, "coffee", description="old")
    response = client.post(
        f"/images/{image_id}/edit",
        data={"csrf_token": token(client), "description": "typed", "meta_key": ["a", "a"], "meta_value": ["1", "2"]},
    )
    assert response.status_code == 422
    assert "appears twice" in response.text and ">typed</textarea>" in response.text
    assert library.catalog.get(image_id).description == "old"


def test_delete_asks_for_confirmation_first(client: TestClient, library: Library) -> None:
    image_id = add(library, "rocket")
    confirmation = client.get(f"/images/{image_id}/delete")
    assert f'action="/images/{image_id}/delete" method="post"' in confirmation.text
    assert library.catalog.count() == 1
    response = client.post(f"/images/{image_id}/delete", data={"csrf_token": token(client)})
    assert response.status_code == 200 and "The image was deleted." in response.text
    assert library.catalog.count() == 0
    assert client.get(f"/images/{image_id}").status_code == 404


def test_reset_acts_only_on_the_exact_phrase(client: TestClient, library: Library) -> None:
    add(library, "astronaut")
    add(library, "coffee")
    assert "all <strong>2</strong> images" in client.get("/reset").text
    for wrong in ("", "delete all", "DELETE"):
        response = client.post("/reset", data={"csrf_token": token(client), "confirm": wrong})
        assert response.status_code == 422 and "Nothing was deleted" in response.text
    assert library.catalog.count() == 2
    done = client.post("/reset", data={"csrf_token": token(client), "confirm": "DELETE ALL"})
    assert done.status_code == 200
    assert "Deleted 2 images." in done.text and "The library is now empty." in done.text
    assert library.catalog.count() == 0
    assert 'data-testid="empty-library"' in client.get("/").text


def test_search_by_text_ranks_results_and_keeps_the_query(client: TestClient, library: Library) -> None:
    for name in ("astronaut", "coffee", "rocket"):
        add(library, name, description=f"a photo of a {name}")
    posted = client.post(
        "/search",
        data={"csrf_token": token(client), "text": "a rocket launch", "k": "2"},
        files={"image": ("", b"", "application/octet-stream")},  # the empty file input, as browsers send it
        follow_redirects=False,
    )
    assert posted.status_code == 303
    response = client.get(posted.headers["location"])
    assert response.status_code == 200
    assert len(re.findall(r'data-testid="result"', response.text)) == 2
    scores = [float(s) for s in re.findall(r"Score <strong>([-0-9.]+)</strong>", response.text)]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    assert 'value="a rocket launch"' in response.text and 'name="k" value="2"' in response.text
    assert "data-weight hidden" in response.text  # no image: no slider


def test_search_by_uploaded_image_redirects_to_a_linkable_page(client: TestClient, library: Library) -> None:
    coffee = add(library, "coffee")
    add(library, "rocket")
    posted = client.post(
        "/search",
        data={"csrf_token": token(client), "text": "a cup", "image_weight": "0.8"},
        files={"image": ("query.jpg", jpeg("coffee"), "image/jpeg")},
        follow_redirects=False,
    )
    assert posted.status_code == 303
    location = posted.headers["location"]
    assert "query_image=" in location and "image_weight=0.8" in location
    page = client.get(location)
    first = re.search(r'data-testid="result" data-image-id="([^"]+)"', page.text)
    assert first is not None and first.group(1) == coffee
    assert "data-weight hidden" not in page.text and 'value="0.8"' in page.text
    preview = re.search(r'src="(/search/query-image/[^"]+)"', page.text)
    assert preview is not None
    assert client.get(preview.group(1)).headers["content-type"] == "image/jpeg"
    assert client.get("/search/query-image/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404


def test_search_tells_about_empty_truncated_and_wrong_queries(client: TestClient, library: Library) -> None:
    nothing = client.get("/search", params={"text": "a cat"})
    assert 'data-testid="no-results"' in nothing.text and "The library is empty" in nothing.text
    add(library, "astronaut", metadata={"album": "space"})
    filtered = client.get("/search", params={"text": "a cat", "key": "album", "value": "sea"})
    assert 'data-testid="no-results"' in filtered.text
    long = client.get("/search", params={"text": "many words " * 60})
    assert 'data-testid="truncated"' in long.text
    bad_k = client.get("/search", params={"text": "a cat", "k": "ten"})
    assert bad_k.status_code == 422 and "whole number" in bad_k.text and 'value="ten"' in bad_k.text
    gone = client.get("/search", params={"query_image": "AAAAAAAAAAAAAAAAAAAAAA"})
    assert gone.status_code == 422 and "choose it again" in gone.text
    bad_image = client.post(
        "/search", data={"csrf_token": token(client)}, files={"image": ("q.jpg", b"not an image", "image/jpeg")}
    )
    assert bad_image.status_code == 415 and "The query image cannot be used" in bad_image.text


def test_browse_pages_sorts_and_filters(client: TestClient, library: Library, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pages, "BROWSE_PAGE_SIZE", 2)
    ids = [
        add(library, name, metadata={"year": year})
        for name, year in (("astronaut", 2023), ("coffee", 2024), ("rocket", 2024))
    ]

    def shown(response: Page) -> list[str]:
        return re.findall(r'data-testid="image-tile" data-image-id="([^"]+)"', response.text)

    first = client.get("/images")
    assert shown(first) == [ids[2], ids[1]] and "Page 1 of 2" in first.text
    assert 'rel="next"' in first.text and ids[2] in first.text
    second = client.get("/images?sort=newest&page=2")
    assert shown(second) == [ids[0]] and 'rel="prev"' in second.text
    # Next carries where the page ends: an image added meanwhile does not push one back onto the next page.
    follow = re.search(r'<a href="([^"]+)" rel="next"', first.text)
    assert follow is not None and "after=" in follow.group(1)
    add(library, "camera")
    following = client.get(html.unescape(follow.group(1)))
    assert shown(following) == [ids[0]] and "Page 2 of 2" in following.text
    assert client.get("/images", params={"after": "nonsense"}).status_code == 422
    assert shown(client.get("/images?sort=oldest")) == ids[:2]
    by_year = client.get("/images", params={"key": "year", "value": "2024", "sort": "oldest"})
    assert shown(by_year) == ids[1:] and "2 images where year = 2024" in by_year.text
    assert shown(client.get("/images", params={"key": "year", "value": "1999"})) == []
    bad = client.get("/images", params={"key": "image.nothing", "value": "1"})
    assert bad.status_code == 422 and "Unknown field" in bad.text


def test_samples_batch_upload_without_javascript(client: TestClient, settings: Settings, library: Library) -> None:
    assert "does not exist yet" in client.get("/upload-samples").text
    missing = client.post("/upload-samples", data={"csrf_token": token(client)})
    assert missing.status_code == 422 and "does not exist" in missing.text
    folder: Path = settings.samples_dir
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        (folder / f"{name}.jpg").write_bytes(jpeg(name))
    (folder / "trip").mkdir()
    (folder / "trip" / "coffee-copy.png").write_bytes(encode(photo("coffee"), "PNG"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    assert "<strong>4</strong> image files in the folder" in client.get("/upload-samples").text

    started = client.post("/upload-samples", data={"csrf_token": token(client)}, follow_redirects=False)
    assert started.status_code == 303
    job_url = started.headers["location"]
    assert job_url.startswith("/upload-samples?job=")
    client.app.state.jobs.wait(30)  # type: ignore[attr-defined]
    report = client.get(job_url).text
    assert 'http-equiv="refresh"' not in report  # refreshes only while running
    assert "Finished: 2 added, 1 duplicate, 1 failed." in report
    assert report.count('data-testid="job-item-added"') == 2
    duplicate = report.split('data-testid="job-item-duplicate"')[1].split("</li>")[0]
    assert "trip/coffee-copy.png" in duplicate and "looks the same as coffee.jpg" in duplicate
    failed = report.split('data-testid="job-item-failed"')[1].split("</li>")[0]
    assert "broken.jpg" in failed and "not an image we can read" in failed
    assert 'data-testid="recent-jobs"' in report and job_url in report
    assert library.catalog.count() == 2


def test_a_running_batch_page_refreshes_itself_without_javascript(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.samples_dir.mkdir()
    jobs: JobRunner = client.app.state.jobs  # type: ignore[attr-defined]
    release = threading.Event()
    monkeypatch.setattr(jobs, "_run", lambda status, files: release.wait(30))  # the job stays "running"
    try:
        started = client.post("/upload-samples", data={"csrf_token": token(client)})
        assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in started.text
        assert "A batch upload is running" in started.text
        again = client.post("/upload-samples", data={"csrf_token": token(client)})
        assert again.status_code == 409 and "already running" in again.text
    finally:
        release.set()


@pytest.mark.parametrize(
    ("typed", "value"),
    [
        ("2024", 2024),
        ("-3", -3),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ('"2024"', "2024"),
        ("True", "True"),
        ("holiday", "holiday"),
        (" spaced ", "spaced"),
        ("1.2.3", "1.2.3"),
        ("nan", "nan"),
        ("٣", "٣"),
    ],
)
def test_typed_form_values_round_trip(typed: str, value: object) -> None:
    assert typed_value(typed) == value and type(typed_value(typed)) is type(value)
    assert typed_value(editable_value(typed_value(typed))) == value
