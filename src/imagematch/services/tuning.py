"""Tuning the search to a library's own words (`imagematch tune`): learned from the library's image–text pairs
(descriptions and corrected captions), measured on pairs it did not learn from, applied only when it helps.

What is learned is a text-side adapter (imagematch.ai.adapter) kept with the library as its tuned state
(imagematch.store.tuned), for the model in use: every query of every process on the library uses it within
CHECK_EVERY seconds, and `tune --undo` goes back to the one before. Stored vectors never change, so new uploads
need nothing and a reindex with the same model keeps it; a reindex to another model leaves it behind with the
old generation.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from imagematch.ai import adapter as adapters
from imagematch.ai.adapter import Matrix, TextAdapter
from imagematch.fusion import REFERENCE_TEXTS
from imagematch.records import Conflict, InvalidInput, Vector
from imagematch.services.catalog import Catalog
from imagematch.services.pairing import Pairing, one_generation
from imagematch.settings import Settings
from imagematch.store import tuned
from imagematch.store.tuned import Applied, TunedState

log = logging.getLogger(__name__)

# Sentences in the model's own words that training holds where the model put them.
HELD_STILL = REFERENCE_TEXTS
# Other queries in the model's own words, never trained on: their top 10 before and after are compared.
GENERAL_QUERIES = (
    "a photo of a person",
    "a dog on a sofa",
    "people walking in a park",
    "a cup of tea",
    "a car on a highway",
    "a sunset over the sea",
    "a tree in a field",
    "a child with a ball",
    "a plate of food",
    "a house with a garden",
    "something red",
    "something blue",
    "something green",
    "a round object",
    "a square shape",
    "a small star",
    "a picture with text",
    "a black and white photo",
    "a close-up",
    "a striped pattern",
)
HOLD_OUT_SHARE = 0.2  # of the pairs, chosen by image id, evaluated and never trained on
MIN_PAIRS = 40  # fewer pairs than this teach nothing reliable
MIN_HELD_OUT = 8
MAX_EVALUATED = 2000  # held-out pairs the evaluation ranks
RECALL_AT = (1, 5, 10)
MARGIN = 0.02  # the held-out recall@5 gain a new tuning needs to be applied
LEAST_KEPT = 0.7  # the share of the general queries' top 10 a tuning must leave in place
CHECK_EVERY = 1.0  # seconds between two reads of the tuned state by a running process
ENCODE_BATCH = 64


class Cancelled(Exception):
    """`tune` stopped because its `cancel` was set; the tuning in use is left as it was."""


@dataclass(frozen=True, slots=True)
class TuneReport:
    """What `tune` measured and did."""

    pairs: int  # image–text pairs in the library
    trained: int
    held_out: int
    before: dict[str, float]  # with the tuning in use (or none): recall@1/5/10 on the held-out pairs, general@10
    after: dict[str, float]  # with the new one
    applied: bool
    reason: str  # why it was applied or not, in a sentence
    words: tuple[str, ...]  # what it learned most
    version: str | None  # the version applied; None when nothing was
    seconds: float


@dataclass(frozen=True, slots=True)
class _Pairs:
    """The library's pairs: texts[i] describes the image ids[i], whose stored vector is images[i]."""

    texts: list[str]
    ids: list[str]
    images: Matrix
    held_out: list[bool]


