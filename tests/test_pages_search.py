"""The search page's box and folded options, query builder, filters, cut-off, region fields, paging and sorting,
and the duplicate review pages, through TestClient (no JavaScript)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient
from PIL import Image

from imagematch.library import Library
from imagematch.records import Metadata, RecordPatch
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.images import encode, jpeg, photo
from tests.test_pages import add, heading, token


def result_ids(html: str) -> list[str]:
    return re.findall(r'data-testid="result" data-image-id="([^"]+)"', html)


def options_panel(html: str) -> str:
    """The opening tag of the folded options panel."""
    match = re.search(r"<details [^>]*data-search-options[^>]*>", html)
    assert match is not None, "no options panel"
    return match.group(0)


def taken_on(name: str, moment: str) -> bytes:
    """A photo whose EXIF says when it was taken ("2023:07:14 18:30:05")."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9003] = moment
    return encode(photo(name), "JPEG", exif=exif.tobytes())


def test_one_box_for_words_and_an_image_and_the_options_folded_until_used(client: TestClient, library: Library) -> None:
    add(library, "astronaut")
    page = client.get("/search").text
    box = re.search(r'<div class="search-box"[^>]*>(.*?)</div>', page, re.S)
    assert box is not None
    for control in ('name="text"', 'type="file" name="image"', 'type="submit"'):
        assert control in box.group(1), control  # words, image and Search in one box, the button first
    assert box.group(1).index('name="text"') < box.group(1).index('type="submit"')
    assert page.index("data-search-box") < page.index("data-search-options") < page.index('name="k"')
    assert " open" not in options_panel(page)
    plain = client.post("/search", data={"csrf_token": token(client), "text": "a cat"}, follow_redirects=False)
    assert plain.headers["location"] == "/search?text=a+cat"  # no options: the results are right under the box
    assert " open" not in options_panel(client.get(plain.headers["location"]).text)

    used = client.post(
        "/search",
        data={"csrf_token": token(client), "text": "a cat", "key": "album", "value": "space", "hybrid": "1"},
        follow_redirects=False,
    )
    location = used.headers["location"]
    assert location.endswith("#results")  # the open options push the results down: the page opens at them
    shown = client.get(location.partition("#")[0]).text
    assert " open" in options_panel(shown) and 'data-testid="options-in-use">2 in use' in shown


def test_saved_links_with_every_old_parameter_show_the_search_with_its_options_open(
    client: TestClient, library: Library
) -> None:
    image_id = add(library, "astronaut")
    add(library, "rocket")
    saved = {
        "text": "a launch",
        "image_id": image_id,
        "image_weight": "0.7",
        "term": ["text:people"],
        "weight": ["-1"],
        "key": ["image.width"],
        "op": [">="],
        "value": ["100"],
        "format": "JPEG",
        "camera": "",
        "taken_from": "",
        "taken_to": "",
        "k": "5",
        "min_score": "-1",
        "hybrid": "1",
        "region": "0,0,0.5,0.5",
    }
    page = client.get("/search", params=saved)
    assert page.status_code == 200 and len(result_ids(page.text)) == 1
    assert " open" in options_panel(page.text)
    for field, value in (
        ("text", "a launch"),
        ("image_id", image_id),
        ("image_weight", "0.7"),
        ("term_value", "people"),
        ("weight", "-1"),
        ("key", "image.width"),
        ("value", "100"),
        ("k", "5"),
        ("min_score", "-1"),
        ("region_right", "0.5"),
    ):
        assert re.search(rf'name="{field}"[^>]*value="{re.escape(value)}"', page.text), field
    assert '<option value="JPEG" selected>' in page.text and 'name="hybrid" value="1" checked' in page.text


def test_more_results_asks_for_one_page_more_and_opens_at_the_first_new_one(
    settings: Settings, library: Library
) -> None:
    for name in ("astronaut", "coffee", "rocket"):
        add(library, name)
    capped = settings.model_copy(update={"max_k": 2})
    library.settings = capped
    with TestClient(create_app(capped, library)) as client:
        first = client.get("/search", params={"text": "x", "k": "1"}).text
        more = re.search(r'href="([^"]+)" data-testid="more-results"', first)
        assert more is not None and more.group(1) == "/search?text=x&amp;k=2#result-2"  # 1 + 12, but at most 2
        second = client.get(more.group(1).replace("&amp;", "&").partition("#")[0]).text
        assert len(result_ids(second)) == 2 and result_ids(second)[0] == result_ids(first)[0]
        assert 'id="result-2"' in second and 'data-testid="more-results"' not in second  # the most it may show
    library.settings = settings
    with TestClient(create_app(settings, library)) as client:
        page = client.get("/search", params={"text": "x", "k": "2"}).text
        assert 'href="/search?text=x&amp;k=14#result-3" data-testid="more-results"' in page
        everything = client.get("/search", params={"text": "x", "k": "14"}).text
        assert len(result_ids(everything)) == 3 and 'data-testid="more-results"' not in everything


