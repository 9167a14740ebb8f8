"""The default store: LanceDB, embedded, on disk under the data directory.

Each write is a new table version, so a batch lands whole or not at all, even under kill -9. Filters are
SQL pushed into the scan (`prefilter`), so top-k is taken among matching rows only.

Keyword search uses LanceDB's native full-text index (BM25, stemmed, accents folded) on the `search_text`
column. Libraries made before that column existed get it on open (schema 2), filled from their records.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from lancedb.index import FTS, BTree, IvfPq

from imagematch.fingerprint import hamming_many, phash_from_hex
from imagematch.keywords import search_text, tokens
from imagematch.records import (
    PARTIAL_FIELDS,
    Condition,
    Filter,
    FilterScalar,
    Hit,
    ImageRecord,
    Neighbour,
    StoredImage,
    StoreMismatch,
    Vector,
    name_words,
)
from imagematch.store.base import VectorField
from imagematch.store.batches import UNFINISHED, Batch
from imagematch.store.fields import FIELDS, Codec, Field, Kind, phash_from_signed, phash_to_signed
from imagematch.store.generations import Generations, retire, staging_name
from imagematch.store.locks import file_lock
from imagematch.store.paging import KEY_SCHEMA, KeyedPages, KeyReader, KeyWindow

log = logging.getLogger(__name__)

IMAGES = "images"
STATE = "state"
SCHEMA_VERSION = 3  # 2: the search_text column for keyword search; 3: the ocr column
SEARCH_TEXT = "search_text"
LOCK_FILE = ".library.lock"  # flock'd by every process of this library: table creation, check-then-write steps
_VECTOR_COLUMNS = {"image": "vector", "words": "words_vector"}
# The Lance file format of new tables. 2.1 reads a few rows by id (the records of a page of search results) ~6×
# faster than this LanceDB's default (2.2) at a million rows, at the same search speed (docs/benchmarks.md).
FILE_FORMAT = "2.1"
_TIMESTAMP = pa.timestamp("us", tz="UTC")


def _arrow_type(field: Field) -> pa.DataType:
    """The Arrow type of each kind of field (store/fields.py)."""
    if field.kind == Kind.INT:
        return pa.int32() if field.bits == 32 else pa.int64()
    return _ARROW_TYPES[field.kind]


_ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.ID: pa.string(),
    Kind.DIGEST: pa.string(),
    Kind.PHASH: pa.int64(),  # the 64-bit hash, stored signed
    Kind.TEXT: pa.string(),
    Kind.FLOAT: pa.float64(),
    Kind.BOOL: pa.bool_(),
    Kind.TIME: _TIMESTAMP,
    Kind.METADATA: pa.json_(pa.utf8()),
    Kind.TEXT_READ: pa.string(),  # null while the picture has not been read
}


def arrow_field(field: Field) -> pa.Field:
    return pa.field(field.name, _arrow_type(field), nullable=not field.required)


def images_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            *(arrow_field(field) for field in FIELDS),
            pa.field(SEARCH_TEXT, pa.string()),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("words_vector", pa.list_(pa.float32(), dim)),
        ]
    )


def _utc(_field: Field, value: datetime) -> datetime:
    return value.astimezone(UTC)


CODEC = Codec(
    write={
        Kind.PHASH: phash_to_signed,
        Kind.METADATA: lambda _field, value: json.dumps(value, ensure_ascii=False),
        Kind.TEXT_READ: lambda _field, value: value.to_json() or None,
    },
    read={
        Kind.PHASH: phash_from_signed,
        Kind.TIME: _utc,
        Kind.METADATA: lambda _field, value: json.loads(value) if value else {},
    },
)


_STATE_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo else value
        # isoformat, not strftime: strftime writes the year 999 as "999", which is no timestamp to the SQL parser.
        return f"TIMESTAMP '{utc.replace(tzinfo=None).isoformat(sep=' ', timespec='microseconds')}'"
    return sql_string(str(value))


def _metadata_path(key: str) -> str:
    return sql_string("$[" + json.dumps(key, ensure_ascii=False) + "]")


def _double(value: FilterScalar) -> str:
    """A custom number as its tests compare it: as a double (the parser sends ranges numbers only)."""
    return repr(float(value)) if isinstance(value, int | float) else "NULL"


def _metadata_equals(key: str, value: FilterScalar) -> str:
    """The custom value equals `value`, or (text) is a list that holds it. Values are read as JSON text
    (json_extract), never with json_get_string or json_get_float: those fail the whole query on any record
    whose value has another type (`{"album": 0}` where albums are text, a list of tags where one is text),
    where a record whose value is of another type should simply not match."""
    path = _metadata_path(key)
    raw = f"json_extract(metadata, {path})"
    if isinstance(value, bool):
        return f"{raw} = {sql_string(json.dumps(value))}"
    if isinstance(value, int | float):
        return f"TRY_CAST({raw} AS DOUBLE) = {_double(value)}"
    text = json.dumps(str(value), ensure_ascii=False)
    # json_array_contains compares a member's JSON text, without its quotes, with the needle.
    return f"({raw} = {sql_string(text)} OR json_array_contains(metadata, {path}, {sql_string(text[1:-1])}))"


def _metadata_sql(condition: Condition, values: tuple[FilterScalar, ...]) -> str:
    raw = f"json_extract(metadata, {_metadata_path(condition.key)})"
    if condition.op in ("gt", "gte", "lt", "lte"):
        return f"TRY_CAST({raw} AS DOUBLE) {_SQL_OPS[condition.op]} {_double(values[0])}"
    equal = " OR ".join(f"({_metadata_equals(condition.key, v)})" for v in values)
    if condition.op in ("eq", "in"):
        return equal
    # ne, nin: the record has the key, and a value that is none of these (a list that holds none of them).
    return f"({raw} IS NOT NULL AND ({equal}) IS NOT TRUE)"


def _like_word(column: str, word: str) -> str:
    """`word` is letters, digits and underscores: only `_` means something to LIKE."""
    pattern = "%" + word.replace("_", "\\_") + "%"
    return f"{column} LIKE {sql_string(pattern)} ESCAPE '\\'"


def _partial_sql(condition: Condition, values: tuple[FilterScalar, ...]) -> str:
    """Camera and lens: each word of a value is part of the lower-cased name; an empty value is no name."""
    column = f"lower(coalesce({condition.key}, ''))"
    matches = []
    for value in values:
        words = name_words(str(value))
        matches.append(" AND ".join(_like_word(column, w) for w in words) if words else f"{column} = ''")
    any_match = " OR ".join(f"({m})" for m in matches)
    return any_match if condition.op in ("eq", "in") else f"({any_match}) IS NOT TRUE"


_SQL_OPS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def condition_sql(condition: Condition) -> str:
    values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    if not condition.builtin:
        return _metadata_sql(condition, values)
    if condition.key in PARTIAL_FIELDS:
        return _partial_sql(condition, values)
    listed = ", ".join(_sql_literal(v) for v in values)
    if condition.op == "in":
        return f"{condition.key} IN ({listed})"
    if condition.op == "nin":
        return f"{condition.key} NOT IN ({listed})"
    return f"{condition.key} {_SQL_OPS[condition.op]} {_sql_literal(values[0])}"


def filter_sql(flt: Filter | None) -> str | None:
    if not flt:
        return None
    return flt.fold(
        condition_sql,
        lambda parts: " AND ".join(f"({p})" for p in parts),
        lambda parts: " OR ".join(f"({p})" for p in parts),
    )


def _record_to_row(record: ImageRecord) -> dict[str, Any]:
    return {**CODEC.row(record), SEARCH_TEXT: search_text(record)}


_FIRST_MICROS, _LAST_MICROS = -62_135_596_800_000_000, 253_402_300_799_000_000  # years 1 and 9999


def _from_micros(value: int) -> datetime:
    """A bound as a timestamp; bounds beyond what a timestamp can hold are the first or the last one."""
    clamped = min(max(value, _FIRST_MICROS), _LAST_MICROS)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=clamped)


def ann_partitions(rows: int) -> int:
    """IVF partitions for an index over this many rows: about √rows, so a probe scans a few thousand codes."""
    return max(16, int(math.sqrt(rows)))


def _ids_sql(ids: Sequence[str]) -> str:
    return f"id IN ({', '.join(sql_string(i) for i in ids)})"


def _matrix(column: pa.ChunkedArray, dim: int) -> npt.NDArray[np.float32]:
    """A vector column as rows of a float32 matrix, without a Python list per vector (null rows are undefined)."""
    vectors = column.combine_chunks()
    values = vectors.values.slice(vectors.offset * dim, len(vectors) * dim)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


class LanceStore(KeyedPages):
    """VectorStore on LanceDB.

    The state table names the live images table, so a rebuild (reindex with another model) fills a new
    table and then switches over in one atomic write: a crash leaves the old library intact.
    """

    name = "lancedb"

    def __init__(
        self,
        path: Path,
        *,
        table_name: str | None = None,
        ann_threshold: int = 10_000,
        nprobes: int = 30,
        rerank: int = 500,
        connection: Any = None,
    ) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.ann_threshold = ann_threshold
        self.nprobes = nprobes  # IVF partitions searched (ignored without an index)
        self.rerank = rerank  # index candidates re-ranked with exact vectors (ignored without an index)
        # Read consistency 0: every read sees writes from other processes (the CLI beside a server).
        self._db = connection or lancedb.connect(
            str(path),
            read_consistency_interval=timedelta(0),
            storage_options={"new_table_data_storage_version": FILE_FORMAT},
        )
        self._write_lock = threading.Lock()
        self._exclusive = file_lock(path / LOCK_FILE)
        self._phash_cache: tuple[int, npt.NDArray[np.str_], npt.NDArray[np.uint64]] | None = None
        # Two processes opening a new library at once would both create the tables, and the loser fails (or
        # reads a table half made): creation happens under the library's file lock, and the loser opens.
        with self._exclusive:
            existing = set(self._db.list_tables().tables)
            self._state = (
                self._db.open_table(STATE) if STATE in existing else self._db.create_table(STATE, schema=_STATE_SCHEMA)
            )
        self.table_name = table_name or self._get_state("table") or IMAGES
        self._table: Any = None
        self._dim = 0
        self._keyword_index = False  # the live table has its full-text index
        self._words_seen: tuple[str, int, bool] | None = None  # (table, version, whether any has a words vector)
        self._window = KeyWindow()
        if self.table_name in existing:
            self._table = self._db.open_table(self.table_name)
            self._dim = self._table.schema.field("vector").type.list_size

    def exclusive(self) -> AbstractContextManager[object]:
        """Held by one process (and one thread) of this library at a time: a file lock under the store's folder."""
        return self._exclusive

    # guard and state

    def _get_state(self, key: str) -> str | None:
        return self._get_states(key).get(key)

    def _get_states(self, *keys: str) -> dict[str, str | None]:
        """Several keys in one read."""
        listed = ", ".join(sql_string(key) for key in keys)
        rows = self._state.search().where(f"key IN ({listed})").limit(len(keys)).to_list()
        return {row["key"]: row["value"] for row in rows}

    def _set_state(self, values: dict[str, str]) -> None:
        """One atomic write, however many keys."""
        rows = [{"key": key, "value": value} for key, value in values.items()]
        self._state.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(
            pa.Table.from_pylist(rows, schema=_STATE_SCHEMA)
        )

    def put_document(self, kind: str, key: str, value: str) -> None:
        self._set_state({f"doc:{kind}:{key}": value})

    def get_document(self, kind: str, key: str) -> str | None:
        return self._get_state(f"doc:{kind}:{key}")

    def list_documents(self, kind: str) -> dict[str, str]:
        prefix = f"doc:{kind}:"
        rows = self._state.search().where(f"starts_with(key, {sql_string(prefix)})").limit(None).to_list()
        return {row["key"][len(prefix) :]: row["value"] for row in rows}

    def delete_document(self, kind: str, key: str) -> None:
        self._state.delete(f"key = {sql_string(f'doc:{kind}:{key}')}")

    def abandon_batch(self, batch: Batch) -> int:
        """LanceDB writes a batch in one atomic merge and never marks one: only the marker is there to remove."""
        self.delete_document(UNFINISHED, batch.key)
        return 0

    def stored_model(self) -> tuple[str, int] | None:
        state = self._get_states("model_id", "dim")  # one read: a search asks at start and again at open
        model_id = state.get("model_id")
        if model_id is None:
            return None
        return model_id, int(state.get("dim") or 0)

    def open(self, model_id: str, dim: int) -> None:
        # Under the file lock (taken before the thread lock, as every guarded write takes them): a process opening
        # a new library at the same time sees either nothing or the whole of what this one made.
        with self._exclusive, self._write_lock:
            stored = self.stored_model()
            if stored is not None and stored != (model_id, dim):
                raise StoreMismatch(
                    f"the library in {self.path} was built with model {stored[0]} ({stored[1]} dimensions), "
                    f"not {model_id} ({dim} dimensions). Run `imagematch reindex` to re-embed every image with "
                    f"the configured model, or set IMAGEMATCH_MODEL={stored[0]}"
                )
            if self._table is None:
                # Another process may have made it since this store was built. Opened, never created with
                # exist_ok: that compares schemas, and the metadata column reads back as another type.
                if self.table_name in set(self._db.list_tables().tables):
                    self._table = self._db.open_table(self.table_name)
                else:
                    self._table = self._db.create_table(self.table_name, schema=images_schema(dim))
                    self._set_state({self._words_key(): "no"})
                self._dim = self._table.schema.field("vector").type.list_size
            if self._get_state(self._words_key()) is None:  # made before the flag was kept: looked at once
                present = self._table.count_rows("words_vector IS NOT NULL") > 0
                row = {"key": self._words_key(), "value": "yes" if present else "no"}
                # Inserted only if still absent: a "yes" another process wrote meanwhile is never undone.
                self._state.merge_insert("key").when_not_matched_insert_all().execute(
                    pa.Table.from_pylist([row], schema=_STATE_SCHEMA)
                )
            self._add_missing_fields()  # first: filling search_text reads every record field
            if SEARCH_TEXT not in self._table.schema.names:
                self._add_search_text()
            if stored is None:
                self._set_state(
                    {
                        "model_id": model_id,
                        "dim": str(dim),
                        "table": self.table_name,
                        "schema": str(SCHEMA_VERSION),
                    }
                )

    def _add_search_text(self) -> None:
        """Schema 1 to 2: add the keyword column and fill it from each record (no vectors are read or written)."""
        table = self._table
        try:
            table.add_columns(pa.field(SEARCH_TEXT, pa.string()))
        except (ValueError, OSError, RuntimeError):
            table = self._table = self._db.open_table(self.table_name)  # another process added it first
            if SEARCH_TEXT not in table.schema.names:
                raise
            return
        rows = self._rows(None)
        if rows:
            schema = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field(SEARCH_TEXT, pa.string())])
            values = [{"id": row["id"], SEARCH_TEXT: search_text(CODEC.record(row))} for row in rows]
            table.merge_insert("id").when_matched_update_all().execute(pa.Table.from_pylist(values, schema=schema))
        self._state.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(
            pa.Table.from_pylist([{"key": "schema", "value": str(SCHEMA_VERSION)}], schema=_STATE_SCHEMA)
        )
        log.info("added keyword search to %d records of %s", len(rows), self.table_name)

    def _add_missing_fields(self) -> None:
        """Schema 2 to 3 and any later record field: a column for each field of store/fields.py the table lacks,
        empty, so its rows read the field's default (the text read in pictures: every picture waits to be read)."""
        missing = [arrow_field(field) for field in FIELDS if field.name not in self._table.schema.names]
        if not missing:
            return
        try:
            self._table.add_columns(missing)
        except (ValueError, OSError, RuntimeError):
            self._table = self._db.open_table(self.table_name)  # another process added them first
            if any(field.name not in self._table.schema.names for field in missing):
                raise
            return
        self._state.merge_insert("key").when_matched_update_all().when_not_matched_insert_all().execute(
            pa.Table.from_pylist([{"key": "schema", "value": str(SCHEMA_VERSION)}], schema=_STATE_SCHEMA)
        )
        log.info("added %s to %s", ", ".join(field.name for field in missing), self.table_name)

    @property
    def generation_name(self) -> str:
        return self.table_name

    def generations(self) -> Generations:
        rows = self._state.search().where("key IN ('table', 'staging_table')").limit(2).to_list()
        values = {row["key"]: row["value"] for row in rows}
        live = values.get("table") or IMAGES
        return Generations(live, staging_name(values.get("staging_table"), live))

    def at(self, name: str) -> LanceStore:
        """This library's generation `name` (the live one, the staging one or one being retired)."""
        return LanceStore(
            self.path,
            table_name=name,
            ann_threshold=self.ann_threshold,
            nprobes=self.nprobes,
            rerank=self.rerank,
            connection=self._db,
        )

    def drop_generation(self, name: str) -> None:
        if name in set(self._db.list_tables().tables):
            self._db.drop_table(name)
        self._forget_vector_indexes(name)
        self._state.delete(f"key = {sql_string(self._words_key(name))}")

    def start_rebuild(self, model_id: str, dim: int) -> LanceStore:
        """A staging store for re-embedding the library; resumes an interrupted rebuild for the same model."""
        staging = self.generations().staging
        resumable = staging and self._get_state("staging_model") == f"{model_id}@{dim}"
        if staging and not resumable:
            self.drop_generation(staging)
        if not resumable:
            staging = f"{IMAGES}_{datetime.now(UTC).strftime('%Y%m%d%H%M%S%f')}"
            self._db.create_table(staging, schema=images_schema(dim))
            self._set_state(
                {"staging_table": staging, "staging_model": f"{model_id}@{dim}", self._words_key(staging): "no"}
            )
        return self.at(staging)

    def finish_rebuild(self) -> None:
        """Make the staging table the library in one atomic state write; the old table is retired, not dropped,
        so processes still reading it finish (generations.sweep drops it later)."""
        old = self.table_name
        staging = self.generations().staging
        if not staging:
            raise RuntimeError("no rebuild in progress")
        with self._write_lock:
            model_id, _, dim = (self._get_state("staging_model") or "").rpartition("@")
            self._set_state(
                {"table": staging, "model_id": model_id, "dim": dim, "staging_table": "", "staging_model": ""}
            )
            self.table_name = staging
            self._table = self._db.open_table(self.table_name)
            self._dim = int(dim)
            self._phash_cache = None
            self._keyword_index = False
        if old != staging:
            retire(self, old)

    def _require_table(self) -> Any:
        if self._table is None:
            raise RuntimeError("the store is not open: call open(model_id, dim) first")
        return self._table

    # writes

    def _arrow(self, items: Sequence[StoredImage]) -> pa.Table:
        rows = []
        for item in items:
            row = _record_to_row(item.record)
            row["vector"] = np.asarray(item.vector, dtype=np.float32)
            row["words_vector"] = None if item.words_vector is None else np.asarray(item.words_vector, dtype=np.float32)
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=images_schema(self._dim))

    def upsert(self, items: Sequence[StoredImage]) -> None:
        """One merge, atomic: no batch marker is needed (store/batches.py)."""
        if not items:
            return
        table = self._require_table()
        data = self._arrow(items)
        if any(item.words_vector is not None for item in items):
            self._note_words()
        with self._write_lock:
            before = int(table.version)
            table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(
                data, on_bad_vectors="null"
            )
            self._extend_phash_cache(before, items)

    def _extend_phash_cache(self, before: int, items: Sequence[StoredImage]) -> None:
        """Keep the pHash cache current after our own write instead of re-reading the whole column.

        Only when nobody else wrote in between (the version moved by exactly our one commit); a re-upserted
        id may then appear twice, which near_phash tolerates.
        """
        cached = self._phash_cache
        after = int(self._table.version)
        if cached is None or cached[0] != before or after != before + 1:
            self._phash_cache = None
            return
        ids = np.concatenate([cached[1], np.asarray([i.record.id for i in items], dtype=np.str_)])
        new = np.asarray([phash_from_hex(i.record.phash) for i in items], dtype=np.uint64)
        self._phash_cache = (after, ids, np.concatenate([cached[2], new]))

    def update(self, record: ImageRecord, words_vector: Vector | None) -> None:
        table = self._require_table()
        values = _record_to_row(record)
        values.pop("id")
        values["words_vector"] = None if words_vector is None else [float(x) for x in words_vector]
        if words_vector is not None:
            self._note_words()
        with self._write_lock:
            table.update(where=f"id = {sql_string(record.id)}", values=values)

    def delete(self, ids: Sequence[str]) -> int:
        if not ids or self._table is None:
            return 0
        where = _ids_sql(ids)
        with self._write_lock:
            before = self._table.count_rows(where)
            if before:
                self._table.delete(where)
                self._phash_cache = None
        return int(before)

    def reset(self) -> None:
        with self._write_lock:
            if self._table is not None:
                self._table.delete("true")
                self._phash_cache = None
                self._forget_vector_indexes(self.table_name)  # trained on what is gone: made anew when needed
        self.maintain()

    def maintain(self) -> None:
        """Compact, drop old versions, and index once the library is large enough to need it.

        Exact search scans every vector: past `ann_threshold` (where an IVF-PQ index becomes faster, measured in
        docs/benchmarks.md) the index answers in milliseconds, and searches re-rank its candidates with the
        exact vectors (refine) so recall stays high. Rows added after the index are searched exactly until
        the next maintain folds them in; once the library has grown so much that the index's partitions hold
        four times the rows they were made for, the index is made again for its size. Vector indexes are
        built outside the write lock, so uploads carry on meanwhile. Scalar indexes make lookups by id and
        file hash constant-time at any size, and turn a page's window of created_at into an index range.

        Two processes may maintain at once (two `imagematch index` runs ending together): the one whose commit
        loses skips this round, since the other did the same work.
        """
        if self._table is None:
            return
        try:
            self._maintain()
        except (RuntimeError, OSError, ValueError) as error:
            if "conflict" not in str(error).lower():
                raise
            log.info("another process is maintaining the library at the same time; this round is skipped")

    def _maintain(self) -> None:
        with self._write_lock:
            self._table.optimize(cleanup_older_than=timedelta(minutes=1))
            self._state.optimize(cleanup_older_than=timedelta(minutes=1))
            rows = int(self._table.count_rows())
            indexed = {tuple(index.columns) for index in self._table.list_indices()}
            for column in ("id", "file_hash", "created_at"):
                if (column,) not in indexed and rows:
                    self._table.create_index(column, config=BTree(), replace=True)
            # A process of an earlier version, beside this one, writes words without the flag: found here.
            no_words = self._get_state(self._words_key()) == "no"
            if rows and no_words and self._table.count_rows("words_vector IS NOT NULL"):
                self._set_state({self._words_key(): "yes"})
        if rows < self.ann_threshold:
            return
        for column in _VECTOR_COLUMNS.values():
            made_for = self._get_state(self._partitions_key(column))  # unknown for indexes of earlier versions
            if (column,) not in indexed or made_for is None or ann_partitions(rows) >= 2 * int(made_for):
                self._create_vector_index(column, rows)

    def _partitions_key(self, column: str, table: str | None = None) -> str:
        return f"ann_partitions:{table or self.table_name}:{column}"

    def _forget_vector_indexes(self, table: str) -> None:
        keys = ", ".join(sql_string(self._partitions_key(column, table)) for column in _VECTOR_COLUMNS.values())
        self._state.delete(f"key IN ({keys})")

    def _words_key(self, table: str | None = None) -> str:
        return f"words_vectors:{table or self.table_name}"

    def _note_words(self) -> None:
        """Written before the first records with words vectors, so a reader that sees them sees this too."""
        seen = self._words_seen
        if seen is None or seen[0] != self.table_name or not seen[2]:
            self._set_state({self._words_key(): "yes"})
            self._words_seen = (self.table_name, -1, True)

    def _words_present(self) -> bool:
        """Whether any record of the table has a words vector. A table without any has nothing its words index
        could hold, and LanceDB then searches every row of the column as unindexed, a scan that grows with the
        library (26 ms at 200 000 images) and finds nothing: skipped. Read again only when the table has
        changed, and never again once true (the flag is written before the first words vector)."""
        version = int(self._require_table().version)
        seen = self._words_seen
        if seen is not None and seen[0] == self.table_name and (seen[2] or seen[1] == version):
            return seen[2]
        present = self._get_state(self._words_key()) != "no"
        self._words_seen = (self.table_name, version, present)
        return present

    def _create_vector_index(self, column: str, rows: int) -> None:
        started = time.perf_counter()
        partitions = ann_partitions(rows)
        # 8 dimensions per PQ code: coarse enough to be fast, fine enough that re-ranking restores recall.
        sub_vectors = next(n for n in (self._dim // 8, self._dim // 4, 1) if n and self._dim % n == 0)
        config = IvfPq(distance_type="cosine", num_partitions=partitions, num_sub_vectors=sub_vectors)
        self._table.create_index(column, config=config, replace=True)
        self._set_state({self._partitions_key(column): str(partitions)})
        log.info(
            "indexed %s of %d rows (IVF-PQ, %d partitions) in %.0fs",
            column,
            rows,
            partitions,
            time.perf_counter() - started,
        )

    @property
    def indexed(self) -> bool:
        """Whether image vectors are searched through an ANN index."""
        if self._table is None:
            return False
        return any(tuple(index.columns) == ("vector",) for index in self._table.list_indices())

    def close(self) -> None:
        self._table = None

    # reads

    def _record_columns(self) -> list[str]:
        """The record's columns this table has: one an older version made lacks the newer ones until a process
        opens it for writing (open() adds them), and reading it must work meanwhile (`imagematch check`)."""
        names = set(self._table.schema.names)
        return [field.name for field in FIELDS if field.name in names]

    def _rows(self, where: str | None, limit: int | None = None, columns: list[str] | None = None) -> list[Any]:
        if self._table is None:
            return []
        query = self._table.search().select(columns or self._record_columns())
        if where:
            query = query.where(where)
        return list(query.limit(limit).to_list())

    def get(self, image_id: str) -> ImageRecord | None:
        rows = self._rows(f"id = {sql_string(image_id)}", 1)
        return CODEC.record(rows[0]) if rows else None

    def get_many(self, ids: Sequence[str]) -> dict[str, ImageRecord]:
        if not ids:
            return {}
        return {row["id"]: CODEC.record(row) for row in self._rows(_ids_sql(ids), len(ids))}

    def get_vectors(self, ids: Sequence[str]) -> dict[str, tuple[Vector, Vector | None]]:
        if not ids:
            return {}
        rows = self._rows(_ids_sql(ids), len(ids), ["id", "vector", "words_vector"])
        return {
            row["id"]: (
                np.asarray(row["vector"], dtype=np.float32),
                None if row["words_vector"] is None else np.asarray(row["words_vector"], dtype=np.float32),
            )
            for row in rows
        }

    def count(self, flt: Filter | None = None) -> int:
        if self._table is None:
            return 0
        where = filter_sql(flt)
        return int(self._table.count_rows(where) if where else self._table.count_rows())

    def _key_reader(self, flt: Filter | None) -> KeyReader | None:
        return None if self._table is None else lambda low, high: self._keys(flt, low, high)

    def _keys(self, flt: Filter | None, low: int | None, high: int | None) -> pa.Table:
        """(created, id) of the matching records added between low and high: the time bounds and the filter are
        pushed into the scan, which reads only these two columns; maintain's BTree index on created_at turns the
        bounds into an index range, so a window of a page costs about a page however large the library is."""
        parts = [f"({where})" for where in (filter_sql(flt),) if where]
        if low is not None:
            parts.append(f"created_at >= {_sql_literal(_from_micros(low))}")
        if high is not None:
            parts.append(f"created_at <= {_sql_literal(_from_micros(high))}")
        query = self._table.search().select(["id", "created_at"])
        if parts:
            query = query.where(" AND ".join(parts))
        keys = query.limit(None).to_arrow()
        created = keys.column("created_at").cast(pa.int64())
        return pa.Table.from_arrays([created, keys.column("id")], schema=KEY_SCHEMA)

    def ids(self) -> Iterator[str]:
        if self._table is None:
            return iter(())
        table = self._table.search().select(["id"]).limit(None).to_arrow()
        return iter(table.column("id").to_pylist())

    def search(self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image") -> list[Hit]:
        if self._table is None or k <= 0 or (field == "words" and not self._words_present()):
            return []
        query = self._vector_query(vector, k, flt, field, [*self._record_columns(), "_distance"])
        return [Hit(CODEC.record(row), 1.0 - float(row["_distance"])) for row in query.to_list()]

    def nearest(
        self, vector: Vector, *, k: int, flt: Filter | None = None, field: VectorField = "image"
    ) -> list[Neighbour]:
        if self._table is None or k <= 0 or (field == "words" and not self._words_present()):
            return []
        found = self._vector_query(vector, k, flt, field, ["id", "_distance", "vector", "words_vector"]).to_arrow()
        images = _matrix(found.column("vector"), self._dim)
        words = _matrix(found.column("words_vector"), self._dim)
        missing = found.column("words_vector").is_null().to_numpy(zero_copy_only=False)
        return [
            Neighbour(image_id, 1.0 - float(distance), (images[n], None if missing[n] else words[n]))
            for n, (image_id, distance) in enumerate(
                zip(found.column("id").to_pylist(), found.column("_distance").to_numpy(), strict=True)
            )
        ]

    def _vector_query(self, vector: Vector, k: int, flt: Filter | None, field: VectorField, columns: list[str]) -> Any:
        """A cosine search; through the ANN index (when there is one) `rerank` candidates get exact scores."""
        query = (
            self._table.search(np.asarray(vector, dtype=np.float32), vector_column_name=_VECTOR_COLUMNS[field])
            .metric("cosine")
            .select(columns)
            .limit(k)
            .nprobes(self.nprobes)
            .refine_factor(max(2, math.ceil(self.rerank / k)))
        )
        where = filter_sql(flt)
        return query.where(where, prefilter=True) if where else query

    def _ensure_keyword_index(self) -> None:
        """Created on the first keyword search; rows written after it are searched too, and `optimize()` (in
        maintain) folds them into the index."""
        table = self._require_table()
        if self._keyword_index:
            return
        with self._write_lock:
            if not any(SEARCH_TEXT in index.columns for index in table.list_indices()):
                table.create_index(SEARCH_TEXT, config=FTS(), replace=True)
            self._keyword_index = True

    def keyword_search(self, text: str, *, k: int, flt: Filter | None = None) -> list[Hit]:
        words = tokens(text)
        if self._table is None or k <= 0 or not words:
            return []
        self._ensure_keyword_index()
        query = (
            self._table.search(" ".join(words), query_type="fts", fts_columns=SEARCH_TEXT)
            .select([*self._record_columns(), "_score"])
            .limit(k)
        )
        where = filter_sql(flt)
        if where:
            query = query.where(where, prefilter=True)
        return [Hit(CODEC.record(row), float(row["_score"])) for row in query.to_list()]

    def find_file_hash(self, file_hash: str) -> ImageRecord | None:
        rows = self._rows(f"file_hash = {sql_string(file_hash)}", 1)
        return CODEC.record(rows[0]) if rows else None

    def _phashes(self) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.uint64]]:
        table = self._require_table()
        version = int(table.version)
        cached = self._phash_cache
        if cached is not None and cached[0] == version:
            return cached[1], cached[2]
        listed, hashes = self._read_phashes()
        ids = np.asarray(listed, dtype=np.str_)
        self._phash_cache = (version, ids, hashes)
        return ids, hashes

    def _read_phashes(self) -> tuple[list[str], npt.NDArray[np.uint64]]:
        arrow = self._require_table().search().select(["id", "phash"]).limit(None).to_arrow()
        return arrow.column("id").to_pylist(), arrow.column("phash").to_numpy(zero_copy_only=False).astype(
            np.int64
        ).view(np.uint64)

    def phashes(self) -> tuple[list[str], npt.NDArray[np.uint64]]:
        """Read afresh, not from the cache near_phash keeps: after this process's own upserts that may hold an id
        twice."""
        if self._table is None:
            return [], np.zeros(0, dtype=np.uint64)
        return self._read_phashes()

    def near_phash(self, phash: int, max_distance: int) -> list[tuple[ImageRecord, int]]:
        if self._table is None:
            return []
        ids, hashes = self._phashes()
        if len(ids) == 0:
            return []
        distances = hamming_many(phash, hashes)
        close = np.flatnonzero(distances <= max_distance)
        close = close[np.argsort(distances[close], kind="stable")]
        unique = list(dict.fromkeys(str(ids[i]) for i in close))
        records = self.get_many(unique)
        seen: set[str] = set()
        found = []
        for i in close:
            image_id = str(ids[i])
            if image_id in records and image_id not in seen:
                seen.add(image_id)
                found.append((records[image_id], int(distances[i])))
        return found