class Tuning:
    """The tuning of the model in use: read for every text query, learned and undone on request."""

    def __init__(self, settings: Settings, pairing: Pairing, catalog: Catalog) -> None:
        self.settings = settings
        self.pairing = pairing
        self.catalog = catalog
        self._lock = threading.Lock()
        self._cached: tuple[str, str, TextAdapter | None] = ("", "", None)  # model id, version, adapter
        self._checked_at = float("-inf")

    def adapter(self) -> TextAdapter | None:
        """The adapter of the model in use, read again when CHECK_EVERY has passed (another process may have
        tuned or undone meanwhile)."""
        model_id = self.pairing.embedder.model_id
        cached_model, _, adapter = self._cached
        if cached_model == model_id and time.monotonic() - self._checked_at < CHECK_EVERY:
            return adapter
        if not self._lock.acquire(blocking=cached_model != model_id):
            return adapter  # another thread is reading the state: the one cached is at most a second old
        try:
            if self._cached[0] != model_id or time.monotonic() - self._checked_at >= CHECK_EVERY:
                self._refresh(model_id)
            return self._cached[2]
        finally:
            self._lock.release()

    def _refresh(self, model_id: str) -> None:
        """Read the state; a version whose weights cannot be read is searched untuned and read again next time."""
        store = self.pairing.store
        try:
            current = tuned.read_state(store, model_id).current
            version = current.version if current else ""
            if (model_id, version) != self._cached[:2]:
                weights = tuned.read_weights(store, model_id, version) if current else None
                if current and weights is None:
                    raise ValueError(f"version {version} names weights that are not there")
                adapter = TextAdapter.from_json(weights) if weights else None
                self._cached = (model_id, version, adapter)
                log.info("search tuning for %s: %s", model_id, version or "none")
        except (ValueError, KeyError, TypeError) as error:
            log.error("the search tuning of %s cannot be read (%s): searching untuned", model_id, error)
            self._cached = (model_id, "", None)
        self._checked_at = time.monotonic()

    def adapt(self, text: str, vector: Vector) -> Vector:
        """A text query's vector as the tuned model sees it (unchanged without tuning or the library's words)."""
        return _adapted(self.adapter(), text, vector)

    def state(self) -> TunedState:
        """The stored state for the model in use, read now (what health, info and the Model page show)."""
        return tuned.read_state(self.pairing.store, self.pairing.embedder.model_id)

    def learned_words(self, state: TunedState, count: int = 8) -> list[str]:
        """What the current version of `state` learned most (read from its weights)."""
        if state.current is None:
            return []
        model_id = self.pairing.embedder.model_id
        weights = tuned.read_weights(self.pairing.store, model_id, state.current.version)
        return TextAdapter.from_json(weights).strongest(count) if weights else []

    @one_generation
    def tune(
        self,
        on_progress: Callable[[str, int, int], None] | None = None,
        *,
        dry_run: bool = False,
        cancel: threading.Event | None = None,
    ) -> TuneReport:
        """Learn an adapter from the library's pairs, evaluate it on held-out ones, and apply it when it is better
        by MARGIN and leaves the general queries' results mostly in place. `on_progress(step, done, total)`.
        A set `cancel` stops it between steps with Cancelled, and always before anything is applied."""

        def stop_if_cancelled() -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("the tuning was cancelled")

        started = time.monotonic()
        self.pairing.open()
        if self.pairing.store.generations().staging:
            raise Conflict("a reindex is under way: tune after it has finished, for the new model")
        progress = on_progress or _quiet
        pairs = self._pairs(progress, stop_if_cancelled)
        trained = [n for n, held in enumerate(pairs.held_out) if not held]
        held = [n for n, out in enumerate(pairs.held_out) if out][:MAX_EVALUATED]
        if len(pairs.texts) < MIN_PAIRS:
            raise InvalidInput(
                f"tuning needs at least {MIN_PAIRS} images with a description or a corrected caption; "
                f"this library has {len(pairs.texts)}"
            )
        if len(held) < MIN_HELD_OUT:
            raise InvalidInput(
                f"of the library's {len(pairs.texts)} described images, {len(held)} fall in the held-out share "
                f"tuning is measured on, and it needs {MIN_HELD_OUT}: describe a few more images"
            )
        embedder = self.pairing.embedder
        text_vectors = self._encode(pairs.texts, "encoding descriptions", progress, stop_if_cancelled)
        held_still_vectors = embedder.encode_texts(list(HELD_STILL))
        # As many threads as the PyTorch model is given (IMAGEMATCH_TORCH_THREADS, 0 = one per core): not torch's
        # own default, so a server keeps to what its owner set while it trains beside searches.
        with adapters.torch_threads(self.settings.torch_thread_count):
            adapter = adapters.train(
                [pairs.texts[n] for n in trained],
                text_vectors[trained],
                pairs.images[trained],
                [pairs.ids[n] for n in trained],
                HELD_STILL,
                held_still_vectors,
                on_epoch=lambda done, total: progress("training", done, total),
                cancel=cancel,
            )
        stop_if_cancelled()
        general_vectors = embedder.encode_texts(list(GENERAL_QUERIES))
        in_use = self.adapter()  # what search does now: the new tuning has to beat it, not only no tuning
        progress("evaluating", 0, 2)
        before = self._evaluate(pairs, held, text_vectors, general_vectors, in_use)
        progress("evaluating", 1, 2)
        after = self._evaluate(pairs, held, text_vectors, general_vectors, adapter)
        progress("evaluating", 2, 2)
        stop_if_cancelled()
        gain = after["recall@5"] - before["recall@5"]
        than = "the tuning in use" if in_use is not None else "no tuning"
        if gain < MARGIN:
            applied, reason = False, f"held-out recall@5 gains {gain:+.3f} over {than}, less than the {MARGIN} needed"
        elif after["general@10"] < LEAST_KEPT:
            applied = False
            reason = f"it would change {1 - after['general@10']:.0%} of the general queries' top 10 results"
        elif dry_run:
            applied, reason = (
                False,
                f"a dry run: it would be applied, as held-out recall@5 gains {gain:+.3f} over {than}",
            )
        else:
            applied, reason = True, f"held-out recall@5 gains {gain:+.3f} over {than}"
        version = uuid.uuid4().hex[:8] if applied else None
        if version is not None:
            record = Applied(
                version, datetime.now(UTC).isoformat(timespec="seconds"), len(trained), len(held), before, after
            )
            with self.pairing.store.exclusive():
                if self.pairing.store.generations().staging:  # started while this one trained
                    raise Conflict("a reindex started meanwhile: tune after it has finished, for the new model")
                stop_if_cancelled()
                tuned.sweep(self.pairing.store, embedder.model_id)
                tuned.apply(self.pairing.store, embedder.model_id, adapter.to_json(), record)
            self._checked_at = float("-inf")
            log.info("tuned the search for %s (version %s): %s", embedder.model_id, version, reason)
        else:
            log.info("tuning not applied: %s", reason)
        return TuneReport(
            len(pairs.texts), len(trained), len(held), before, after, applied, reason,
            tuple(adapter.strongest(8)), version, time.monotonic() - started,
        )  # fmt: skip

    def undo(self) -> TunedState:
        """Go back to the tuning before the current one, or to none."""
        model_id = self.pairing.embedder.model_id
        with self.pairing.store.exclusive():
            try:
                state = tuned.undo(self.pairing.store, model_id)
            except LookupError:
                raise InvalidInput(f"the search is not tuned for {model_id}: there is nothing to undo") from None
        self._checked_at = float("-inf")
        log.info("tuning undone for %s: now %s", model_id, state.current.version if state.current else "untuned")
        return state

    def _pairs(self, progress: Callable[[str, int, int], None], stop_if_cancelled: Callable[[], None]) -> _Pairs:
        """The library's own image–text pairs: each description, and each caption a user corrected."""
        texts: list[str] = []
        ids: list[str] = []
        total = self.catalog.count()
        for seen, record in enumerate(self.catalog.iter_records(), start=1):
            for text in (record.description, record.caption if record.caption_edited else ""):
                if text.strip():
                    texts.append(self.pairing.embedder.fit_text([text.strip()]).text)
                    ids.append(record.id)
            if seen % 500 == 0:
                stop_if_cancelled()
                progress("reading the library", seen, total)
        vectors: dict[str, Vector] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            stop_if_cancelled()
            chunk = self.pairing.store.get_vectors(unique[start : start + 500])
            vectors.update({image_id: stored[0] for image_id, stored in chunk.items()})
        kept = [n for n, image_id in enumerate(ids) if image_id in vectors]
        dim = self.pairing.embedder.dim
        images = np.stack([vectors[ids[n]] for n in kept]) if kept else np.zeros((0, dim), dtype=np.float32)
        kept_ids = [ids[n] for n in kept]
        return _Pairs([texts[n] for n in kept], kept_ids, images.astype(np.float32), [_held_out(i) for i in kept_ids])

    def _encode(
        self,
        texts: Sequence[str],
        step: str,
        progress: Callable[[str, int, int], None],
        stop_if_cancelled: Callable[[], None],
    ) -> Matrix:
        parts = []
        for start in range(0, len(texts), ENCODE_BATCH):
            stop_if_cancelled()
            parts.append(self.pairing.embedder.encode_texts(list(texts[start : start + ENCODE_BATCH])))
            progress(step, min(start + ENCODE_BATCH, len(texts)), len(texts))
        return np.concatenate(parts).astype(np.float32)

    def _evaluate(
        self,
        pairs: _Pairs,
        held: Sequence[int],
        text_vectors: Matrix,
        general_vectors: Matrix,
        adapter: TextAdapter | None,
    ) -> dict[str, float]:
        """Text→image recall@k of the held-out pairs among the held-out images (each image once; an image with
        the same text counts as found), and the share of the general queries' top 10 in the library left as
        untuned (queries tuning never trained on)."""
        images = list(dict.fromkeys(pairs.ids[n] for n in held))
        column = {image_id: c for c, image_id in enumerate(images)}
        vectors = np.stack([pairs.images[n] for n in {pairs.ids[n]: n for n in held}.values()])
        texts = [pairs.texts[n] for n in held]
        codes = {text: code for code, text in enumerate(dict.fromkeys(texts))}
        relevant = np.zeros((len(codes), len(images)), dtype=bool)
        for n in held:
            relevant[codes[pairs.texts[n]], column[pairs.ids[n]]] = True
        queries = np.stack([_adapted(adapter, pairs.texts[n], text_vectors[n]) for n in held])
        order = np.argsort(-(queries @ vectors.T), axis=1)
        found = np.take_along_axis(relevant[[codes[t] for t in texts]], order, axis=1)
        result = {f"recall@{k}": round(float(found[:, :k].any(axis=1).mean()), 4) for k in RECALL_AT}
        kept = []
        for text, vector in zip(GENERAL_QUERIES, general_vectors, strict=True):
            untuned = {n.id for n in self.pairing.store.nearest(vector, k=10)}
            tuned_ids = {n.id for n in self.pairing.store.nearest(_adapted(adapter, text, vector), k=10)}
            kept.append(len(untuned & tuned_ids) / max(len(untuned), 1))
        result["general@10"] = round(float(np.mean(kept)), 4)
        return result


def describe(applied: Applied | None, words: Sequence[str] = ()) -> str:
    """One line about the tuning in use, for `imagematch info` and the Model page."""
    if applied is None:
        return "off"
    line = (
        f"version {applied.version} of {applied.tuned_at[:16].replace('T', ' ')}, {applied.pairs} pairs: "
        f"held-out recall@5 {applied.before['recall@5']:.2f} → {applied.after['recall@5']:.2f}"
    )
    return f"{line}; learned {', '.join(words)}" if words else line


def _adapted(adapter: TextAdapter | None, text: str, vector: Vector) -> Vector:
    return adapter.apply(text, vector) if adapter is not None else vector


def _held_out(image_id: str) -> bool:
    """Held out by image, not by pair, and the same images every run: a re-run is measured on the same ones."""
    return hashlib.sha256(image_id.encode()).digest()[0] < 256 * HOLD_OUT_SHARE


def _quiet(step: str, done: int, total: int) -> None:
    """No progress to show."""