def test_sorting_by_date_reorders_the_most_relevant_results(client: TestClient, library: Library) -> None:
    dates = {"astronaut": "2020:05:01 10:00:00", "coffee": "2023:07:14 18:30:05", "rocket": None}
    ids = {}
    for name, moment in dates.items():
        data = taken_on(name, moment) if moment else jpeg(name)
        record = library.ingest.add(data, filename=f"{name}.jpg").record
        assert record is not None
        ids[name] = record.id
    by_relevance = client.get("/search", params={"text": "x", "k": "2"}).text
    most_relevant = result_ids(by_relevance)
    taken = client.get("/search", params={"text": "x", "k": "2", "sort": "taken"}).text
    assert sorted(result_ids(taken)) == sorted(most_relevant)  # the same two results, in another order
    assert "The 2 most relevant, by date taken" in taken
    everything = client.get("/search", params={"text": "x", "k": "3", "sort": "taken"}).text
    assert result_ids(everything) == [ids["coffee"], ids["astronaut"], ids["rocket"]]  # newest, then undated
    assert re.findall(r'data-testid="result-date">([^<]+)<', everything)[:2] == [
        "Taken 2023-07-14 18:30 UTC",
        "Taken 2020-05-01 10:00 UTC",
    ]
    added = client.get("/search", params={"text": "x", "k": "3", "sort": "added"}).text
    assert result_ids(added) == [ids["rocket"], ids["coffee"], ids["astronaut"]]  # the last added first
    assert 'aria-current="true">date added</a>' in added
    assert 'href="/search?text=x&amp;k=3&amp;sort=taken#results"' in added  # sort links keep the search
    wrong = client.get("/search", params={"text": "x", "sort": "oldest"})
    assert wrong.status_code == 422 and "sorted by relevance, taken, added, not &#39;oldest&#39;" in wrong.text


def test_how_many_results_is_refused_in_the_words_of_its_field(client: TestClient, library: Library) -> None:
    add(library, "astronaut")
    for k, message in (
        ("0", "How many results must be between 1 and 1000"),
        ("1001", "How many results must be between 1 and 1000"),
        ("ten", "How many results must be a whole number, such as 12"),
    ):
        page = client.get("/search", params={"text": "a cat", "k": k})
        assert page.status_code == 422 and message in page.text, k
        assert f'name="k" value="{k}"' in page.text  # kept, to be corrected
        assert " open" in options_panel(page.text)  # where the field is


def test_a_region_drawn_on_a_new_query_image_is_kept(client: TestClient, library: Library) -> None:
    add(library, "astronaut")
    posted = client.post(
        "/search",
        data={
            "csrf_token": token(client),
            "region_left": "0.1",
            "region_top": "0.2",
            "region_right": "0.6",
            "region_bottom": "0.7",
        },
        files={"image": ("rocket.jpg", jpeg("rocket"), "image/jpeg")},
        follow_redirects=False,
    )
    params = parse_qs(urlsplit(posted.headers["location"]).query)
    assert params["region"] == ["0.1,0.2,0.6,0.7"] and len(params["query_image"][0]) == 22
    page = client.get(posted.headers["location"])
    assert page.status_code == 200 and re.search(r'name="region_right"[^>]*value="0.6"', page.text)


def test_more_and_less_like_this_add_a_stored_image_term(client: TestClient, library: Library) -> None:
    for name in ("astronaut", "coffee", "rocket"):
        add(library, name)
    page = client.get("/search", params={"text": "a rocket", "k": "3"})
    more = re.findall(r'href="([^"]+)" data-testid="more-like-this"', page.text)
    less = re.findall(r'href="([^"]+)" data-testid="less-like-this"', page.text)
    assert len(more) == len(less) == 3
    first = result_ids(page.text)[0]
    params = parse_qs(urlsplit(more[0].replace("&amp;", "&")).query)
    assert params["term"] == [f"id:{first}"] and params["weight"] == ["1"] and params["text"] == ["a rocket"]
    steered = client.get(less[0].replace("&amp;", "&"))
    assert steered.status_code == 200 and len(result_ids(steered.text)) == 2
    assert first not in result_ids(steered.text)  # the image steered away from is not a result
    assert f'name="term_value" value="{first}"' in steered.text  # the term is shown, editable
    assert 'name="weight" value="-1"' in steered.text


