"""Milvus: Milvus Lite in one local file (tests, small libraries) or a Milvus server or cluster.

Layout, in collections named after IMAGEMATCH_MILVUS_COLLECTION (default `imagematch`):

- `<name>_images`: one row per image. Scalar fields for everything a filter may name, custom metadata in a
  JSON field (`metadata["album"] == "x"`), and three vectors: `vector` (image), `words_vector` and
  `phash_vector`. Milvus needs a value in every vector field, so an image without words gets a placeholder
  there and `has_words` false, which the words search filters on.
- The pHash is also a ±1 vector of 64 floats (Milvus Lite has no binary vectors): cosine similarity is
  exactly 1 - 2·hamming/64, so near duplicates are a top-k search, checked against the exact hash.
- Camera and lens filters match a part of the name, ignoring case: `camera_lower` and `lens_lower` hold the
  lower-cased names (Milvus has no lower()) and each word of a filter is a `like "%word%"` on them.
  Collections made before them (schema 2) answer such filters with a note to run `imagematch reindex`.
- The text in pictures (`ocr`, schema 4): a collection made before it has no field to keep it, so writing
  a correction or a text read (`imagematch ocr`) there is refused with a note to run `imagematch reindex`;
  an upload is stored without it (its text still counts in its words and keywords), noted once in the log.
- Keyword search: `search_text` (imagematch.keywords.search_text of the record) feeds Milvus's built-in BM25
  function into the sparse vector `keywords` (Milvus 2.5+ and Milvus Lite 3 have it; the analyzer folds case
  and accents but does not stem). Collections made before it (schema 1) have no such field: keyword search
  there says to run `imagematch reindex`, which rebuilds the collection with it.
- `<name>_state`: documents (batch jobs, queues) and the pointer that names the live images collection and
  its model. A rebuild fills a new images collection and then switches the pointer in one row write.

Vector indexes are FLAT (exact) on Milvus Lite and HNSW on a server; `file_hash` gets an inverted index
there for the duplicate check on every upload. Collections use Strong consistency: a write is visible to
the next read from any process.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pymilvus import DataType, Function, FunctionType, MilvusClient, MilvusException

from imagematch.fingerprint import PHASH_BITS, hamming, phash_from_hex
from imagematch.keywords import search_text, tokens
from imagematch.records import (
    PARTIAL_FIELDS,
    Condition,
    Filter,
    Hit,
    ImageMatchError,
    ImageRecord,
    Metadata,
    Neighbour,
    NotSupported,
    StoredImage,
    StoreMismatch,
    Vector,
    name_words,
)
from imagematch.store.base import VectorField
from imagematch.store.batches import Batch, BatchMarkers
from imagematch.store.fields import (
    FIELD,
    FIELDS,
    Codec,
    Field,
    Kind,
    phash_from_signed,
    phash_to_signed,
    time_from_micros,
    time_to_micros,
)
from imagematch.store.generations import Generations, PointerDocuments, retire
from imagematch.store.locks import file_lock
from imagematch.store.paging import KEY_SCHEMA, KeyedPages, KeyReader, KeyWindow
from imagematch.store.shared import (
    DocumentPart,
    assemble,
    cut_longest,
    fit_text,
    image_text_json,
    json_len,
    new_version,
    phash_signs,
    split_value,
    to_micros,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4  # 2: search_text and its BM25 sparse vector; 3: camera_lower and lens_lower; 4: ocr
_SEARCH_TEXT_BYTES = 65535
_KEYWORD_ANALYZER = {"tokenizer": "standard", "filter": ["lowercase", "asciifolding"]}
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_LOWER_FIELDS = {name: f"{name}_lower" for name in PARTIAL_FIELDS}
_METADATA_BYTES = 60_000  # Milvus caps a JSON value at 64 KiB
_DOC_PART_BYTES = 60_000
_BATCH_ROWS = 500  # rows per insert request; a few MB with large descriptions
_IN_CHUNK = 500  # ids per `id in [...]` expression
_SCAN_BATCH = 4000
_PHASH_TOP_K = 64
_MAX_LIMIT = 16384  # Milvus's cap on topk and on offset + limit
_VECTOR_FIELDS = {"image": "vector", "words": "words_vector"}
_DOC_FIELDS = ["doc_key", "version", "part", "parts", "value"]


# Filter expressions. Lite implements the grammar of the server, except `in` on JSON paths, which becomes
# a chain of `==`.


def expr_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + escaped.replace("\t", "\\t") + '"'


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return str(to_micros(value))
    if isinstance(value, int | float):
        return repr(value)
    return expr_string(str(value))


_OPS = {"eq": "==", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _metadata_expr(condition: Condition, values: tuple[object, ...]) -> str:
    column = f"metadata[{expr_string(condition.key)}]"
    if condition.op in ("gt", "gte", "lt", "lte"):
        return f"{column} {_OPS[condition.op]} {_literal(values[0])}"

    def equal(value: object) -> str:  # text may also be a member of a list (tags)
        test = f"{column} == {_literal(value)}"
        return f"({test} or json_contains({column}, {_literal(value)}))" if isinstance(value, str) else test

    # Lite takes no `in` on JSON paths: a chain of `==`.
    any_equal = " or ".join(equal(v) for v in values)
    if condition.op in ("eq", "in"):
        return f"({any_equal})"
    # ne, nin: a record without the value does not match, as in SQL and in the other stores.
    return f"(exists {column} and not ({any_equal}))"


def _like_word(column: str, word: str) -> str:
    """`word` is letters, digits and underscores: only `_` means something to `like`."""
    pattern = "%" + word.replace("_", "\\_") + "%"
    return f"{column} like {expr_string(pattern)}"


def _partial_expr(condition: Condition, values: tuple[object, ...]) -> str:
    """Camera and lens: each word of a value is part of the lower-cased name; an empty value is no name."""
    column = _LOWER_FIELDS[condition.key]
    matches = []
    for value in values:
        words = name_words(str(value))
        matches.append(" and ".join(_like_word(column, w) for w in words) if words else f'{column} == ""')
    any_match = " or ".join(f"({m})" for m in matches)
    return f"({any_match})" if condition.op in ("eq", "in") else f"not ({any_match})"


def condition_expr(condition: Condition) -> str:
    values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    if not condition.builtin:
        return _metadata_expr(condition, values)
    if condition.key in PARTIAL_FIELDS:
        return _partial_expr(condition, values)
    column = condition.key
    if condition.op in ("in", "nin"):
        test = f"{column} {'in' if condition.op == 'in' else 'not in'} [{', '.join(_literal(v) for v in values)}]"
    else:
        test = f"{column} {_OPS[condition.op]} {_literal(values[0])}"
    # A record without the value does not match `!=`, as in SQL and in the other stores.
    if condition.op in ("ne", "nin") and column == "taken_at":
        return f"({column} is not null and {test})"
    return test


def filter_expr(flt: Filter | None, *extra: str) -> str:
    parts = [flt.fold(condition_expr, _joined(" and "), _joined(" or "))] if flt else []
    return " and ".join(f"({p})" for p in [*parts, *extra])


def _joined(word: str) -> Callable[[list[str]], str]:
    return lambda parts: word.join(f"({p})" for p in parts)


def _ids_expr(ids: Sequence[str]) -> str:
    return f"id in [{', '.join(expr_string(i) for i in ids)}]"


# Rows


def _fit_metadata(_field: Field, metadata: Metadata) -> Metadata:
    """Custom metadata within Milvus's JSON size limit: the longest texts (tags too) are cut, with a note."""
    fitted = dict(metadata)
    strings: dict[str, str | list[str]] = {
        k: v if isinstance(v, str) else list(v) for k, v in fitted.items() if isinstance(v, str | list)
    }
    while (excess := json_len({**fitted, **strings}) - _METADATA_BYTES) > 0:
        cut = cut_longest(strings, excess)
        if not cut:
            break
        log.warning("metadata %s cut to fit Milvus's JSON size limit", ", ".join(repr(k) for k in cut))
    return {**fitted, **strings}


