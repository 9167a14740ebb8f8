"""Several processes on one library (two servers and the CLI, as users run them): each test here runs real
separate processes, because what it checks is what one process's locks cannot give."""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.synchronize
import os
import subprocess
import sys
import threading
import traceback
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from imagematch.blobs import LOST_AND_FOUND, LocalBlobStore
from imagematch.factory import build_caption_worker, build_library
from imagematch.integrity import check
from imagematch.records import ImageRecord, StoredImage
from imagematch.settings import Settings
from imagematch.store.lancedb import LanceStore
from testkit.fake_moondream import running
from testkit.images import distinct_jpegs
from testkit.server_process import ServerProcess
from testkit.tinymodel import tiny_settings

pytestmark = pytest.mark.slow

_OPENERS = 3
_TRIES = 3
_DIM = 8
_PICTURES = 24
_BEFORE = 30  # images in the library before check --repair starts
_DURING = 40  # uploads while it runs
_PENDING = 12  # images waiting for a caption
_CAPTION_RATE = 4.0  # requests per second, for the library


def _open_new_library(
    path: str, n: int, start: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue[tuple[int, str]]
) -> None:
    """One process: open the library at the same moment as the others, then write a record and a document."""
    try:
        start.wait(60)
        store = LanceStore(Path(path))
        store.open("model-a", _DIM)
        now = datetime.now(UTC)
        record = ImageRecord(f"{n:02x}" * 8, f"{n:016x}", f"hash-{n}", f"{n}.jpg", 1, 1, 1, "JPEG", now, now, "model-a")
        vector = np.zeros(_DIM, dtype=np.float32)
        vector[n % _DIM] = 1.0
        store.upsert([StoredImage(record, vector)])
        store.put_document("opened-by", str(n), "yes")
        out.put((n, "ok"))
    except BaseException:
        out.put((n, traceback.format_exc()))


