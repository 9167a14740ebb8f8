"""Pinecone serverless, with the official SDK: the seed's store, now behind the same protocol.

One index (INDEX_NAME), created on first use with the model's dimension and the cosine metric. Namespaces:

- `images`: the image vector of each record, with the record's fields as metadata (what filters name).
- `words`: the words vector of records that have words, with the same metadata, so filtered words
  searches need no second lookup. An image without words simply has no entry here.
- `phash`: the 64-bit pHash as ±1 in the first 64 dimensions (zeros after): cosine similarity is then
  exactly 1 - 2·hamming/64, so near duplicates are a top-k query checked against the exact hash.
- Keyword search: Pinecone has no BM25 for a dense index, so each record's metadata carries `_terms`, the
  distinct words of its text (imagematch.keywords). The index selects the records sharing a word with the
  query (`$in` on that list, with the user's filter), at most KEYWORD_CANDIDATES of them, and they are ranked
  here by BM25 over their stored text. Records written before `_terms` existed are found after a reindex.
- Camera and lens filters match a part of the name, ignoring case. Pinecone has no substring test, so each
  record's metadata carries `_camera_parts` and `_lens_parts`: every piece of every lower-cased word of the
  name (words cut at PART_WORD_LENGTH characters, at most MAX_PARTS_BYTES of them), and each word of a filter
  must be one of them. The same as the other stores, but for words longer than that. Libraries written
  before them (schema 1) answer such filters with a note to run `imagematch reindex`.
- `state`: documents (batch jobs, queues) and the pointer naming the live generation and its model. A
  rebuild writes a new generation of the three namespaces and switches the pointer with one record.

Limits the service enforces are respected here: at most 1000 records and 2 MB per upsert, 40 KB of
metadata per record (the longest texts are cut, with a note, and their names listed in `_cut`), no null
metadata (absent values are left out), ASCII ids (others are percent-encoded). Sizes are measured as JSON
with every non-ASCII character escaped, the most the service could count.

Pinecone cannot sort: a listing page reads the ids and times of every matching record (1000 per request)
and sorts them here, cached for a short while. Reads are eventually consistent: after a write, the next
read of that namespace waits until the index reports it has caught up (LSN headers), at most
`freshness_timeout` seconds. Calls that fail with 429, 5xx or a network error are retried with
exponential backoff, on top of the SDK's own retries, and give up with PineconeUnavailable.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pinecone import (
    ConflictError,
    DenseVectorField,
    ForbiddenError,
    Index,
    IndexModel,
    NotFoundError,
    Pinecone,
    PineconeConnectionError,
    PineconeTimeoutError,
    RateLimitError,
    RetryConfig,
    ServiceError,
    UnauthorizedError,
)

from imagematch.fingerprint import PHASH_BITS, hamming, phash_from_hex
from imagematch.keywords import bm25, search_text, terms, tokens
from imagematch.records import (
    PARTIAL_FIELDS,
    Condition,
    Filter,
    Hit,
    ImageMatchError,
    ImageRecord,
    ImageText,
    Neighbour,
    NotSupported,
    StoredImage,
    StoreMismatch,
    Vector,
    name_words,
)
from imagematch.store.base import VectorField
from imagematch.store.batches import Batch, BatchMarkers
from imagematch.store.fields import FIELDS, Codec, Field, Kind, time_from_micros, time_to_micros
from imagematch.store.generations import POINTERS, Generations, PointerDocuments, retire
from imagematch.store.paging import KEY_SCHEMA, KeyedPages, KeyReader, KeyWindow
from imagematch.store.shared import (
    DocumentPart,
    cut_longest,
    image_text_json,
    json_len_escaped,
    new_version,
    newest_complete,
    phash_signs,
    split_value,
    superseded,
    to_micros,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
SCHEMA_VERSION = 2  # 2: _camera_parts and _lens_parts
FIRST_GENERATION = "first"  # the name of the namespaces without a generation suffix (a library never reindexed)
STORE_KIND = POINTERS  # the documents that hold the pointer to the live generation and the staging one
CUSTOM = "m:"  # custom metadata keys, so they never clash with the record's own fields
MAX_RECORDS = 1000  # per upsert request
MAX_REQUEST_BYTES = 2_000_000  # per upsert request (the service allows 2 MB)
MAX_METADATA_BYTES = 40_000  # per record (the service allows 40 KB)
MAX_TEXT_READ_BYTES = 12_000  # of it for the text read in the picture (ImageText as JSON, escaped)
_DOC_PART_BYTES = 30_000
_FETCH_IDS = 100  # ids travel in the URL of a fetch
_DELETE_IDS = 1000
_SCAN_PAGE = 1000
_TOP_K_MAX = 10_000
_KEYS_TTL_S = 30.0
MAX_TERMS = 300  # distinct words kept per record for keyword search
MAX_TERMS_BYTES = 6000  # and at most this much metadata: non-ASCII words take six bytes a character
KEYWORD_CANDIDATES = 5000  # records sharing a word with the query that are read and ranked here
PART_FIELDS = {name: f"_{name}_parts" for name in PARTIAL_FIELDS}
PART_WORD_LENGTH = 24
MAX_PARTS_BYTES = 3000  # per name
_ID_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) != "%") + " "
_TRANSIENT = (RateLimitError, ServiceError, PineconeConnectionError, PineconeTimeoutError)


class PineconeUnavailable(ImageMatchError):
    """Pinecone kept refusing or failing a call after every retry."""


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how patiently a failing call is repeated: delays double from `first_delay` to `max_delay`."""

    attempts: int = 6
    first_delay: float = 0.5
    max_delay: float = 8.0


