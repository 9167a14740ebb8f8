"""Concurrent searches share the text encoder's calls and get the results they get one by one."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from imagematch.ai.batching import SharedCalls, SharedCallsEmbedder
from imagematch.ai.embedder import Matrix
from imagematch.factory import build_library
from imagematch.library import Library, SimpleSearch
from imagematch.records import Vector
from imagematch.settings import Settings
from testkit.images import PHOTOS, jpeg

QUERIES = ("an astronaut", "a cup of coffee", "a cat", "a rocket on its pad", "a horse", "grass", "a camera", "text")


class GatedEncoder:
    """The embedder's text encoder, whose first call waits until the test has queued the others behind it."""

    def __init__(self, encode: object) -> None:
        self.encode = encode
        self.gate = threading.Event()
        self.batches: list[int] = []

    def __call__(self, texts: Sequence[str]) -> list[Vector]:
        if not self.batches:
            self.gate.wait(timeout=30)
        self.batches.append(len(texts))
        vectors: Matrix = self.encode(texts)  # type: ignore[operator]
        return list(vectors)


def _wait_for(shared: SharedCalls[str, Matrix], waiting: int) -> None:
    deadline = time.monotonic() + 30
    while shared.waiting < waiting and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def described(settings: Settings) -> Library:
    library = build_library(settings)
    for n, name in enumerate(PHOTOS):
        library.ingest.add(jpeg(name), filename=f"{name}.jpg", description=QUERIES[n % len(QUERIES)])
    return library


def test_concurrent_searches_share_encoder_calls_and_find_what_they_find_one_by_one(described: Library) -> None:
    embedder = described.embedder
    assert isinstance(embedder, SharedCallsEmbedder)
    alone = [described.search.simple(SimpleSearch(text=q)) for q in QUERIES]
    gated = GatedEncoder(embedder.inner.encode_texts)
    embedder.texts = SharedCalls(gated)
    with ThreadPoolExecutor(len(QUERIES)) as clients:
        first = clients.submit(described.search.simple, SimpleSearch(text=QUERIES[0]))
        _wait_for(embedder.texts, 0)
        others = [clients.submit(described.search.simple, SimpleSearch(text=q)) for q in QUERIES[1:]]
        _wait_for(embedder.texts, len(QUERIES) - 1)
        gated.gate.set()
        together = [first.result(), *(future.result() for future in others)]
    assert gated.batches == [1, len(QUERIES) - 1]  # the seven that waited went through the encoder in one call
    for one, other in zip(alone, together, strict=True):
        assert [hit.record.id for hit in one.hits] == [hit.record.id for hit in other.hits]
        np.testing.assert_allclose([h.score for h in one.hits], [h.score for h in other.hits], atol=1e-5)


def test_a_lone_query_runs_at_once_in_a_call_of_its_own(described: Library) -> None:
    embedder = described.embedder
    assert isinstance(embedder, SharedCallsEmbedder)
    calls, inputs = embedder.texts.calls, embedder.texts.inputs
    result = described.search.simple(SimpleSearch(text="a cat"))
    assert result.hits
    assert (embedder.texts.calls - calls, embedder.texts.inputs - inputs) == (1, 1)


def test_an_encoder_error_reaches_every_waiting_query_and_the_next_ones_are_answered() -> None:
    failing = threading.Event()
    gate = threading.Event()

    def encode(texts: Sequence[str]) -> list[Vector]:
        gate.wait(timeout=30)
        if failing.is_set():
            raise RuntimeError("the model failed")
        return list(np.ones((len(texts), 4), np.float32))

    shared: SharedCalls[str, Matrix] = SharedCalls(encode)
    failing.set()
    with ThreadPoolExecutor(4) as clients:
        futures = [clients.submit(shared.run, "first")]
        _wait_for(shared, 0)
        futures += [clients.submit(shared.run, text) for text in ("a", "b", "c")]
        _wait_for(shared, 3)
        gate.set()
        errors = [future.exception() for future in futures]
    assert all(isinstance(error, RuntimeError) for error in errors)
    failing.clear()
    assert shared.run("again").tolist() == [1, 1, 1, 1]