def test_processes_opening_a_new_library_at_once_all_succeed_and_share_one_library(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for attempt in range(_TRIES):
        path = tmp_path / f"library-{attempt}"
        start = context.Barrier(_OPENERS)
        out: multiprocessing.Queue[tuple[int, str]] = context.Queue()
        processes = [
            context.Process(target=_open_new_library, args=(str(path), n, start, out)) for n in range(_OPENERS)
        ]
        for process in processes:
            process.start()
        outcomes = dict(out.get(timeout=300) for _ in processes)
        for process in processes:
            process.join(60)
        failed = {n: text for n, text in outcomes.items() if text != "ok"}
        assert not failed, f"try {attempt}: " + "\n".join(failed.values())
        store = LanceStore(path)
        store.open("model-a", _DIM)
        assert store.count() == _OPENERS  # one images table, holding every process's record
        assert sorted(store.list_documents("opened-by")) == [str(n) for n in range(_OPENERS)]
        assert store.stored_model() == ("model-a", _DIM)


_SOURCE = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's code, whatever is installed


def _settings(tmp_path: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    """What the processes of one library share: the settings, and this checkout's code."""
    return {
        "PYTHONPATH": os.pathsep.join(p for p in (_SOURCE, os.environ.get("PYTHONPATH", "")) if p),
        "IMAGEMATCH_DATA_DIR": str(tmp_path / "data"),
        "IMAGEMATCH_MODEL": f"local-dir:{model_dir}",
        "IMAGEMATCH_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "IMAGEMATCH_BACKGROUND_REMOVAL": "off",
        "IMAGEMATCH_CAPTIONER": "none",
        "IMAGEMATCH_RUNTIME": "torch",
        "IMAGEMATCH_RATE_LIMIT": "0",
        "IMAGEMATCH_EMBED_BATCH_SIZE": "2",
        "IMAGEMATCH_LOG_LEVEL": "INFO",
        **extra,
    }


def test_two_index_processes_store_one_record_per_picture(tmp_path: Path, tiny_model_dir: Path) -> None:
    """One process indexes JPEGs, the other PNG re-encodings of the same pictures (the same pixels, so pHash
    distance 0, but other files and other ids), both at once: each picture is stored once."""
    jpegs, pngs = tmp_path / "jpegs", tmp_path / "pngs"
    jpegs.mkdir()
    pngs.mkdir()
    pictures = distinct_jpegs(_PICTURES, seed=5)
    for n, data in enumerate(pictures):
        (jpegs / f"photo-{n:03d}.jpg").write_bytes(data)
        Image.open(io.BytesIO(data)).save(pngs / f"photo-{n:03d}.png", "PNG")
    environment = {**os.environ, **_settings(tmp_path, tiny_model_dir)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "imagematch", "index", str(folder)],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for folder in (jpegs, pngs)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
    settings = tiny_settings(tmp_path, tiny_model_dir, runtime="torch")
    library = build_library(settings)
    records = list(library.catalog.iter_records())
    by_phash = Counter(record.phash for record in records)
    assert len(records) == _PICTURES, f"{len(records)} records for {_PICTURES} pictures:\n" + "\n".join(outputs)
    assert max(by_phash.values()) == 1
    assert len(by_phash) == _PICTURES


def _upload_until(url: str, images: list[bytes], stop: threading.Event, acked: list[str], errors: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        for n, data in enumerate(images):
            if stop.is_set():
                return
            sent = http.post("/api/v1/images", files={"file": (f"live-{n:03d}.jpg", data, "image/jpeg")})
            if sent.status_code == 201:
                acked.append(sent.json()["id"])
            else:
                errors.append(f"{sent.status_code}: {sent.text[:200]}")


def test_check_repair_beside_a_live_server_never_touches_an_acknowledged_upload(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """A server process takes uploads while `check --repair` runs again and again in this process: every upload
    the server acknowledged keeps its original and its thumbnail, and nothing goes to lost+found."""
    settings = _settings(tmp_path, tiny_model_dir)
    images = distinct_jpegs(_BEFORE + _DURING, seed=9)
    server = ServerProcess(settings, tmp_path / "server.log")
    stop = threading.Event()
    acked: list[str] = []
    errors: list[str] = []
    try:
        server.start()
        _upload_until(server.url, images[:_BEFORE], stop, acked, errors)
        checker = build_library(tiny_settings(tmp_path, tiny_model_dir, runtime="torch"))
        client = threading.Thread(target=_upload_until, args=(server.url, images[_BEFORE:], stop, acked, errors))
        client.start()
        repairs = 0
        while client.is_alive():
            report = check(checker, repair=True)
            repairs += 1
            moved = [p for p in report.problems if p.kind.startswith("orphan")]
            assert not moved, f"check --repair took files of live uploads: {moved}"
        client.join()
        assert not errors, errors
        assert repairs >= 3 and len(acked) == _BEFORE + _DURING
        blobs = LocalBlobStore(tmp_path / "data")
        lost = [image_id for image_id in acked if not blobs.has_original(image_id) or not blobs.has_thumbnail(image_id)]
        assert not lost, f"{len(lost)} acknowledged uploads lost a file"
        assert not (tmp_path / "data" / LOST_AND_FOUND).exists()
        assert check(checker).healthy
    finally:
        stop.set()
        server.stop()


def _caption_settings(root: Path, model_dir: Path, endpoint: str) -> Settings:
    return tiny_settings(root, model_dir, runtime="torch").model_copy(
        update={
            "captioner": "moondream",
            "moondream_endpoint": endpoint,
            "caption_rate": _CAPTION_RATE,
            "caption_retries": 0,
        }
    )


def _caption_all(
    root: str,
    model_dir: str,
    endpoint: str,
    start: multiprocessing.synchronize.Barrier,
    out: multiprocessing.Queue[str],
) -> None:
    """One server's caption worker, in a process of its own: caption what is pending, then say how many."""
    try:
        settings = _caption_settings(Path(root), Path(model_dir), endpoint)
        library = build_library(settings)
        library.open()
        worker = build_caption_worker(settings, library)
        start.wait(120)
        captioned, failed = worker.run_until_empty()
        out.put(f"captioned {captioned}, failed {failed}")
    except BaseException:
        out.put(traceback.format_exc())


def test_two_caption_workers_caption_each_image_once_within_the_librarys_rate(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Two processes run a caption worker on one library and one captioner: each pending image is sent once,
    and the captioner sees the library's rate, not twice it."""
    with running() as fake:
        settings = _caption_settings(tmp_path, tiny_model_dir, fake.endpoint)
        library = build_library(settings)
        for n, data in enumerate(distinct_jpegs(_PENDING, seed=3)):
            assert library.ingest.add(data, filename=f"{n}.jpg").status == "added"
        assert library.captions.counts()["pending"] == _PENDING
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(2)
        out: multiprocessing.Queue[str] = context.Queue()
        workers = [
            context.Process(target=_caption_all, args=(str(tmp_path), str(tiny_model_dir), fake.endpoint, start, out))
            for _ in range(2)
        ]
        for worker in workers:
            worker.start()
        said = [out.get(timeout=300) for _ in workers]
        for worker in workers:
            worker.join(60)
        assert all(line.startswith("captioned") for line in said), "\n".join(said)
        assert all(not line.startswith("captioned 0,") for line in said), said  # both took a share
        times = sorted(float(request["at"]) for request in fake.requests)  # type: ignore[arg-type]
    assert library.captions.counts() == {"none": 0, "pending": 0, "done": _PENDING, "failed": 0}
    assert len(times) == _PENDING, f"{len(times)} caption requests for {_PENDING} images ({said})"
    # The library's rate: in any stretch of time, at most rate × its length requests, and one more per worker
    # (each may start at once).
    for first in range(len(times)):
        for last in range(first + 1, len(times)):
            allowed = _CAPTION_RATE * (times[last] - times[first]) + 2
            assert last - first <= allowed, f"{last - first + 1} requests in {times[last] - times[first]:.2f} s"
