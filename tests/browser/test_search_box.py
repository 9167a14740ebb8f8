"""The one search box of the home and search pages at a desktop and a phone size: it fits, every control can be
reached, the results are in view after a search, and an image dropped or pasted into the box searches."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, ViewportSize, expect

from imagematch.library import Library
from testkit.images import jpeg
from tests.browser.conftest import DESKTOP, LiveApp
from tests.browser.test_ui import add, image_file, result_ids

pytestmark = pytest.mark.browser

PHONE: ViewportSize = {"width": 390, "height": 844}
VIEWPORTS = (DESKTOP, PHONE)
LONG_NAME = "holiday-in-the-mountains-with-the-whole-family-2024-05-31-IMG_20240531_101500.jpg"

# Every control (and label) under root that cannot be seen or clicked where it is drawn: off the side of the
# screen, cut off by its card, or covered by something else; but for those inside `hidden`, which the test says
# are hidden on purpose. The file input is drawn as its label, the image button, which is checked instead.
UNREACHABLE_CONTROLS = """([root, hidden]) => {
    const problems = [];
    const controls = document.querySelector(root).querySelectorAll(
        "a[href], button, input:not([type=hidden]), select, textarea, summary, label[for]"
    );
    for (const control of controls) {
        if (control.matches("[data-search-file], .visually-hidden") || (hidden && control.closest(hidden))) continue;
        const name = `${control.tagName.toLowerCase()} "${(control.textContent || control.name || control.id
            || control.getAttribute("aria-label") || "").trim().slice(0, 40)}"`;
        if (!control.getClientRects().length) {
            problems.push(`${name} is not shown`);
            continue;
        }
        // The page scrolls to it, as a user would; scrollIntoView would also scroll the card that cuts it off.
        window.scrollTo(0, control.getBoundingClientRect().top + window.scrollY - window.innerHeight / 2);
        for (const rect of control.getClientRects()) {
            if (rect.left < 0 || rect.right > window.innerWidth + 0.5) {
                problems.push(`${name} is outside the screen (${rect.left}..${rect.right})`);
            }
            const y = rect.top + rect.height / 2;
            for (const x of [rect.left + 2, rect.right - 2]) {
                const hit = document.elementFromPoint(x, y);
                if (!hit || !(control === hit || control.contains(hit))) {
                    const cover = hit ? hit.outerHTML.slice(0, 60) : "nothing";
                    problems.push(`${name} is hidden at ${Math.round(x)},${Math.round(y)} by ${cover}`);
                }
            }
        }
    }
    return problems;
}"""


def overflow(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def open_options(page: Page) -> None:
    """Unfold the options panel, if it is folded (a page without one shows every option already)."""
    panel = page.locator("details[data-search-options]:not([open]) > summary")
    if panel.count():
        panel.first.click()
    expect(page.get_by_label("How many results").first).to_be_visible()


def first_result_in_view(page: Page) -> None:
    """The first result's picture is on the screen as the page is shown, without scrolling."""
    picture = page.get_by_test_id("result").first.locator(".frame")
    expect(picture).to_be_visible()
    box = picture.bounding_box()
    assert box is not None
    height = page.evaluate("window.innerHeight")
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, f"the first result is at {box['y']}px of {height}"


def library_with_a_long_name(library: Library) -> str:
    for name in ("coffee", "rocket", "camera", "coins"):
        add(library, name, description="x " * 30)
    record = library.ingest.add(jpeg("chelsea"), filename=LONG_NAME).record
    assert record is not None
    return record.id


