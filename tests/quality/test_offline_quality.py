"""Search quality through the product with the built-in demo model, on held-out images it never saw.

Thresholds are those bench/quality/offline.py measured (figures in docs/quality.md): on 24 held-out queries the demo
model measured precision@5 0.67 for "a <colour> <shape>", own-caption recall@5 1.0 and variant-first 0.99.
The tests use a smaller held-out set, so the thresholds leave room for its spread while staying far above
chance (a random ranking gives precision@5 about 0.04 here).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imagematch.factory import build_caption_worker, build_library
from testkit.fake_moondream import running
from testkit.quality import (
    Item,
    caption_server_for,
    held_out,
    image_metrics,
    ingest,
    multimodal_curve,
    product,
    quality_settings,
    text_metrics,
)

QUERIES = 12


@pytest.fixture(scope="module")
def items() -> list[Item]:
    return held_out(seed=4242, queries=QUERIES)


@pytest.fixture(scope="module")
def searched(
    tmp_path_factory: pytest.TempPathFactory, items: list[Item]
) -> Iterator[tuple[TestClient, dict[str, Item]]]:
    with product(quality_settings(tmp_path_factory.mktemp("quality"))) as client:
        yield client, ingest(client, items)


def test_text_finds_held_out_images(searched: tuple[TestClient, dict[str, Item]]) -> None:
    client, stored = searched
    assert len(stored) >= QUERIES * 5 - 2
    metrics = text_metrics(client, stored)
    assert metrics["short_query_p@5"] >= 0.45
    assert metrics["own_caption_r@5"] >= 0.9


def test_near_identical_variants_rank_first(searched: tuple[TestClient, dict[str, Item]]) -> None:
    client, stored = searched
    assert image_metrics(client, stored)["variant_first"] >= 0.9


def test_the_weight_moves_results_from_the_text_to_the_image(searched: tuple[TestClient, dict[str, Item]]) -> None:
    client, stored = searched
    curve = multimodal_curve(client, stored)
    text_side = [point["text_answer_p@5"] for point in curve]
    image_side = [point["image_first"] for point in curve]
    assert text_side[0] >= 0.45 and text_side[-1] <= 0.1
    assert image_side[0] <= 0.1 and image_side[-1] >= 0.8
    assert text_side == sorted(text_side, reverse=True)
    assert image_side == sorted(image_side)


def test_ground_truth_captions_do_not_hurt_text_search(tmp_path: Path, items: list[Item]) -> None:
    with running(caption_server_for(items)) as server:
        settings = quality_settings(
            tmp_path, captioner="moondream", moondream_endpoint=server.endpoint, caption_rate=100.0
        )
        with product(settings) as client:
            stored = ingest(client, items)
        library = build_library(settings)
        build_caption_worker(settings, library).run_until_empty()
        assert library.captions.counts()["done"] == len(stored)
    results = {}
    for weight in (0.0, 0.3):
        with product(settings.model_copy(update={"words_weight": weight, "captioner": "none"})) as client:
            results[weight] = text_metrics(client, stored)["short_query_p@5"]
    assert results[0.3] >= results[0.0]
