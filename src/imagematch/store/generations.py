"""Generations: how a library moves to another model (reindex) while processes keep serving it, in every store.

A generation is the images of the library embedded by one model: a table (LanceDB), a collection (Milvus) or a
set of namespaces (Pinecone). Each store keeps a pointer to the live generation and, while a reindex runs, to
a staging one; switching is one write of the live pointer. What every store shares is here, written once:

- the guard: a staging pointer that names the live generation is a finished switch, never a staging to drop;
- retirement: the old generation is kept after a switch, for processes still reading it, and dropped by
  `sweep` once `RETIRE_AFTER` has passed (every process checks the pointer at least once a second);
- changes: while a rebuild runs (or a process has not yet noticed a switch), each write notes the image it
  touched and the generation it wrote to, so the change can be carried into the new generation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from imagematch.store.documents import Documents

log = logging.getLogger(__name__)

RETIRED = "_retired_generation"  # document kind: old generation -> when it stopped being live (epoch seconds)
CHANGES = "_generation_change"  # document kind: image id -> the change a newer generation still has to take
MODEL_SPECS = "_model_spec"  # document kind: model id -> how to load it (what IMAGEMATCH_MODEL said)
RETIRE_AFTER = 120.0  # seconds an old generation is kept after a switch
CHANGE_SETTLES = 60.0  # a noted change whose write is not visible after this long never happened (a crash)

ChangeKind = Literal["put", "delete"]


@dataclass(frozen=True, slots=True)
class Generations:
    """The store's pointers, read fresh: the live generation and the staging one ("" when none)."""

    live: str
    staging: str = ""


@dataclass(frozen=True, slots=True)
class Change:
    image_id: str
    kind: ChangeKind
    source: str  # the generation the write went to
    at: float


class GenerationPointers(Protocol):
    """A store object's generation, the library's pointers, and dropping a generation: what `sweep`, the change
    notes and `PointerDocuments` need besides documents (store/base.py's `Rebuilds` adds building and switching
    to a new generation)."""

    @property
    def generation_name(self) -> str:
        """The generation this store object reads and writes."""

    def generations(self) -> Generations:
        """The live and staging generations as stored now (a cheap read: every process checks it often)."""

    def drop_generation(self, name: str) -> None:
        """Remove the generation `name` and every record in it (callers never name the live one)."""


class GenerationStore(Documents, GenerationPointers, Protocol):
    """What this module needs of a store: its documents and its generations."""


def staging_name(staging: str | None, live: str | None) -> str:
    """The guard: a staging pointer equal to the live one is what a crash inside a switch leaves behind."""
    return "" if not staging or staging == live else staging


def retire(store: Documents, name: str) -> None:
    """Called after the switch wrote the new live pointer, so this never names the live generation."""
    if name:
        store.put_document(RETIRED, name, repr(time.time()))


def sweep(store: GenerationStore, *, older_than: float = RETIRE_AFTER) -> list[str]:
    """Drop the retired generations no process can still be reading and no noted change still has to be carried
    out of; the live and staging ones never."""
    pointers = store.generations()
    still_read = {change.source for change in pending_changes(store)}  # changes not carried out of it yet
    dropped = []
    for name, since in store.list_documents(RETIRED).items():
        if name in (pointers.live, pointers.staging):
            store.delete_document(RETIRED, name)
            continue
        if time.time() - float(since) < older_than or name in still_read:
            continue
        store.drop_generation(name)
        store.delete_document(RETIRED, name)
        dropped.append(name)
        log.info("removed the old generation %s of the library", name)
    return dropped


def note_changes(store: GenerationStore, image_ids: Sequence[str], kind: ChangeKind) -> None:
    """Remember that these images changed in this store's generation, for a newer one to take over."""
    now = time.time()
    for image_id in image_ids:
        value = json.dumps({"kind": kind, "source": store.generation_name, "at": now})
        store.put_document(CHANGES, image_id, value)


def pending_changes(store: Documents) -> list[Change]:
    changes = []
    for image_id, text in store.list_documents(CHANGES).items():
        value = json.loads(text)
        changes.append(Change(image_id, value["kind"], value["source"], float(value["at"])))
    return sorted(changes, key=lambda change: change.at)


def forget_change(store: Documents, change: Change) -> None:
    """Delete the note unless the image changed again since it was read."""
    text = store.get_document(CHANGES, change.image_id)
    if text is not None and float(json.loads(text)["at"]) == change.at:
        store.delete_document(CHANGES, change.image_id)


POINTERS = "_store"  # document kind: "library" and "staging" -> the pointer as JSON


class PointerDocuments:
    """The live and staging pointers of a store that keeps them as documents (Milvus, Pinecone): JSON with the
    model id, its dimension, the generation's name under `name_key` and (for the live one) the schema. A switch
    is one document write; the staging pointer it leaves behind names the live generation, which the guard
    reads as no staging."""

    def __init__(self, store: GenerationStore, name_key: str, first: str) -> None:
        self.store = store
        self.name_key = name_key
        self.first = first  # the live generation of a library whose pointer was never written

    def get(self, key: str) -> dict[str, Any] | None:
        text = self.store.get_document(POINTERS, key)
        return json.loads(text) if text else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.store.put_document(POINTERS, key, json.dumps(value))

    def stored_model(self) -> tuple[str, int] | None:
        library = self.get("library")
        return (library["model_id"], int(library["dim"])) if library else None

    def claim(self, model_id: str, dim: int, name: str, schema: int) -> None:
        """Write the live pointer of a new library."""
        self.put("library", {"model_id": model_id, "dim": dim, self.name_key: name, "schema": schema})

    def generations(self) -> Generations:
        pointers = {key: json.loads(text) for key, text in self.store.list_documents(POINTERS).items()}
        live = pointers["library"][self.name_key] if "library" in pointers else self.first
        return Generations(live, staging_name(pointers.get("staging", {}).get(self.name_key), live))

    def staging(self) -> dict[str, Any] | None:
        """The staging pointer, unless the guard reads it as a finished switch."""
        return self.get("staging") if self.generations().staging else None

    def resumable(self, model_id: str, dim: int, exists: Callable[[str], bool]) -> dict[str, Any] | None:
        """The staging pointer of an interrupted rebuild for this model whose generation `exists`; a staging
        generation for another model (or one gone) is dropped, and None returned."""
        staging = self.staging()
        if staging is None:
            return None
        name = staging[self.name_key]
        if (staging["model_id"], int(staging["dim"])) == (model_id, dim) and exists(name):
            return staging
        self.store.drop_generation(name)
        return None

    def switch(self, schema: int) -> dict[str, Any]:
        """Make the staging generation the live one (one write) and remove the staging pointer; returns it."""
        staging = self.staging()
        if staging is None:
            raise RuntimeError("no rebuild in progress")
        self.claim(staging["model_id"], int(staging["dim"]), staging[self.name_key], schema)
        self.store.delete_document(POINTERS, "staging")
        return staging