def test_the_search_page_fits_and_every_control_can_be_reached(page: Page, app: LiveApp) -> None:
    cat = library_with_a_long_name(app.library)
    for viewport in VIEWPORTS:
        page.set_viewport_size(viewport)
        # Every option in use, so that every control is there: words and an image, terms, filters, a region.
        page.goto(
            f"/search?text=a+cat&image_id={cat}&image_weight=0.7&term=text:dog&weight=-1"
            "&key=image.width&op=%3E%3D&value=1&region=0.1,0.1,0.9,0.9&hybrid=1"
        )
        expect(page.get_by_test_id("result")).to_have_count(4)
        assert overflow(page) <= 0, f"wider than {viewport['width']}px"
        open_options(page)
        page.get_by_role("button", name="Add term").click()
        page.get_by_role("button", name="Add filter").click()
        assert overflow(page) <= 0, f"wider than {viewport['width']}px with the options open"
        chosen = "[data-chosen-image]"  # the chip of a newly chosen file: none here
        expect(page.locator(chosen)).to_be_hidden()
        assert page.evaluate(UNREACHABLE_CONTROLS, ["main", chosen]) == [], f"at {viewport['width']}px"


def test_the_home_page_search_box_fits_and_every_control_can_be_reached(page: Page, app: LiveApp) -> None:
    library_with_a_long_name(app.library)
    for viewport in VIEWPORTS:
        page.set_viewport_size(viewport)
        page.goto("/")
        assert overflow(page) <= 0, f"wider than {viewport['width']}px"
        box = page.get_by_test_id("search-box")
        for control in (
            box.get_by_label("Words"),
            box.locator("label.image-button"),
            box.get_by_role("button", name="Search"),
        ):
            expect(control).to_be_visible()
        open_options(page)
        assert overflow(page) <= 0, f"wider than {viewport['width']}px with the options open"
        no_image = "[data-chosen-image], [data-weight], [data-region]"  # what shows once the query has an image
        expect(page.locator(no_image)).to_have_count(3)
        for part in page.locator(no_image).all():
            expect(part).to_be_hidden()
        problems = page.evaluate(UNREACHABLE_CONTROLS, ["[data-search-form]", no_image])
        assert problems == [], f"at {viewport['width']}px"


def test_file_names_stay_on_one_line_and_the_checkbox_beside_its_label(page: Page, app: LiveApp) -> None:
    cat = library_with_a_long_name(app.library)
    for viewport in VIEWPORTS:
        page.set_viewport_size(viewport)
        page.goto(f"/search?image_id={cat}&hybrid=1")
        name = page.locator('[data-kept-image] a[href^="/images/"]')
        expect(name).to_have_text(LONG_NAME)
        lines = name.evaluate("node => node.getClientRects().length")
        height = name.evaluate(
            "node => node.getBoundingClientRect().height / parseFloat(getComputedStyle(node).lineHeight)"
        )
        assert lines == 1 and height < 1.5, f"the file name wraps at {viewport['width']}px"
        expect(name).to_have_attribute("title", LONG_NAME)  # cut with an ellipsis, the whole name on hover
        checkbox = page.locator("#search-hybrid").bounding_box()
        label = page.locator('label[for="search-hybrid"]').bounding_box()
        assert checkbox is not None and label is not None
        assert checkbox["x"] + checkbox["width"] <= label["x"], "the checkbox is not beside its label"
        assert label["y"] <= checkbox["y"] + checkbox["height"] / 2 <= label["y"] + 24  # on its first line


def test_the_first_result_is_in_view_after_a_search_on_a_phone(page: Page, app: LiveApp) -> None:
    for name in ("astronaut", "coffee", "rocket", "camera"):
        add(app.library, name, description="x " * 30)
    page.set_viewport_size(PHONE)
    page.goto("/search")
    page.get_by_label("Words", exact=True).fill("a cup of coffee")
    page.get_by_label("Words", exact=True).press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?text=a\+cup\+of\+coffee$"))
    first_result_in_view(page)

    # With options in use the panel stays open above the results: the page opens at them.
    open_options(page)
    page.get_by_label("Filter key").first.fill("image.width")
    page.get_by_label("Filter test").first.select_option(">=")
    page.get_by_label("Filter value").first.fill("1")
    page.get_by_label("Filter value").first.press("Enter")
    expect(page).to_have_url(re.compile(r"value=1#results$"))
    expect(page.get_by_test_id("search-options")).to_have_attribute("open", "")
    first_result_in_view(page)

    page.goto("/")  # the home page's box leads to the same page
    page.get_by_label("Words", exact=True).fill("a rocket")
    page.get_by_label("Words", exact=True).press("Enter")
    expect(page).to_have_url(re.compile(r"/search\?text=a\+rocket$"))
    first_result_in_view(page)