def vector_id(image_id: str) -> str:
    """Pinecone ids are ASCII: anything else (and `%`) is percent-encoded; our own ids pass unchanged."""
    return quote(image_id, safe=_ID_SAFE)


def image_id_of(vid: str) -> str:
    return unquote(vid)


def _key_range(keys: list[tuple[float, str]], low: int | None, high: int | None) -> pa.Table:
    """The keys (sorted by time) added between low and high, found by binary search."""
    start = 0 if low is None else bisect.bisect_left(keys, (float(low),))
    end = len(keys) if high is None else bisect.bisect_left(keys, (float(high) + 1,))
    window = keys[start:end]
    return pa.Table.from_pydict(
        {"created": [int(t) for t, _ in window], "id": [image_id_of(vid) for _, vid in window]}, schema=KEY_SCHEMA
    )


# Filters: Pinecone's MongoDB-style language, dates as microseconds since the epoch.


def _operand(value: object) -> object:
    if isinstance(value, tuple):
        return [_operand(v) for v in value]
    return to_micros(value) if isinstance(value, datetime) else value


def name_parts(name: str) -> list[str]:
    """Every piece of every lower-cased word of a camera or lens name: what its filters' words are matched with."""
    parts: dict[str, None] = {}
    for whole in name_words(name):
        word = whole[:PART_WORD_LENGTH]
        for start in range(len(word)):
            for end in range(start + 1, len(word) + 1):
                parts[word[start:end]] = None
    return _first_within(list(parts), MAX_PARTS_BYTES)


def _first_within(items: list[str], max_bytes: int) -> list[str]:
    """The first items whose JSON list takes at most `max_bytes`, as Pinecone may count them (non-ASCII escaped)."""
    kept: list[str] = []
    size = 2
    for item in items:
        size += json_len_escaped(item) + 1
        if size > max_bytes:
            break
        kept.append(item)
    return kept


def _name_match(field: str, text: str) -> dict[str, Any]:
    """The camera or lens holds each word of `text` (an empty `text`: there is no name)."""
    words = list(dict.fromkeys(w[:PART_WORD_LENGTH] for w in name_words(text)))
    if not words:
        return {field: {"$eq": ""}}
    return _all([{PART_FIELDS[field]: {"$eq": word}} for word in words])


def _name_mismatch(field: str, text: str) -> dict[str, Any]:
    """Not `_name_match`: some word is missing, or the name has no words at all."""
    words = list(dict.fromkeys(w[:PART_WORD_LENGTH] for w in name_words(text)))
    if not words:
        return {field: {"$ne": ""}}
    parts = PART_FIELDS[field]
    return {"$or": [{parts: {"$exists": False}}, *({parts: {"$nin": [word]}} for word in words)]}


def _all(tests: list[dict[str, Any]]) -> dict[str, Any]:
    return tests[0] if len(tests) == 1 else {"$and": tests}


def _any(tests: list[dict[str, Any]]) -> dict[str, Any]:
    return tests[0] if len(tests) == 1 else {"$or": tests}


def condition_filter(condition: Condition) -> dict[str, Any]:
    values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    if condition.builtin and condition.key in PARTIAL_FIELDS:
        if condition.op in ("eq", "in"):
            return _any([_name_match(condition.key, str(v)) for v in values])
        return _all([_name_mismatch(condition.key, str(v)) for v in values])
    field = condition.key if condition.builtin else CUSTOM + condition.key
    test = {field: {f"${condition.op}": _operand(condition.value)}}
    if condition.op in ("ne", "nin"):  # a record without the value does not match, as in the other stores
        return {"$and": [{field: {"$exists": True}}, test]}
    return test


def pinecone_filter(flt: Filter | None) -> dict[str, Any] | None:
    if not flt:
        return None
    return flt.fold(condition_filter, _all, _any)


# Records as metadata


def _text_read_json(_field: Field, text: ImageText) -> str | None:
    return None if text.pending else image_text_json(text, MAX_TEXT_READ_BYTES, json_len_escaped)


