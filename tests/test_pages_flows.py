"""Flows of the smaller pages that a newcomer tripped over, followed through the forms as a browser without
JavaScript sends them (TestClient): resolving duplicates under thresholds of one's own, browsing past the end."""

from __future__ import annotations

import html
import re

import pytest
from fastapi.testclient import TestClient
from PIL import ImageEnhance

from imagematch.library import Library
from imagematch.settings import Settings
from imagematch.web import pages
from imagematch.web.app import create_app
from testkit.images import encode, photo
from tests.test_pages import Page, add, heading


def form_fields(page: Page, action: str, index: int = 0) -> dict[str, list[str]]:
    """What the browser sends for the index-th form posting to `action`: its hidden and checked inputs."""
    forms = re.findall(rf'<form[^>]*action="{re.escape(action)}"[^>]*>(.*?)</form>', page.text, re.S)
    fields: dict[str, list[str]] = {}
    for tag in re.findall(r"<input[^>]*>", forms[index]):
        name, value = re.search(r'name="([^"]+)"', tag), re.search(r'value="([^"]*)"', tag)
        kind = re.search(r'type="([^"]+)"', tag)
        if name and value and (kind is None or kind.group(1) == "hidden" or "checked" in tag):
            fields.setdefault(name.group(1), []).append(html.unescape(value.group(1)))
    return fields


def shown_distance(page: Page) -> str:
    found = re.search(r'name="max_distance"[^>]*value="([^"]*)"', page.text)
    assert found is not None
    return found.group(1)


def test_the_duplicates_page_keeps_its_thresholds_through_resolving_a_group(
    settings: Settings, library: Library
) -> None:
    """Groups found under a looser pHash distance than the setting; after one is resolved, the page the user comes
    back to must still show the other, under the distance they chose (it went back to the setting's)."""
    strict = settings.model_copy(
        update={"duplicate_distance": 0, "duplicate_variants": False, "duplicate_crop_distance": 0}
    )
    library.settings = strict
    coffee = photo("coffee")
    width, height = coffee.size
    add(library, "coffee")
    crop = library.ingest.add(
        encode(coffee.crop((int(width * 0.02), int(height * 0.02), width, height))), filename="crop.jpg"
    )
    add(library, "astronaut")
    edited = library.ingest.add(
        encode(ImageEnhance.Contrast(photo("astronaut")).enhance(1.5), "PNG"), filename="edit.png"
    )
    assert crop.record is not None and edited.record is not None
    with TestClient(create_app(strict, library)) as client:
        assert 'data-testid="no-duplicates"' in client.get("/duplicates").text  # none at the setting's distance
        listed = client.get("/duplicates", params={"max_distance": "10"})
        assert listed.text.count('data-testid="duplicate-group"') == 2
        coffee_group = next(i for i in range(2) if crop.record.id in str(form_fields(listed, "/duplicates/resolve", i)))

        confirm = client.get("/duplicates/resolve", params=form_fields(listed, "/duplicates/resolve", coffee_group))
        assert heading(confirm) == "Delete 1 duplicate?"
        cancel = re.search(r'<a class="button secondary" href="([^"]+)">Cancel</a>', confirm.text)
        assert cancel is not None
        assert shown_distance(client.get(html.unescape(cancel.group(1)))) == "10"

        done = client.post("/duplicates/resolve", data=form_fields(confirm, "/duplicates/resolve"))
        assert done.status_code == 200 and library.catalog.count() == 3
        assert "the other images of the group were deleted" in done.text
        assert shown_distance(done) == "10"
        assert done.text.count('data-testid="duplicate-group"') == 1 and edited.record.id in done.text


def test_a_bad_threshold_carried_to_the_resolve_step_deletes_nothing(client: TestClient, library: Library) -> None:
    kept, other = add(library, "coffee"), add(library, "rocket")
    confirm = client.get("/duplicates/resolve", params={"keep": kept, "member": [kept, other], "max_distance": "x"})
    done = client.post("/duplicates/resolve", data=form_fields(confirm, "/duplicates/resolve"))
    assert done.status_code == 422 and "must be a number" in done.text
    assert library.catalog.count() == 2


def test_a_browse_page_past_the_end_is_not_page_99_of_2(
    client: TestClient, library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "BROWSE_PAGE_SIZE", 2)
    for name in ("astronaut", "coffee", "rocket"):
        add(library, name)
    past = client.get("/images", params={"page": "99", "sort": "oldest"})
    assert past.status_code == 404
    assert "Page 99 of" not in past.text and 'data-testid="page-position"' not in past.text
    assert "There is no page 99: the 3 images fill 2 pages." in past.text
    last = re.search(r'<a href="([^"]+)">Go to the last page</a>', past.text)
    assert last is not None and html.unescape(last.group(1)) == "/images?sort=oldest&page=2"
    assert "Page 2 of 2" in client.get(html.unescape(last.group(1))).text
