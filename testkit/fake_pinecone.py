"""A small Pinecone on 127.0.0.1 for tests: the control-plane and data-plane REST calls PineconeStore makes.

It enforces the service's limits the way the service does (a request it would refuse is refused with 400),
records every request, can answer the next N requests with an error, and can play eventual consistency:
with `lag_reads` set, a write becomes visible only after that many further reads, while reads report how
far the index has caught up in the same LSN headers Pinecone sends.

Control plane: GET/POST /indexes, GET/DELETE /indexes/{name}. Data plane, under each index's host
(`<url>/data/<name>`): /vectors/upsert, /query, /vectors/fetch, /vectors/fetch_by_metadata, /vectors/list,
/vectors/delete, /vectors/update, /describe_index_stats.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

MAX_BATCH = 1000
MAX_REQUEST_BYTES = 2 * 1024 * 1024
MAX_METADATA_BYTES = 40 * 1024
LIST_LIMIT = 100
REJECTED_KEY = "rejected-key"  # answered 401, as the service answers a wrong key


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "INVALID_ARGUMENT") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    bytes: int
    status: int = 200
    vectors: int = 0  # upsert: records in the request
    largest_metadata: int = 0  # upsert: the biggest record's metadata, as ASCII-escaped JSON bytes
    null_metadata: bool = False  # upsert: some metadata value was null


@dataclass
class Index:
    name: str
    dim: int
    metric: str
    deployment: dict[str, Any] = field(default_factory=dict)
    namespaces: dict[str, dict[str, tuple[list[float], dict[str, Any]]]] = field(default_factory=dict)
    written: set[str] = field(default_factory=set)  # namespaces some accepted write created
    lsn: int = 0  # last write accepted
    applied: int = 0  # last write visible to reads
    pending: list[tuple[int, int, Callable[[], None]]] = field(default_factory=list)  # lsn, reads left, apply


def _compare(value: Any, op: str, operand: Any) -> bool:
    if op == "$exists":
        return (value is not None) == bool(operand)
    if value is None:
        return False
    if op == "$eq":
        return operand in value if isinstance(value, list) else bool(value == operand)
    if op == "$ne":
        return operand not in value if isinstance(value, list) else bool(value != operand)
    if op == "$in":
        return any(v in operand for v in value) if isinstance(value, list) else value in operand
    if op == "$nin":
        return not any(v in operand for v in value) if isinstance(value, list) else value not in operand
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    comparisons = {"$gt": value > operand, "$gte": value >= operand, "$lt": value < operand, "$lte": value <= operand}
    return bool(comparisons[op])


def matches(metadata: dict[str, Any], flt: dict[str, Any] | None) -> bool:
    """Pinecone's filter language: field conditions, $and, $or."""
    if not flt:
        return True
    for key, spec in flt.items():
        if key == "$and":
            if not all(matches(metadata, sub) for sub in spec):
                return False
        elif key == "$or":
            if not any(matches(metadata, sub) for sub in spec):
                return False
        elif isinstance(spec, dict):
            for op, operand in spec.items():
                if op not in ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists"):
                    raise ApiError(400, f"unsupported filter operator {op}")
                if not _compare(metadata.get(key), op, operand):
                    return False
        elif not _compare(metadata.get(key), "$eq", spec):
            return False
    return True