# Metadata has no null (a value that is None is left out) and keeps every number as a float (read back as the
# field's kind); times are microseconds and the pHash its hex digits. Texts, and custom metadata, are cut to
# fit the 40 KB limit together below.
CODEC = Codec(
    write={Kind.TIME: time_to_micros, Kind.TEXT_READ: _text_read_json},
    read={Kind.TIME: time_from_micros},
)


def record_metadata(record: ImageRecord) -> dict[str, Any]:
    """The record as flat metadata within the 40 KB limit; absent values are left out (Pinecone has no null)."""
    row = CODEC.row(record)
    if row["gps_lat"] is None or row["gps_lon"] is None:
        row["gps_lat"] = row["gps_lon"] = None  # a position is both numbers or none
    meta: dict[str, Any] = {}
    strings: dict[str, str | list[str]] = {}
    for field in FIELDS:
        value = row[field.name]
        if field.kind == Kind.TEXT:
            strings[field.name] = value
        elif field.kind != Kind.METADATA and value is not None:
            meta[field.name] = value
    ints = []
    for key, value in record.metadata.items():
        if isinstance(value, str | list):
            strings[CUSTOM + key] = value if isinstance(value, str) else list(value)
        else:
            meta[CUSTOM + key] = value
            if isinstance(value, int) and not isinstance(value, bool):
                ints.append(key)
    if ints:
        meta["_ints"] = ints  # Pinecone keeps every number as a float; these were integers
    for name in PARTIAL_FIELDS:
        parts = name_parts(str(getattr(record, name)))
        if parts:
            meta[PART_FIELDS[name]] = parts
    words = _first_within(terms(search_text(record), MAX_TERMS), MAX_TERMS_BYTES)
    if words:
        meta["_terms"] = words
    cut: set[str] = set()
    while (excess := json_len_escaped({**meta, **strings}) - MAX_METADATA_BYTES) > 0:
        shortened = cut_longest(strings, excess, json_len_escaped)
        if not shortened:
            break
        cut.update(shortened)
        meta["_cut"] = sorted(cut)
    if cut:
        log.warning("record %s: %s cut to fit Pinecone's 40 KB metadata limit", record.id, ", ".join(sorted(cut)))
    return {**meta, **strings}


def metadata_record(meta: dict[str, Any]) -> ImageRecord:
    ints = set(meta.get("_ints", []))
    custom: dict[str, Any] = {}
    for key, value in meta.items():
        if key.startswith(CUSTOM):
            name = key[len(CUSTOM) :]
            custom[name] = int(value) if name in ints else value
    return CODEC.record({**meta, "metadata": custom})


