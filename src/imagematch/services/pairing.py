"""The model and the generation of the store it embeds for, paired: what every service works on.

A reindex in any process switches the library to another model and generation. Each operation is pinned to
one pair for its whole run (`pinned`); a running process notices a switch by itself and moves (`follow`); every
write notes what it touches while a rebuild runs (`noting`), so the new generation takes it over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from imagematch.ai.embedder import Embedder
from imagematch.ai.model_source import PRESETS
from imagematch.migrate import MIGRATION, MigrationError
from imagematch.records import InvalidInput, ModelUnavailable, StoreMismatch
from imagematch.store import generations
from imagematch.store.base import VectorStore

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_P = ParamSpec("_P")


FOLLOW_EVERY = 0.5  # seconds between two reads of the store's generation pointer by a running process
HOUSEKEEPING_EVERY = 10.0  # seconds between passes that carry leftover changes and drop retired generations


@dataclass(frozen=True, slots=True)
class Active:
    """The model and the generation of the store it embeds for: they change together, never one alone."""

    embedder: Embedder
    store: VectorStore


class Pairing:
    """The pair in use, and how a process keeps it: pinned per operation, moved on after a switch."""

    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        warnings: list[str],
        *,
        model_spec: str = "",
        resolve_model: Callable[[str], tuple[Embedder, str]] | None = None,
    ) -> None:
        self.active = Active(embedder, store)
        self._pins = threading.local()  # the Active an operation started with, for the whole operation
        self.model_spec = model_spec  # how another process loads this model (IMAGEMATCH_MODEL, resolved)
        # IMAGEMATCH_MODEL's value -> its embedder (not loaded yet) and the value that names it anywhere
        self.resolve_model = resolve_model
        self.keeps_house = False  # a long-running process (the server) carries leftover changes and sweeps
        self.housework: Callable[[], None] = _nothing  # one housekeeping pass (ChangeCarrier.keep_house)
        self.warnings = warnings  # degraded features, shared with the Library
        self._checked_at = 0.0
        self._housekept_at = 0.0
        self._follow_lock = threading.Lock()
        self._housekeeper: threading.Thread | None = None
        self._open_lock = threading.Lock()
        self.write_lock = threading.RLock()
        self.opened = False

    @property
    def embedder(self) -> Embedder:
        return self.current().embedder

    @property
    def store(self) -> VectorStore:
        return self.current().store

    def current(self) -> Active:
        pinned: Active | None = getattr(self._pins, "active", None)
        if pinned is not None:
            return pinned
        self.follow()
        return self.active

    @contextlib.contextmanager
    def pinned(self, active: Active | None = None) -> Iterator[Active]:
        """Run an operation on one model and one generation, even if the library moves on meanwhile."""
        outer: Active | None = getattr(self._pins, "active", None)
        if active is None and outer is not None:
            yield outer
            return
        self._pins.active = chosen = active or self.current()
        try:
            yield chosen
        finally:
            self._pins.active = outer

    def run_in(self, active: Active, work: Callable[..., _T], *args: object) -> _T:
        """`work(*args)` pinned to `active`: for the worker threads of a pinned operation."""
        with self.pinned(active):
            return work(*args)

    def follow(self) -> None:
        """Notice a switch made by a reindex in any process, and move to its model and generation.

        The pointer is read at most every FOLLOW_EVERY seconds; the new model loads while requests carry on
        with the old one, which is kept (retired) long enough for that."""
        if not self.opened or time.monotonic() - self._checked_at < FOLLOW_EVERY:
            return
        if not self._follow_lock.acquire(blocking=False):
            return  # another thread is checking or moving
        try:
            self._checked_at = time.monotonic()
            live = self.active.store.generations().live
            if live != self.active.store.generation_name:
                self._move_to(live)
            if self.keeps_house and time.monotonic() - self._housekept_at >= HOUSEKEEPING_EVERY:
                self.start_housekeeping()
        except Exception:
            log.exception("could not follow the library's generation; trying again")
        finally:
            self._follow_lock.release()

    def _move_to(self, live: str) -> None:
        store = self.active.store.at(live)
        stored = store.stored_model()
        if stored is None:
            raise ModelUnavailable(f"the library's generation {live} names no model")
        model_id, dim = stored
        embedder, spec = self.active.embedder, self.model_spec
        if model_id != embedder.model_id:
            spec = store.get_document(generations.MODEL_SPECS, model_id) or ""
            if not spec or self.resolve_model is None:
                raise ModelUnavailable(
                    f"the library was reindexed with model {model_id}, which this process cannot load: "
                    f"restart it with IMAGEMATCH_MODEL set to that model"
                )
            log.info("the library was reindexed with %s: loading it", model_id)
            embedder = self.resolve_model(spec)[0]
            embedder.load()
            if (embedder.model_id, embedder.dim) != (model_id, dim):
                raise ModelUnavailable(f"{spec} loads as {embedder.model_id}, not the library's {model_id}")
        store.open(model_id, dim)
        with self.write_lock:  # writes are pinned; this keeps the two attributes from being seen apart
            self.active = Active(embedder, store)
            self.model_spec = spec
        log.info("now serving generation %s of the library with %s", live, model_id)
        self.start_housekeeping()

    @property
    def model_presets(self) -> dict[str, str]:
        """The short names IMAGEMATCH_MODEL takes, and the model each stands for."""
        return dict(PRESETS)

    def prepare_model(self, model: str) -> tuple[Embedder, str]:
        """The embedder for what IMAGEMATCH_MODEL would say (not loaded yet), and the value that names it
        anywhere; InvalidInput when it is unknown or cannot be had here."""
        if self.resolve_model is None:
            raise InvalidInput("this library cannot switch models")
        try:
            return self.resolve_model(model.strip())
        except ModelUnavailable as error:
            raise InvalidInput(str(error)) from error

    def start_housekeeping(self) -> None:
        self._housekept_at = time.monotonic()
        if self._housekeeper is None or not self._housekeeper.is_alive():
            self._housekeeper = threading.Thread(target=self.housework, name="generations", daemon=True)
            self._housekeeper.start()

    @contextlib.contextmanager
    def noting(self, ids: Sequence[str], kind: generations.ChangeKind) -> Iterator[None]:
        """Around a write: while a rebuild runs, or when this process has not noticed a switch yet, note the
        images it touches so the new generation takes the change over (`ChangeCarrier.carry_changes`). Noted before (a
        crash in the write leaves the note) and again after: a carry that read the image before the write
        landed, and forgot the first note, finds the second."""
        store = self.store
        pointers = store.generations()
        noting = bool(pointers.staging) or pointers.live != store.generation_name
        if noting:
            generations.note_changes(store, ids, kind)
        yield
        if noting:
            generations.note_changes(store, ids, kind)

    def verify_model(self) -> None:
        """Refuse a store built with another model, before any work (no model load needed); unless a reindex
        (from the web UI, or the CLI) switched the library to a model this process can load: then use that.
        A store that `imagematch migrate` is still copying into is refused too: it holds part of the library."""
        copying_from = self.store.get_document(MIGRATION, "source")
        if copying_from:
            raise MigrationError(
                f"the {self.store.name} store holds an unfinished copy of the library from the {copying_from} "
                f"store: finish it with `imagematch migrate --to {self.store.name}` (IMAGEMATCH_STORE={copying_from}), "
                f"or serve from {copying_from}"
            )
        stored = self.store.stored_model()
        if stored is not None and stored[0] != self.embedder.model_id:
            spec = self.store.get_document(generations.MODEL_SPECS, stored[0])
            if spec and self.resolve_model is not None:
                embedder = self.resolve_model(spec)[0]
                if embedder.model_id == stored[0]:
                    warning = (
                        f"IMAGEMATCH_MODEL is {self.embedder.model_id}, but the library was reindexed with "
                        f"{spec} ({stored[0]}): using that. Set IMAGEMATCH_MODEL={spec} to make it the setting."
                    )
                    log.warning(warning)
                    self.warnings.append(warning)
                    self.active = Active(embedder, self.active.store)
                    self.model_spec = spec
                    return
            raise StoreMismatch(
                f"the library was built with model {stored[0]}, but IMAGEMATCH_MODEL is "
                f"{self.embedder.model_id}. Run `imagematch reindex` to re-embed every image with the "
                f"configured model, or set IMAGEMATCH_MODEL back to {stored[0]}"
            )

    def open(self) -> None:
        """Open the store for the model; called lazily by anything that needs vectors."""
        if not self.opened:
            with self._open_lock:
                if not self.opened:
                    self.verify_model()
                    self.store.open(self.embedder.model_id, self.embedder.dim)
                    self.opened = True

    def close(self) -> None:
        """Wait for a housekeeping pass that is under way, then close the store."""
        if self._housekeeper is not None:
            self._housekeeper.join()
        self.active.store.close()


def _nothing() -> None:
    """Housekeeping until the Library gives the pairing its real work."""


class _OnOneGeneration(Protocol):
    pairing: Pairing


_S = TypeVar("_S", bound=_OnOneGeneration)


def one_generation(method: Callable[Concatenate[_S, _P], _T]) -> Callable[Concatenate[_S, _P], _T]:
    """A service operation that runs on one model and generation throughout (see Pairing.pinned)."""

    def pinned(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with self.pairing.pinned():
            return method(self, *args, **kwargs)

    pinned.__name__, pinned.__doc__ = method.__name__, method.__doc__
    return pinned
