"""What a user sees of relevance: the automatic cut-off (cutoff=auto) with the trained demo model, one readable
score in every search mode, and why each result matched."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.quality.offline import product, quality_settings
from fastapi.testclient import TestClient

from imagematch.demo_data import Scene, random_scene, render

PRESENT = ("red", "green")
SHAPES = ("circle", "square")


def _png(scene: Scene, seed: int) -> bytes:
    buffer = io.BytesIO()
    render(scene, seed=seed).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A demo-model library of red and green circles and squares, two or three of each: id -> "colour shape"."""
    rng = random.Random(5)
    kinds: dict[str, str] = {}
    with product(quality_settings(tmp_path_factory.mktemp("relevance"))) as client:
        for colour in PRESENT:
            for shape in SHAPES:
                for n in range(3):
                    base = random_scene(rng)
                    background = base.background if base.background != colour else "pink"
                    scene = Scene(shape, colour, base.size, base.pattern, background, base.x, base.y, base.angle)
                    name = f"{colour}-{shape}-{n}.png"
                    response = client.post("/api/v1/images", files={"file": (name, _png(scene, len(kinds)))})
                    if response.status_code == 201:  # flat graphics can be refused as turned copies
                        kinds[response.json()["id"]] = f"{colour} {shape}"
        assert all(sum(kind == f"{c} {s}" for kind in kinds.values()) >= 2 for c in PRESENT for s in SHAPES)
        yield client, kinds


def _found(client: TestClient, **form: str) -> list[str]:
    response = client.post("/api/v1/search", data={"k": "12", **form})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]]


@pytest.mark.parametrize("query", ["a blue circle", "a yellow square", "a purple circle"])
def test_auto_cutoff_answers_nothing_for_a_colour_the_library_does_not_hold(
    demo: tuple[TestClient, dict[str, str]], query: str
) -> None:
    client, _ = demo
    assert _found(client, text=query)  # without a cut-off, the nearest shapes of other colours come back
    assert _found(client, text=query, cutoff="auto") == []


@pytest.mark.parametrize("wanted", ["red circle", "green square"])
def test_auto_cutoff_keeps_the_images_of_a_colour_the_library_holds(
    demo: tuple[TestClient, dict[str, str]], wanted: str
) -> None:
    client, kinds = demo
    kept = _found(client, text=f"a {wanted}", cutoff="auto")
    colour = wanted.split(maxsplit=1)[0]
    assert kept and kinds[kept[0]] == wanted
    assert all(kinds[i].startswith(colour) for i in kept)  # other colours are cut


def test_the_cutoff_can_be_switched_on_for_every_search_and_off_for_one(tmp_path: Path) -> None:
    with product(quality_settings(tmp_path, cutoff="auto")) as client:
        scene = Scene("circle", "red", "large", "plain", "gray", 0.5, 0.5, 0.0)
        assert client.post("/api/v1/images", files={"file": ("red.png", _png(scene, 1))}).status_code == 201
        assert _found(client, text="a blue square") == []
        assert len(_found(client, text="a blue square", cutoff="off")) == 1


@pytest.mark.parametrize("endpoint", ["form", "query"])
def test_an_unknown_cutoff_is_refused(demo: tuple[TestClient, dict[str, str]], endpoint: str) -> None:
    client, _ = demo
    if endpoint == "form":
        response = client.post("/api/v1/search", data={"text": "a red circle", "cutoff": "sometimes"})
    else:
        body = {"terms": [{"text": "a red circle"}], "cutoff": "sometimes"}
        response = client.post("/api/v1/search/query", json=body)
    assert response.status_code == 422
    assert "detail" in response.json()
