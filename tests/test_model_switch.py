"""Reindex with another model while another process serves the library: what it writes meanwhile is carried
into the new generation, it moves to the new model by itself, and the old generation goes only after a while."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from imagematch.ai.adapter import TextAdapter
from imagematch.factory import build_library
from imagematch.library import RESET_PHRASE, Library, SimpleSearch
from imagematch.records import Conflict, NotFound, RecordPatch
from imagematch.settings import Settings
from imagematch.store import generations, tuned
from imagematch.store.tuned import Applied
from testkit.images import jpeg


def _add(library: Library, name: str) -> str:
    result = library.ingest.add(jpeg(name), filename=f"{name}.jpg")
    assert result.record is not None
    return result.record.id


def _notice_now(library: Library) -> None:
    """Let the next call read the generation pointer without waiting for FOLLOW_EVERY."""
    library.pairing._checked_at = 0.0


def _housekeeping_done(library: Library) -> None:
    if library.pairing._housekeeper is not None:
        library.pairing._housekeeper.join(60)


def _finds_itself(library: Library, name: str, image_id: str) -> bool:
    hits = library.search.simple(SimpleSearch(image=jpeg(name), k=1)).hits
    return bool(hits) and hits[0].record.id == image_id and hits[0].score >= 0.99


@pytest.fixture
def serving(settings: Settings) -> Iterator[Library]:
    library = build_library(settings)
    library.open()
    yield library
    library.close()


def test_writes_during_a_reindex_end_up_in_the_new_generation(
    serving: Library, settings: Settings, other_model_dir: Path
) -> None:
    ids = {name: _add(serving, name) for name in ("astronaut", "coffee", "rocket")}
    old_model = serving.embedder.model_id
    reindexer = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    during: dict[str, str] = {}

    def meanwhile(done: int, total: int) -> None:
        if during:
            return
        during["camera"] = _add(serving, "camera")  # uploaded, edited and deleted while the rebuild runs
        serving.catalog.update(ids["rocket"], RecordPatch(description="Saturn V", metadata={"tags": ["launch"]}))
        serving.catalog.delete(ids["astronaut"])
        assert serving.embedder.model_id == old_model  # still serving on the old model

    assert reindexer.maintenance.reindex(on_progress=meanwhile) == 3
    new_model = reindexer.embedder.model_id
    _notice_now(serving)
    assert serving.catalog.count() == 3  # the first call after the switch moves to the new generation
    assert serving.embedder.model_id == new_model != old_model
    with pytest.raises(NotFound):
        serving.catalog.get(ids["astronaut"])
    rocket = serving.catalog.get(ids["rocket"])
    assert (rocket.description, rocket.metadata, rocket.model_id) == ("Saturn V", {"tags": ["launch"]}, new_model)
    assert serving.catalog.get(during["camera"]).model_id == new_model
    for name in ("coffee", "rocket", "camera"):  # each found by its picture: embedded by the new model
        assert _finds_itself(serving, name, ids.get(name) or during[name])
    assert generations.pending_changes(serving.store) == []


def test_a_process_that_writes_before_it_notices_the_switch_loses_nothing(
    serving: Library, settings: Settings, other_model_dir: Path
) -> None:
    coffee = _add(serving, "coffee")
    reindexer = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    reindexer.maintenance.reindex()
    serving.pairing._checked_at = float("inf")  # it has not looked at the pointer since the switch
    late = _add(serving, "chelsea")
    assert generations.pending_changes(reindexer.store)  # noted for the new generation
    _notice_now(serving)
    serving.catalog.count()  # moves, and starts carrying what it noted in a thread of its own
    _housekeeping_done(serving)
    assert serving.embedder.model_id == reindexer.embedder.model_id
    assert {r.id for r in serving.catalog.page(limit=10)} == {coffee, late}
    assert _finds_itself(serving, "chelsea", late)
    assert _finds_itself(reindexer, "chelsea", late)


def test_the_old_generation_stays_for_readers_until_swept(
    serving: Library, settings: Settings, other_model_dir: Path
) -> None:
    _add(serving, "coffee")
    old = serving.store.generation_name
    reindexer = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    reindexer.maintenance.reindex()
    assert reindexer.store.list_documents(generations.RETIRED).keys() == {old}
    assert generations.sweep(reindexer.store) == []
    assert serving.pairing.active.store.count() == 1  # a request that started on the old generation finishes on it
    generations.note_changes(serving.pairing.active.store, ["0123456789abcdef-01234567"], "put")
    assert generations.sweep(reindexer.store, older_than=0) == []  # a change still to carry out of it
    for change in generations.pending_changes(reindexer.store):
        generations.forget_change(reindexer.store, change)
    assert generations.sweep(reindexer.store, older_than=0) == [old]
    _notice_now(serving)
    assert serving.catalog.count() == 1 and serving.store.generation_name != old


def test_a_process_started_with_the_old_setting_uses_the_librarys_model_and_says_so(
    serving: Library, settings: Settings, other_model_dir: Path
) -> None:
    coffee = _add(serving, "coffee")
    reindexer = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    reindexer.maintenance.reindex()
    restarted = build_library(settings)  # IMAGEMATCH_MODEL still names the old model
    restarted.verify_model()
    assert restarted.embedder.model_id == reindexer.embedder.model_id
    assert any("reindexed with" in warning for warning in restarted.warnings)
    assert _finds_itself(restarted, "coffee", coffee)


def test_reset_is_refused_while_a_reindex_runs(serving: Library, settings: Settings, other_model_dir: Path) -> None:
    _add(serving, "coffee")
    reindexer = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    reindexer.store.start_rebuild(reindexer.embedder.model_id, reindexer.embedder.dim)
    with pytest.raises(Conflict, match="reindex is running"):
        serving.catalog.reset(RESET_PHRASE)
    assert serving.catalog.count() == 1


def test_a_reindex_to_another_model_leaves_the_tuning_behind_with_the_old_generation(
    serving: Library, settings: Settings, other_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add(serving, "coffee")
    old_model, dim = serving.embedder.model_id, serving.embedder.dim
    weights = TextAdapter(("biscuit",), np.full((1, dim), 0.1, dtype=np.float32)).to_json()
    tuned.apply(serving.store, old_model, weights, Applied("v1", "2026-12-02T12:00:00+00:00", 50, 10, {}, {}))
    reindexer = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    reindexer.maintenance.reindex()
    assert reindexer.tuning.adapter() is None  # shifts of the old model's text space mean nothing to the new one
    assert tuned.read_state(reindexer.store, old_model).current is not None  # kept while the old generation is
    sweep = generations.sweep
    monkeypatch.setattr(generations, "sweep", lambda store: sweep(store, older_than=0))  # past RETIRE_AFTER
    reindexer.carrier.keep_house()
    assert tuned.read_state(reindexer.store, old_model).current is None
    assert reindexer.store.list_documents(tuned.ADAPTERS) == {}


def test_tune_is_refused_while_a_reindex_runs(serving: Library, settings: Settings, other_model_dir: Path) -> None:
    reindexer = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    reindexer.store.start_rebuild(reindexer.embedder.model_id, reindexer.embedder.dim)
    with pytest.raises(Conflict, match="a reindex is under way"):
        serving.tuning.tune()
