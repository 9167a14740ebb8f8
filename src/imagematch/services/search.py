"""Search: each query term becomes a normalised vector; their weighted sum, re-normalised, is the query.
Words (description, caption, text in the picture) are fused in by their own vectors, keywords by rank fusion,
and the automatic cut-off is measured on a sample of the library.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from imagematch import media
from imagematch.ai.embedder import Matrix
from imagematch.ai.text_vectors import cached_text_vectors
from imagematch.blobs import BlobStore
from imagematch.fingerprint import could_be_image_id, file_hash
from imagematch.fusion import REFERENCE_TEXTS, fuse, reciprocal_rank_fusion, words_standing
from imagematch.keywords import search_text
from imagematch.keywords import tokens as keyword_tokens
from imagematch.records import (
    Filter,
    Hit,
    ImageTerm,
    InvalidQuery,
    Match,
    NotFound,
    Query,
    QueryTerm,
    Region,
    SearchResult,
    StoredImageTerm,
    TextTerm,
    TooLarge,
    Vector,
)
from imagematch.relevance import SAMPLE_SIZE, auto_min_score
from imagematch.services.catalog import Catalog
from imagematch.services.embedding import Embedding
from imagematch.services.ingest import human_bytes
from imagematch.services.pairing import Pairing, one_generation
from imagematch.services.tuning import Tuning
from imagematch.settings import Settings

log = logging.getLogger(__name__)


# Far beyond any model's context (it is cut by tokens anyway); keeps tokenizing a hostile query cheap.
MAX_QUERY_TEXT_LENGTH = 10_000
_CANDIDATE_READERS = 8  # concurrent searches whose image-side candidates are read beside their words side
_SAMPLE_PIECES = 8  # a large library's sample is read as this many pages spread over it


@dataclass(frozen=True, slots=True)
class SimpleSearch:
    """The seed's search form: optional text, optional image (bytes or stored id), and a weight; `region` is the
    part of the image to search with, `hybrid`, `min_score` and `cutoff` as in Query."""

    text: str = ""
    image: bytes | None = None
    image_id: str = ""
    image_weight: float = 0.5
    k: int = 10
    filter: Filter | None = None
    region: Region | None = None
    hybrid: bool = False
    min_score: float | None = None
    cutoff: str | None = None


class Search:
    def __init__(
        self,
        settings: Settings,
        pairing: Pairing,
        embedding: Embedding,
        catalog: Catalog,
        blobs: BlobStore,
        tuning: Tuning,
    ) -> None:
        self.settings = settings
        self.tuning = tuning
        self.pairing = pairing
        self.embedding = embedding
        self.catalog = catalog
        self.blobs = blobs
        # The two candidate lists of a fused search are read at once: each store query waits on its engine.
        self._candidate_reader = ThreadPoolExecutor(_CANDIDATE_READERS, thread_name_prefix="candidates")
        self._references: tuple[str, Matrix] | None = None  # model id, its REFERENCE_TEXTS vectors
        self._sample: tuple[int, str, Matrix] | None = None  # image count, model id, a sample of image vectors
        self._sample_lock = threading.Lock()
        self._references_lock = threading.Lock()

    @one_generation
    def run(self, query: Query) -> SearchResult:
        """Top k for a query of weighted terms.

        The query vector is the weighted sum of the terms' normalised vectors, re-normalised. When the query
        has text and images have words (description, caption), each candidate is also scored by its words
        vector against the text, fused by `words_weight` times the text's share of the query (imagematch.fusion).
        Stored images that are terms of the query are left out of its results.
        """
        started = time.perf_counter()
        if not 1 <= query.k <= self.settings.max_k:
            raise InvalidQuery(f"k must be between 1 and {self.settings.max_k}")
        if any(isinstance(t, TextTerm) and len(t.text) > MAX_QUERY_TEXT_LENGTH for t in query.terms):
            raise InvalidQuery(f"the search text is longer than {MAX_QUERY_TEXT_LENGTH:,} characters; shorten it")
        self.pairing.open()
        vectors = self._query_vectors(query.terms)
        encoded = time.perf_counter()
        weight = self.settings.words_weight * vectors.text_share
        # The stored images a query is made of are what it asks to see others like: they are not results.
        shown = {t.image_id for t in query.terms if isinstance(t, StoredImageTerm)}
        wanted = query.k + len(shown)
        depth = self._depth(wanted) if query.hybrid else wanted
        text = vectors.text if weight > 0 else None
        scoring = _Scoring(vectors.query, text, weight)
        if text is None:
            hits = [
                Hit(hit.record, hit.score, Match(hit.score))
                for hit in self.pairing.store.search(vectors.query, k=depth, flt=query.filter)
            ]
        else:
            hits = self._fused_search(scoring, text, depth, query.filter, shown)
        if query.hybrid:
            hits = self._hybrid(hits, query, depth, scoring)
        least = self._least_score(query, vectors.query)
        if least is not None:
            hits = [hit for hit in hits if hit.score >= least]
        hits = [hit for hit in hits if hit.record.id not in shown][: query.k]
        took = (time.perf_counter() - started) * 1000
        log.info("search %s k=%d: %d hits in %.0f ms", _describe_terms(query.terms), query.k, len(hits), took)
        encode = (encoded - started) * 1000
        return SearchResult(hits=hits, truncated=vectors.truncated, took_ms=took, encode_ms=encode)

    @one_generation
    def simple(self, request: SimpleSearch) -> SearchResult:
        """The seed's form: text and/or an image, mixed by image_weight in [0, 1]."""
        query = to_query(request)
        if self.settings.query_caption and request.text.strip():
            caption = self._query_image_caption(request)
            if caption:
                query = replace(
                    query,
                    terms=tuple(replace(t, context=caption) if isinstance(t, TextTerm) else t for t in query.terms),
                )
        return self.run(query)

    def _query_image_caption(self, request: SimpleSearch) -> str:
        """The caption of the query image when it is a stored image (by id, or the same file as one)."""
        record = None
        if request.image_id and could_be_image_id(request.image_id):
            record = self.pairing.store.get(request.image_id)
        elif request.image is not None:
            record = self.pairing.store.find_file_hash(file_hash(request.image))
        return record.caption if record is not None else ""

    def _depth(self, k: int) -> int:
        """How many candidates a ranking that is fused with another one reads."""
        return min(max(k * 3, 100), self.settings.max_k * 3)

    def _hybrid(self, vector_hits: list[Hit], query: Query, depth: int, scoring: _Scoring) -> list[Hit]:
        """The vector ranking fused with a keyword ranking of the query's positive words (reciprocal rank fusion).

        Results are ordered by the fused value, and keep the score of their vectors, so that every mode shows
        one scale: an image that only the keywords found is scored from its stored vectors like any other.
        Without positive text terms there is nothing to match as keywords.
        """
        words = " ".join(t.text for t in query.terms if isinstance(t, TextTerm) and t.weight > 0)
        if not words.strip():
            return vector_hits
        keyword_hits = self.pairing.store.keyword_search(words, k=depth, flt=query.filter)
        scored = {hit.record.id: hit for hit in vector_hits}
        unscored = [hit.record for hit in keyword_hits if hit.record.id not in scored]
        if unscored:
            stored = self.pairing.store.get_vectors([record.id for record in unscored])
            kept = [record for record in unscored if record.id in stored]
            for record, (score, why) in zip(kept, scoring.score([stored[r.id] for r in kept]), strict=True):
                scored[record.id] = Hit(record, score, why)
        # An image only the keywords found still has the rank its score earns among the vector candidates: left
        # out of the vector ranking, a unique keyword match would tie with the vectors' first and lose by its id.
        by_score = sorted(scored, key=lambda i: (-scored[i].score, i))
        fused = reciprocal_rank_fusion([by_score, [hit.record.id for hit in keyword_hits]])
        asked = set(keyword_tokens(words))
        hits = []
        for key in sorted((i for i in fused if i in scored), key=lambda i: (-fused[i], i)):
            hit = scored[key]
            found = tuple(sorted(asked & set(keyword_tokens(search_text(hit.record)))))
            why = replace(hit.why or Match(hit.score), keywords=found, rank_fusion=fused[key])
            hits.append(replace(hit, why=why))
        return hits

    def _fused_search(self, scoring: _Scoring, text: Vector, k: int, flt: Filter | None, shown: set[str]) -> list[Hit]:
        """The top k by image and words together: candidates from both vectors, each scored exactly."""
        depth = self._depth(k)
        by_image = self._candidate_reader.submit(self.pairing.store.nearest, scoring.query, k=depth, flt=flt)
        by_words = self.pairing.store.nearest(text, k=depth, flt=flt, field="words")
        image_candidates = by_image.result()
        candidates = image_candidates + by_words
        stored = {c.id: c.vectors for c in candidates if c.vectors is not None}
        stored |= self.pairing.store.get_vectors([c.id for c in candidates if c.id not in stored])
        ids = [i for i in dict.fromkeys(c.id for c in candidates) if i in stored]
        if not ids:
            return []
        # The query's own images would widen the spread that puts words evidence on the image scale.
        from_image = [stored[c.id][0] for c in image_candidates if c.id in stored and c.id not in shown]
        scoring.calibrate(self._reference_vectors(), np.array(from_image) if from_image else None)
        scores = scoring.score([stored[i] for i in ids])
        order = sorted(range(len(ids)), key=lambda n: -scores[n][0])[:k]
        records = self.pairing.store.get_many([ids[n] for n in order])  # only the k that are shown
        return [Hit(records[ids[n]], *scores[n]) for n in order if ids[n] in records]

    def _least_score(self, query: Query, vector: Vector) -> float | None:
        """The score a result needs: the query's min_score, raised to its automatic cut-off when that is on."""
        least = query.min_score
        if (query.cutoff or self.settings.cutoff) == "auto":
            automatic = auto_min_score(self._library_sample() @ vector)
            if automatic is not None:
                least = automatic if least is None else max(least, automatic)
        return least

    def _library_sample(self) -> Matrix:
        """Image vectors of up to SAMPLE_SIZE images spread over the library (by date added), what a query's floor
        is measured on: read again when the library has grown or shrunk by a tenth (while small, at any change)."""
        count = self.pairing.store.count()
        model_id = self.pairing.embedder.model_id
        with self._sample_lock:
            if self._sample is not None:
                kept_count, kept_model, vectors = self._sample
                if kept_model == model_id and abs(count - kept_count) <= kept_count // 10:
                    return vectors
        pieces = _SAMPLE_PIECES if count > SAMPLE_SIZE else 1
        step, size = count // pieces, SAMPLE_SIZE // pieces
        ids = [record.id for n in range(pieces) for record in self.pairing.store.page(offset=n * step, limit=size)]
        stored = self.pairing.store.get_vectors(ids)
        rows = [stored[i][0] for i in dict.fromkeys(ids) if i in stored]
        sample = np.stack(rows) if rows else np.zeros((0, self.pairing.embedder.dim), dtype=np.float32)
        with self._sample_lock:
            self._sample = (count, model_id, sample)
        return sample

    def _reference_vectors(self) -> Matrix:
        """The reference texts' vectors that words evidence is measured against: made once per model and
        runtime, and kept in the model cache for the processes that follow (each CLI search is one)."""
        model_id = self.pairing.embedder.model_id
        with self._references_lock:
            if self._references is None or self._references[0] != model_id:
                vectors = cached_text_vectors(self.pairing.embedder, REFERENCE_TEXTS, self.settings.model_cache_dir)
                self._references = (model_id, vectors)
            return self._references[1]

    def _query_vectors(self, terms: Sequence[QueryTerm]) -> _QueryVectors:
        total = np.zeros(self.pairing.embedder.dim, dtype=np.float32)
        text_total = np.zeros(self.pairing.embedder.dim, dtype=np.float32)
        truncated = False
        text_weight = all_weight = 0.0
        for term in terms:
            if term.weight == 0:
                continue
            vector, cut = self._term_vector(term)
            truncated = truncated or cut
            # Tuning moves a text toward the library's images; its words are compared with stored words as is.
            image_side = self.tuning.adapt(term.text, vector) if isinstance(term, TextTerm) else vector
            total += np.float32(term.weight) * image_side
            all_weight += abs(term.weight)
            if isinstance(term, TextTerm):
                text_total += np.float32(term.weight) * vector
                text_weight += abs(term.weight)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise InvalidQuery("the query terms cancel each other out; change a weight")
        text_norm = float(np.linalg.norm(text_total))
        text = (text_total / text_norm).astype(np.float32) if text_norm > 1e-6 else None
        return _QueryVectors((total / norm).astype(np.float32), text, text_weight / all_weight, truncated)

    def _term_vector(self, term: QueryTerm) -> tuple[Vector, bool]:
        if isinstance(term, TextTerm):
            fitted = self.pairing.embedder.fit_text([term.text, term.context])
            user_cut = self.pairing.embedder.count_tokens(term.text) > fitted.limit
            return self.pairing.embedder.encode_texts([fitted.text])[0], user_cut
        if isinstance(term, ImageTerm):
            if len(term.data) > self.settings.max_upload_bytes:
                raise TooLarge(f"the query image is larger than {human_bytes(self.settings.max_upload_bytes)}")
            return self._image_vector(term.data, self.settings.max_pixels, term.region), False
        if not could_be_image_id(term.image_id):
            raise NotFound(term.image_id)
        if term.region is not None:
            record = self.catalog.get(term.image_id)
            original = self.blobs.read_original(term.image_id)
            if original is None:
                raise NotFound(term.image_id)
            limit = max(self.settings.max_pixels, record.width * record.height)
            return self._image_vector(original, limit, term.region), False
        stored = self.pairing.store.get_vectors([term.image_id]).get(term.image_id)
        if stored is None:
            raise NotFound(term.image_id)
        return stored[0], False

    def query_preview(self, data: bytes) -> bytes:
        """Check a query image the way a search decodes it and make its preview thumbnail, in a decode slot like
        every other decode: the search page keeps the image for the searches that follow."""
        if len(data) > self.settings.max_upload_bytes:
            raise TooLarge(f"the query image is larger than {human_bytes(self.settings.max_upload_bytes)}")
        with self.embedding.slots:
            decoded = media.decode(data, max_pixels=self.settings.max_pixels, **self.embedding.decode_sides())
            return media.make_thumbnail(decoded.image)

    def _image_vector(self, data: bytes, max_pixels: int, region: Region | None) -> Vector:
        """An image's embedding, made the way stored images are; with a region, of that rectangle only."""
        with self.embedding.slots:
            sides = self.embedding.decode_sides() if region is None else {}  # a region keeps more pixels to crop from
            decoded = media.decode(data, max_pixels=max_pixels, **sides)
            image = decoded.image if region is None else media.crop_region(decoded.image, region)
            pixels, _ = self.embedding.embeddable(image)
            vector: Vector = self.pairing.embedder.encode_prepared([pixels])[0]
        return vector

    def close(self) -> None:
        self._candidate_reader.shutdown(wait=True)