CODEC = Codec(
    write={
        Kind.PHASH: phash_to_signed,
        Kind.TIME: time_to_micros,
        Kind.TEXT: lambda field, value: fit_text(str(value), field.max_bytes),
        Kind.METADATA: _fit_metadata,
        Kind.TEXT_READ: lambda field, value: image_text_json(value, field.max_bytes),
    },
    read={Kind.PHASH: phash_from_signed, Kind.TIME: time_from_micros, Kind.METADATA: lambda _field, value: dict(value)},
)
_DATA_TYPES = {
    Kind.ID: DataType.VARCHAR,
    Kind.DIGEST: DataType.VARCHAR,
    Kind.PHASH: DataType.INT64,
    Kind.TEXT: DataType.VARCHAR,
    Kind.INT: DataType.INT64,
    Kind.FLOAT: DataType.DOUBLE,
    Kind.BOOL: DataType.BOOL,
    Kind.TIME: DataType.INT64,
    Kind.METADATA: DataType.JSON,
    Kind.TEXT_READ: DataType.VARCHAR,
}


def _field_params(field: Field) -> dict[str, Any]:
    """How store/fields.py's field is declared in a collection."""
    params: dict[str, Any] = {"is_primary": True} if field.kind == Kind.ID else {}
    if _DATA_TYPES[field.kind] == DataType.VARCHAR:
        params["max_length"] = field.max_bytes
    if field.nullable:
        params["nullable"] = True
    return params


