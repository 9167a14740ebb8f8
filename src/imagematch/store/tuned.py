"""The tuned state of a library: for each model, the adapter `imagematch tune` applied and the ones before it,
kept as store documents so that every process on the library reads the same one.

A model's state is one small document (which version is applied, what tuning measured, the earlier versions
for `tune --undo`); each version's weights are a document of their own, written before the state names them,
so a crash between the two writes leaves an unnamed version behind (swept by the next tune), never a state
naming weights that are not there. The state is keyed by model id: an adapter is only meaningful for the model
whose text vectors it was trained on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from imagematch.store.documents import Documents

log = logging.getLogger(__name__)

STATES = "_tuning"  # document kind: model id -> TunedState as JSON
ADAPTERS = "_tuning_adapter"  # document kind: "<model id>@<version>" -> the adapter's weights
KEPT_EARLIER = 5  # versions `tune --undo` can go back through


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied tuning: its version and what it measured."""

    version: str
    tuned_at: str  # ISO time
    pairs: int  # image-text pairs trained on
    held_out: int  # pairs evaluated on, not trained on
    before: dict[str, float]
    after: dict[str, float]

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Applied:
        return cls(
            str(value["version"]),
            str(value["tuned_at"]),
            int(value["pairs"]),
            int(value["held_out"]),
            {str(k): float(v) for k, v in value["before"].items()},
            {str(k): float(v) for k, v in value["after"].items()},
        )


@dataclass(frozen=True, slots=True)
class TunedState:
    current: Applied | None = None
    earlier: tuple[Applied, ...] = field(default=())  # newest last

    def to_json(self) -> str:
        return json.dumps({"current": asdict(self.current) if self.current else None,
                           "earlier": [asdict(a) for a in self.earlier]})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> TunedState:
        value = json.loads(text)
        current = Applied.from_dict(value["current"]) if value.get("current") else None
        return cls(current, tuple(Applied.from_dict(a) for a in value.get("earlier", [])))


def _adapter_key(model_id: str, version: str) -> str:
    return f"{model_id}@{version}"


def read_state(store: Documents, model_id: str) -> TunedState:
    """The model's state; a damaged document reads as no tuning (searches go on; the next tune replaces it)."""
    text = store.get_document(STATES, model_id)
    if not text:
        return TunedState()
    try:
        return TunedState.from_json(text)
    except (ValueError, KeyError, TypeError) as error:
        log.error("the search tuning of %s is damaged (%s): reading it as none", model_id, error)
        return TunedState()


def read_weights(store: Documents, model_id: str, version: str) -> str | None:
    """A version's adapter weights, as imagematch.ai.adapter wrote them."""
    return store.get_document(ADAPTERS, _adapter_key(model_id, version))


def apply(store: Documents, model_id: str, weights: str, applied: Applied) -> TunedState:
    """Make these adapter weights the model's tuning; the one they replace can be gone back to."""
    store.put_document(ADAPTERS, _adapter_key(model_id, applied.version), weights)
    state = read_state(store, model_id)
    earlier = (*state.earlier, state.current) if state.current else state.earlier
    kept, dropped = earlier[-KEPT_EARLIER:], earlier[:-KEPT_EARLIER]
    new = TunedState(applied, kept)
    store.put_document(STATES, model_id, new.to_json())
    for old in dropped:
        store.delete_document(ADAPTERS, _adapter_key(model_id, old.version))
    return new


def undo(store: Documents, model_id: str) -> TunedState:
    """Go back to the tuning before the current one (or to none); LookupError when nothing is tuned."""
    state = read_state(store, model_id)
    if state.current is None:
        raise LookupError(model_id)
    previous = state.earlier[-1] if state.earlier else None
    new = TunedState(previous, state.earlier[:-1])
    store.put_document(STATES, model_id, new.to_json())
    store.delete_document(ADAPTERS, _adapter_key(model_id, state.current.version))
    return new


def sweep(store: Documents, model_id: str) -> None:
    """Remove the weights of this model's versions that no state names (left by a crash in `apply`)."""
    state = read_state(store, model_id)
    named = {a.version for a in (state.current, *state.earlier) if a is not None}
    prefix = f"{model_id}@"
    for key in store.list_documents(ADAPTERS):
        if key.startswith(prefix) and key[len(prefix) :] not in named:
            store.delete_document(ADAPTERS, key)


def keep_only(store: Documents, model_id: str) -> None:
    """Forget the tuning of every other model: what is tuned for a model the library left no longer applies.
    Weights go first, then the state that names them, so a crash between leaves a state the next pass finds."""
    others = [other for other in store.list_documents(STATES) if other != model_id]
    if not others:
        return
    for key in store.list_documents(ADAPTERS):
        if not key.startswith(f"{model_id}@"):
            store.delete_document(ADAPTERS, key)
    for other in others:
        store.delete_document(STATES, other)


def forget(store: Documents) -> None:
    """Forget every model's tuning (a reset of the library): each state first, so none is left naming weights
    that are gone."""
    for model_id in store.list_documents(STATES):
        store.delete_document(STATES, model_id)
    for key in store.list_documents(ADAPTERS):
        store.delete_document(ADAPTERS, key)


def copy(source: Documents, target: Documents, model_id: str) -> None:
    """Bring the model's tuning along to another store (`imagematch migrate`): weights first, then the state."""
    text = source.get_document(STATES, model_id)
    if text is None:
        target.delete_document(STATES, model_id)
        return
    state = TunedState.from_json(text)
    for applied in (state.current, *state.earlier):
        if applied is not None:
            weights = source.get_document(ADAPTERS, _adapter_key(model_id, applied.version))
            if weights is not None:
                target.put_document(ADAPTERS, _adapter_key(model_id, applied.version), weights)
    target.put_document(STATES, model_id, text)
