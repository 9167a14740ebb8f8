"""Filters, weights, ids and bodies that used to answer 500 (or a silently wrong 200, or a 400 for a 413), at
every entry point: the REST API (list, multipart search, JSON query), the pages (browse, the search link) and
the CLI's `--where`. Each refused input gets a 4xx that says why, the app keeps answering and the library is
unchanged; filters beyond what a field holds match what they mean.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from imagematch.cli import app as cli
from imagematch.factory import build_library
from imagematch.records import FILTER_FIELDS
from imagematch.web.app import create_app
from testkit.cli_env import env_for
from testkit.images import encode, photo
from tests.security.conftest import Harness, make_settings, snapshot
from tests.security.payloads import BAD_FILTERS, BAD_WEIGHTS, ODD_FILTERS
from tests.security.test_hostile_input import page_message, unchanged

Response = Any


def _query(harness: Harness, body: str) -> Response:
    """A JSON body sent as written, so that `\\ud800` escapes arrive as they would from any client."""
    return harness.client.post(
        "/api/v1/search/query", content=body.encode(), headers={"content-type": "application/json"}
    )


# Each filter entry point of the API: the filter as JSON text in, the response out.
FILTER_ENTRY_POINTS: dict[str, Callable[[Harness, str], Response]] = {
    "api-list": lambda h, text: h.client.get("/api/v1/images", params={"filter": text}),
    "api-search": lambda h, text: h.client.post("/api/v1/search", data={"text": "a photo", "filter": text}),
    "api-query": lambda h, text: _query(h, '{"terms": [{"text": "a photo"}], "k": 50, "filter": ' + text + "}"),
}


def _found(response: Response) -> set[str]:
    body = response.json()
    return {item["id"] for item in body.get("items", body.get("hits", []))}


@pytest.mark.parametrize(("case", "text", "reason"), BAD_FILTERS, ids=[c[0] for c in BAD_FILTERS])
@pytest.mark.parametrize("entry", FILTER_ENTRY_POINTS)
def test_bad_filters_are_refused_by_every_api_entry_point(
    harness: Harness, entry: str, case: str, text: str, reason: str
) -> None:
    before = snapshot(harness.library)
    response = FILTER_ENTRY_POINTS[entry](harness, text)
    assert response.status_code == 422, response.text[:300]
    assert reason in response.json()["detail"]
    unchanged(harness, before)


@pytest.mark.parametrize(("case", "text", "every"), ODD_FILTERS, ids=[c[0] for c in ODD_FILTERS])
@pytest.mark.parametrize("entry", FILTER_ENTRY_POINTS)
def test_filters_beyond_a_fields_range_match_what_they_mean(
    harness: Harness, entry: str, case: str, text: str, every: bool
) -> None:
    before = snapshot(harness.library)
    response = FILTER_ENTRY_POINTS[entry](harness, text)
    assert response.status_code == 200, response.text[:300]
    assert _found(response) == ({record[0] for record in before.records} if every else set())
    unchanged(harness, before)


# The pages: browse's one key/value filter and the search page's filter rows and date fields, as links.
PAGE_REFUSALS = [
    ("browse-four-hundred-digits", "/images", {"key": "rating", "value": "1" + "0" * 400}, "too large"),
    ("browse-utc-overflow", "/images", {"key": "image.taken_at", "value": "9999-12-31T23:59:59-23:59"}, "outside"),
    ("search-key-and-prefix", "/search", {"text": "x", "key": ["a", "metadata.a"], "value": ["1", "2"]}, "twice"),
    ("search-four-hundred-digits", "/search", {"text": "x", "key": "n", "op": ">", "value": "9" * 400}, "too large"),
    ("search-weight-huge", "/search", {"text": "x", "term": "text:a dog", "weight": "1e300"}, "between -1,000 and"),
]


@pytest.mark.parametrize(("case", "path", "params", "reason"), PAGE_REFUSALS, ids=[c[0] for c in PAGE_REFUSALS])
def test_bad_filters_and_weights_get_the_pages_message(
    harness: Harness, case: str, path: str, params: dict[str, Any], reason: str
) -> None:
    before = snapshot(harness.library)
    response = harness.client.get(path, params=params)
    assert response.status_code == 422
    assert reason in page_message(response)
    unchanged(harness, before)


def test_browse_by_a_width_beyond_int32_shows_no_images(harness: Harness) -> None:
    response = harness.client.get("/images", params={"key": "image.width", "value": "3000000000"})
    assert response.status_code == 200
    assert 'data-testid="browse-total">0 images' in response.text


@pytest.mark.parametrize(
    ("params", "every"),
    [({"taken_from": "0001-01-01"}, False), ({"key": "image.created_at", "op": ">=", "value": "0001-01-01"}, True)],
    ids=["taken-from-year-one", "created-from-year-one"],
)
def test_search_page_takes_dates_from_year_one(harness: Harness, params: dict[str, str], every: bool) -> None:
    """The test photos carry no EXIF date, so a 'taken from' filter matches none of them; creation dates all."""
    response = harness.client.get("/search", params={"text": "a photo", "k": "50", **params})
    assert response.status_code == 200
    shown = set(re.findall(r'data-testid="result" data-image-id="([^"]+)"', response.text))
    assert shown == ({r.id for r in harness.library.catalog.iter_records()} if every else set())


# Weights and ids of the JSON query


@pytest.mark.parametrize(("case", "weights"), BAD_WEIGHTS, ids=[c[0] for c in BAD_WEIGHTS])
def test_weights_beyond_the_limit_are_refused(harness: Harness, case: str, weights: list[float]) -> None:
    before = snapshot(harness.library)
    terms = [{"text": f"term {n}", "weight": weight} for n, weight in enumerate(weights)]
    response = harness.client.post("/api/v1/search/query", json={"terms": terms})
    assert response.status_code == 422
    assert "weights must be between" in response.json()["detail"]
    unchanged(harness, before)


@pytest.mark.parametrize(
    "body",
    [
        '{"terms": [{"image_id": "\\ud800"}]}',
        '{"terms": [{"image_id": "\\udfff", "region": [0, 0, 0.5, 0.5]}]}',
    ],
    ids=["stored-image", "stored-image-region"],
)
def test_a_lone_surrogate_as_an_image_id_is_not_found(harness: Harness, body: str) -> None:
    before = snapshot(harness.library)
    response = _query(harness, body)
    assert response.status_code == 404
    assert response.json()["detail"].startswith("no image with id")
    unchanged(harness, before)


def test_a_lone_surrogate_in_a_duplicate_resolution_deletes_nothing(harness: Harness) -> None:
    before = snapshot(harness.library)
    for body in (
        '{"keep": "\\ud800", "delete": ["' + harness.stored_id + '"]}',
        '{"keep": "' + harness.stored_id + '", "delete": ["\\ud800"]}',
    ):
        response = harness.client.post(
            "/api/v1/duplicates/resolve", content=body.encode(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 404 and response.json()["detail"]
    unchanged(harness, before)


# The CLI's --where


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("album=\ud800", "not valid Unicode"),
        ("rating>" + "9" * 400, "too large"),
        ("image.taken_at>=9999-12-31T23:59:59-23:59", "outside the dates"),
    ],
    ids=["surrogate", "four-hundred-digits", "utc-overflow"],
)
def test_cli_where_refuses_what_the_api_refuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path, where: str, reason: str
) -> None:
    for name, value in env_for(make_settings(tmp_path, tiny_model_dir), log_level="WARNING").items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["search", "a photo", "--where", where])
    assert result.exit_code != 0
    assert reason in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# A chunked body over the limit


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[tuple[TestClient, Any]]:
    app_settings = make_settings(tmp_path_factory.mktemp("small-limit"), tiny_model_dir, max_upload_bytes=4096)
    library = build_library(app_settings)
    library.ingest.add(encode(photo("astronaut").resize((32, 32)), "PNG"), filename="astronaut.png")
    with TestClient(create_app(app_settings, library), raise_server_exceptions=False) as client:
        yield client, library


def _chunks(total: int) -> Iterator[bytes]:
    """A multipart body sent without a length (Transfer-Encoding: chunked), 16 KiB at a time."""
    yield b'--zz\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
    for _ in range(total // 16384):
        yield b"\xff" * 16384
    yield b"\r\n--zz--\r\n"


@pytest.mark.parametrize("path", ["/api/v1/images", "/api/v1/search", "/upload", "/search"])
def test_a_chunked_body_over_the_limit_answers_413_like_a_declared_one(
    small_limit: tuple[TestClient, Any], path: str
) -> None:
    client, library = small_limit
    before = snapshot(library)
    headers = {"content-type": "multipart/form-data; boundary=zz"}
    declared = client.post(path, content=b"".join(_chunks(200_000)), headers=headers)
    chunked = client.post(path, content=_chunks(200_000), headers=headers)
    assert declared.status_code == chunked.status_code == 413
    # Both name the limit of one file in the setting's unit; only a declared length tells the size up front.
    said = [r.json()["detail"] if path.startswith("/api/") else page_message(r) for r in (chunked, declared)]
    assert "the upload is larger than the limit of 4 KB" in said[0]
    assert "the upload is 192.1 KB; the limit is 4 KB" in said[1]
    if not path.startswith("/api/"):
        assert all(message.startswith("The upload is too large") for message in said)
    assert client.get("/api/v1/health").status_code == 200
    assert snapshot(library) == before


# Any JSON filter at all: a 4xx that says why, or an answer, never a 500.

_KEYS = st.sampled_from(
    [
        "album",
        " album",
        "rating",
        "tags",
        "metadata.rating",
        "\ud800",
        "a\udfff",
        *(f"image.{f}" for f in FILTER_FIELDS),
    ]
)
_SCALARS = (
    st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.booleans()
    | st.sampled_from(["0001-01-01", "0999-12-31", "9999-12-31T23:59:59-23:59", "2024-05-31T12:00:00+14:00", "\ud800"])
)
_OPERANDS = _SCALARS | st.dictionaries(
    st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]),
    _SCALARS | st.lists(_SCALARS, max_size=4),
    max_size=3,
)
# Filter objects whose keys are fields or the operators that join filters ($not is none of them).
_FILTERS = st.recursive(
    st.dictionaries(_KEYS, _OPERANDS, max_size=3),
    lambda inner: st.dictionaries(
        _KEYS | st.sampled_from(["$and", "$or", "$not"]), _OPERANDS | inner | st.lists(inner, max_size=3), max_size=3
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(spec=_FILTERS)
def test_any_json_filter_is_answered_or_refused_never_a_500(harness: Harness, spec: dict[str, Any]) -> None:
    response = harness.client.get("/api/v1/images", params={"filter": json.dumps(spec)})
    assert response.status_code in (200, 422), (spec, response.text[:300])
    if response.status_code == 422:
        assert response.json()["detail"]