def test_the_form_posts_terms_filters_and_options_to_a_linkable_page(client: TestClient, library: Library) -> None:
    ids = {name: add(library, name) for name in ("astronaut", "coffee", "rocket", "moon", "clock")}
    for name in ("moon", "clock"):
        library.catalog.update(ids[name], RecordPatch(metadata={"album": "night", "rating": 4}))
    form = {
        "csrf_token": token(client),
        "text": "the sky",
        "term_kind": ["id", "text", "text"],
        "term_value": [ids["coffee"], "people", ""],
        "weight": ["0.5", "-1", "1"],
        "key": ["album", "rating", ""],
        "op": ["=", ">=", "="],
        "value": ["night", "3", ""],
        "format": "JPEG",
        "min_score": "-1",
        "hybrid": "1",
        "k": "5",
    }
    response = client.post("/search", data=form, follow_redirects=False)
    assert response.status_code == 303
    location = response.headers["location"]
    params = parse_qs(urlsplit(location).query)
    assert params["term"] == [f"id:{ids['coffee']}", "text:people"] and params["weight"] == ["0.5", "-1"]
    assert params["key"] == ["album", "rating"] and params["op"] == ["=", ">="] and params["value"] == ["night", "3"]
    assert params["hybrid"] == ["1"] and params["format"] == ["JPEG"]
    page = client.get(location)
    assert page.status_code == 200
    assert set(result_ids(page.text)) == {ids["moon"], ids["clock"]}  # k=5, but only two pass the filter
    assert 'name="hybrid" value="1" checked' in page.text


def test_filters_on_built_in_fields_and_dates(client: TestClient, library: Library) -> None:
    add(library, "astronaut")
    png = library.ingest.add(encode(photo("coffee"), "PNG"), filename="coffee.png").record
    assert png is not None
    only_png = client.get("/search", params={"text": "x", "format": "PNG"})
    assert result_ids(only_png.text) == [png.id]
    none_taken = client.get("/search", params={"text": "x", "taken_from": "2020-01-01"})
    assert result_ids(none_taken.text) == [] and "among the images the filter allows" in none_taken.text
    bad = client.get("/search", params={"text": "x", "taken_to": "31/12/2024"})
    assert bad.status_code == 422 and "must be a date" in bad.text
    twice = client.get("/search", params={"text": "x", "key": ["a", "a"], "op": ["=", "="], "value": ["1", "2"]})
    assert twice.status_code == 422 and "same test twice" in twice.text


def test_filter_rows_can_ask_for_any_one_of_them_and_for_none_of_some_values(
    client: TestClient, library: Library
) -> None:
    ids = {name: add(library, name) for name in ("astronaut", "coffee", "rocket", "moon")}
    tagged: dict[str, Metadata] = {
        "astronaut": {"album": "space", "tags": ["nasa", "portrait"]},
        "rocket": {"album": "space", "tags": ["nasa"]},
        "coffee": {"album": "kitchen"},
        "moon": {"album": "night", "tags": ["sky"]},
    }
    for name, metadata in tagged.items():
        library.catalog.update(ids[name], RecordPatch(metadata=metadata))
    rows = {"text": "a photo", "k": "10", "key": ["tags", "album"], "op": ["=", "="], "value": ["portrait", "night"]}
    assert result_ids(client.get("/search", params=rows).text) == []  # all rows: no image has both
    either = client.get("/search", params={**rows, "match": "any"})
    assert set(result_ids(either.text)) == {ids["astronaut"], ids["moon"]}
    assert 'name="match" value="any" checked' in either.text
    none_of = client.get("/search", params={"text": "a photo", "key": "album", "op": "not in", "value": "space, night"})
    assert result_ids(none_of.text) == [ids["coffee"]]
    assert '<option value="not in" selected>is none of (a, b, …)</option>' in none_of.text
    camera = client.get("/search", params={"text": "a photo", "camera": "canon"})
    assert camera.status_code == 200 and result_ids(camera.text) == []


def test_min_score_can_answer_nothing_matched(client: TestClient, library: Library) -> None:
    add(library, "astronaut")
    page = client.get("/search", params={"text": "a rocket", "min_score": "1"})
    assert page.status_code == 200 and result_ids(page.text) == []
    assert "Nothing matched with a score of at least 1" in page.text
    bad = client.get("/search", params={"text": "x", "min_score": "lots"})
    assert bad.status_code == 422 and "minimum score must be a number" in bad.text


