from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imagematch.ai.embedder import OpenClipEmbedder, ends_at_end_of_text, normalise, trim_to_end_of_text
from imagematch.ai.model_source import parse_model_spec
from testkit.images import photo
from testkit.tinymodel import build_tiny_model


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> OpenClipEmbedder:
    folder = build_tiny_model(tmp_path_factory.mktemp("m") / "tiny")
    return OpenClipEmbedder(parse_model_spec(f"local-dir:{folder}"), Path("unused"), batch_size=2)


def test_vectors_are_normalised_float32(embedder: OpenClipEmbedder) -> None:
    images = embedder.encode_images([photo(n) for n in ("astronaut", "coffee", "rocket")])
    texts = embedder.encode_texts(["a dog", "a cat", "a rocket"])
    for matrix in (images, texts):
        assert matrix.dtype == np.float32 and matrix.shape == (3, 64)
        assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_vectors(embedder: OpenClipEmbedder) -> None:
    photos = [photo(n) for n in ("astronaut", "coffee", "rocket")]
    together = embedder.encode_images(photos)
    alone = np.stack([embedder.encode_images([p])[0] for p in photos])
    assert np.allclose(together, alone, atol=1e-5)


def test_fit_text_truncates_by_tokens_keeping_the_first_part(embedder: OpenClipEmbedder) -> None:
    short = embedder.fit_text(["a red circle"])
    assert not short.truncated and short.text == "a red circle" and short.limit == 77
    user = " ".join(["user"] * 40)
    caption = " ".join(["caption"] * 60)
    fitted = embedder.fit_text([user, caption])
    assert fitted.truncated and fitted.text.startswith(user)
    assert embedder.count_tokens(fitted.text) <= 77
    assert fitted.text.count("caption") > 0
    huge = embedder.fit_text([" ".join(["user"] * 100), caption])
    assert huge.truncated and "caption" not in huge.text


def test_long_text_truncation_equals_token_cut(embedder: OpenClipEmbedder) -> None:
    words = " ".join(f"w{i}" for i in range(200))
    prefix_tokens = embedder.count_tokens(words)
    assert prefix_tokens > 77
    assert np.allclose(embedder.encode_texts([words]), embedder.encode_texts([words + " extra words"]), atol=1e-6)


def test_text_is_encoded_only_up_to_its_end_with_the_same_vectors(embedder: OpenClipEmbedder) -> None:
    import torch

    texts = ["a dog", "a red circle on a striped green background", " ".join(["long"] * 100)]
    assert ends_at_end_of_text(embedder.torch_model)
    ids = embedder.tokenize(texts[:1])
    assert trim_to_end_of_text(ids).shape == (1, 4)  # start, "a", "dog", end: not 77 positions
    with torch.inference_mode():
        full = normalise(embedder.torch_model.encode_text(torch.from_numpy(embedder.tokenize(texts))).numpy())
    assert np.allclose(embedder.encode_texts(texts), full, atol=1e-5)  # a batch, cut at its longest text
    alone = np.stack([embedder.encode_texts([t])[0] for t in texts])  # each cut at its own end
    assert np.allclose(alone, full, atol=1e-5)


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_model_threads_wait_passively_unless_the_user_says_otherwise(given: str | None, expected: str) -> None:
    """Spinning OpenMP threads lose two thirds of the model's speed when another program keeps a core busy."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    shown = subprocess.run(
        [sys.executable, "-c", "import os, imagematch; print(os.environ['OMP_WAIT_POLICY'])"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == expected