class _Scoring:
    """How one query scores any image from its stored vectors: the image cosine, plus what the image's words add
    when the query has words that count (imagematch.fusion). The words side is calibrated once per search, on the
    reference texts and the query's image candidates, so that images found later (by keywords) score alike."""

    def __init__(self, query: Vector, text: Vector | None, weight: float) -> None:
        self.query = query
        self.text = text
        self.weight = weight
        self._reference_scores: npt.NDArray[np.float64] | None = None
        self._baseline: npt.NDArray[np.float64] | None = None

    def calibrate(self, references: Matrix, image_candidates: Matrix | None) -> None:
        """The text's cosines with the reference texts, and the image cosines of the query's image candidates."""
        if self.text is not None:
            self._reference_scores = (references @ self.text).astype(np.float64)
        if image_candidates is not None:
            self._baseline = (image_candidates @ self.query).astype(np.float64)

    def score(self, vectors: Sequence[tuple[Vector, Vector | None]]) -> list[tuple[float, Match]]:
        """Each image's (score, why) from its image and words vectors."""
        if not vectors:
            return []
        image = np.array([float(v @ self.query) for v, _ in vectors])
        if self.text is None or self._reference_scores is None:
            return [(float(x), Match(float(x))) for x in image]
        text = self.text
        words = np.array([float(w @ text) if w is not None else np.nan for _, w in vectors])
        standing = words_standing(words, self._reference_scores)
        fused = fuse(image, standing, self._baseline if self._baseline is not None else image, self.weight)
        return [
            (float(f), Match(float(x), None if np.isnan(w) else float(w), float(f - x)))
            for x, w, f in zip(image, words, fused, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class _QueryVectors:
    query: Vector  # all terms
    text: Vector | None  # the text terms alone, for the words vectors
    text_share: float  # how much of the query's weight is text
    truncated: bool


def to_query(request: SimpleSearch) -> Query:
    """Turn the seed's two-input form into a query of terms."""
    weight = request.image_weight
    if not (isinstance(weight, int | float) and 0.0 <= weight <= 1.0):
        raise InvalidQuery("image_weight must be a number between 0 and 1")
    text = request.text.strip()
    image_terms: list[QueryTerm] = []
    if request.image is not None:
        image_terms.append(ImageTerm(request.image, 1.0, region=request.region))
    if request.image_id:
        image_terms.append(StoredImageTerm(request.image_id, 1.0, region=request.region))
    if not text and not image_terms:
        raise InvalidQuery("give text, an image or an image id to search with")
    if request.region is not None and not image_terms:
        raise InvalidQuery("a region needs an image to select it from")
    options = {"hybrid": request.hybrid, "min_score": request.min_score, "cutoff": request.cutoff}
    if not image_terms:
        return Query((TextTerm(text),), request.k, request.filter, **options)  # type: ignore[arg-type]
    share = 1.0 / len(image_terms)
    terms: list[QueryTerm] = [replace(t, weight=share * (weight if text else 1.0)) for t in image_terms]
    if text:
        terms.append(TextTerm(text, 1.0 - weight))
    kept = tuple(t for t in terms if t.weight != 0) or tuple(terms)
    return Query(kept, request.k, request.filter, **options)  # type: ignore[arg-type]


def _describe_terms(terms: Sequence[QueryTerm]) -> str:
    parts = []
    for term in terms:
        if isinstance(term, TextTerm):
            label = repr(term.text[:40])
        elif isinstance(term, ImageTerm):
            label = f"image:{human_bytes(len(term.data))}"
        else:
            label = f"id:{term.image_id}"
        parts.append(f"{term.weight:g}×{label}")
    return " + ".join(parts)