def image_transfer(page: Page, image_id: str, name: str) -> Any:
    """A DataTransfer holding a stored image's file, fetched by the page as a browser would hold it."""
    return page.evaluate_handle(
        """async ([url, name]) => {
            const blob = await (await fetch(url)).blob();
            const transfer = new DataTransfer();
            transfer.items.add(new File([blob], name, {type: blob.type}));
            return transfer;
        }""",
        [f"/api/v1/images/{image_id}/file", name],
    )


def test_an_image_pasted_or_dropped_into_the_box_searches(page: Page, app: LiveApp) -> None:
    coffee = add(app.library, "coffee")
    rocket = add(app.library, "rocket")
    page.goto("/search")
    words = page.get_by_label("Words", exact=True)
    words.fill("a cup")
    pasted = image_transfer(page, coffee, "pasted-coffee.jpg")
    taken = page.evaluate(
        """(transfer) => {
            const paste = new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true});
            document.querySelector("#search-text").dispatchEvent(paste);
            return paste.defaultPrevented;
        }""",
        pasted,
    )
    assert taken is True
    chip = page.locator("[data-chosen-image]")
    expect(chip).to_contain_text("pasted-coffee.jpg")
    assert page.get_by_label("Example image").evaluate("input => input.files[0].name") == "pasted-coffee.jpg"
    expect(words).to_be_focused()
    open_options(page)
    expect(page.get_by_label("Image or words: which counts more?")).to_be_visible()  # words and an image
    expect(page.locator("canvas[data-region-image]")).to_be_visible()  # its region can be drawn at once
    words.press("Enter")
    expect(page).to_have_url(re.compile(r"query_image=[\w-]{22}"))
    expect(page.locator("[data-kept-image]")).to_contain_text("pasted-coffee.jpg")
    assert sorted(result_ids(page)) == sorted([coffee, rocket])

    page.goto("/search")
    dropped = image_transfer(page, rocket, "dropped-rocket.jpg")
    page.dispatch_event("[data-search-box]", "drop", {"dataTransfer": dropped})
    expect(chip).to_contain_text("dropped-rocket.jpg")
    page.get_by_role("button", name="Remove image").click()  # changed my mind
    expect(chip).to_be_hidden()
    assert page.get_by_label("Example image").evaluate("input => input.files.length") == 0
    page.dispatch_event("[data-search-box]", "drop", {"dataTransfer": dropped})
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator("[data-kept-image]")).to_contain_text("dropped-rocket.jpg")
    assert result_ids(page)[0] == rocket

    page.goto("/")  # on the home page an image pasted outside the upload form is a search too
    pasted = image_transfer(page, coffee, "pasted-coffee.jpg")
    page.evaluate(
        """(transfer) => document.body.dispatchEvent(
            new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true}))""",
        pasted,
    )
    expect(page.get_by_test_id("search-box").locator("[data-chosen-image]")).to_contain_text("pasted-coffee.jpg")
    expect(page.locator("[data-chosen-files] li")).to_have_count(0)  # not an upload


def test_a_region_can_be_drawn_on_a_new_image_before_the_first_search(page: Page, app: LiveApp) -> None:
    add(app.library, "rocket")
    page.goto("/search")
    page.get_by_label("Example image").set_input_files([image_file("astronaut.jpg")])
    open_options(page)
    picture = page.locator("canvas[data-region-image]")
    expect(picture).to_be_visible()
    box = picture.bounding_box()
    assert box is not None and box["width"] > 100
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.6, steps=5)
    page.mouse.up()
    expect(page.locator("[data-region-box]")).to_be_visible()
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.get_by_test_id("result")).to_have_count(1)
    params = parse_qs(urlsplit(page.url).query)
    assert [float(v) for v in params["region"][0].split(",")] == pytest.approx([0.25, 0.1, 0.75, 0.6], abs=0.02)
    expect(page.locator("img[data-region-image]")).to_be_visible()  # the kept image, with its region drawn
    expect(page.locator("[data-region-box]")).to_be_visible()
