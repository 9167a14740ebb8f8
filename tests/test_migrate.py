"""Moving a library between stores: everything arrives, nothing is re-embedded, an interrupted copy resumes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from milvus_lite.server_manager import server_manager_instance

from imagematch.ai.adapter import TextAdapter
from imagematch.filters import parse_filter
from imagematch.migrate import MIGRATION, MigrationError, migrate
from imagematch.records import CaptionStatus, ImageMatchError, StoredImage, StoreMismatch
from imagematch.store import tuned
from imagematch.store.base import VectorStore
from imagematch.store.lancedb import LanceStore
from imagematch.store.milvus import MilvusStore
from imagematch.store.tuned import Applied
from tests.store.test_conformance import DIM, MODEL, item, unit


@pytest.fixture(autouse=True)
def _stop_milvus_lite() -> Iterator[None]:
    yield
    server_manager_instance.release_all()


def library(n: int) -> list[StoredImage]:
    """Records with captions, metadata and, for every other one, a words vector."""
    return [
        item(
            i,
            words=i % 2 == 0,
            caption=f"caption {i}",
            caption_status=CaptionStatus.DONE,
            metadata={"album": f"a{i % 3}", "n": i},
        )
        for i in range(n)
    ]


class Interrupted(Exception):
    pass


def stop_after_first_batch(done: int, total: int) -> None:
    if 0 < done < total:
        raise Interrupted


def assert_same_library(source: VectorStore, target: VectorStore) -> None:
    ids = sorted(source.ids())
    assert sorted(target.ids()) == ids and target.stored_model() == source.stored_model()
    assert target.get_many(ids) == source.get_many(ids)
    before, after = source.get_vectors(ids), target.get_vectors(ids)
    for image_id in ids:
        assert np.allclose(before[image_id][0], after[image_id][0], atol=1e-6)
        words_before, words_after = before[image_id][1], after[image_id][1]
        assert (words_before is None) == (words_after is None)
        assert words_before is None or np.allclose(words_before, words_after, atol=1e-6)  # type: ignore[arg-type]
    flt = parse_filter({"album": "a1"})
    assert [h.record.id for h in target.search(unit(4), k=5, flt=flt)] == [
        h.record.id for h in source.search(unit(4), k=5, flt=flt)
    ]
    assert [h.record.id for h in target.search(unit(1002), k=3, field="words")] == [
        h.record.id for h in source.search(unit(1002), k=3, field="words")
    ]


def test_lancedb_to_milvus_lite_resumes_after_an_interruption(tmp_path: Path) -> None:
    source = LanceStore(tmp_path / "lance")
    source.open(MODEL, DIM)
    source.upsert(library(1200))
    target = MilvusStore(str(tmp_path / "milvus.db"))
    with pytest.raises(Interrupted):
        migrate(source, target, batch=500, on_progress=stop_after_first_batch)
    assert target.count() == 500
    assert target.get_document(MIGRATION, "source") == "lancedb"  # servers refuse the partial copy
    progress: list[tuple[int, int]] = []
    report = migrate(
        source, MilvusStore(str(tmp_path / "milvus.db")), batch=500, on_progress=lambda *p: progress.append(p)
    )
    assert (report.total, report.skipped, report.copied) == (1200, 500, 700)
    assert (report.model_id, report.dim) == (MODEL, DIM)
    assert progress == [(500, 1200), (1000, 1200), (1200, 1200)]
    assert_same_library(source, target)
    assert target.get_document(MIGRATION, "source") is None


def test_the_search_tuning_comes_along_and_another_models_is_dropped(tmp_path: Path) -> None:
    source = LanceStore(tmp_path / "lance")
    source.open(MODEL, DIM)
    source.upsert(library(5))
    weights = TextAdapter(("biscuit",), np.full((1, DIM), 0.1, dtype=np.float32)).to_json()
    applied = Applied("v1", "2026-12-02T12:00:00+00:00", 100, 20, {"recall@5": 0.1}, {"recall@5": 0.8})
    tuned.apply(source, MODEL, weights, applied)
    target = MilvusStore(str(tmp_path / "milvus.db"))
    migrate(source, target)
    assert tuned.read_state(target, MODEL).current == applied
    assert tuned.read_weights(target, MODEL, "v1") == weights
    tuned.keep_only(target, "another-model")  # what the sweep does once a reindex to another model is done
    assert tuned.read_state(target, MODEL).current is None
    assert target.list_documents(tuned.ADAPTERS) == {}


def test_milvus_to_lancedb_round_trip(tmp_path: Path) -> None:
    source = MilvusStore(str(tmp_path / "milvus.db"))
    source.open(MODEL, DIM)
    source.upsert(library(60))
    target = LanceStore(tmp_path / "lance")
    report = migrate(source, target, batch=25)
    assert (report.total, report.copied, report.skipped) == (60, 60, 0)
    assert_same_library(source, target)
    again = migrate(source, target)  # nothing left to do
    assert (again.copied, again.skipped) == (0, 60)


def test_a_rerun_copies_records_edited_since_and_removes_those_deleted_since(tmp_path: Path) -> None:
    source = LanceStore(tmp_path / "lance")
    source.open(MODEL, DIM)
    source.upsert(library(30))
    target = MilvusStore(str(tmp_path / "milvus.db"))
    with pytest.raises(Interrupted):
        migrate(source, target, batch=10, on_progress=stop_after_first_batch)
    edited, deleted, *_ = sorted(target.ids())
    record = source.get(edited)
    assert record is not None
    source.update(replace(record, description="edited since"), unit(2024))  # a new words vector too
    source.delete([deleted])
    report = migrate(source, target, batch=10)
    assert (report.total, report.skipped, report.copied, report.removed) == (29, 8, 21, 1)
    assert_same_library(source, target)
    source.delete([sorted(source.ids())[0]])  # after a finished copy, a record the source lacks is not ours
    with pytest.raises(MigrationError, match="holds 28 records but the milvus store 29"):
        migrate(source, target)


def test_a_target_holding_another_model_is_refused(tmp_path: Path) -> None:
    source = LanceStore(tmp_path / "lance")
    source.open(MODEL, DIM)
    source.upsert(library(3))
    target = MilvusStore(str(tmp_path / "milvus.db"))
    target.open("another-model", DIM)
    with pytest.raises(StoreMismatch):
        migrate(source, target)
    assert target.count() == 0


def test_counts_are_verified_and_an_empty_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageMatchError, match="nothing to migrate"):
        migrate(LanceStore(tmp_path / "empty"), LanceStore(tmp_path / "other"))
    source = LanceStore(tmp_path / "lance")
    source.open(MODEL, DIM)
    source.upsert(library(3))
    target = LanceStore(tmp_path / "target")
    target.open(MODEL, DIM)
    target.upsert([item(99)])  # a record the source does not have
    with pytest.raises(MigrationError, match="holds 3 records but the lancedb store 4"):
        migrate(source, target)


def test_migrate_command_copies_to_milvus_and_the_copy_serves(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from imagematch.cli import app
    from imagematch.factory import build_library
    from imagematch.library import SimpleSearch
    from imagematch.settings import Settings
    from testkit.cli_env import env_for
    from testkit.images import jpeg

    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        model=f"local-dir:{tiny_model_dir}",  # type: ignore[call-arg]
        milvus_uri=str(tmp_path / "milvus.db"),
        background_removal="off",
        runtime="torch",
    )
    for name, value in env_for(settings).items():
        monkeypatch.setenv(name, value)
    library = build_library(settings)
    ids = [library.ingest.add(jpeg(n), filename=f"{n}.jpg").record.id for n in ("astronaut", "coffee")]  # type: ignore[union-attr]
    library.store.close()
    runner = CliRunner()
    refused = runner.invoke(app, ["migrate", "--to", "lancedb"])
    assert refused.exit_code != 0 and "already in lancedb" in refused.output
    result = runner.invoke(app, ["migrate", "--to", "milvus"])
    assert result.exit_code == 0, result.output
    assert "copied 2 records to milvus" in result.output and "IMAGEMATCH_STORE=milvus" in result.output
    moved = build_library(settings.model_copy(update={"store": "milvus"}))
    hit = moved.search.simple(SimpleSearch(image=jpeg("coffee"), k=1)).hits[0]
    assert hit.record.id == ids[1] and hit.score >= 0.99
    moved.store.close()
