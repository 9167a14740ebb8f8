"""The query builder, "more / less like this", filter rows and region selection in a real browser."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveApp
from tests.browser.test_ui import add, result_ids

pytestmark = pytest.mark.browser


def query_params(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)


def test_build_a_query_of_terms_and_steer_it_with_the_results(page: Page, app: LiveApp) -> None:
    for name in ("astronaut", "coffee", "rocket", "moon"):
        add(app.library, name)
    page.goto("/search")
    page.get_by_label("Words", exact=True).fill("a rocket")
    page.locator("summary", has_text="Options").click()
    terms = page.locator("[data-term-row]")
    expect(terms).to_have_count(1)
    page.get_by_role("button", name="Add term").click()
    expect(terms).to_have_count(2)
    terms.nth(0).get_by_label("Term words").fill("people")
    terms.nth(0).get_by_label("Weight").fill("-1")
    terms.nth(1).get_by_label("Term words").fill("a temporary idea")
    terms.nth(1).get_by_role("button", name="Remove this term").click()
    expect(terms).to_have_count(1)
    page.get_by_role("button", name="Add filter").click()
    filters = page.locator("[data-filter-row]")
    expect(filters).to_have_count(2)
    filters.nth(0).get_by_label("Filter key").fill("image.width")
    filters.nth(0).get_by_label("Filter test").select_option(">=")
    filters.nth(0).get_by_label("Filter value").fill("512")
    page.get_by_label("How many results").fill("3")
    page.get_by_role("button", name="Search").click()

    expect(page.get_by_test_id("result")).to_have_count(3)
    params = query_params(page)
    assert params["term"] == ["text:people"] and params["weight"] == ["-1"]
    assert params["key"] == ["image.width"] and params["op"] == [">="] and params["value"] == ["512"]
    expect(terms.first.get_by_label("Term words")).to_have_value("people")
    assert all(app.library.catalog.get(i).width >= 512 for i in result_ids(page))

    first = result_ids(page)[0]
    page.get_by_test_id("result").first.get_by_role("link", name=re.compile("^Less like")).click()
    expect(page.get_by_test_id("result")).to_have_count(3)
    assert query_params(page)["term"] == ["text:people", f"id:{first}"]
    assert query_params(page)["weight"] == ["-1", "-1"]
    stored_term = terms.filter(has=page.locator(f'input[name="term_value"][value="{first}"]'))
    expect(stored_term.get_by_role("link")).to_have_text(app.library.catalog.get(first).filename)
    stored_term.get_by_label("Weight").fill("1")  # changed my mind: more like it after all
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("result")).to_have_count(3)
    assert query_params(page)["weight"] == ["-1", "1"]


def test_select_a_region_of_the_query_image_by_dragging(page: Page, app: LiveApp) -> None:
    image_id = add(app.library, "astronaut")
    add(app.library, "rocket")
    page.goto(f"/search?image_id={image_id}")
    page.locator("summary", has_text="Options").click()
    picture = page.locator("img[data-region-image]")
    expect(picture).to_be_visible()
    box = picture.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5, steps=6)
    page.mouse.up()
    expect(page.locator("[data-region-box]")).to_be_visible()
    left = float(page.get_by_label("Left").input_value())
    bottom = float(page.get_by_label("Bottom").input_value())
    assert left == pytest.approx(0.2, abs=0.02) and bottom == pytest.approx(0.5, abs=0.02)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_test_id("result")).to_have_count(1)  # the rocket: the query image itself is no result
    region = [float(v) for v in query_params(page)["region"][0].split(",")]
    assert region == pytest.approx([0.2, 0.1, 0.6, 0.5], abs=0.02)
    expect(page.locator("[data-region-box]")).to_be_visible()  # drawn again from the kept fields

    page.get_by_label("Right").fill("0.9")  # the keyboard way: type the edges
    page.get_by_role("button", name="Whole image").click()
    expect(page.locator("[data-region-box]")).to_be_hidden()
    expect(page.get_by_label("Left")).to_have_value("")
