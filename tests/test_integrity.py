"""`imagematch check`, and crash safety: kill -9 in the middle of an index run loses nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from imagematch.cli import app
from imagematch.factory import build_library
from imagematch.fingerprint import file_hash
from imagematch.integrity import check
from imagematch.library import Library
from imagematch.settings import Settings
from imagematch.store.batches import UNFINISHED, Batch
from testkit.cli_env import env_for
from testkit.images import jpeg


def _fill(library: Library) -> list[str]:
    return [library.ingest.add(jpeg(n), filename=f"{n}.jpg").record.id for n in ("astronaut", "coffee", "rocket")]  # type: ignore[union-attr]


def test_a_healthy_library_passes(library: Library) -> None:
    _fill(library)
    report = check(library)
    assert report.healthy and report.records == 3 and report.originals == 3


def test_check_finds_problems_and_repair_fixes_without_losing_originals(library: Library, settings: Settings) -> None:
    ids = _fill(library)
    blobs = library.blobs
    thumbnail = blobs.thumbnail_path(ids[0])
    assert thumbnail is not None
    thumbnail.unlink()
    blobs.put_original("ffffffffffffffff-00000000", "jpg", jpeg("moon"))
    blobs.put_thumbnail("eeeeeeeeeeeeeeee-00000000", b"thumb")
    stray = settings.data_dir / "originals" / "ab" / ".half-written.jpg.x.tmp"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"partial")
    left_behind = time.time() - 3600  # an hour ago: a crash's leftover, not a write in progress
    os.utime(stray, (left_behind, left_behind))
    in_flight = settings.data_dir / "originals" / "ab" / ".being-written.jpg.y.tmp"
    in_flight.write_bytes(b"partial")
    original = blobs.original_path(ids[1])
    assert original is not None
    original.unlink()

    found = {p.kind for p in check(library).problems}
    assert found == {"missing_thumbnail", "orphan_original", "orphan_thumbnail", "temporary_file", "missing_original"}

    repaired = check(library, repair=True)
    assert {p.kind for p in repaired.unfixed} == {"missing_original"}  # only the user can decide that one
    assert blobs.thumbnail_path(ids[0]) is not None
    rescued = settings.data_dir / "lost+found" / "ffffffffffffffff-00000000.jpg"
    assert rescued.read_bytes() == jpeg("moon")
    assert not stray.exists()
    assert in_flight.exists()  # a server may be writing it now
    assert {p.kind for p in check(library).problems} == {"missing_original"}


def test_check_reports_a_batch_that_never_finished_and_repair_removes_it(library: Library) -> None:
    """A store batch marker (store/batches.py) older than the settle time is a writer that crashed; a younger one
    is a batch in flight, whose originals are not orphans."""
    _fill(library)
    store = library.store
    crashed = Batch("crashed", store.generation_name, ("aaaaaaaaaaaaaaaa-00000000",), time.time() - 3600)
    in_flight = Batch("in-flight", store.generation_name, ("bbbbbbbbbbbbbbbb-00000000",), time.time())
    for batch in (crashed, in_flight):
        store.put_document(UNFINISHED, batch.key, batch.to_json())
    library.blobs.put_original(in_flight.ids[0], "jpg", jpeg("moon"))  # written before its record, as ingest does

    found = check(library).problems
    assert [(p.kind, p.subject) for p in found] == [("unfinished_batch", "crashed")]
    repaired = check(library, repair=True)
    assert repaired.healthy and [p.kind for p in repaired.problems] == ["unfinished_batch"]
    assert set(store.list_documents(UNFINISHED)) == {"in-flight"}
    assert library.blobs.has_original(in_flight.ids[0])  # not taken for an orphan


def test_check_command_exit_codes(library: Library, settings: Settings, monkeypatch: object) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    for name, value in env_for(settings).items():
        mp.setenv(name, value)
    try:
        ids = _fill(library)
        runner = CliRunner()
        assert runner.invoke(app, ["check"]).exit_code == 0
        path = library.blobs.thumbnail_path(ids[2])
        assert path is not None
        path.unlink()
        broken = runner.invoke(app, ["check"])
        assert broken.exit_code == 1 and "missing_thumbnail" in broken.output and "--repair" in broken.output
        fixed = runner.invoke(app, ["check", "--repair"])
        assert fixed.exit_code == 0 and "fixed" in fixed.output
    finally:
        mp.undo()


def _noise_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    paths = []
    for n in range(count):
        blocks = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)  # distinct low-frequency content per image
        image = Image.fromarray(blocks).resize((320, 240), Image.Resampling.BICUBIC)
        path = folder / f"img-{n:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def test_kill_9_during_index_loses_nothing_and_a_rerun_finishes(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "photos"
    paths = _noise_images(folder, 300)
    data_dir = tmp_path / "data"
    settings = Settings(
        _env_file=None, data_dir=data_dir, model=f"local-dir:{tiny_model_dir}", background_removal="off"
    )  # type: ignore[call-arg]
    environment = {**os.environ, **env_for(settings, embed_batch_size=8, log_level="WARNING")}
    command = [sys.executable, "-m", "imagematch", "index", str(folder)]
    originals = data_dir / "originals"
    rng = random.Random(11)
    stored_before = 0
    for trial in range(3):
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = stored_before + rng.randint(5, 60)  # kill once this many originals are on disk
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if originals.exists() and sum(1 for _ in originals.glob("*/*.jpg")) >= target:
                break
            time.sleep(0.02)
        assert process.poll() is None, f"trial {trial}: the index finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

        library = build_library(settings)  # the store always reopens
        records = list(library.catalog.iter_records())
        assert len({r.file_hash for r in records}) == len(records)  # nothing stored twice
        for record in records:  # every record has its original and thumbnail
            assert library.blobs.has_original(record.id) and library.blobs.has_thumbnail(record.id)
        assert len(records) >= stored_before
        stored_before = len(records)

    finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr
    library = build_library(settings)
    assert library.catalog.count() == len(paths)
    assert {r.file_hash for r in library.catalog.iter_records()} == {file_hash(p.read_bytes()) for p in paths}
    report = check(library, repair=True)
    assert report.healthy, report.unfixed
