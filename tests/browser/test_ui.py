"""The web interface in a real browser: Debian's chromium driven by Playwright against the app under uvicorn."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import FilePayload, Locator, Page, expect

from imagematch.library import Library
from testkit.images import encode, jpeg, photo
from tests.browser.conftest import LiveApp

pytestmark = pytest.mark.browser


def image_file(name: str, data: bytes | None = None, mime: str = "image/jpeg") -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data if data is not None else jpeg(Path(name).stem)}


def add(library: Library, name: str, **fields: Any) -> str:
    result = library.ingest.add(jpeg(name), filename=f"{name}.jpg", **fields)
    assert result.record is not None
    return result.record.id


def test_upload_one_then_several_files_with_a_duplicate_notice(page: Page, app: LiveApp) -> None:
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Upload and search")
    page.get_by_label("Images", exact=True).set_input_files([image_file("astronaut.jpg")])
    expect(page.locator("[data-chosen-files] li")).to_have_count(1)
    page.get_by_label("Description").fill("first woman to command")
    page.get_by_label("Metadata key", exact=True).first.fill("year")
    page.get_by_label("Metadata value", exact=True).first.fill("2024")
    page.get_by_role("button", name="Add field").click()
    page.get_by_label("Metadata key", exact=True).nth(1).fill("draft")
    page.get_by_role("button", name="Add field").click()
    page.get_by_label("Metadata key", exact=True).nth(2).fill("album")
    page.get_by_label("Metadata value", exact=True).nth(2).fill("space")
    page.get_by_role("button", name="Remove this field").nth(1).click()  # the "draft" row
    page.get_by_role("button", name="Upload").click()

    results = page.get_by_test_id("upload-result")
    expect(page.get_by_test_id("upload-summary")).to_have_text("1 added, 0 duplicates, 0 failed.")
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("data-status", "added")
    astronaut = app.library.catalog.page()[0]
    assert astronaut.metadata == {"year": 2024, "album": "space"}
    assert astronaut.description == "first woman to command"
    expect(results.first.get_by_role("link", name="Open")).to_have_attribute("href", f"/images/{astronaut.id}")

    page.get_by_label("Images", exact=True).set_input_files(
        [
            image_file("coffee.jpg"),
            image_file("astronaut-copy.png", encode(photo("astronaut"), "PNG"), "image/png"),
            image_file("notes.jpg", b"not an image at all"),
        ]
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_test_id("upload-summary")).to_have_text("1 added, 1 duplicate, 1 failed.")
    expect(results).to_have_count(3)
    statuses = [results.nth(i).get_attribute("data-status") for i in range(3)]
    assert statuses == ["added", "duplicate", "failed"]
    duplicate = results.nth(1)
    expect(duplicate).to_contain_text("Already stored as astronaut.jpg")
    expect(duplicate.get_by_role("link")).to_have_attribute("href", f"/images/{astronaut.id}")
    expect(duplicate.locator("img")).to_have_attribute("src", f"/api/v1/images/{astronaut.id}/thumbnail")
    expect(results.nth(2)).to_contain_text("not an image we can read")
    assert app.library.catalog.count() == 2


def test_files_dropped_on_the_drop_zone_are_uploaded(page: Page, app: LiveApp) -> None:
    page.goto("/")
    dropped = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped-rocket.jpg", {type: "image/jpeg"}));
            return transfer;
        }""",
        list(jpeg("rocket")),
    )
    page.dispatch_event("[data-dropzone]", "drop", {"dataTransfer": dropped})
    expect(page.locator("[data-chosen-files]")).to_contain_text("dropped-rocket.jpg")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_test_id("upload-result")).to_have_attribute("data-status", "added")
    assert [r.filename for r in app.library.catalog.page()] == ["dropped-rocket.jpg"]


def result_ids(page: Page) -> list[str]:
    return [str(r.get_attribute("data-image-id")) for r in page.get_by_test_id("result").all()]