def upsert_batches(vectors: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive groups of at most MAX_RECORDS records and MAX_REQUEST_BYTES of JSON."""
    batch: list[dict[str, Any]] = []
    size = 0
    for vector in vectors:
        cost = json_len_escaped(vector) + 2
        if batch and (len(batch) >= MAX_RECORDS or size + cost > MAX_REQUEST_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(vector)
        size += cost
    if batch:
        yield batch


def _floats(vector: Vector) -> list[float]:
    return np.asarray(vector, dtype=np.float32).tolist()  # type: ignore[no-any-return]


def _doc_prefix(kind: str, key: str | None = None) -> str:
    prefix = f"doc/{quote(kind, safe='')}/"
    return prefix if key is None else f"{prefix}{quote(key, safe='')}/"


def _doc_id(kind: str, part: DocumentPart) -> str:
    return f"{_doc_prefix(kind, part.key)}{part.version}/{part.part}/{part.parts}"


def _doc_part(vid: str) -> DocumentPart:
    """The part a document id names (its value is fetched separately)."""
    _, _, key, version, part, parts = vid.split("/")
    return DocumentPart(unquote(key), version, int(part), int(parts), "")


class PineconeStore(KeyedPages):
    """VectorStore on one Pinecone serverless index; `namespace_prefix` lets several libraries share it."""

    name = "pinecone"

    def __init__(
        self,
        api_key: str,
        *,
        index_name: str,
        cloud: str = "aws",
        region: str = "us-east-1",
        namespace_prefix: str = "",
        host: str | None = None,
        generation: str | None = None,
        retry: Retry | None = None,
        freshness_timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise ImageMatchError("IMAGEMATCH_STORE=pinecone needs PINECONE_API_KEY (from app.pinecone.io)")
        self.index_name = index_name
        self.cloud = cloud
        self.region = region
        self.prefix = namespace_prefix
        self._api_key = api_key
        self._host = host
        self.retry = retry or Retry()
        self.freshness_timeout = freshness_timeout
        self._sleep = sleep
        # Control-plane retries are ours alone; the SDK's data-plane client keeps its own few.
        self._pc = Pinecone(api_key=api_key, host=host, retry_config=RetryConfig(max_retries=0))
        self._index: Index | None = None
        self._dim = 0
        self._lock = threading.Lock()
        self._unseen: dict[str, int] = {}  # namespace -> log position of our last write there
        self._keys: dict[str, tuple[float, list[tuple[float, str]]]] = {}
        self._window = KeyWindow()
        model = self._describe()
        if model is not None:
            self._attach(model)
        self._pointers = PointerDocuments(self, "generation", "")
        library = self._pointers.get("library")
        self.generation = generation if generation is not None else (library["generation"] if library else "")
        # A staging generation (a rebuild) and a new library are written as this version makes them.
        self.schema = int(library.get("schema", 1)) if library and generation is None else SCHEMA_VERSION
        self._batches = BatchMarkers(self, lambda: self.generation_name, self._present, self._erase)

    # plumbing

    def _call(self, what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call, retrying 429, 5xx and network errors with exponential backoff."""
        delay = self.retry.first_delay
        attempt = 0
        while True:
            attempt += 1
            try:
                return function(*args, **kwargs)
            except (UnauthorizedError, ForbiddenError) as error:
                raise ImageMatchError(
                    f"Pinecone refused the API key ({error}); check PINECONE_API_KEY at app.pinecone.io"
                ) from error
            except _TRANSIENT as error:
                if attempt >= self.retry.attempts:
                    raise PineconeUnavailable(
                        f"Pinecone {what} failed {attempt} times in a row, the last time with: {error}. "
                        "The service is rate-limiting or unavailable; try again in a minute"
                    ) from error
                wait = min(max(delay, getattr(error, "retry_after", None) or 0.0), self.retry.max_delay)
                log.warning("Pinecone %s failed (%s); retry %d in %.1f s", what, error, attempt, wait)
                self._sleep(wait)
                delay = min(delay * 2, self.retry.max_delay)

    def _describe(self) -> IndexModel | None:
        try:
            return self._call("describe index", self._pc.indexes.describe, self.index_name)
        except NotFoundError:
            return None

    def _attach(self, model: IndexModel) -> None:
        dense = [f for f in model.schema.fields.values() if isinstance(f, DenseVectorField)]
        if model.host is None:
            raise ImageMatchError(f"the Pinecone index {self.index_name} is still being created; try again shortly")
        if len(dense) != 1:
            raise StoreMismatch(
                f"the Pinecone index {self.index_name} is not a plain dense-vector index; set INDEX_NAME to "
                "a new name and it is created for ImageMatch on the next start"
            )
        if dense[0].metric != "cosine":
            raise StoreMismatch(
                f"the Pinecone index {self.index_name} uses the {dense[0].metric} metric; ImageMatch needs cosine. "
                "Set INDEX_NAME to a new name and it is created with cosine on the next start"
            )
        self._index = self._pc.index(host=model.host)
        self._dim = dense[0].dimension

    def _require(self) -> Index:
        if self._index is None:
            raise RuntimeError("the store is not open: call open(model_id, dim) first")
        return self._index

    def _space(self, kind: str, generation: str | None = None) -> str:
        return f"{self.prefix}{kind}{self.generation if generation is None else generation}"

    @property
    def _state(self) -> str:
        return f"{self.prefix}state"

    def _probe(self) -> list[float]:
        """A unit vector for records that only carry metadata (Pinecone refuses all-zero vectors)."""
        return [1.0] + [0.0] * (self._dim - 1)

    def _upsert(self, namespace: str, vectors: Sequence[dict[str, Any]]) -> None:
        index = self._require()
        for batch in upsert_batches(vectors):
            response = self._call("upsert", index.upsert, vectors=batch, namespace=namespace)
            lsn = response.response_info.lsn_committed if response.response_info else None
            if lsn is not None:
                with self._lock:
                    self._unseen[namespace] = max(self._unseen.get(namespace, 0), lsn)
        self._keys.clear()

    def _fresh(self, namespace: str) -> None:
        """Wait until reads of `namespace` see our last write there (Pinecone is eventually consistent)."""
        with self._lock:
            target = self._unseen.get(namespace)
        if target is None or self._index is None:
            return
        deadline = time.monotonic() + self.freshness_timeout
        pause = 0.05
        while True:
            response = self._call("query", self._index.query, namespace=namespace, vector=self._probe(), top_k=1)
            info = response.response_info
            if info is None or info.lsn_reconciled is None or info.is_reconciled(target):
                break
            if time.monotonic() > deadline:
                log.warning(
                    "Pinecone namespace %s still behind our writes after %.0f s", namespace, self.freshness_timeout
                )
                break
            self._sleep(pause)
            pause = min(pause * 2, 1.0)
        # The marker goes only now, and only if no newer write moved it: until then every reader waits.
        with self._lock:
            if self._unseen.get(namespace) == target:
                del self._unseen[namespace]

    def _delete_ids(self, namespace: str, vids: Sequence[str], *, wait: bool) -> None:
        index = self._require()
        for start in range(0, len(vids), _DELETE_IDS):
            try:
                self._call("delete", index.delete, ids=list(vids[start : start + _DELETE_IDS]), namespace=namespace)
            except NotFoundError:
                return  # the namespace was never written to
        self._keys.clear()
        if wait:  # a delete reports no log position, so wait until a fetch no longer finds the ids
            deadline = time.monotonic() + self.freshness_timeout
            while self._fetch(namespace, vids) and time.monotonic() < deadline:
                self._sleep(0.1)

    def _delete_namespace(self, namespace: str) -> None:
        index = self._require()
        try:
            self._call("delete", index.delete, delete_all=True, namespace=namespace)
        except NotFoundError:
            return  # never written to
        self._keys.clear()
        deadline = time.monotonic() + self.freshness_timeout
        while self._namespace_count(namespace) and time.monotonic() < deadline:
            self._sleep(0.1)

    def _fetch(self, namespace: str, vids: Sequence[str]) -> dict[str, tuple[list[float], dict[str, Any]]]:
        if self._index is None or not vids:
            return {}
        self._fresh(namespace)
        found: dict[str, tuple[list[float], dict[str, Any]]] = {}
        unique = list(dict.fromkeys(vids))
        for start in range(0, len(unique), _FETCH_IDS):
            response = self._call(
                "fetch", self._index.fetch, ids=unique[start : start + _FETCH_IDS], namespace=namespace
            )
            for vid, vector in response.vectors.items():
                found[vid] = (list(vector.values), dict(vector.metadata or {}))
        return found

    def _list(self, namespace: str, prefix: str | None = None) -> Iterator[str]:
        if self._index is None:
            return
        self._fresh(namespace)
        token: str | None = None
        while True:
            page = self._call(
                "list", self._index.list_paginated, namespace=namespace, prefix=prefix, pagination_token=token
            )
            yield from (item.id for item in page.vectors if item.id is not None)
            token = page.pagination.next if page.pagination else None
            if not token:
                return

    def _namespace_count(self, namespace: str) -> int:
        if self._index is None:
            return 0
        stats = self._call("describe_index_stats", self._index.describe_index_stats)
        summary = stats.namespaces.get(namespace)
        return summary.vector_count if summary else 0

    # documents and the pointer

    def put_document(self, kind: str, key: str, value: str) -> None:
        version = new_version()
        pieces = split_value(value, _DOC_PART_BYTES, json_len_escaped)
        parts = [DocumentPart(key, version, i, len(pieces), piece) for i, piece in enumerate(pieces)]
        self._upsert(
            self._state,
            [
                {
                    "id": _doc_id(kind, p),
                    "values": self._probe(),
                    "metadata": {"kind": kind, "key": key, "version": version, "value": p.value},
                }
                for p in parts
            ],
        )
        stored = [_doc_part(vid) for vid in self._list(self._state, _doc_prefix(kind, key))]
        old = [_doc_id(kind, p) for p in superseded(stored, key, version)]
        if old:
            self._delete_ids(self._state, old, wait=False)

    def _documents(self, kind: str, key: str | None = None) -> dict[str, str]:
        listed = [_doc_part(vid) for vid in self._list(self._state, _doc_prefix(kind, key))]
        chosen = newest_complete(listed)
        wanted = [_doc_id(kind, p) for parts in chosen.values() for p in parts]
        fetched = self._fetch(self._state, wanted)
        documents = {}
        for doc_key, parts in chosen.items():
            ids = [_doc_id(kind, p) for p in parts]
            if all(i in fetched for i in ids):
                documents[doc_key] = "".join(str(fetched[i][1].get("value", "")) for i in ids)
        return documents

    def get_document(self, kind: str, key: str) -> str | None:
        return self._documents(kind, key).get(key)

    def list_documents(self, kind: str) -> dict[str, str]:
        return self._documents(kind)

    def exclusive(self) -> AbstractContextManager[object]:
        """Pinecone has no lock or conditional write: nothing is held (what that means is in docs/scaling.md)."""
        return nullcontext()

    def delete_document(self, kind: str, key: str) -> None:
        vids = list(self._list(self._state, _doc_prefix(kind, key)))
        if vids:
            self._delete_ids(self._state, vids, wait=True)

    def stored_model(self) -> tuple[str, int] | None:
        return self._pointers.stored_model()

    def open(self, model_id: str, dim: int) -> None:
        if dim < PHASH_BITS:
            raise ImageMatchError(
                f"the Pinecone store needs a model of at least {PHASH_BITS} dimensions ({model_id} has {dim}): "
                "the pHash is kept as a vector of the index's width"
            )
        model = self._describe()
        if model is None:
            log.info(
                "creating Pinecone index %s (%d dimensions, cosine, %s %s)",
                self.index_name,
                dim,
                self.cloud,
                self.region,
            )
            try:
                model = self._call(
                    "create index",
                    self._pc.indexes.create,
                    name=self.index_name,
                    schema={"fields": {"_values": {"type": "dense_vector", "dimension": dim, "metric": "cosine"}}},
                    deployment={"deployment_type": "managed", "cloud": self.cloud, "region": self.region},
                    timeout=300,
                )
            except ConflictError:  # another server, or a retried request, created it first
                model = self._describe()
                if model is None:
                    raise
        index_dim = next((f.dimension for f in model.schema.fields.values() if isinstance(f, DenseVectorField)), 0)
        if index_dim != dim:
            raise StoreMismatch(
                f"the Pinecone index {self.index_name} has {index_dim} dimensions, but the model {model_id} makes "
                f"{dim}-dimension vectors. Set INDEX_NAME to a new name (it is created with {dim} dimensions on "
                f"the next start), or delete the index in the Pinecone console, or choose a model with {index_dim} "
                "dimensions"
            )
        self._attach(model)
        stored = self.stored_model()
        if stored is not None and stored != (model_id, dim):
            raise StoreMismatch(
                f"the Pinecone index {self.index_name} holds a library built with model {stored[0]}, not "
                f"{model_id}. Run `imagematch reindex` to re-embed every image with the configured model, or set "
                f"IMAGEMATCH_MODEL={stored[0]}"
            )
        if stored is None:
            self._pointers.claim(model_id, dim, self.generation, SCHEMA_VERSION)

    @property
    def generation_name(self) -> str:
        return self.generation or FIRST_GENERATION

    def generations(self) -> Generations:
        pointers = self._pointers.generations()
        return replace(pointers, live=pointers.live or FIRST_GENERATION)

    def at(self, name: str) -> PineconeStore:
        """This library's generation `name` (the live one, the staging one or one being retired)."""
        return PineconeStore(
            self._api_key,
            index_name=self.index_name,
            cloud=self.cloud,
            region=self.region,
            namespace_prefix=self.prefix,
            host=self._host,
            generation="" if name == FIRST_GENERATION else name,
            retry=self.retry,
            freshness_timeout=self.freshness_timeout,
            sleep=self._sleep,
        )

    def drop_generation(self, name: str) -> None:
        for kind in ("images", "words", "phash"):
            self._delete_namespace(self._space(kind, "" if name == FIRST_GENERATION else name))

    def start_rebuild(self, model_id: str, dim: int) -> PineconeStore:
        """A new generation of namespaces to re-embed into; an interrupted rebuild for the same model resumes."""
        self._require()
        if dim != self._dim:
            raise StoreMismatch(
                f"the Pinecone index {self.index_name} has {self._dim} dimensions and cannot hold the {dim}-dimension "
                f"vectors of {model_id}: set INDEX_NAME to a new name and index your images again there"
            )
        staging = self._pointers.resumable(model_id, dim, lambda _name: True)
        if staging is None:
            staging = {
                "model_id": model_id,
                "dim": dim,
                "generation": f"-r{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}",
            }
            self._pointers.put("staging", staging)
        return self.at(staging["generation"])

    def finish_rebuild(self) -> None:
        """Point the library at the staging generation: one record write (the staging pointer left behind then
        names the live generation, which the guard reads as no staging). The old namespaces are retired."""
        old = self.generation_name
        staging = self._pointers.switch(SCHEMA_VERSION)
        self.generation = staging["generation"]
        self.schema = SCHEMA_VERSION
        self._keys.clear()
        if old != self.generation_name:
            retire(self, old)

    # writes

    def _image_vectors(
        self, record: ImageRecord, vector: Vector, words: Vector | None
    ) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
        vid = vector_id(record.id)
        meta = record_metadata(record)
        image = {"id": vid, "values": _floats(vector), "metadata": meta}
        worded = {"id": vid, "values": _floats(words), "metadata": meta} if words is not None else None
        phash = {
            "id": vid,
            "values": phash_signs(phash_from_hex(record.phash), self._dim),
            "metadata": {"id": record.id, "phash": record.phash},
        }
        return image, worded, phash

    def upsert(self, items: Sequence[StoredImage]) -> None:
        """Words and pHash first, images last. Three namespaces take several requests: every batch is marked
        (store/batches.py)."""
        if not items:
            return
        self._require()
        built = [self._image_vectors(i.record, i.vector, i.words_vector) for i in items]
        with self._batches.writing([i.record.id for i in items], one_request=False):
            self._upsert(self._space("words"), [w for _, w, _ in built if w is not None])
            wordless = [image["id"] for image, w, _ in built if w is None]
            if wordless:
                self._delete_ids(self._space("words"), wordless, wait=False)
            self._upsert(self._space("phash"), [p for _, _, p in built])
            self._upsert(self._space("images"), [image for image, _, _ in built])

    def _present(self, ids: Sequence[str]) -> set[str]:
        """The records whose image vector is stored, markers ignored."""
        return {image_id_of(vid) for vid in self._fetch(self._space("images"), [vector_id(i) for i in ids])}

    def _erase(self, ids: Sequence[str]) -> None:
        """Every vector of these records, in each namespace, whatever a broken batch left of them."""
        vids = [vector_id(i) for i in ids]
        for kind in ("images", "words", "phash"):
            self._delete_ids(self._space(kind), vids, wait=kind == "images")

    def abandon_batch(self, batch: Batch) -> int:
        return self._batches.abandon(batch)

    def update(self, record: ImageRecord, words_vector: Vector | None) -> None:
        stored = self._fetch(self._space("images"), [vector_id(record.id)]).get(vector_id(record.id))
        if stored is None:
            return
        image, worded, _ = self._image_vectors(record, np.asarray(stored[0], dtype=np.float32), words_vector)
        if worded is not None:
            self._upsert(self._space("words"), [worded])
        else:
            self._delete_ids(self._space("words"), [image["id"]], wait=True)
        self._upsert(self._space("images"), [image])

    def delete(self, ids: Sequence[str]) -> int:
        existing = list(self._fetch(self._space("images"), [vector_id(i) for i in ids]))
        if not existing:
            return 0
        self._delete_ids(self._space("images"), existing, wait=True)
        self._delete_ids(self._space("words"), existing, wait=False)
        self._delete_ids(self._space("phash"), existing, wait=False)
        return len(existing)

    def reset(self) -> None:
        if self._index is None:
            return
        for kind in ("images", "words", "phash"):
            self._delete_namespace(self._space(kind))
        self._batches.clear()

    def maintain(self) -> None:
        """Nothing to do: Pinecone serverless compacts and indexes on its own."""

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
        self._pc.close()

    # reads

    def _filter(self, flt: Filter | None) -> dict[str, Any] | None:
        """The filter in Pinecone's language, where this library's records carry what it reads; records of
        unfinished batches left out."""
        if flt and self.schema < 2 and any(c.builtin and c.key in PARTIAL_FIELDS for c in flt.conditions()):
            raise NotSupported(
                f"the Pinecone library in {self.index_name} was written before camera and lens filters ignored "
                "case; run `imagematch reindex` once to rewrite it with them"
            )
        spec = pinecone_filter(flt)
        hidden = self._batches.hidden()
        if not hidden:
            return spec
        unfinished = {"id": {"$nin": sorted(hidden)}}
        return {"$and": [spec, unfinished]} if spec else unfinished

    def get(self, image_id: str) -> ImageRecord | None:
        return self.get_many([image_id]).get(image_id)

    def get_many(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        fetched = self._fetch(self._space("images"), [vector_id(i) for i in self._batches.visible(ids)])
        return {image_id_of(vid): metadata_record(meta) for vid, (_, meta) in fetched.items()}

    def get_vectors(self, ids: Sequence[str]) -> dict[str, tuple[Vector, Vector | None]]:
        vids = [vector_id(i) for i in self._batches.visible(ids)]
        images = self._fetch(self._space("images"), vids)
        words = self._fetch(self._space("words"), list(images))
        return {
            image_id_of(vid): (
                np.asarray(values, dtype=np.float32),
                np.asarray(words[vid][0], dtype=np.float32) if vid in words else None,
            )
            for vid, (values, _) in images.items()
        }

    def _sorted_keys(self, flt: Filter | None) -> list[tuple[float, str]]:
        """(created_at, id) of every matching record, oldest first: Pinecone cannot sort, so we read them all."""
        spec = self._filter(flt) or {"created_at": {"$exists": True}}
        cache_key = json.dumps(spec, sort_keys=True, ensure_ascii=False)
        cached = self._keys.get(cache_key)
        if cached is not None and time.monotonic() - cached[0] < _KEYS_TTL_S:
            return cached[1]
        index = self._require()
        namespace = self._space("images")
        self._fresh(namespace)
        keys: list[tuple[float, str]] = []
        token: str | None = None
        while True:
            response = self._call(
                "fetch_by_metadata",
                index.fetch_by_metadata,
                filter=spec,
                namespace=namespace,
                limit=_SCAN_PAGE,
                pagination_token=token,
            )
            keys.extend((float((v.metadata or {})["created_at"]), vid) for vid, v in response.vectors.items())
            token = response.pagination.next if response.pagination else None
            if not token:
                break
        keys.sort()
        self._keys[cache_key] = (time.monotonic(), keys)
        return keys

    def count(self, flt: Filter | None = None) -> int:
        if self._index is None:
            return 0
        if not flt:
            namespace = self._space("images")
            self._fresh(namespace)
            hidden = self._batches.hidden()
            unfinished = len(self._fetch(namespace, [vector_id(i) for i in hidden])) if hidden else 0
            return self._namespace_count(namespace) - unfinished
        return len(self._sorted_keys(flt))

    def _key_reader(self, flt: Filter | None) -> KeyReader | None:
        """Pinecone cannot sort: the (created_at, id) of every matching record are read once (fetch_by_metadata,
        filter pushed down) and kept sorted for _KEYS_TTL_S or until this process writes; a page after a cursor
        is then a binary search in them and a fetch of its records."""
        if self._index is None:
            return None
        keys = self._sorted_keys(flt)
        return lambda low, high: _key_range(keys, low, high)

    def ids(self) -> Iterator[str]:
        hidden = self._batches.hidden()
        return (image_id for vid in self._list(self._space("images")) if (image_id := image_id_of(vid)) not in hidden)

    def search(self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image") -> list[Hit]:
        matches = self._query(vector, k, flt, field, with_records=True)
        return [Hit(metadata_record(m.metadata or {}), float(m.score)) for m in matches]

    def nearest(
        self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image"
    ) -> list[Neighbour]:
        matches = self._query(vector, k, flt, field, with_records=False)
        return [Neighbour(image_id_of(m.id), float(m.score)) for m in matches]

    def _query(self, vector: Vector, k: int, flt: Filter | None, field: VectorField, *, with_records: bool) -> Any:
        if self._index is None or k <= 0:
            return []
        namespace = self._space("images" if field == "image" else "words")
        self._fresh(namespace)
        response = self._call(
            "query",
            self._index.query,
            namespace=namespace,
            vector=_floats(vector),
            top_k=min(k, _TOP_K_MAX),
            filter=self._filter(flt),
            include_metadata=with_records,
        )
        return response.matches

    def keyword_search(self, text: str, *, k: int, flt: Filter | None = None) -> list[Hit]:
        """Records sharing a word with `text` (selected by the index), ranked here by BM25 of their words."""
        wanted = list(dict.fromkeys(tokens(text)))
        if self._index is None or k <= 0 or not wanted:
            return []
        namespace = self._space("images")
        self._fresh(namespace)
        selection: dict[str, Any] = {"_terms": {"$in": wanted}}
        user = self._filter(flt)
        spec = {"$and": [selection, user]} if user else selection
        records: list[ImageRecord] = []
        token: str | None = None
        while len(records) < KEYWORD_CANDIDATES:
            response = self._call(
                "fetch_by_metadata",
                self._index.fetch_by_metadata,
                filter=spec,
                namespace=namespace,
                limit=min(_SCAN_PAGE, KEYWORD_CANDIDATES - len(records)),
                pagination_token=token,
            )
            records.extend(metadata_record(v.metadata or {}) for v in response.vectors.values())
            token = response.pagination.next if response.pagination else None
            if not token:
                break
        if not records:
            return []
        documents = [tokens(search_text(record)) for record in records]
        total = max(self._namespace_count(namespace), len(records))
        average = sum(map(len, documents)) / len(documents)
        scores = bm25(wanted, documents, total, average)
        ranked = sorted(zip(scores, records, strict=True), key=lambda pair: (-pair[0], pair[1].id))
        return [Hit(record, score) for score, record in ranked[:k] if score > 0]

    def find_file_hash(self, file_hash: str) -> ImageRecord | None:
        if self._index is None:
            return None
        namespace = self._space("images")
        self._fresh(namespace)
        same: dict[str, Any] = {"file_hash": {"$eq": file_hash}}
        unfinished = self._filter(None)
        response = self._call(
            "fetch_by_metadata",
            self._index.fetch_by_metadata,
            filter={"$and": [same, unfinished]} if unfinished else same,
            namespace=namespace,
            limit=1,
        )
        return next((metadata_record(v.metadata or {}) for v in response.vectors.values()), None)

    def phashes(self) -> tuple[list[str], npt.NDArray[np.uint64]]:
        fetched = self._fetch(self._space("phash"), [vector_id(image_id) for image_id in self.ids()])
        ids = [image_id_of(vid) for vid in fetched]
        hashes = [phash_from_hex(str(meta["phash"])) for _, meta in fetched.values()]
        return ids, np.array(hashes, dtype=np.uint64)

    def near_phash(self, phash: int, max_distance: int) -> list[tuple[ImageRecord, int]]:
        """The closest pHash vectors by cosine, checked against the exact Hamming distance."""
        if self._index is None:
            return []
        namespace = self._space("phash")
        self._fresh(namespace)
        top_k = 100
        while True:
            response = self._call(
                "query",
                self._index.query,
                namespace=namespace,
                vector=phash_signs(phash, self._dim),
                top_k=top_k,
                include_metadata=True,
            )
            close = {
                m.id: distance
                for m in response.matches
                if (distance := hamming(phash, phash_from_hex(str((m.metadata or {})["phash"])))) <= max_distance
            }
            if len(close) < top_k or top_k >= _TOP_K_MAX:
                break
            top_k = min(top_k * 4, _TOP_K_MAX)
        records = self.get_many([image_id_of(vid) for vid in close])
        found = [(records[image_id_of(vid)], d) for vid, d in close.items() if image_id_of(vid) in records]
        found.sort(key=lambda pair: pair[1])
        return found
