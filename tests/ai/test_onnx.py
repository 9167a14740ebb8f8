"""ONNX Runtime: the exported model agrees with PyTorch on real photos, is cached, and is chosen by speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagematch.ai.embedder import OpenClipEmbedder
from imagematch.ai.model_source import parse_model_spec
from imagematch.ai.onnx_embedder import MIN_AGREEMENT, AutoEmbedder, OnnxEmbedder, agreement, onnx_is_faster
from imagematch.factory import build_library
from imagematch.library import SimpleSearch
from imagematch.settings import Settings
from testkit.images import PHOTOS, jpeg, photo


@pytest.fixture(scope="module")
def torch_embedder(tmp_path_factory: pytest.TempPathFactory) -> OpenClipEmbedder:
    from testkit.tinymodel import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("m") / "tiny")
    return OpenClipEmbedder(parse_model_spec(f"local-dir:{folder}"), folder, batch_size=4)


def _fresh_base(torch_embedder: OpenClipEmbedder) -> OpenClipEmbedder:
    return OpenClipEmbedder(torch_embedder.source, torch_embedder.cache_dir, batch_size=4)


def test_onnx_vectors_agree_with_pytorch_on_photos(torch_embedder: OpenClipEmbedder, tmp_path: Path) -> None:
    photos = [photo(n) for n in PHOTOS]
    expected_images = torch_embedder.encode_images(photos)
    texts = ["a photo of an astronaut", "a cup of coffee", " ".join(["long"] * 100)]
    expected_texts = torch_embedder.encode_texts(texts)
    onnx = OnnxEmbedder(_fresh_base(torch_embedder), tmp_path)
    assert agreement(onnx.encode_images(photos), expected_images) >= MIN_AGREEMENT
    assert agreement(onnx.encode_texts(texts), expected_texts) >= MIN_AGREEMENT
    report = onnx.report
    assert report["image_agreement"] >= MIN_AGREEMENT and report["text_agreement"] >= MIN_AGREEMENT
    assert report["text_trimmed"] is True  # the text encoder runs only up to the end of each text
    assert agreement(onnx.encode_texts(texts[:1]), expected_texts[:1]) >= MIN_AGREEMENT
    assert set(report["timing"]) == {"onnx_batch1", "torch_batch1", "onnx_batch", "torch_batch"}
    assert onnx.base._model is None  # the PyTorch weights were freed
    int8 = OnnxEmbedder(_fresh_base(torch_embedder), tmp_path, quantized=True)
    measured = agreement(int8.encode_images(photos), expected_images)
    assert int8.report["int8"]["image_agreement"] > 0.9  # measured and recorded when it is offered
    assert measured > 0.9


def test_the_export_is_cached(torch_embedder: OpenClipEmbedder, tmp_path: Path) -> None:
    OnnxEmbedder(_fresh_base(torch_embedder), tmp_path).load()
    exported = next((tmp_path / "onnx").glob("*/image.onnx"))
    before = exported.stat().st_mtime_ns
    again = OnnxEmbedder(_fresh_base(torch_embedder), tmp_path)
    again.load()
    assert exported.stat().st_mtime_ns == before
    assert again.encode_texts(["x"]).shape == (1, 64)


def test_auto_follows_the_measurement(torch_embedder: OpenClipEmbedder, tmp_path: Path) -> None:
    auto = AutoEmbedder(_fresh_base(torch_embedder), tmp_path)
    auto.load()
    meta = auto.onnx._ensure_export()
    assert auto.runtime == ("onnx" if onnx_is_faster(meta) else "torch")
    vectors = auto.encode_images([photo("coffee"), photo("rocket")])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_library_searches_the_same_on_onnx(settings: Settings) -> None:
    library = build_library(settings.model_copy(update={"runtime": "onnx"}))
    ids = {n: library.ingest.add(jpeg(n), filename=f"{n}.jpg").record.id for n in ("astronaut", "coffee", "rocket")}  # type: ignore[union-attr]
    hit = library.search.simple(SimpleSearch(image=jpeg("coffee"), k=1)).hits[0]
    assert hit.record.id == ids["coffee"] and hit.score >= 0.99
    assert library.embedder.runtime == "onnx"


def test_a_text_search_opens_only_the_text_encoder(torch_embedder: OpenClipEmbedder, tmp_path: Path) -> None:
    OnnxEmbedder(_fresh_base(torch_embedder), tmp_path).prepare_export()  # the export exists, as after `index`
    auto = AutoEmbedder(_fresh_base(torch_embedder), tmp_path, short_lived=True)
    auto.encode_texts(["a cup of coffee"])
    assert auto.runtime == "onnx" and set(auto.onnx._sessions) == {"text"}
    auto.encode_images([photo("coffee")])
    assert set(auto.onnx._sessions) == {"text", "image"}
