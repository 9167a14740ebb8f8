"""Batch jobs that outlive the request that started them: index a folder, or reindex the library with another
model, in the background, with progress.

A job's status is a small JSON document kept in the store, so any server process (and a restarted one) can
report it. A job whose process died is reported as interrupted; running it again finishes the rest, because
images already stored come back as duplicates.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from imagematch.ai.embedder import Embedder
from imagematch.files import image_files
from imagematch.library import Library, Upload
from imagematch.records import Conflict, ImageMatchError, IngestResult, InvalidInput, NotFound, NotSupported
from imagematch.services.tuning import Cancelled
from imagematch.store.base import Documents

log = logging.getLogger(__name__)

MODEL_JOBS = ("reindex", "ocr", "tune")  # the jobs the Model page starts and shows; the others are batch uploads
JobState = Literal["running", "done", "failed", "interrupted", "cancelled"]
DOCUMENT_KIND = "job"
MAX_REPORTED_ITEMS = 10_000  # beyond this, counts stay exact but per-file lines are dropped
_SAVE_EVERY_S = 0.5
_KEEP_JOBS = 20


@dataclass(slots=True)
class JobItem:
    filename: str
    status: str
    image_id: str | None = None
    reason: str = ""


@dataclass(slots=True)
class JobStatus:
    id: str
    kind: str
    folder: str
    state: JobState = "running"
    total: int = 0
    done: int = 0
    added: int = 0
    duplicates: int = 0
    failed: int = 0
    items: list[JobItem] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    message: str = ""
    owner: str = ""
    model: str = ""  # a reindex: the model it switches the library to

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> JobStatus:
        data = json.loads(text)
        data["items"] = [JobItem(**item) for item in data.get("items", [])]
        return cls(**data)

    @property
    def finished(self) -> bool:
        return self.state != "running"


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_alive(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine: we cannot tell, so we trust its own reports
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobRunner:
    """Starts and reports batch jobs (folder indexing, reindex); one at a time per process."""

    def __init__(self, library: Library) -> None:
        self.library = library
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()

    @property
    def _history(self) -> Documents:
        """Where job statuses are kept: the library's documents, the same in every generation."""
        return self.library.store

    def start_folder(self, folder: Path, kind: str = "samples") -> JobStatus:
        if not folder.is_dir():
            raise InvalidInput(f"the folder {folder} does not exist; create it and put images in it")
        with self._lock:
            self._refuse_if_busy()
            files = list(image_files([folder], recursive=True, confine=True))
            status = self._start(JobStatus(_new_id(), kind, str(folder), total=len(files)), self._run, files)
        log.info("job %s: indexing %d files from %s", status.id, len(files), folder)
        return status

    def start_reindex(self, model: str) -> JobStatus:
        """Re-embed the library with `model` (what IMAGEMATCH_MODEL takes) while the server goes on serving."""
        embedder, spec = self.library.pairing.prepare_model(model)
        if embedder.model_id == self.library.embedder.model_id:
            raise InvalidInput(f"the library is already embedded with {model}")
        with self._lock:
            self._refuse_if_busy()
            status = JobStatus(_new_id(), "reindex", "", model=spec, total=self.library.catalog.count())
            self._start(status, self._run_reindex, embedder)
        log.info("job %s: reindexing %d images with %s", status.id, status.total, spec)
        return status

    def start_text_reading(self) -> JobStatus:
        """Read the text in every picture not read yet (what `imagematch ocr` does), in the background."""
        if self.library.embedding.text_engine == "off":
            raise InvalidInput("reading text in pictures is off: set IMAGEMATCH_OCR=auto or on and restart")
        with self._lock:
            self._refuse_if_busy()
            status = self._start(JobStatus(_new_id(), "ocr", ""), self._run_text_reading)
        log.info("job %s: reading the text in pictures", status.id)
        return status

    def start_tuning(self) -> JobStatus:
        """Tune the search to the library's own words (what `imagematch tune` does), in the background."""
        with self._lock:
            self._refuse_if_busy()
            status = self._start(JobStatus(_new_id(), "tune", ""), self._run_tuning)
        log.info("job %s: tuning the search", status.id)
        return status

    def _start(self, status: JobStatus, work: Callable[..., None], *args: object) -> JobStatus:
        """Save the job as running and run `work(status, *args)` in its own thread; under self._lock."""
        status.started_at, status.owner = datetime.now(UTC).isoformat(), _owner()
        self._save(status)
        self._cancel.clear()
        self._thread = threading.Thread(target=work, args=(status, *args), name=f"job-{status.id}", daemon=True)
        self._thread.start()
        return status

    def _refuse_if_busy(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            raise Conflict("a batch job is already running; wait for it to finish")

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def get(self, job_id: str) -> JobStatus:
        text = self._history.get_document(DOCUMENT_KIND, job_id)
        if text is None:
            raise NotFound(job_id, what="batch job")
        return self._checked(JobStatus.from_json(text))

    def recent(self) -> list[JobStatus]:
        jobs = [JobStatus.from_json(t) for t in self._history.list_documents(DOCUMENT_KIND).values()]
        return [self._checked(j) for j in sorted(jobs, key=lambda j: j.started_at, reverse=True)]

    def _checked(self, status: JobStatus) -> JobStatus:
        """A running job whose process is gone was interrupted; say so instead of 'running' forever."""
        if status.state == "running" and status.owner != _owner() and not _process_alive(status.owner):
            status.state = "interrupted"
            status.message = "the server stopped while this job ran; start it again to do the rest"
            self._save(status)
        return status

    def _save(self, status: JobStatus) -> None:
        self._history.put_document(DOCUMENT_KIND, status.id, status.to_json())

    def _prune(self) -> None:
        jobs = sorted(self.recent(), key=lambda j: j.started_at, reverse=True)
        for old in jobs[_KEEP_JOBS:]:
            self._history.delete_document(DOCUMENT_KIND, old.id)

    def _saving_progress(self, status: JobStatus) -> Callable[[int, int], None]:
        """A progress callback that keeps the job's counts and saves them every _SAVE_EVERY_S at most."""
        last_save = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last_save
            status.done, status.total = done, total
            if time.monotonic() - last_save >= _SAVE_EVERY_S:
                last_save = time.monotonic()
                self._save(status)

        return progress

    @contextmanager
    def _finishing(
        self,
        status: JobStatus,
        failure: Callable[[Exception], str],
        summary: Callable[[], str],
        expected: tuple[type[Exception], ...] = (),
    ) -> Iterator[None]:
        """Run a job's work in the block, then save the job as finished, prune old ones and log `summary()`. An
        error ends it failed with `failure(error)` as its message, logged with its traceback unless it is
        `expected` (the library's state, not a fault)."""
        try:
            yield
        except Exception as error:
            if isinstance(error, expected):
                log.warning("job %s: %s", status.id, error)
            else:
                log.exception("job %s failed", status.id)
            status.state = "failed"
            status.message = failure(error)
        status.finished_at = datetime.now(UTC).isoformat()
        self._save(status)
        self._prune()
        log.info("job %s %s: %s", status.id, status.state, summary())

    def _run_text_reading(self, status: JobStatus) -> None:
        def failure(error: Exception) -> str:
            if isinstance(error, NotSupported):  # the library must change first: starting again would not help
                return f"{_reason(error)}."
            return f"{_reason(error)}. What was read so far is kept; start it again."

        with self._finishing(status, failure, lambda: "reading text", expected=(NotSupported,)):
            report = self.library.maintenance.read_texts(on_progress=self._saving_progress(status), cancel=self._cancel)
            status.done, status.total, status.failed = report.done, report.total, report.failed
            status.added = report.with_text
            status.state = "cancelled" if self._cancel.is_set() else "done"
            status.message = f"Read {report.done - report.failed} pictures: {report.with_text} hold text" + (
                f"; {report.failed} could not be read." if report.failed else "."
            )

    def _run_reindex(self, status: JobStatus, embedder: Embedder) -> None:
        def failure(error: Exception) -> str:
            switched = self.library.store.stored_model() == (embedder.model_id, embedder.dim)
            now = f"The library uses {status.model} already" if switched else "The library still uses its model"
            return f"{_reason(error)}. {now}."

        with self._finishing(status, failure, lambda: f"reindex with {status.model}"):
            self.library.maintenance.reindex(
                on_progress=self._saving_progress(status), embedder=embedder, model_spec=status.model
            )
            status.state = "done"
            status.message = (
                f"The library now uses {status.model}. Set IMAGEMATCH_MODEL={status.model} so that the "
                "setting says so too."
            )

    def _run(self, status: JobStatus, files: list[Path]) -> None:
        last_save = 0.0

        def record(result: IngestResult) -> None:
            nonlocal last_save
            status.done += 1
            if result.status == "added":
                status.added += 1
            elif result.status == "duplicate":
                status.duplicates += 1
            else:
                status.failed += 1
            if len(status.items) < MAX_REPORTED_ITEMS:
                path = Path(result.filename)
                name = str(path.relative_to(status.folder)) if path.is_relative_to(status.folder) else path.name
                status.items.append(JobItem(name, result.status, result.image_id, result.reason))
            now = time.monotonic()
            if now - last_save >= _SAVE_EVERY_S:
                last_save = now
                self._save(status)

        def summary() -> str:
            return f"{status.added} added, {status.duplicates} duplicates, {status.failed} failed"

        with self._finishing(status, _reason, summary):
            self.library.ingest.add_many((Upload.from_path(f) for f in files), on_result=record, cancel=self._cancel)
            status.state = "cancelled" if self._cancel.is_set() else "done"

    def _run_tuning(self, status: JobStatus) -> None:
        saving = self._saving_progress(status)

        def progress(step: str, done: int, total: int) -> None:
            status.message = f"{step[:1].upper()}{step[1:]}…"
            saving(done, total)

        def failure(error: Exception) -> str:
            reason = _reason(error)
            if isinstance(error, ImageMatchError):  # the library's own sentence, in lower case
                reason = f"{reason[:1].upper()}{reason[1:]}"
            return f"{reason}. Nothing was changed."

        # too few pairs, a reindex under way: the library's state, not a fault
        with self._finishing(status, failure, lambda: "tuning", expected=(ImageMatchError,)):
            try:
                report = self.library.tuning.tune(on_progress=progress, cancel=self._cancel)
            except Cancelled:
                status.state = "cancelled"
                status.message = "Cancelled. Nothing was changed."
                return
            status.state = "done"
            before, after = report.before["recall@5"], report.after["recall@5"]
            verdict = f"Applied (version {report.version})" if report.applied else "Not applied"
            status.message = (
                f"{verdict}: {report.reason}. Held-out recall@5 {before:.2f} → {after:.2f} on "
                f"{report.held_out} of {report.pairs} pairs; general queries keep "
                f"{report.after['general@10']:.0%} of their top 10."
            )


def _reason(error: Exception) -> str:
    """What went wrong, for a job's message: the error's own words, or its type when it has none."""
    return str(error) or type(error).__name__
