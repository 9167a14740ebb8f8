"""kill -9 of `imagematch migrate` at each step that writes, from LanceDB to Milvus Lite and back: the source
library is untouched and still serves, running migrate again finishes the copy with the right figures, and
the target then holds the same records and vectors and serves the same searches as the source."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from milvus_lite.server_manager import server_manager_instance

from imagematch.factory import build_library, build_store
from imagematch.library import SimpleSearch
from imagematch.records import RecordPatch
from imagematch.settings import Settings
from testkit.cli_env import env_for
from testkit.images import PHOTOS, jpeg, look_alikes
from testkit.tinymodel import tiny_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]  # where `-m testkit.crash_at` is found
MILVUS = "imagematch.store.milvus"
LANCE = "imagematch.store.lancedb"
IMAGES = 12
BATCH = 5  # three batches: 5, 5 and 2
# step: (function, Nth call, before/after, records a re-run finds already in the target)
STEPS = {
    "target made, before its library pointer": (f"{MILVUS}:MilvusStore.put_document", 1, "before", 0),
    "pointer written, before the unfinished mark": (f"{MILVUS}:MilvusStore.put_document", 2, "before", 0),
    "marked unfinished, no records yet": (f"{MILVUS}:MilvusStore.upsert", 1, "before", 0),
    "first batch written": (f"{MILVUS}:MilvusStore.upsert", 1, "after", BATCH),
    "before the middle batch": (f"{MILVUS}:MilvusStore.upsert", 2, "before", BATCH),
    "middle batch written": (f"{MILVUS}:MilvusStore.upsert", 2, "after", 2 * BATCH),
    "every batch written, before maintenance": (f"{MILVUS}:MilvusStore.maintain", 1, "before", IMAGES),
    "inside the final verification": (f"{MILVUS}:MilvusStore.count", 1, "before", IMAGES),
    "verified, before the mark is removed": (f"{MILVUS}:MilvusStore.delete_document", 1, "before", IMAGES),
    "mark removed, before the report": (f"{MILVUS}:MilvusStore.delete_document", 1, "after", IMAGES),
}
BACK = {  # Milvus Lite to LanceDB: the writes that differ
    "marked unfinished, no records yet": (f"{LANCE}:LanceStore.upsert", 1, "before", 0),
    "before the middle batch": (f"{LANCE}:LanceStore.upsert", 2, "before", BATCH),
    "verified, before the mark is removed": (f"{LANCE}:LanceStore.delete_document", 1, "before", IMAGES),
}
SEARCHES = (["--image", "coffee.jpg"], ["--hybrid", "a cat asleep on a sofa"], ["--where", "album=b", "rocket"])


def _pictures() -> dict[str, bytes]:
    """Twelve distinct pictures: the bundled photos and two drawings of one layout in other colours."""
    red, green, _ = look_alikes()
    return {**{name: jpeg(name) for name in PHOTOS}, "red-star": red, "green-star": green}


@dataclass(frozen=True)
class Source:
    root: Path  # the library: data dir (store, originals) and model cache
    store: str
    view: dict[str, Any]  # what it serves (_view), before any migrate ran
    searches: list[list[tuple[str, float]]]  # the CLI's answers to SEARCHES


def _settings(root: Path, model_dir: Path, store: str = "lancedb") -> Settings:
    return tiny_settings(root, model_dir, runtime="torch", store=store)


def _environment(settings: Settings) -> dict[str, str]:
    return {**os.environ, **env_for(settings, log_level="WARNING")}


def _run(settings: Settings, *arguments: str, crash: tuple[object, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run `imagematch ARGUMENTS`, killed at `crash` when given."""
    module = ["-m", "testkit.crash_at", *(str(part) for part in crash), "--"] if crash else ["-m", "imagematch"]
    return subprocess.run(
        [sys.executable, *module, *arguments],
        env=_environment(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _cli(settings: Settings, *arguments: str, crash: tuple[object, ...] = ()) -> str:
    """The output of `imagematch ARGUMENTS`, which must exit 0 (or be killed at `crash`)."""
    ran = _run(settings, *arguments, crash=crash)
    expected = -signal.SIGKILL if crash else 0
    assert ran.returncode == expected, ran.stdout + ran.stderr
    return ran.stdout


def _never_part(target: Settings, source: Source) -> None:
    """Pointed at the target after a crash, the CLI serves none of the library or all of it; a part of it is
    refused, with how to finish the copy."""
    ran = _run(target, "search", "--json", "-k", str(2 * IMAGES), "--image", str(target.data_dir.parent / "coffee.jpg"))
    if ran.returncode == 0:
        assert len(json.loads(ran.stdout)["hits"]) in (0, IMAGES)
    else:
        assert f"unfinished copy of the library from the {source.store} store" in ran.stderr
        assert f"imagematch migrate --to {target.store}" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1


def _searches(settings: Settings) -> list[list[tuple[str, float]]]:
    """The CLI's answers to SEARCHES: ids and scores, best first."""
    answers = []
    for search in SEARCHES:
        arguments = [str(settings.data_dir.parent / a) if a.endswith(".jpg") else a for a in search]
        hits = json.loads(_cli(settings, "search", "--json", "-k", "6", *arguments))["hits"]
        answers.append([(hit["id"], hit["score"]) for hit in hits])
    return answers


def _view(settings: Settings) -> dict[str, Any]:
    """What the library serves: its count, every record, both vectors of each, and a search by each picture."""
    library = build_library(settings)
    ids = sorted(library.store.ids())
    vectors = library.store.get_vectors(ids)
    view = {
        "count": library.catalog.count(),
        "model": library.store.stored_model(),
        "records": {image_id: library.catalog.get(image_id) for image_id in ids},
        "vectors": {i: (v.tolist(), None if w is None else w.tolist()) for i, (v, w) in vectors.items()},
        "searches": {
            name: [(hit.record.id, hit.score) for hit in library.search.simple(SimpleSearch(image=data, k=3)).hits]
            for name, data in _pictures().items()
        },
    }
    library.close()
    server_manager_instance.release_all()  # Milvus Lite takes one process per file: free it for the CLI
    return view


def _source(root: Path, model_dir: Path, store: str) -> Source:
    """A library of twelve images with metadata, descriptions and captions (two with neither, so without a
    words vector), built once and copied for each test."""
    settings = _settings(root, model_dir, store)
    library = build_library(settings)
    for n, (name, data) in enumerate(_pictures().items()):
        described = "a cat asleep on a sofa" if name == "chelsea" else f"photo number {n} of {name}"
        description = "" if n in (4, 8) else described
        result = library.ingest.add(
            data, filename=f"{name}.jpg", description=description, metadata={"album": "ab"[n % 2]}
        )
        assert result.status == "added" and result.record is not None, (name, result.reason)
        if n % 3 == 0:
            library.captions.apply(result.record.id, f"a caption for {name}")
    library.close()
    (root / "coffee.jpg").write_bytes(jpeg("coffee"))
    view = _view(settings)
    assert view["count"] == IMAGES and any(words is None for _, words in view["vectors"].values())
    return Source(root, store, view, _searches(settings))


@pytest.fixture(scope="module")
def lancedb_source(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Source:
    return _source(tmp_path_factory.mktemp("lancedb"), tiny_model_dir, "lancedb")


@pytest.fixture(scope="module")
def milvus_source(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Source:
    return _source(tmp_path_factory.mktemp("milvus"), tiny_model_dir, "milvus")


def _same_library(source: Settings, target: Settings) -> None:
    """The target holds exactly the source's records and both vectors of each."""
    before, after = build_store(source), build_store(target)
    ids = sorted(before.ids())
    assert sorted(after.ids()) == ids and after.stored_model() == before.stored_model()
    assert after.get_many(ids) == before.get_many(ids)
    vectors = after.get_vectors(ids)
    for image_id, (image, words) in before.get_vectors(ids).items():
        assert np.allclose(vectors[image_id][0], image, atol=1e-6)
        assert (words is None) == (vectors[image_id][1] is None)
        assert words is None or np.allclose(vectors[image_id][1], words, atol=1e-6)  # type: ignore[arg-type]
    before.close()
    after.close()
    server_manager_instance.release_all()  # Milvus Lite takes one process per file: free it for the CLI


def _same_answers(got: list[list[tuple[str, float]]], expected: list[list[tuple[str, float]]]) -> None:
    assert [[i for i, _ in hits] for hits in got] == [[i for i, _ in hits] for hits in expected]
    assert np.allclose([s for hits in got for _, s in hits], [s for hits in expected for _, s in hits], atol=1e-5)


def _crash_and_rerun(source: Source, root: Path, model_dir: Path, to: str, step: tuple[str, int, str, int]) -> None:
    """Copy `source` to `root`, kill migrate --to `to` at `step`, check the source, run it again, check both."""
    shutil.copytree(source.root, root)
    settings = _settings(root, model_dir, source.store)
    function, nth, when, already = step

    _cli(settings, "migrate", "--to", to, "--batch", str(BATCH), crash=(function, nth, when))
    assert _view(settings) == source.view  # the source is untouched and serves as before
    target = _settings(root, model_dir, to)
    _never_part(target, source)

    report = _cli(settings, "migrate", "--to", to, "--batch", str(BATCH))
    assert f"copied {IMAGES - already} records to {to} ({already} were already there; {IMAGES} in all" in report
    _same_library(settings, target)
    _same_answers(_searches(target), source.searches)


@pytest.mark.parametrize("step", list(STEPS))
def test_kill_9_at_any_step_of_migrate_leaves_the_source_serving_and_a_rerun_finishes(
    step: str, lancedb_source: Source, tmp_path: Path, tiny_model_dir: Path
) -> None:
    _crash_and_rerun(lancedb_source, tmp_path / "library", tiny_model_dir, "milvus", STEPS[step])


@pytest.mark.parametrize("step", list(BACK))
def test_kill_9_migrating_back_to_lancedb(
    step: str, milvus_source: Source, tmp_path: Path, tiny_model_dir: Path
) -> None:
    _crash_and_rerun(milvus_source, tmp_path / "library", tiny_model_dir, "lancedb", BACK[step])


def test_a_rerun_after_the_source_served_again_carries_its_edits_and_deletions(
    lancedb_source: Source, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """After a crash the old library serves, so users may edit and delete before migrate is run again."""
    shutil.copytree(lancedb_source.root, tmp_path / "library")
    settings = _settings(tmp_path / "library", tiny_model_dir)
    _cli(settings, "migrate", "--to", "milvus", "--batch", str(BATCH), crash=STEPS["first batch written"][:3])
    target = build_store(_settings(tmp_path / "library", tiny_model_dir, "milvus"))
    edited, deleted, *_ = sorted(target.ids())
    target.close()
    server_manager_instance.release_all()
    library = build_library(settings)
    library.catalog.update(edited, RecordPatch(description="a new description", metadata={"album": "c"}))
    library.catalog.delete(deleted)
    library.close()

    report = _cli(settings, "migrate", "--to", "milvus", "--batch", str(BATCH))
    # The edited record is copied again with the rest, the deleted one removed, the others kept.
    copied, kept = IMAGES - BATCH + 1, BATCH - 2
    assert f"copied {copied} records to milvus ({kept} were already there; {IMAGES - 1} in all" in report
    assert "removed 1 record the lancedb store no longer holds" in report
    target_settings = _settings(tmp_path / "library", tiny_model_dir, "milvus")
    _same_library(settings, target_settings)
    _same_answers(_searches(target_settings), _searches(settings))
