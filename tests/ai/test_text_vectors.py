"""Vectors of fixed texts kept on disk: encoded once per model and runtime, read back by the processes after."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imagematch.ai.embedder import Matrix
from imagematch.ai.text_vectors import FOLDER, cached_text_vectors

TEXTS = ("a dog on the grass", "a page of printed text")


class Counting:
    """An embedder that counts what it encodes; its runtime is set by the test."""

    def __init__(self, runtime: str = "onnx", model_id: str = "m@1") -> None:
        self.runtime = runtime
        self.model_id = model_id
        self.dim = 4
        self.encoded = 0

    def encode_texts(self, texts: Sequence[str]) -> Matrix:
        self.encoded += len(texts)
        rng = np.random.default_rng(len(self.runtime) + len(self.model_id))
        return rng.standard_normal((len(texts), self.dim)).astype(np.float32)


def test_encoded_once_then_read_back(tmp_path: Path) -> None:
    first = Counting()
    made = cached_text_vectors(first, TEXTS, tmp_path)  # type: ignore[arg-type]
    later = Counting()  # the next process
    read = cached_text_vectors(later, TEXTS, tmp_path)  # type: ignore[arg-type]
    assert first.encoded == 2 and later.encoded == 0
    assert np.array_equal(made, read) and read.dtype == np.float32


def test_each_model_runtime_and_set_of_texts_has_its_own(tmp_path: Path) -> None:
    cached_text_vectors(Counting(), TEXTS, tmp_path)  # type: ignore[arg-type]
    for other, texts in (
        (Counting(runtime="torch"), TEXTS),
        (Counting(model_id="m@2"), TEXTS),
        (Counting(), TEXTS[:1]),
    ):
        cached_text_vectors(other, texts, tmp_path)  # type: ignore[arg-type]
        assert other.encoded == len(texts)
    assert len(list((tmp_path / FOLDER).glob("*.npy"))) == 4


def test_a_broken_file_is_made_again_and_an_undecided_runtime_encodes(tmp_path: Path) -> None:
    cached_text_vectors(Counting(), TEXTS, tmp_path)  # type: ignore[arg-type]
    [kept] = (tmp_path / FOLDER).glob("*.npy")
    kept.write_bytes(kept.read_bytes()[:20])  # cut short, as by a full disk
    again = Counting()
    cached_text_vectors(again, TEXTS, tmp_path)  # type: ignore[arg-type]
    assert again.encoded == 2 and np.load(kept).shape == (2, 4)
    undecided = Counting(runtime="auto")  # `auto` before its first input: encoding decides what it runs on
    cached_text_vectors(undecided, TEXTS, tmp_path)  # type: ignore[arg-type]
    assert undecided.encoded == 2


def test_a_read_only_cache_still_answers(tmp_path: Path) -> None:
    (tmp_path / FOLDER).write_text("a file where the folder would be")
    vectors = cached_text_vectors(Counting(), TEXTS, tmp_path)  # type: ignore[arg-type]
    assert vectors.shape == (2, 4)
