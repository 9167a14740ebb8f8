"""The text read in a picture on the image page of a real browser: listed, outlined where it stands on the
picture at desktop and phone widths, and corrected."""

from __future__ import annotations

from dataclasses import replace

import pytest
from playwright.sync_api import Browser, expect

from imagematch.records import ImageText, TextLine
from tests.browser.conftest import DESKTOP, PHONE, LiveApp, _tab
from tests.browser.test_ui import add

pytestmark = pytest.mark.browser
VIEWPORTS = pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
BOX = (0.25, 0.1, 0.75, 0.2)


@VIEWPORTS
def test_the_lines_read_are_outlined_on_the_picture_and_can_be_corrected(
    browser: Browser, app: LiveApp, viewport: dict[str, int]
) -> None:
    image_id = add(app.library, "rocket")
    record = app.library.catalog.get(image_id)
    app.library.store.update(
        replace(record, ocr=ImageText("PP-OCRv4 mobile", (TextLine("LAUNCH PAD 39A", BOX, 0.97),))), None
    )
    with _tab(browser, app, javascript=True, viewport=viewport) as page:  # type: ignore[arg-type]
        page.goto(f"/images/{image_id}")
        expect(page.get_by_test_id("ocr")).to_contain_text("LAUNCH PAD 39A")
        outline = page.get_by_test_id("text-box")
        expect(outline).to_have_count(1)
        picture = page.get_by_test_id("image-full").bounding_box()
        drawn = outline.bounding_box()
        assert picture is not None and drawn is not None
        # Where the reader found the line, as a share of the picture, within two pixels (its border).
        assert abs(drawn["x"] - (picture["x"] + BOX[0] * picture["width"])) <= 3
        assert abs(drawn["y"] - (picture["y"] + BOX[1] * picture["height"])) <= 3
        assert abs(drawn["width"] - (BOX[2] - BOX[0]) * picture["width"]) <= 3
        assert abs(drawn["height"] - (BOX[3] - BOX[1]) * picture["height"]) <= 3

        page.get_by_label("Text in the picture").fill("LAUNCH PAD 39B")
        page.get_by_role("button", name="Save changes").click()
        expect(page.get_by_test_id("notice-success")).to_have_text("Changes saved.")
        expect(page.get_by_test_id("ocr")).to_contain_text("LAUNCH PAD 39B (corrected by you)")
        assert app.library.catalog.get(image_id).ocr.text == "LAUNCH PAD 39B"