def test_search_by_text_by_image_and_by_both_with_the_slider(page: Page, app: LiveApp) -> None:
    ids = {name: add(app.library, name, description=f"a photo: {name}") for name in ("astronaut", "coffee", "rocket")}
    page.goto("/search")
    slider = page.get_by_label("Image or words: which counts more?", exact=True)
    expect(slider).to_be_hidden()
    page.locator("summary", has_text="Options").click()
    expect(slider).to_be_hidden()

    page.get_by_label("Words", exact=True).fill("a rocket on the launch pad")
    expect(slider).to_be_hidden()
    page.get_by_label("How many results").fill("2")
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page).to_have_url(re.compile(r"/search\?text=a\+rocket\+on\+the\+launch\+pad&k=2#results$"))
    expect(page.get_by_test_id("result")).to_have_count(2)
    expect(page.get_by_test_id("score").first).to_contain_text(re.compile(r"Score -?\d\.\d{3}"))
    expect(page.get_by_label("Words", exact=True)).to_have_value("a rocket on the launch pad")

    page.get_by_label("Example image").set_input_files([image_file("coffee.jpg")])
    expect(slider).to_be_visible()
    slider.fill("0.8")
    expect(page.locator("[data-weight-output]")).to_have_text("80% image, 20% words")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"query_image=[\w-]{22}.*image_weight=0\.8"))
    expect(page.locator("[data-kept-image]")).to_contain_text("coffee.jpg")
    expect(slider).to_be_visible()
    expect(slider).to_have_value("0.8")
    expect(page.get_by_test_id("result")).to_have_count(2)

    page.get_by_label("Words", exact=True).fill("")
    expect(slider).to_be_hidden()
    page.get_by_label("How many results").fill("3")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("result")).to_have_count(3)
    assert result_ids(page)[0] == ids["coffee"]  # the same photo is its own best match

    page.get_by_label("Words", exact=True).fill("a cup")
    expect(slider).to_be_visible()
    page.get_by_role("link", name="Remove image").click()
    expect(page.locator("[data-kept-image]")).to_have_count(0)
    expect(slider).to_be_hidden()


def test_searching_an_empty_library_says_so(page: Page) -> None:
    page.goto("/search?text=anything")
    expect(page.get_by_test_id("no-results")).to_contain_text("The library is empty")


