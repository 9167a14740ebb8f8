"""What a user sees of relevance: the automatic cut-off (cutoff=auto) with the trained demo model, one readable
score in every search mode, and why each result matched."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from fastapi.testclient import TestClient

from imagematch.demo_data import Scene, random_scene, render
from testkit.quality import product, quality_settings

PRESENT = ("red", "green")
SHAPES = ("circle", "square", "triangle")


class Demo(NamedTuple):
    client: TestClient
    kinds: dict[str, str]  # id -> "colour shape"
    folder: Path


def _png(scene: Scene, seed: int) -> bytes:
    buffer = io.BytesIO()
    render(scene, seed=seed).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A demo-model library of red and green circles, squares and triangles, about four of each (the automatic
    cut-off needs 20 images)."""
    rng = random.Random(5)
    kinds: dict[str, str] = {}
    folder = tmp_path_factory.mktemp("relevance")
    with product(quality_settings(folder)) as client:
        for colour in PRESENT:
            for shape in SHAPES:
                for n in range(4):
                    base = random_scene(rng)
                    background = base.background if base.background != colour else "pink"
                    scene = Scene(shape, colour, base.size, base.pattern, background, base.x, base.y, base.angle)
                    name = f"{colour}-{shape}-{n}.png"
                    response = client.post("/api/v1/images", files={"file": (name, _png(scene, len(kinds)))})
                    if response.status_code == 201:  # flat graphics can be refused as turned copies
                        kinds[response.json()["id"]] = f"{colour} {shape}"
        assert len(kinds) >= 20
        assert all(sum(kind == f"{c} {s}" for kind in kinds.values()) >= 2 for c in PRESENT for s in SHAPES)
        yield Demo(client, kinds, folder)


def _found(client: TestClient, **form: str) -> list[str]:
    response = client.post("/api/v1/search", data={"k": "12", **form})
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["hits"]]


@pytest.mark.parametrize("query", ["a blue circle", "a yellow square", "a purple circle"])
def test_auto_cutoff_answers_nothing_for_a_colour_the_library_does_not_hold(demo: Demo, query: str) -> None:
    client = demo.client
    assert _found(client, text=query)  # without a cut-off, the nearest shapes of other colours come back
    assert _found(client, text=query, cutoff="auto") == []


@pytest.mark.parametrize("wanted", ["red circle", "green square"])
def test_auto_cutoff_keeps_the_images_of_a_colour_the_library_holds(demo: Demo, wanted: str) -> None:
    client, kinds = demo.client, demo.kinds
    kept = _found(client, text=f"a {wanted}", cutoff="auto")
    assert {i for i, kind in kinds.items() if kind == wanted} <= set(kept)
    colour = wanted.split(maxsplit=1)[0]
    assert all(kinds[i].startswith(colour) for i in kept)  # other colours are cut


def test_the_cutoff_can_be_switched_on_for_every_search_and_off_for_one(
    demo: Demo,
) -> None:
    with product(quality_settings(demo.folder, cutoff="auto")) as switched_on:
        assert _found(switched_on, text="a blue square") == []
        assert _found(switched_on, text="a blue square", cutoff="off")


def test_a_small_library_is_not_cut(tmp_path: Path) -> None:
    with product(quality_settings(tmp_path)) as client:
        scene = Scene("circle", "red", "large", "plain", "gray", 0.5, 0.5, 0.0)
        assert client.post("/api/v1/images", files={"file": ("red.png", _png(scene, 1))}).status_code == 201
        assert len(_found(client, text="a blue square", cutoff="auto")) == 1


@pytest.mark.parametrize("endpoint", ["form", "query"])
def test_an_unknown_cutoff_is_refused(demo: Demo, endpoint: str) -> None:
    client = demo.client
    if endpoint == "form":
        response = client.post("/api/v1/search", data={"text": "a red circle", "cutoff": "sometimes"})
    else:
        body = {"terms": [{"text": "a red circle"}], "cutoff": "sometimes"}
        response = client.post("/api/v1/search/query", json=body)
    assert response.status_code == 422
    assert "detail" in response.json()
