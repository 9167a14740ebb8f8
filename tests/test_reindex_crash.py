"""kill -9 of `imagematch reindex` at each of its steps, the switch included: the library opens on the old
model or the new one, never neither and never half, and running `imagematch reindex` again finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imagematch.factory import build_library
from imagematch.library import Library, SimpleSearch
from imagematch.settings import Settings
from imagematch.store import generations
from testkit.cli_env import env_for
from testkit.images import PHOTOS, jpeg
from testkit.tinymodel import tiny_settings

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]  # where `-m testkit.crash_at` is found
NAMES = PHOTOS[:6]
LANCE = "imagematch.store.lancedb"
STEPS = {
    "staging made, empty": (f"{LANCE}:LanceStore.start_rebuild", 1, "after"),
    "one batch embedded": (f"{LANCE}:LanceStore.upsert", 1, "after"),
    "every batch embedded, not switched": ("imagematch.services.carrying:ChangeCarrier.carry_changes", 1, "before"),
    "pointer switched, old not retired": (f"{LANCE}:retire", 1, "before"),
    "switched, waiting for late writes": ("imagematch.services.carrying:ChangeCarrier.carry_changes", 2, "before"),
    "done but for maintenance": (f"{LANCE}:LanceStore.maintain", 1, "before"),
}


def _environment(settings: Settings) -> dict[str, str]:
    return {**os.environ, **env_for(settings, embed_batch_size=2, log_level="WARNING")}


def _reindex(settings: Settings, *crash: str) -> subprocess.CompletedProcess[str]:
    command = ["-m", "testkit.crash_at", *crash, "--", "reindex"] if crash else ["-m", "imagematch", "reindex"]
    return subprocess.run(
        [sys.executable, *command],
        env=_environment(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _whole(library: Library, ids: dict[str, str]) -> None:
    """Every image there once, each found first by its own picture: vectors and records of one model."""
    assert library.catalog.count() == len(ids)
    for name, image_id in ids.items():
        hit = library.search.simple(SimpleSearch(image=jpeg(name), k=1)).hits[0]
        assert hit.record.id == image_id and hit.score >= 0.99
        assert hit.record.model_id == library.embedder.model_id


@pytest.mark.parametrize("step", list(STEPS))
def test_kill_9_at_any_step_of_reindex_leaves_one_whole_library(
    step: str, tmp_path: Path, tiny_model_dir: Path, other_model_dir: Path
) -> None:
    old = tiny_settings(tmp_path, tiny_model_dir, runtime="torch")
    new = tiny_settings(tmp_path, other_model_dir, runtime="torch")
    first = build_library(old)
    ids = {name: first.ingest.add(jpeg(name), filename=f"{name}.jpg").record.id for name in NAMES}  # type: ignore[union-attr]
    old_model = first.embedder.model_id
    first.close()

    killed = _reindex(new, *(str(part) for part in STEPS[step]))
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    store = build_library(new).store
    stored = store.stored_model()
    pointers = store.generations()
    assert stored is not None and pointers.staging != pointers.live
    switched = stored[0] != old_model
    survivor = build_library(new if switched else old)
    survivor.verify_model()
    _whole(survivor, ids)  # serves the old library or the new one, whole
    survivor.close()

    again = _reindex(new)
    assert again.returncode == 0, again.stderr
    library = build_library(new)
    library.verify_model()
    _whole(library, ids)
    assert library.store.generations().staging == ""
    generations.sweep(library.store, older_than=0)
    assert library.store.list_documents(generations.RETIRED) == {}
    _whole(library, ids)
