"""The `Documents` protocol: small shared state kept with the library, apart from its records.

It lives in a module of its own, with no imports from the store package, so that `generations.py`,
`batches.py` and `tuned.py` (which need only documents) and `base.py` (which builds `VectorStore` from them)
all name the same protocol without an import cycle.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol


class Documents(Protocol):
    """Small string values by (kind, key) that every process of the library sees: batch jobs, the caption queue
    and its leases, change notes, batch markers, pointers, the tuned state, the migration marker.

    Documents belong to the library, not to one generation: every generation's store object reads the same
    ones. A remote store splits a long value into parts (store/shared.py) so that a reader always finds one
    whole version.
    """

    def put_document(self, kind: str, key: str, value: str) -> None:
        """Write the value, replacing the one under (kind, key); readers see the old one or the new one."""

    def get_document(self, kind: str, key: str) -> str | None: ...

    def list_documents(self, kind: str) -> dict[str, str]:
        """Every key of `kind` and its value."""

    def delete_document(self, kind: str, key: str) -> None:
        """Remove the value; nothing happens when there is none."""

    def exclusive(self) -> AbstractContextManager[object]:
        """Held by one process of the library at a time, around a check-then-write (the duplicate check and the
        write after it, a caption lease, check --repair's last look before moving a file).

        What a backend can hold: a file lock for the stores on this machine's disk (LanceDB, Milvus Lite). A
        Milvus server and Pinecone have no lock or conditional write and hold nothing: they return a
        `contextlib.nullcontext`, and must, since callers that need one writer tell by it that they have to
        allow for others (captions.py waits and re-reads its lease; see docs/scaling.md)."""