def _placeholder(dim: int) -> list[float]:
    """A unit vector for `words_vector` when an image has no words (never searched: has_words is false)."""
    return [1.0] + [0.0] * (dim - 1)


def lower_names(record: ImageRecord) -> dict[str, str]:
    """The lower-cased camera and lens that their filters read (schema 3)."""
    return {
        lower: fit_text(str(getattr(record, name)).lower(), FIELD[name].max_bytes)
        for name, lower in _LOWER_FIELDS.items()
    }


def _hit_record(hit: dict[str, Any]) -> ImageRecord:
    return CODEC.record(hit["entity"])


def _floats(vector: Vector) -> list[float]:
    return np.asarray(vector, dtype=np.float32).tolist()  # type: ignore[no-any-return]


class MilvusStore(KeyedPages):
    """VectorStore on Milvus (pymilvus MilvusClient); `uri` ending in `.db` is Milvus Lite in that file."""

    name = "milvus"

    def __init__(self, uri: str, *, token: str = "", collection: str = "imagematch", images: str | None = None) -> None:
        if not _COLLECTION_NAME.match(collection):
            raise ImageMatchError(
                f"IMAGEMATCH_MILVUS_COLLECTION={collection!r}: use letters, digits and underscores, "
                "starting with a letter or underscore"
            )
        self.uri = uri
        self.token = token
        self.collection = collection
        self.lite = uri.endswith(".db")
        if self.lite:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self._window = KeyWindow()
        self._write_lock = threading.Lock()  # Milvus Lite takes one writer per collection at a time
        self._noted_text_not_kept = False
        self._state = f"{collection}_state"
        try:
            self._client = MilvusClient(uri=uri, token=token)
            if not self._client.has_collection(self._state):
                self._create_state()
            else:  # collections another process made are released until someone loads them
                self._client.load_collection(self._state)
        except MilvusException as error:
            if self.lite:  # milvus-lite locks its file: a second process is refused, whatever it wants
                raise ImageMatchError(
                    f"cannot open the Milvus Lite file {uri} ({error.message}): Milvus Lite takes one process per "
                    "file, so stop the other process that has it open. Several servers on one library need the "
                    "default store (LanceDB) or a Milvus server (IMAGEMATCH_MILVUS_URI)"
                ) from error
            raise ImageMatchError(
                f"cannot use Milvus at {uri}: {error.message}. Check IMAGEMATCH_MILVUS_URI and IMAGEMATCH_MILVUS_TOKEN"
            ) from error
        self._pointers = PointerDocuments(self, "collection", f"{collection}_images")
        library = self._pointers.get("library")
        self.images = images or (library["collection"] if library else f"{collection}_images")
        if self._client.has_collection(self.images):
            self._client.load_collection(self.images)
        self._dim = self._collection_dim(self.images)
        self._learn_fields()
        self._batches = BatchMarkers(self, lambda: self.images, self._present, self._erase)

    def _learn_fields(self) -> None:
        """What the collection in use holds: one made by an older version lacks the newer fields (reindex
        rebuilds it with them)."""
        names = self._field_names(self.images)
        self._keywords = names is None or "keywords" in names
        self._lower_names = names is None or all(field in names for field in _LOWER_FIELDS.values())
        self._keeps_text_read = names is None or "ocr" in names
        self._fields = [field for field in FIELDS if names is None or field.name in names]
        self._record_fields = [field.name for field in self._fields]

    # collections

    def _create_state(self) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("kind", DataType.VARCHAR, max_length=1024)
        schema.add_field("doc_key", DataType.VARCHAR, max_length=4096)
        schema.add_field("version", DataType.VARCHAR, max_length=64)
        schema.add_field("part", DataType.INT64)
        schema.add_field("parts", DataType.INT64)
        schema.add_field("value", DataType.VARCHAR, max_length=65535)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
        index = self._client.prepare_index_params()
        index.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        self._create_collection(self._state, schema, index)

    def _create_collection(self, name: str, schema: Any, index: Any) -> None:
        """Create and load a collection; when another process created it first (two servers starting on a new
        library), the loser's error is dropped and the winner's collection is used."""
        try:
            self._client.create_collection(name, schema=schema, consistency_level="Strong")
            # An empty collection has nothing to build; waiting would only poll (0.5 s per index).
            self._client.create_index(name, index, sync=False)
        except MilvusException:
            if not self._client.has_collection(name):
                raise
            log.info("the collection %s was created by another process", name)
        self._client.load_collection(name)

    def _vector_index(self) -> dict[str, Any]:
        if self.lite:
            return {"index_type": "FLAT", "metric_type": "COSINE"}
        return {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 16, "efConstruction": 200}}

    def _create_images(self, name: str, dim: int) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        for field in FIELDS:
            schema.add_field(field.name, _DATA_TYPES[field.kind], **_field_params(field))
        for original, lower in _LOWER_FIELDS.items():
            schema.add_field(lower, DataType.VARCHAR, max_length=FIELD[original].max_bytes)
        schema.add_field("has_words", DataType.BOOL)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("words_vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("phash_vector", DataType.FLOAT_VECTOR, dim=PHASH_BITS)
        schema.add_field(
            "search_text",
            DataType.VARCHAR,
            max_length=_SEARCH_TEXT_BYTES,
            enable_analyzer=True,
            analyzer_params=_KEYWORD_ANALYZER,
        )
        schema.add_field("keywords", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="keywords_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["search_text"],
                output_field_names=["keywords"],
            )
        )
        index = self._client.prepare_index_params()
        for vector_field in _VECTOR_FIELDS.values():
            index.add_index(field_name=vector_field, **self._vector_index())
        # Exact: duplicate lookups must find every record in range, which an HNSW graph does not promise.
        index.add_index(field_name="phash_vector", index_type="FLAT", metric_type="COSINE")
        index.add_index(field_name="keywords", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        if not self.lite:
            index.add_index(field_name="file_hash", index_type="INVERTED")
            index.add_index(field_name="created_at", index_type="INVERTED")  # a page's window of time, as a range
        self._create_collection(name, schema, index)

    def _field_names(self, name: str) -> set[str] | None:
        """The fields of the collection; None when there is none yet (it will be made with every field)."""
        if not self._client.has_collection(name):
            return None
        return {field["name"] for field in self._client.describe_collection(name)["fields"]}

    def _collection_dim(self, name: str) -> int:
        if not self._client.has_collection(name):
            return 0
        for field in self._client.describe_collection(name)["fields"]:
            if field["name"] == "vector":
                return int(field["params"]["dim"])
        return 0

    # documents and the pointer

    def _doc_rows(self, expr: str) -> list[DocumentPart]:
        rows = self._client.query(self._state, filter=expr, output_fields=_DOC_FIELDS)
        return [DocumentPart(r["doc_key"], r["version"], int(r["part"]), int(r["parts"]), r["value"]) for r in rows]

    def _doc_expr(self, kind: str, key: str | None = None) -> str:
        expr = f"kind == {expr_string(kind)}"
        return expr if key is None else f"{expr} and doc_key == {expr_string(key)}"

    def put_document(self, kind: str, key: str, value: str) -> None:
        version = new_version()
        pieces = split_value(value, _DOC_PART_BYTES)
        rows = [
            {
                "row": f"{version}/{i}",
                "kind": kind,
                "doc_key": key,
                "version": version,
                "part": i,
                "parts": len(pieces),
                "value": piece,
                "unused": [1.0, 0.0],
            }
            for i, piece in enumerate(pieces)
        ]
        with self._write_lock:
            self._client.upsert(self._state, rows)
            self._client.delete(self._state, filter=f"{self._doc_expr(kind, key)} and version < {expr_string(version)}")

    def get_document(self, kind: str, key: str) -> str | None:
        return assemble(self._doc_rows(self._doc_expr(kind, key))).get(key)

    def list_documents(self, kind: str) -> dict[str, str]:
        return assemble(self._doc_rows(self._doc_expr(kind)))

    def exclusive(self) -> AbstractContextManager[object]:
        """Milvus Lite: a file lock beside its file. A Milvus server takes no lock: see docs/scaling.md."""
        return file_lock(Path(self.uri + ".lock")) if self.lite else nullcontext()

    def delete_document(self, kind: str, key: str) -> None:
        with self._write_lock:
            self._client.delete(self._state, filter=self._doc_expr(kind, key))

    def stored_model(self) -> tuple[str, int] | None:
        return self._pointers.stored_model()

    def open(self, model_id: str, dim: int) -> None:
        stored = self.stored_model()
        if stored is not None and stored != (model_id, dim):
            raise StoreMismatch(
                f"the Milvus collection {self.images} at {self.uri} was built with model {stored[0]} "
                f"({stored[1]} dimensions), not {model_id} ({dim} dimensions). Run `imagematch reindex` to "
                f"re-embed every image with the configured model, or set IMAGEMATCH_MODEL={stored[0]}"
            )
        with self._write_lock:
            if not self._client.has_collection(self.images):
                self._create_images(self.images, dim)
            self._dim = dim
        if stored is None:
            self._pointers.claim(model_id, dim, self.images, SCHEMA_VERSION)

    @property
    def generation_name(self) -> str:
        return self.images

    def generations(self) -> Generations:
        return self._pointers.generations()

    def at(self, name: str) -> MilvusStore:
        """This library's generation `name` (the live one, the staging one or one being retired)."""
        return MilvusStore(self.uri, token=self.token, collection=self.collection, images=name)

    def drop_generation(self, name: str) -> None:
        if self._client.has_collection(name):
            self._client.drop_collection(name)

    def start_rebuild(self, model_id: str, dim: int) -> MilvusStore:
        """A staging collection for re-embedding; an interrupted rebuild for the same model resumes."""
        staging = self._pointers.resumable(model_id, dim, self._client.has_collection)
        if staging is None:
            name = f"{self.collection}_images_{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
            with self._write_lock:
                self._create_images(name, dim)
            staging = {"model_id": model_id, "dim": dim, "collection": name}
            self._pointers.put("staging", staging)
        return self.at(staging["collection"])

    def finish_rebuild(self) -> None:
        """Point the library at the staging collection (generations.PointerDocuments.switch); the old collection
        is retired."""
        old = self.images
        staging = self._pointers.switch(SCHEMA_VERSION)
        self.images = staging["collection"]
        self._dim = int(staging["dim"])
        self._learn_fields()
        if old != self.images:
            retire(self, old)

    def _require_open(self) -> None:
        if not self._dim:
            raise RuntimeError("the store is not open: call open(model_id, dim) first")

    # writes

    def _image_row(self, record: ImageRecord, vector: Vector, words: Vector | None) -> dict[str, Any]:
        row = CODEC.row(record, self._fields)
        row["phash_vector"] = phash_signs(phash_from_hex(record.phash))
        row["vector"] = _floats(vector)
        row["has_words"] = words is not None
        row["words_vector"] = _floats(words) if words is not None else _placeholder(self._dim)
        if self._keywords:
            row["search_text"] = fit_text(search_text(record), _SEARCH_TEXT_BYTES)
        if self._lower_names:
            row.update(lower_names(record))
        return row

    def _filter(self, flt: Filter | None, *extra: str) -> str:
        """The filter as an expression this collection can answer, records of unfinished batches left out."""
        if flt and not self._lower_names and any(c.builtin and c.key in PARTIAL_FIELDS for c in flt.conditions()):
            raise NotSupported(
                f"the Milvus collection {self.images} was made before camera and lens filters ignored case; run "
                "`imagematch reindex` once to rebuild it with them"
            )
        return filter_expr(flt, *extra, *self._finished())

    def _finished(self) -> list[str]:
        """The expression that leaves out the records of unfinished batches; none when there are none."""
        hidden = self._batches.hidden()
        return [f"id not in [{', '.join(expr_string(i) for i in sorted(hidden))}]"] if hidden else []

    def upsert(self, items: Sequence[StoredImage]) -> None:
        """More than _BATCH_ROWS rows take several requests: the batch is marked (store/batches.py)."""
        if not items:
            return
        self._require_open()
        rows = [self._image_row(i.record, i.vector, i.words_vector) for i in items]
        marked = self._batches.writing([i.record.id for i in items], one_request=len(rows) <= _BATCH_ROWS)
        with marked, self._write_lock:  # the marker's documents are written outside the lock, which they take
            self._note_text_not_kept(items)
            for start in range(0, len(rows), _BATCH_ROWS):
                self._client.upsert(self.images, rows[start : start + _BATCH_ROWS])

    def _note_text_not_kept(self, items: Sequence[StoredImage]) -> None:
        """Say once, under the write lock, that this collection drops the text read in uploaded pictures: an
        upload must not fail for it, nor the text go without a word."""
        if self._keeps_text_read or self._noted_text_not_kept or all(i.record.ocr.pending for i in items):
            return
        self._noted_text_not_kept = True
        log.warning(
            "the Milvus collection %s was made before the text in pictures was stored: uploads are kept without it "
            "(their words and keywords still hold it); run `imagematch reindex` once to keep it",
            self.images,
        )

    def _present(self, ids: Sequence[str]) -> set[str]:
        """The ids that have a row, markers ignored."""
        if not self._dim:
            return set()
        return {
            row["id"]
            for start in range(0, len(ids), _IN_CHUNK)
            for row in self._client.query(
                self.images, filter=_ids_expr(ids[start : start + _IN_CHUNK]), output_fields=["id"]
            )
        }

    def _erase(self, ids: Sequence[str]) -> None:
        if not self._dim:
            return
        with self._write_lock:
            for start in range(0, len(ids), _IN_CHUNK):
                self._client.delete(self.images, filter=_ids_expr(ids[start : start + _IN_CHUNK]))

    def abandon_batch(self, batch: Batch) -> int:
        return self._batches.abandon(batch)

    def update(self, record: ImageRecord, words_vector: Vector | None) -> None:
        """A text in the picture this collection cannot keep is refused (NotSupported), not dropped: it is what
        the user or `imagematch ocr` asked to store."""
        self._require_open()
        if not self._keeps_text_read and not record.ocr.pending:
            raise NotSupported(
                f"the Milvus collection {self.images} was made before the text in pictures was stored; run "
                "`imagematch reindex` once to rebuild it with it"
            )
        stored = self._client.query(self.images, filter=_ids_expr([record.id]), output_fields=["vector"])
        if not stored:
            return
        row = self._image_row(record, np.asarray(stored[0]["vector"], dtype=np.float32), words_vector)
        with self._write_lock:
            self._client.upsert(self.images, [row])

    def delete(self, ids: Sequence[str]) -> int:
        if not ids or not self._dim:
            return 0
        unique = list(dict.fromkeys(ids))
        existing = [
            row["id"]
            for start in range(0, len(unique), _IN_CHUNK)
            for row in self._query(self._filter(None, _ids_expr(unique[start : start + _IN_CHUNK])), ["id"])
        ]
        with self._write_lock:
            for start in range(0, len(existing), _IN_CHUNK):
                self._client.delete(self.images, filter=_ids_expr(existing[start : start + _IN_CHUNK]))
        return len(existing)

    def reset(self) -> None:
        if self._dim:
            with self._write_lock:
                self._client.delete(self.images, filter='id != ""')
            self._batches.clear()
        self.maintain()

    def maintain(self) -> None:
        if not self._dim:
            return
        self._client.flush(self.images)
        if not self.lite:
            self._client.compact(self.images)

    def close(self) -> None:
        self._client.close()

    # reads

    def _query(self, expr: str, fields: Sequence[str], limit: int | None = None) -> list[dict[str, Any]]:
        if not self._dim:
            return []
        options: dict[str, Any] = {"limit": limit} if limit is not None else {}
        return list(self._client.query(self.images, filter=expr, output_fields=list(fields), **options))

    def _scan(self, expr: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every matching row: Milvus Lite answers in one query; a server needs an iterator past 16384 rows."""
        if not self._dim:
            return
        if self.lite:
            yield from self._query(expr, fields)
            return
        iterator = self._client.query_iterator(self.images, batch_size=_SCAN_BATCH, filter=expr, output_fields=fields)
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()

    def get(self, image_id: str) -> ImageRecord | None:
        return self.get_many([image_id]).get(image_id)

    def get_many(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        found: dict[str, ImageRecord] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _IN_CHUNK):
            for row in self._query(
                self._filter(None, _ids_expr(unique[start : start + _IN_CHUNK])), self._record_fields
            ):
                found[row["id"]] = CODEC.record(row)
        return found

    def get_vectors(self, ids: Sequence[str]) -> dict[str, tuple[Vector, Vector | None]]:
        found: dict[str, tuple[Vector, Vector | None]] = {}
        unique = list(dict.fromkeys(ids))
        fields = ["id", "vector", "words_vector", "has_words"]
        for start in range(0, len(unique), _IN_CHUNK):
            for row in self._query(self._filter(None, _ids_expr(unique[start : start + _IN_CHUNK])), fields):
                words = np.asarray(row["words_vector"], dtype=np.float32) if row["has_words"] else None
                found[row["id"]] = (np.asarray(row["vector"], dtype=np.float32), words)
        return found

    def count(self, flt: Filter | None = None) -> int:
        if not self._dim:
            return 0
        rows = self._client.query(self.images, filter=self._filter(flt), output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _key_reader(self, flt: Filter | None) -> KeyReader | None:
        """Milvus cannot order by a field: a page reads the (created_at, id) of the matching rows in a window of
        time next to the cursor (bounds and filter in the query expression, which an index on created_at answers
        as a range) and sorts those here; paging by offset reads every matching key."""
        return lambda low, high: self._keys(flt, low, high)

    def _keys(self, flt: Filter | None, low: int | None, high: int | None) -> pa.Table:
        bounds = [f"created_at >= {low}"] if low is not None else []
        bounds += [f"created_at <= {high}"] if high is not None else []
        rows = list(self._scan(self._filter(flt, *bounds), ["id", "created_at"]))
        return pa.Table.from_pydict(
            {"created": [int(row["created_at"]) for row in rows], "id": [row["id"] for row in rows]}, schema=KEY_SCHEMA
        )

    def ids(self) -> Iterator[str]:
        return (row["id"] for row in self._scan(self._filter(None), ["id"]))

    def _search_params(self, k: int) -> dict[str, Any]:
        return {"metric_type": "COSINE"} if self.lite else {"metric_type": "COSINE", "params": {"ef": max(k, 64)}}

    def search(self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image") -> list[Hit]:
        hits = self._vector_search(vector, k, flt, field, self._record_fields)
        return [Hit(_hit_record(hit), float(hit["distance"])) for hit in hits]

    def nearest(
        self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image"
    ) -> list[Neighbour]:
        return [
            Neighbour(str(hit["id"]), float(hit["distance"]))
            for hit in self._vector_search(vector, k, flt, field, ["id"])
        ]

    def _vector_search(
        self, vector: Vector, k: int, flt: Filter | None, field: VectorField, fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        if not self._dim or k <= 0:
            return []
        results = self._client.search(
            self.images,
            data=[_floats(vector)],
            anns_field=_VECTOR_FIELDS[field],
            limit=min(k, _MAX_LIMIT),
            filter=self._filter(flt, *(["has_words == true"] if field == "words" else [])),
            output_fields=list(fields),
            search_params=self._search_params(k),
        )
        return list(results[0])

    def keyword_search(self, text: str, *, k: int, flt: Filter | None = None) -> list[Hit]:
        words = tokens(text)
        if not self._dim or k <= 0 or not words:
            return []
        if not self._keywords:
            raise NotSupported(
                f"the Milvus collection {self.images} was made before keyword search; run `imagematch reindex` "
                "once to rebuild it with a keyword index"
            )
        results = self._client.search(
            self.images,
            data=[" ".join(words)],
            anns_field="keywords",
            limit=min(k, _MAX_LIMIT),
            filter=self._filter(flt),
            output_fields=self._record_fields,
            search_params={"metric_type": "BM25"},
        )
        # Milvus Lite reports BM25 as a negative distance, a server as a positive score: the order is the same.
        return [Hit(_hit_record(hit), abs(float(hit["distance"]))) for hit in results[0]]

    def find_file_hash(self, file_hash: str) -> ImageRecord | None:
        rows = self._query(self._filter(None, f"file_hash == {expr_string(file_hash)}"), self._record_fields, limit=1)
        return CODEC.record(rows[0]) if rows else None

    def phashes(self) -> tuple[list[str], npt.NDArray[np.uint64]]:
        rows = list(self._scan(self._filter(None), ["id", "phash"]))
        hashes = np.array([int(row["phash"]) for row in rows], dtype=np.int64).view(np.uint64)  # stored signed
        return [str(row["id"]) for row in rows], hashes

    def near_phash(self, phash: int, max_distance: int) -> list[tuple[ImageRecord, int]]:
        """The nearest ±1 pHash vectors, checked against the exact Hamming distance.

        Cosine order is Hamming order, so once the farthest of the top `limit` is out of range, every
        record in range has been seen; until then `limit` grows. The pHash field has a FLAT index on every
        Milvus (collections made before it had one of HNSW on a server: approximate until `imagematch
        reindex`), so the top k are exact; a top-k search is also much faster than a range search.
        """
        if not self._dim:
            return []
        limit = _PHASH_TOP_K
        while True:
            results = self._client.search(
                self.images,
                data=[phash_signs(phash)],
                anns_field="phash_vector",
                limit=limit,
                filter=self._filter(None),
                output_fields=self._record_fields,
                search_params=self._search_params(limit),  # ef for the HNSW of older collections
            )[0]
            found = [(record, hamming(phash, phash_from_hex(record.phash))) for record in map(_hit_record, results)]
            if len(found) < limit or found[-1][1] > max_distance or limit >= _MAX_LIMIT:
                break
            limit = min(limit * 4, _MAX_LIMIT)
        close = [(record, distance) for record, distance in found if distance <= max_distance]
        close.sort(key=lambda pair: pair[1])
        return close