class FakePinecone:
    """Start with `start()`; `url` is the control-plane host to give the SDK."""

    def __init__(self, *, lag_reads: int = 0) -> None:
        self.indexes: dict[str, Index] = {}
        self.requests: list[Recorded] = []
        self.lag_reads = lag_reads
        self._failures: list[int] = []
        self._lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: pytest shows what matters."""

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, payload, headers = fake.handle(self.command, self.path, body, self.headers.get("Api-Key"))
                data = json.dumps(payload).encode() if payload is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle  # noqa: N815 (the names http.server calls)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-pinecone", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakePinecone:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, count: int, status: int = 503) -> None:
        """The next `count` requests are answered with `status` instead of being served."""
        with self._lock:
            self._failures.extend([status] * count)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def upserts(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/vectors/upsert") and r.status == 200]

    # dispatch

    def handle(self, method: str, target: str, body: bytes, api_key: str | None) -> tuple[int, Any, dict[str, str]]:
        if api_key == REJECTED_KEY:
            return 401, {"error": {"code": "UNAUTHENTICATED", "message": "Invalid API Key"}}, {}
        split = urlsplit(target)
        path = split.path
        query = parse_qs(split.query)
        record = Recorded(method, path, len(body))
        with self._lock:
            self.requests.append(record)
            if self._failures:
                record.status = self._failures.pop(0)
                return record.status, {"error": {"code": "UNAVAILABLE", "message": "injected failure"}}, {}
            try:
                payload = json.loads(body) if body else {}
                status, answer, headers = self._route(method, path, query, payload, record)
            except ApiError as error:
                status, answer, headers = error.status, {"error": {"code": error.code, "message": str(error)}}, {}
            record.status = status
            return status, answer, headers

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any], record: Recorded
    ) -> tuple[int, Any, dict[str, str]]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "indexes":
            return self._control(method, parts[1:], body)
        if parts[0] == "data" and len(parts) >= 3:
            index = self.indexes.get(parts[1])
            if index is None:
                raise ApiError(404, f"index {parts[1]} not found", "NOT_FOUND")
            return self._data(index, "/".join(parts[2:]), query, body, record)
        raise ApiError(404, f"no route {method} {path}", "NOT_FOUND")

    # control plane

    def _model(self, index: Index) -> dict[str, Any]:
        return {
            "name": index.name,
            "host": f"{self.url}/data/{index.name}",
            "status": {"ready": True, "state": "Ready"},
            "schema": {"fields": {"_values": {"type": "dense_vector", "dimension": index.dim, "metric": index.metric}}},
            "deployment": index.deployment or {"deployment_type": "managed", "cloud": "aws", "region": "us-east-1"},
            "deletion_protection": "disabled",
        }

    def _control(self, method: str, rest: list[str], body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if not rest and method == "GET":
            return 200, {"indexes": [self._model(i) for i in self.indexes.values()]}, {}
        if not rest and method == "POST":
            name = body["name"]
            if name in self.indexes:
                raise ApiError(409, f"index {name} already exists", "ALREADY_EXISTS")
            dense = [f for f in body["schema"]["fields"].values() if f.get("type") == "dense_vector"]
            metric = dense[0].get("metric", "cosine")
            self.indexes[name] = Index(name, int(dense[0]["dimension"]), metric, dict(body.get("deployment", {})))
            return 201, self._model(self.indexes[name]), {}
        index = self.indexes.get(rest[0])
        if index is None:
            raise ApiError(404, f"index {rest[0]} not found", "NOT_FOUND")
        if method == "DELETE":
            del self.indexes[rest[0]]
            return 202, None, {}
        return 200, self._model(index), {}

    def create_index(self, name: str, dim: int, metric: str = "cosine") -> None:
        """An index made outside our code, such as the one the seed's users created by hand."""
        with self._lock:
            self.indexes[name] = Index(name, dim, metric)

    # data plane

    def _write(self, index: Index, apply: Callable[[], None]) -> dict[str, str]:
        index.lsn += 1
        if self.lag_reads:
            index.pending.append((index.lsn, self.lag_reads, apply))
        else:
            apply()
            index.applied = index.lsn
        return {"x-pinecone-request-lsn": str(index.lsn)}

    def _read(self, index: Index) -> dict[str, str]:
        """Each read brings pending writes one step closer to visible, in order."""
        waiting: list[tuple[int, int, Callable[[], None]]] = []
        for lsn, left, apply in index.pending:
            if left <= 1 and not waiting:
                apply()
                index.applied = lsn
            else:
                waiting.append((lsn, left - 1, apply))
        index.pending = waiting
        return {"x-pinecone-max-indexed-lsn": str(index.applied)}

    def _data(
        self, index: Index, op: str, query: dict[str, list[str]], body: dict[str, Any], record: Recorded
    ) -> tuple[int, Any, dict[str, str]]:
        if op == "vectors/upsert":
            return 200, *self._upsert(index, body, record)
        if op == "vectors/delete":
            return 200, {}, self._delete(index, body)
        if op == "vectors/update":
            return 200, *self._update(index, body)
        headers = self._read(index)
        if op == "query":
            return 200, self._query(index, body), headers
        if op == "vectors/fetch":
            space = index.namespaces.get(query.get("namespace", [""])[0], {})
            found = {i: self._vector(i, space[i], True, True) for i in query.get("ids", []) if i in space}
            return 200, {"vectors": found, "namespace": query.get("namespace", [""])[0]}, headers
        if op == "vectors/fetch_by_metadata":
            return 200, self._fetch_by_metadata(index, body), headers
        if op == "vectors/list":
            return 200, self._list(index, query), headers
        if op == "describe_index_stats":
            counts = {ns: {"vectorCount": len(v)} for ns, v in index.namespaces.items() if v}
            total = sum(c["vectorCount"] for c in counts.values())
            return 200, {"namespaces": counts, "dimension": index.dim, "totalVectorCount": total}, headers
        raise ApiError(404, f"no data-plane route {op}", "NOT_FOUND")

    def _upsert(self, index: Index, body: dict[str, Any], record: Recorded) -> tuple[dict[str, Any], dict[str, str]]:
        vectors = body.get("vectors", [])
        record.vectors = len(vectors)
        # The strictest reading of "40 KB": JSON with every non-ASCII character escaped, spaces included.
        sizes = [len(json.dumps(v.get("metadata") or {})) for v in vectors]
        record.largest_metadata = max(sizes, default=0)
        record.null_metadata = any(value is None for v in vectors for value in (v.get("metadata") or {}).values())
        if len(vectors) > MAX_BATCH:
            raise ApiError(400, f"upsert of {len(vectors)} vectors exceeds the maximum of {MAX_BATCH}")
        if record.bytes > MAX_REQUEST_BYTES:
            raise ApiError(400, f"request size {record.bytes} exceeds the maximum of {MAX_REQUEST_BYTES} bytes")
        if record.largest_metadata > MAX_METADATA_BYTES:
            raise ApiError(400, f"metadata size {record.largest_metadata} exceeds the limit of {MAX_METADATA_BYTES}")
        if record.null_metadata:
            raise ApiError(400, "metadata values must be strings, numbers, booleans or lists of strings, not null")
        for vector in vectors:
            values = vector["values"]
            if len(values) != index.dim:
                raise ApiError(400, f"vector dimension {len(values)} does not match the index ({index.dim})")
            if not any(values) or not all(math.isfinite(x) for x in values):
                raise ApiError(400, "dense vectors must be finite and contain at least one non-zero value")
            if not vector["id"].isascii() or len(vector["id"]) > 512:
                raise ApiError(400, "vector ids must be ASCII, at most 512 characters")
        namespace = body.get("namespace", "")
        index.written.add(namespace)

        def apply() -> None:
            space = index.namespaces.setdefault(namespace, {})
            for vector in vectors:
                space[vector["id"]] = (vector["values"], dict(vector.get("metadata") or {}))

        return {"upsertedCount": len(vectors)}, self._write(index, apply)

    def _delete(self, index: Index, body: dict[str, Any]) -> dict[str, str]:
        namespace = body.get("namespace", "")
        if namespace not in index.written:  # as the service answers, for any kind of delete
            raise ApiError(404, "Namespace not found", "NOT_FOUND")

        def apply() -> None:
            space = index.namespaces.get(namespace, {})
            if body.get("deleteAll"):
                space.clear()
            for key in body.get("ids", []):
                space.pop(key, None)
            if body.get("filter"):
                for key in [k for k, (_, meta) in space.items() if matches(meta, body["filter"])]:
                    del space[key]

        return self._write(index, apply)

    def _update(self, index: Index, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        space = index.namespaces.get(body.get("namespace", ""), {})
        key = body["id"]
        if key not in space:
            return {"matchedRecords": 0}, {}

        def apply() -> None:
            values, metadata = space[key]
            space[key] = (body.get("values") or values, {**metadata, **body.get("setMetadata", {})})

        return {"matchedRecords": 1}, self._write(index, apply)

    @staticmethod
    def _vector(key: str, entry: tuple[list[float], dict[str, Any]], values: bool, metadata: bool) -> dict[str, Any]:
        found: dict[str, Any] = {"id": key}
        if values:
            found["values"] = entry[0]
        if metadata and entry[1]:
            found["metadata"] = entry[1]
        return found

    def _query(self, index: Index, body: dict[str, Any]) -> dict[str, Any]:
        space = index.namespaces.get(body.get("namespace", ""), {})
        query = np.asarray(body["vector"], dtype=np.float64)
        if len(query) != index.dim:
            raise ApiError(400, f"query vector dimension {len(query)} does not match the index ({index.dim})")
        scored = []
        for key, (values, metadata) in space.items():
            if matches(metadata, body.get("filter")):
                stored = np.asarray(values, dtype=np.float64)
                scored.append((float(stored @ query / (np.linalg.norm(stored) * np.linalg.norm(query))), key))
        scored.sort(key=lambda pair: (-pair[0], pair[1]))
        found = []
        for score, key in scored[: int(body["topK"])]:
            match = self._vector(key, space[key], body.get("includeValues", False), body.get("includeMetadata", False))
            found.append({**match, "score": score})
        return {"matches": found, "namespace": body.get("namespace", ""), "usage": {"readUnits": 1}}

    def _fetch_by_metadata(self, index: Index, body: dict[str, Any]) -> dict[str, Any]:
        space = index.namespaces.get(body.get("namespace", ""), {})
        keys = sorted(k for k, (_, meta) in space.items() if matches(meta, body["filter"]))
        start = int(body.get("paginationToken") or 0)
        limit = int(body.get("limit") or 100)
        page = keys[start : start + limit]
        answer: dict[str, Any] = {
            "vectors": {k: self._vector(k, space[k], True, True) for k in page},
            "namespace": body.get("namespace", ""),
        }
        if start + limit < len(keys):
            answer["pagination"] = {"next": str(start + limit)}
        return answer

    def _list(self, index: Index, query: dict[str, list[str]]) -> dict[str, Any]:
        namespace = query.get("namespace", [""])[0]
        prefix = query.get("prefix", [""])[0]
        limit = int(query.get("limit", [LIST_LIMIT])[0])
        if limit > LIST_LIMIT:
            raise ApiError(400, f"limit must be at most {LIST_LIMIT}")
        keys = sorted(k for k in index.namespaces.get(namespace, {}) if k.startswith(prefix))
        after = query.get("paginationToken", [""])[0]
        if after:
            keys = [k for k in keys if k > after]
        page = keys[:limit]
        answer: dict[str, Any] = {"vectors": [{"id": k} for k in page], "namespace": namespace}
        if len(keys) > limit:
            answer["pagination"] = {"next": page[-1]}
        return answer
