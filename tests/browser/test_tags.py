"""Tags in a real browser: a list row's text becomes chips that are typed, removed and saved."""

from __future__ import annotations

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import LiveApp
from tests.browser.test_ui import add, image_file

pytestmark = pytest.mark.browser


def chips(row: Locator) -> list[str]:
    return [text.removesuffix("×").strip() for text in row.get_by_test_id("tag-chip").all_inner_texts()]


def test_tags_are_edited_as_chips_and_saved_as_a_list(page: Page, app: LiveApp) -> None:
    image_id = add(app.library, "coffee", metadata={"tags": ["espresso", "Rome, Italy"], "cafe": "x"})
    page.goto(f"/images/{image_id}")
    rows = page.locator("[data-meta-row]")
    tags = rows.filter(has=page.locator('input[name="meta_key"][value="tags"]'))
    expect(tags.get_by_test_id("tag-chip")).to_have_count(2)
    assert chips(tags) == ["espresso", "Rome, Italy"]
    expect(tags.get_by_label("Metadata value")).to_be_hidden()  # the chips stand in for the text field

    entry = tags.get_by_label("Add a tag")
    entry.fill("crema")
    entry.press("Enter")  # adds the tag; the form is not sent
    entry.type("morning,")
    tags.get_by_role("button", name="Remove the tag espresso").click()
    assert chips(tags) == ["Rome, Italy", "crema", "morning"]
    entry.fill("late")  # typed, not yet a chip: saving keeps it all the same
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_test_id("notice-success")).to_have_text("Changes saved.")
    assert app.library.catalog.get(image_id).metadata == {
        "tags": ["Rome, Italy", "crema", "morning", "late"],
        "cafe": "x",
    }
    expect(page.get_by_test_id("metadata").get_by_role("link", name="Rome, Italy")).to_be_visible()


def test_a_new_row_of_tags_is_uploaded_as_a_list(page: Page, app: LiveApp) -> None:
    page.goto("/")
    page.get_by_label("Images", exact=True).set_input_files([image_file("astronaut.jpg")])
    row = page.locator("[data-meta-row]").first
    row.get_by_label("Metadata key").fill("tags")
    row.get_by_label("Kind of value").select_option("list")
    entry = row.get_by_label("Add a tag")
    expect(entry).to_be_focused()
    entry.type("space,nasa,")
    assert chips(row) == ["space", "nasa"]
    row.get_by_label("Kind of value").select_option("value")  # back to text: the tags as written
    expect(row.get_by_label("Metadata value")).to_have_value("space, nasa")
    row.get_by_label("Kind of value").select_option("list")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_test_id("upload-summary")).to_have_text("1 added, 0 duplicates, 0 failed.")
    assert app.library.catalog.page()[0].metadata == {"tags": ["space", "nasa"]}
