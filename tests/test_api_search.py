"""The API of the search features beyond the seed: POST /api/v1/search/query, hybrid, min_score, regions, and
the duplicate review."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagematch.library import Library
from imagematch.records import RecordPatch
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.images import PHOTOS, encode, jpeg, photo


def add_all(library: Library, names: tuple[str, ...] = PHOTOS) -> dict[str, str]:
    ids = {}
    for name in names:
        record = library.ingest.add(jpeg(name), filename=f"{name}.jpg").record
        assert record is not None
        ids[name] = record.id
    return ids


def query(client: TestClient, **body: Any) -> Any:
    return client.post("/api/v1/search/query", content=json.dumps(body), headers={"content-type": "application/json"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_query_arithmetic_with_every_kind_of_term(client: TestClient, library: Library) -> None:
    ids = add_all(library, ("astronaut", "coffee", "rocket", "coins"))
    response = query(
        client,
        terms=[
            {"text": "a rocket", "weight": 1},
            {"image_id": ids["coins"], "weight": 0.5},
            {"image": b64(jpeg("coffee")), "weight": 1, "region": [0.1, 0.1, 0.9, 0.9]},
            {"text": "people", "weight": -1},
        ],
        k=3,
    )
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert len(hits) == 3 and [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    own = query(client, terms=[{"image": b64(jpeg("rocket"))}], k=1).json()["hits"]
    assert own[0]["id"] == ids["rocket"] and own[0]["score"] >= 0.99
    similar = query(client, terms=[{"image_id": ids["rocket"]}], k=3).json()["hits"]
    assert len(similar) == 3 and ids["rocket"] not in {h["id"] for h in similar}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"terms": []}, "needs text"),
        ({"terms": [{"text": "a", "weight": 0}, {"text": "b", "weight": 0}]}, "non-zero"),
        ({"terms": [{"text": "a", "weight": float("nan")}]}, "finite"),
        ({"terms": [{"text": "a", "weight": float("inf")}]}, "finite"),
        ({"terms": [{"text": f"w{i}"} for i in range(17)]}, "at most 16"),
        ({"terms": [{"text": "a dog", "weight": 1}, {"text": "a dog", "weight": -1}]}, "cancel"),
        ({"terms": [{"text": "a", "image_id": "b"}]}, "exactly one"),
        ({"terms": [{}]}, "exactly one"),
        ({"terms": [{"image": "not base64!"}]}, "base64"),
        ({"terms": [{"text": "a", "region": [0, 0, 1, 1]}]}, "region belongs"),
        ({"terms": [{"image_id": "x", "region": [0.5, 0, 0.2, 1]}]}, "inside the image"),
        ({"terms": [{"text": "a"}], "k": 0}, "k must be"),
        ({"terms": [{"text": "a"}], "min_score": 2}, "min_score"),
        ({"terms": [{"text": "a"}], "filter": {"a": {"$regex": "."}}}, "unknown operator"),
        ({"terms": [{"text": "a"}], "surprise": 1}, "extra"),
    ],
)
def test_bad_queries_are_4xx_with_a_reason(client: TestClient, library: Library, body: Any, message: str) -> None:
    add_all(library, ("astronaut",))
    response = query(client, **body)
    assert 400 <= response.status_code < 500, response.text
    assert message.lower() in response.json()["detail"].lower()


def test_unknown_stored_image_is_404(client: TestClient, library: Library) -> None:
    add_all(library, ("astronaut",))
    assert query(client, terms=[{"image_id": "0123456789abcdef-01234567"}]).status_code == 404


def test_hybrid_finds_a_caption_word_and_filters_come_first(client: TestClient, library: Library) -> None:
    ids = add_all(library)
    ranking = [h["id"] for h in query(client, terms=[{"text": "invoice"}], k=len(PHOTOS)).json()["hits"]]
    target = ranking[-1]
    library.catalog.update(target, RecordPatch(caption="an invoice for the telescope", metadata={"kind": "paper"}))
    library.catalog.update(
        ids["moon"] if target != ids["moon"] else ids["clock"], RecordPatch(metadata={"kind": "paper"})
    )
    found = query(client, terms=[{"text": "invoice"}], k=1, hybrid=True).json()["hits"]
    assert [h["id"] for h in found] == [target]
    form = client.post("/api/v1/search", data={"text": "invoice", "k": "1", "hybrid": "true"}).json()["hits"]
    assert [h["id"] for h in form] == [target]
    papers = query(client, terms=[{"text": "a cat"}], k=2, filter={"kind": "paper"}, hybrid=True).json()["hits"]
    assert len(papers) == 2 and all(h["image"]["metadata"]["kind"] == "paper" for h in papers)


def test_min_score_and_region_in_the_form_endpoint(client: TestClient, library: Library) -> None:
    ids = add_all(library, ("astronaut", "coffee", "rocket"))
    nothing = client.post("/api/v1/search", data={"text": "a rocket", "min_score": "1"})
    assert nothing.status_code == 200 and nothing.json()["hits"] == []
    files = {"image": ("q.jpg", jpeg("coffee"), "image/jpeg")}
    only = client.post("/api/v1/search", files=files, data={"min_score": "0.999"}).json()["hits"]
    assert [h["id"] for h in only] == [ids["coffee"]]
    region = client.post(
        "/api/v1/search",
        files={"image": ("q.jpg", jpeg("rocket"), "image/jpeg")},
        data={"region": "0.2,0.2,0.6,0.7", "k": "3"},
    )
    assert region.status_code == 200 and len(region.json()["hits"]) == 3
    whole = client.post("/api/v1/search", files={"image": ("q.jpg", jpeg("rocket"), "image/jpeg")}, data={"k": "3"})
    assert region.json()["hits"][0]["score"] != whole.json()["hits"][0]["score"]
    bad = client.post("/api/v1/search", data={"image_id": ids["coffee"], "region": "0.5,0.5"})
    assert bad.status_code == 422 and "four numbers" in bad.json()["detail"]


def test_duplicate_review_lists_groups_and_resolves_them(settings: Settings, library: Library) -> None:
    loose = settings.model_copy(
        update={"duplicate_distance": 0, "duplicate_variants": False, "duplicate_crop_distance": 0}
    )
    library.settings = loose
    ids = add_all(library, ("astronaut", "coffee", "rocket"))
    coffee = photo("coffee")
    width, height = coffee.size
    crop = library.ingest.add(
        encode(coffee.crop((int(width * 0.02), int(height * 0.02), width, height))), filename="c.jpg"
    )
    assert crop.record is not None
    with TestClient(create_app(loose, library)) as client:
        assert client.get("/api/v1/duplicates").json()["groups"] == []  # 8 bits apart, the setting is 0
        found = client.get("/api/v1/duplicates", params={"max_distance": 10}).json()
        assert found["max_distance"] == 10 and len(found["groups"]) == 1
        group = found["groups"][0]
        assert {i["id"] for i in group["images"]} == {ids["coffee"], crop.record.id}
        assert group["links"][0]["distance"] == 8
        assert client.get("/api/v1/duplicates", params={"max_distance": 99}).status_code == 422
        resolved = client.post(
            "/api/v1/duplicates/resolve", json={"keep": crop.record.id, "delete": [ids["coffee"]]}
        ).json()
        assert resolved == {"kept": crop.record.id, "deleted": [ids["coffee"]]}
        assert client.get(f"/api/v1/images/{ids['coffee']}").status_code == 404
        same = client.post("/api/v1/duplicates/resolve", json={"keep": ids["rocket"], "delete": [ids["rocket"]]})
        assert same.status_code == 422


def test_every_mode_shows_one_score_scale_and_why_each_result_matched(client: TestClient, library: Library) -> None:
    ids = add_all(library)
    described = ids["coffee"]
    library.catalog.update(described, RecordPatch(description="an invoice for the coffee machine"))
    files = {"image": ("q.jpg", jpeg("rocket"), "image/jpeg")}
    vector = client.post("/api/v1/search", files=files, data={"k": "3"}).json()["hits"]
    fused = query(client, terms=[{"text": "invoice"}], k=len(PHOTOS)).json()["hits"]
    hybrid = query(client, terms=[{"text": "invoice"}], k=len(PHOTOS), hybrid=True).json()["hits"]
    for hit in vector + fused + hybrid:
        why = hit["why"]
        assert -1 <= hit["score"] <= 1 and hit["score"] == pytest.approx(why["image"] + why["words_added"], abs=1e-5)
    assert all(h["why"]["words"] is None and h["why"]["rank_fusion"] is None for h in vector)
    by_id = {h["id"]: h for h in fused}
    assert by_id[described]["why"]["words"] is not None and by_id[described]["why"]["words_added"] > 0
    assert all(h["why"]["words"] is None for h in fused if h["id"] != described)  # no words of their own
    assert hybrid[0]["id"] == described and hybrid[0]["why"]["keywords"] == ["invoice"]
    assert hybrid[0]["why"]["rank_fusion"] > hybrid[1]["why"]["rank_fusion"]
    # The same image shows the same score with or without keywords: one scale in every mode.
    assert {h["id"]: h["score"] for h in hybrid} == pytest.approx({h["id"]: h["score"] for h in fused})


def test_min_score_acts_on_the_shown_score_in_hybrid_search(client: TestClient, library: Library) -> None:
    ids = add_all(library)
    library.catalog.update(ids["coffee"], RecordPatch(caption="an invoice"))
    every = query(client, terms=[{"text": "invoice"}], k=len(PHOTOS), hybrid=True).json()["hits"]
    least = sorted(h["score"] for h in every)[len(every) // 2] - 1e-6  # below the median, past the rounding
    cut = query(client, terms=[{"text": "invoice"}], k=len(PHOTOS), hybrid=True, min_score=least).json()["hits"]
    assert cut and len(cut) < len(every)
    assert all(h["score"] >= least for h in cut)
    assert {h["id"] for h in cut} == {h["id"] for h in every if h["score"] >= least}
    form = client.post("/api/v1/search", data={"text": "invoice", "hybrid": "true", "min_score": str(least)})
    assert all(h["score"] >= least for h in form.json()["hits"])


def test_why_is_in_the_openapi_schema(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "why" in schemas["HitOut"]["required"]
    assert set(schemas["MatchOut"]["properties"]) == {"image", "words", "words_added", "keywords", "rank_fusion"}
