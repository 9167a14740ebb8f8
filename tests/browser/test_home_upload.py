"""Uploading on the home page, as a newcomer does it on a desktop and on a phone: the outcome shows where they
are looking, "Recently added" follows, and a file over the limit is refused at once, before it is sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, FilePayload, Locator, Page, Request, ViewportSize, expect

from imagematch.library import Library
from testkit.images import encode, jpeg, photo
from tests.browser.conftest import DESKTOP, PHONE, LiveApp, _tab

pytestmark = pytest.mark.browser

UPLOAD_MS = 30_000  # embedding on two shared cores can be slow; the outcome, not the speed, is tested here
VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])


def image_file(name: str, data: bytes | None = None) -> FilePayload:
    return {"name": name, "mimeType": "image/jpeg", "buffer": data if data is not None else jpeg(Path(name).stem)}


def assert_in_view(page: Page, locator: Locator) -> None:
    """Seen without scrolling: wholly inside the window as it is now."""
    box = locator.bounding_box()
    size = page.viewport_size
    assert box is not None and size is not None
    assert box["y"] >= 0 and box["y"] + box["height"] <= size["height"], f"{box} is outside {size}"


def newest_ids(library: Library) -> list[str]:
    return [record.id for record in library.catalog.page(limit=8)]


@VIEWPORTS
def test_the_upload_outcome_is_in_view_and_recently_added_follows(
    browser: Browser, app: LiveApp, viewport: ViewportSize
) -> None:
    with _tab(browser, app, javascript=True, viewport=viewport) as page:
        page.goto("/")
        expect(page.get_by_test_id("empty-library")).to_be_visible()
        page.get_by_label("Images", exact=True).set_input_files([image_file("astronaut.jpg")])
        page.get_by_role("button", name="Upload").click()
        summary = page.get_by_test_id("upload-summary")
        expect(summary).to_have_text("1 added, 0 duplicates, 0 failed.", timeout=UPLOAD_MS)
        assert_in_view(page, summary)
        expect(page.get_by_test_id("empty-library")).to_be_hidden()
        tiles = page.get_by_test_id("recent-grid").get_by_test_id("image-tile")
        expect(tiles).to_have_count(1)
        expect(tiles.first).to_have_attribute("data-image-id", newest_ids(app.library)[0])
        expect(page.get_by_test_id("browse-all")).to_have_text("Browse all 1")
        expect(page.get_by_test_id("footer-count")).to_have_text("1 image")

        page.get_by_label("Images", exact=True).set_input_files(
            [image_file("coffee.jpg"), image_file("astronaut-copy.png", encode(photo("astronaut"), "PNG"))]
        )
        page.get_by_role("button", name="Upload").click()
        expect(summary).to_have_text("1 added, 1 duplicate, 0 failed.", timeout=UPLOAD_MS)
        assert_in_view(page, summary)
        expect(page.get_by_test_id("browse-all")).to_have_text("Browse all 2")
        expect(page.get_by_test_id("footer-count")).to_have_text("2 images")
        expect(tiles).to_have_count(2)
        assert [tiles.nth(i).get_attribute("data-image-id") for i in range(2)] == newest_ids(app.library)
        expect(tiles.first.locator("img")).to_have_attribute("alt", "coffee.jpg")
        expect(tiles.first.get_by_role("link")).to_have_attribute("href", f"/images/{newest_ids(app.library)[0]}")


@VIEWPORTS
def test_without_javascript_the_upload_report_is_in_view(
    browser: Browser, app: LiveApp, viewport: ViewportSize
) -> None:
    with _tab(browser, app, javascript=False, viewport=viewport) as page:
        page.goto("/")
        page.get_by_label("Images", exact=True).set_input_files([image_file("rocket.jpg")])
        page.get_by_role("button", name="Upload").click()
        summary = page.get_by_test_id("upload-summary")
        expect(summary).to_have_text("1 added, 0 duplicates, 0 failed.", timeout=UPLOAD_MS)
        assert_in_view(page, summary)
        expect(page.get_by_test_id("browse-all")).to_have_text("Browse all 1")


CHOOSE_FILES = """([small]) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([new Uint8Array(57 * 1024 * 1024)], "photo.jpg", {type: "image/jpeg"}));
    transfer.items.add(new File([new Uint8Array(small)], "rocket.jpg", {type: "image/jpeg"}));
    const input = document.querySelector("[data-upload-files]");
    input.files = transfer.files;
    input.dispatchEvent(new Event("change", {bubbles: true}));
}"""


def test_a_file_over_the_limit_is_refused_at_once_and_never_sent(browser: Browser, app: LiveApp) -> None:
    assert app.settings.max_upload_bytes == 50 * 1024 * 1024  # the default, as the page is told it
    with _tab(browser, app, javascript=True, viewport=PHONE) as page:
        sent: list[Request] = []
        page.on("request", lambda request: sent.append(request) if request.method == "POST" else None)
        page.goto("/")
        page.evaluate(CHOOSE_FILES, [list(jpeg("rocket"))])
        warning = page.get_by_test_id("chosen-too-large")
        expect(warning).to_have_count(1)
        expect(warning).to_contain_text("photo.jpg is 57 MB; the limit is 50 MB")
        page.get_by_role("button", name="Upload").click()
        summary = page.get_by_test_id("upload-summary")
        expect(summary).to_have_text("1 added, 0 duplicates, 1 failed.", timeout=UPLOAD_MS)
        results = page.get_by_test_id("upload-result")
        expect(results.nth(0)).to_have_attribute("data-status", "failed")
        expect(results.nth(0)).to_contain_text("photo.jpg is 57 MB; the limit is 50 MB")
        expect(results.nth(1)).to_have_attribute("data-status", "added")
        assert [len(request.post_data_buffer or b"") < 1024 * 1024 for request in sent] == [True]
        assert [record.filename for record in app.library.catalog.page()] == ["rocket.jpg"]