def test_region_fields_appear_with_a_query_image_and_are_kept(client: TestClient, library: Library) -> None:
    image_id = add(library, "astronaut")
    rocket = add(library, "rocket")
    # Without a query image the region fields are there for the script to show, hidden from everyone else.
    assert re.search(r"<fieldset [^>]*data-region hidden>", client.get("/search", params={"text": "x"}).text)
    page = client.get("/search", params={"image_id": image_id, "region": "0.1,0.2,0.5,0.6"})
    assert page.status_code == 200 and result_ids(page.text) == [rocket]  # not the query image
    for side, value in (("left", "0.1"), ("top", "0.2"), ("right", "0.5"), ("bottom", "0.6")):
        assert re.search(rf'name="region_{side}"[^>]*value="{value}"', page.text), side
    posted = client.post(
        "/search",
        data={
            "csrf_token": token(client),
            "image_id": image_id,
            "region_left": "0.25",
            "region_top": "0",
            "region_right": "0.75",
            "region_bottom": "0.5",
        },
        follow_redirects=False,
    )
    assert parse_qs(urlsplit(posted.headers["location"]).query)["region"] == ["0.25,0,0.75,0.5"]
    wrong = client.get("/search", params={"image_id": image_id, "region": "0.5,0.2,0.1,0.6"})
    assert wrong.status_code == 422 and "inside the image" in wrong.text


def test_duplicate_review_keeps_one_after_a_confirmation(settings: Settings, library: Library) -> None:
    loose = settings.model_copy(
        update={"duplicate_distance": 0, "duplicate_variants": False, "duplicate_crop_distance": 0}
    )
    library.settings = loose
    original = add(library, "coffee")
    add(library, "rocket")
    coffee = photo("coffee")
    width, height = coffee.size
    crop = library.ingest.add(
        encode(coffee.crop((int(width * 0.02), int(height * 0.02), width, height))), filename="crop.jpg"
    )
    assert crop.record is not None
    with TestClient(create_app(loose, library)) as client:
        empty = client.get("/duplicates")
        assert heading(empty) == "Duplicates" and 'data-testid="no-duplicates"' in empty.text
        page = client.get("/duplicates", params={"max_distance": "10"})
        assert page.text.count('data-testid="duplicate-group"') == 1
        assert page.text.count('data-testid="duplicate-member"') == 2 and "8 bits apart" in page.text
        assert "600 × 400 px" in page.text  # size and dimensions, side by side
        confirm = client.get(
            "/duplicates/resolve", params={"keep": crop.record.id, "member": [original, crop.record.id]}
        )
        assert heading(confirm) == "Delete 1 duplicate?" and f'data-image-id="{original}"' in confirm.text
        assert library.catalog.count() == 3  # asking changes nothing
        refused = client.post("/duplicates/resolve", data={"keep": crop.record.id, "delete": original})
        assert refused.status_code == 403 and library.catalog.count() == 3
        done = client.post(
            "/duplicates/resolve",
            data={"csrf_token": token(client), "keep": crop.record.id, "delete": original},
            follow_redirects=False,
        )
        assert done.status_code == 303 and library.catalog.count() == 2
        after = client.get(done.headers["location"])
        assert "the other images of the group were deleted" in after.text
        nothing = client.get("/duplicates/resolve", params={"keep": crop.record.id, "member": [crop.record.id]})
        assert nothing.status_code == 422


def test_each_result_card_says_why_it_matched(client: TestClient, library: Library) -> None:
    described = add(library, "coffee")
    add(library, "astronaut")
    library.catalog.update(described, RecordPatch(description="an invoice for the coffee machine"))
    plain = client.get("/search?text=invoice").text
    whys = re.findall(r'data-testid="why"[^>]*>([^<]*)<', plain)
    assert len(whys) == 2 and all(why.startswith("image ") for why in whys)
    assert any("words " in why for why in whys)  # the described image: what its words added
    hybrid = client.get("/search?text=invoice&hybrid=1").text
    assert "keywords: invoice" in hybrid and "no keywords" in hybrid


def test_the_automatic_cut_off_is_an_option_kept_in_the_link(client: TestClient, library: Library) -> None:
    add(library, "astronaut")
    page = client.get("/search?text=a+cat&cutoff=auto").text
    assert '<option value="auto" selected>' in page and " open" in options_panel(page)
    posted = client.post("/search", data={"csrf_token": token(client), "text": "a cat", "cutoff": "auto"})
    assert "cutoff=auto" in str(posted.url)
    refused = client.get("/search?text=a+cat&cutoff=sometimes")
    assert refused.status_code == 422 and "Cutoff must be off or auto" in refused.text
