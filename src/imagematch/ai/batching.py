"""Concurrent requests share the model's (or the store's) calls, and a lone request never waits for company.

A request that finds the encoder idle runs at once, with its own input alone. Requests that arrive while a call
is running queue up; when the call ends, the oldest of them runs one call for everything queued by then. So a
batch forms only from requests that would have waited anyway, with no timer: under load the encoder runs a few
larger calls instead of many small ones that fight over the same cores, and an idle server answers as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from PIL import Image

from imagematch.ai.embedder import Embedder, FittedText, Matrix, Prepared
from imagematch.records import Vector

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Request(Generic[Item, Result]):
    __slots__ = ("answered", "error", "item", "leads", "ready", "result")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.ready = threading.Event()
        self.leads = False  # woken to run the next call rather than with its result
        self.answered = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class SharedCalls(Generic[Item, Result]):
    """One input's result through `run`, which takes a list of inputs and returns one result per input, in order.

    Thread-safe; `largest` bounds one call (memory, and the wait of the first request of a large batch).
    """

    def __init__(self, run: Callable[[Sequence[Item]], Sequence[Result]], *, largest: int = 16) -> None:
        self._call = run
        self.largest = max(1, largest)
        self._lock = threading.Lock()
        self._queue: list[_Request[Item, Result]] = []
        self._running = False
        self.calls = 0  # calls made, and inputs they took: how much was shared
        self.inputs = 0

    @property
    def waiting(self) -> int:
        """Requests queued for the next call."""
        with self._lock:
            return len(self._queue)

    def run(self, item: Item) -> Result:
        mine: _Request[Item, Result] = _Request(item)
        with self._lock:
            self._queue.append(mine)
            waits = self._running
            self._running = True
        if waits:
            mine.ready.wait()
            if mine.leads:
                self._run()
        else:
            self._run()
        if mine.error is not None:
            raise mine.error
        assert mine.answered
        return mine.result  # type: ignore[return-value]

    def _run(self) -> None:
        """One call for the oldest queued requests (the caller's own among them), then the turn passes on."""
        with self._lock:
            batch = self._queue[: self.largest]
            del self._queue[: self.largest]
        try:
            results = self._call([request.item for request in batch])
            for request, result in zip(batch, results, strict=True):
                request.result, request.answered = result, True
        except BaseException as error:  # every request of the call gets the error, none hangs
            for request in batch:
                request.error = error
        with self._lock:
            self.calls += 1
            self.inputs += len(batch)
            if self._queue:
                following = self._queue[0]
                following.leads = True
                following.ready.set()
            else:
                self._running = False
        for request in batch:
            request.ready.set()


class SharedCallsEmbedder:
    """An embedder whose one-input calls (a text query, an uploaded image) share the model with the concurrent
    ones, through SharedCalls; calls with many inputs (a batch of `index`) go to the model as they are."""

    def __init__(self, inner: Embedder, *, largest: int = 16) -> None:
        self.inner = inner
        self.texts: SharedCalls[str, Vector] = SharedCalls(lambda t: list(inner.encode_texts(t)), largest=largest)
        self.images: SharedCalls[Prepared, Vector] = SharedCalls(
            lambda b: list(inner.encode_prepared(b)), largest=largest
        )

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    @property
    def image_size(self) -> int:
        return self.inner.image_size

    @property
    def runtime(self) -> str:
        return self.inner.runtime

    def load(self) -> None:
        self.inner.load()

    def prepare(self, image: Image.Image) -> Prepared:
        return self.inner.prepare(image)

    def encode_prepared(self, batch: Sequence[Prepared]) -> Matrix:
        if len(batch) == 1:
            return self.images.run(batch[0])[None]
        return self.inner.encode_prepared(batch)

    def encode_images(self, images: Sequence[Image.Image]) -> Matrix:
        return self.encode_prepared([self.prepare(image) for image in images])

    def encode_texts(self, texts: Sequence[str]) -> Matrix:
        if len(texts) == 1:
            return self.texts.run(texts[0])[None]
        return self.inner.encode_texts(texts)

    def fit_text(self, parts: Sequence[str]) -> FittedText:
        return self.inner.fit_text(parts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)