def test_open_an_image_edit_its_metadata_and_find_similar(page: Page, app: LiveApp) -> None:
    image_id = add(app.library, "chelsea", description="a cat", metadata={"pet": "cat", "age": 3, "tmp": "x"})
    add(app.library, "rocket")
    page.goto("/images")
    page.get_by_role("link", name="chelsea.jpg").click()
    expect(page).to_have_url(re.compile(f"/images/{image_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("chelsea.jpg")
    expect(page.get_by_test_id("image-id")).to_have_text(image_id)
    expect(page.get_by_test_id("facts")).to_contain_text("451 × 300 px")

    page.get_by_label("Description", exact=True).fill("Chelsea, the neighbour's cat")
    rows = page.locator("[data-meta-row]")
    expect(rows).to_have_count(4)  # three stored fields and an empty one

    def row(key: str) -> Locator:
        return rows.filter(has=page.locator(f'input[name="meta_key"][value="{key}"]'))

    row("age").get_by_label("Metadata value").fill("4")
    row("tmp").get_by_role("button", name="Remove this field").click()
    expect(rows).to_have_count(3)
    rows.last.get_by_label("Metadata key").fill("indoor")
    rows.last.get_by_label("Metadata value").fill("true")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_test_id("notice-success")).to_have_text("Changes saved.")

    page.reload()
    expect(page.get_by_label("Description", exact=True)).to_have_value("Chelsea, the neighbour's cat")
    expect(row("age").get_by_label("Metadata value")).to_have_value("4")
    expect(row("indoor").get_by_label("Metadata value")).to_have_value("true")
    expect(row("tmp")).to_have_count(0)
    expect(page.get_by_test_id("metadata")).to_contain_text("indoor")
    record = app.library.catalog.get(image_id)
    assert record.metadata == {"pet": "cat", "age": 4, "indoor": True}

    page.get_by_role("link", name="Find similar").click()
    expect(page.locator("[data-kept-image]")).to_contain_text("chelsea.jpg")
    assert result_ids(page) and image_id not in result_ids(page)  # the others, most alike first


def test_delete_asks_for_confirmation(page: Page, app: LiveApp) -> None:
    image_id = add(app.library, "rocket")
    page.goto(f"/images/{image_id}")
    page.get_by_role("link", name="Delete…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete this image?")
    assert app.library.catalog.count() == 1
    page.get_by_role("button", name="Delete permanently").click()
    expect(page.get_by_test_id("notice-success")).to_have_text("The image was deleted.")
    expect(page.get_by_test_id("browse-empty")).to_be_visible()
    assert app.library.catalog.count() == 0


def test_batch_upload_shows_live_progress_and_the_report(
    page: Page, app: LiveApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder: Path = app.settings.samples_dir
    (folder / "trip").mkdir(parents=True)
    for name in ("astronaut", "coffee", "rocket"):
        (folder / f"{name}.jpg").write_bytes(jpeg(name))
    (folder / "trip" / "coffee-copy.png").write_bytes(encode(photo("coffee"), "PNG"))
    (folder / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    # The job waits until the page shows it running, so the test sees the page follow it live.
    go = threading.Event()
    add_many: Callable[..., Any] = app.library.ingest.add_many

    def gated_add_many(*args: Any, **kwargs: Any) -> Any:
        go.wait(20)
        return add_many(*args, **kwargs)

    monkeypatch.setattr(app.library.ingest, "add_many", gated_add_many)

    page.goto("/upload-samples")
    expect(page.get_by_text("5 image files in the folder")).to_be_visible()
    page.get_by_role("button", name="Start batch upload").click()
    expect(page).to_have_url(re.compile(r"/upload-samples\?job=\w+$"))
    expect(page.get_by_test_id("job-state")).to_have_text("running")
    expect(page.get_by_role("button", name="Start batch upload")).to_be_hidden()
    page.evaluate("window.stillTheSamePage = true")
    go.set()

    expect(page.get_by_test_id("job-summary")).to_have_text("Finished: 3 added, 1 duplicate, 1 failed.")
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    expect(page.get_by_test_id("job-state")).to_have_text("done")
    expect(page.get_by_test_id("job-counts")).to_contain_text("5 of 5 files")
    expect(page.locator("[data-job-progress]")).to_have_attribute("value", "5")
    expect(page.get_by_test_id("job-item-added")).to_have_count(3)
    expect(page.get_by_test_id("job-item-duplicate")).to_contain_text("trip/coffee-copy.png")
    expect(page.get_by_test_id("job-item-failed")).to_contain_text("trip/broken.jpg")
    expect(page.get_by_test_id("job-item-failed")).to_contain_text("not an image we can read")
    expect(page.get_by_role("button", name="Start batch upload")).to_be_visible()
    expect(page.get_by_test_id("recent-jobs").locator("tbody tr").first).to_contain_text("done")

    page.reload()
    expect(page.get_by_test_id("job-summary")).to_have_text("Finished: 3 added, 1 duplicate, 1 failed.")
    assert app.library.catalog.count() == 3


def test_reset_needs_the_confirmation_phrase(page: Page, app: LiveApp) -> None:
    add(app.library, "astronaut")
    add(app.library, "coffee")
    page.goto("/")
    page.get_by_role("link", name="Reset").click()
    expect(page.get_by_test_id("reset-count")).to_contain_text("all 2 images")
    confirm = page.get_by_label("To confirm, type DELETE ALL", exact=True)
    confirm.fill("delete all")
    page.get_by_role("button", name="Delete everything").click()
    expect(page.get_by_test_id("notice-error")).to_contain_text("Nothing was deleted")
    assert app.library.catalog.count() == 2
    page.get_by_label("To confirm, type DELETE ALL", exact=True).fill("DELETE ALL")
    page.get_by_role("button", name="Delete everything").click()
    expect(page.get_by_test_id("reset-done")).to_have_text("Deleted 2 images. The library is now empty.")
    assert app.library.catalog.count() == 0
    page.get_by_role("link", name="ImageMatch").click()
    expect(page.get_by_test_id("empty-library")).to_be_visible()


def test_pages_fit_a_phone_and_thumbnails_do_not_shift_the_layout(page: Page, app: LiveApp) -> None:
    ids = [add(app.library, name, description="x " * 40) for name in ("astronaut", "coffee", "rocket", "camera")]
    page.set_viewport_size({"width": 375, "height": 740})
    for url in ("/", "/search?text=x", "/images", f"/images/{ids[0]}", "/upload-samples", "/reset", "/missing"):
        page.goto(url)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{url} is {overflow}px wider than a phone"
    page.goto("/images")
    shift = page.evaluate(
        """() => new Promise((resolve) => {
            let total = 0;
            new PerformanceObserver((list) => {
                for (const entry of list.getEntries()) if (!entry.hadRecentInput) total += entry.value;
            }).observe({type: "layout-shift", buffered: true});
            setTimeout(() => resolve(total), 500);
        })"""
    )
    assert shift < 0.01


def test_keyboard_users_can_skip_to_the_content_and_see_focus(page: Page) -> None:
    page.goto("/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"


def test_the_forms_work_without_javascript(page_without_js: Page, app: LiveApp) -> None:
    page = page_without_js
    page.goto("/")
    expect(page.get_by_role("button", name="Add field")).to_be_hidden()
    page.get_by_label("Images", exact=True).set_input_files([image_file("astronaut.jpg"), image_file("coffee.jpg")])
    upload_form = page.get_by_test_id("upload-form")
    upload_form.get_by_label("Metadata key").fill("album")
    upload_form.get_by_label("Metadata value").fill("demo")
    upload_form.get_by_role("button", name="Upload").click()
    expect(page.get_by_test_id("upload-summary")).to_have_text("2 added, 0 duplicates, 0 failed.")
    assert {r.metadata["album"] for r in app.library.catalog.page()} == {"demo"}

    page.get_by_label("Words", exact=True).fill("a cup of coffee")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"/search\?text=a\+cup\+of\+coffee$"))
    expect(page.get_by_test_id("result")).to_have_count(2)
    page.get_by_label("Example image").set_input_files([image_file("coffee.jpg")])
    page.get_by_role("button", name="Search").click()
    page.locator("summary", has_text="Options").click()
    expect(page.get_by_label("Image or words: which counts more?")).to_be_visible()
    expect(page.locator("[data-kept-image]")).to_contain_text("coffee.jpg")
