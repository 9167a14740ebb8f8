"""The caption worker: captions images in the background, politely and persistently.

Ingest never waits for it: images are stored and searchable at once with caption status `pending`. The
worker takes pending images from the store (so a restart resumes), keeps to a request rate, retries
timeouts, 429 and 5xx with exponential backoff up to a cap, and marks an image `failed` with the reason after
the last try. A configuration problem (no key, a rejected key) stops it with one log line and a visible
status instead of a retry loop; fixing the setting and restarting resumes the queue. Any other error, from the
captioner or the store, is logged once with the image it concerns, the image is marked `failed` with the
reason where the store still takes it, and the worker goes on: its thread never dies while its state says
it is working.

Several processes (servers) may run a worker on one library. Each image goes to one worker at a time: a
worker takes a lease on it first, a store document naming the worker and when the lease expires (renewed
before every request, released when done), so a worker that dies frees its images after `LEASE_S`. The lease
is taken under the store's exclusive lock where it has one (LanceDB, Milvus Lite); elsewhere the worker writes
it, waits `SETTLE_S` and reads it back, and the last writer wins. The request rate is the library's: each
worker keeps a heartbeat document, counts the live workers before every request and keeps to its share.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from imagematch import media
from imagematch.ai.captioner import Captioner, CaptionError, CaptionLength
from imagematch.library import Library
from imagematch.records import CaptionStatus, ImageMatchError, ImageRecord
from imagematch.store.base import Documents

log = logging.getLogger(__name__)

WorkerState = Literal["off", "idle", "working", "stopped", "error"]
_IDLE_POLL_S = 5.0
# After an error the worker could not even record (the store takes no writes), it waits before trying again:
# this long at first, doubling up to the cap, so a full disk does not cost a caption request every few seconds.
_STORE_ERROR_PAUSE_S = 5.0
_STORE_ERROR_PAUSE_CAP_S = 300.0
LEASES = "_caption_lease"  # document kind: image id -> {"owner", "until"} while a worker captions it
WORKERS = "_caption_worker"  # document kind: worker -> until when it counts as alive (its heartbeat)
LEASE_S = 120.0  # a lease not renewed for this long belongs to a worker that died
HEARTBEAT_S = 5.0  # a worker renews its heartbeat this often; one silent for 3 beats is gone
SETTLE_S = 0.5  # stores without a lock: how long a lease written must stand before it counts as taken


class CaptionsNotRecorded(ImageMatchError):
    """The library takes no caption results now (its store refuses writes): captioning must wait."""


@dataclass(frozen=True, slots=True)
class CaptionerStatus:
    name: str
    state: WorkerState
    message: str
    pending: int
    failed: int


class RateLimiter:
    """At most `rate` starts per second, shared by every caller; `share` is this process's part of the rate
    (1/N with N workers on the library), read at each slot, so a worker joining slows the others at once."""

    def __init__(self, rate: float, share: Callable[[], float] = lambda: 1.0) -> None:
        self.rate = rate
        self.share = share
        self._last = -1e9
        self._lock = threading.Lock()

    @property
    def interval(self) -> float:
        return 1.0 / self.rate

    def wait(self, stop: threading.Event) -> bool:
        """Block until the next slot; False if asked to stop meanwhile."""
        part = self.share()
        with self._lock:
            now = time.monotonic()
            start = max(now, self._last + self.interval / part)
            self._last = start
        return not stop.wait(max(0.0, start - now))


class CaptionWorker:
    def __init__(
        self,
        library: Library,
        captioner: Captioner | None,
        *,
        setup_error: str = "",
        length: CaptionLength = "normal",
        rate: float = 2.0,
        retries: int = 4,
        backoff: float = 2.0,
        backoff_cap: float = 60.0,
    ) -> None:
        self.library = library
        self.captioner = captioner
        self.length = length
        self.retries = retries
        self.backoff = backoff
        self.backoff_cap = backoff_cap
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this worker, in documents
        self.limiter = RateLimiter(rate, self._share)
        self._beat_at = 0.0
        self._workers = 1
        self._last_error = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: WorkerState = "off" if captioner is None and not setup_error else "idle"
        self._message = setup_error
        if setup_error:
            self._fail_setup(setup_error)

    @property
    def name(self) -> str:
        return self.captioner.name if self.captioner else "none"

    @property
    def paused(self) -> bool:
        """True when a configuration problem stops captions (cheap: no store queries, for every page)."""
        return self._broken()

    @property
    def message(self) -> str:
        return self._message

    @property
    def _documents(self) -> Documents:
        """Where leases and heartbeats are kept: the library's documents, the same in every generation."""
        return self.library.store

    def status(self) -> CaptionerStatus:
        counts = self.library.captions.counts() if self.library.captions.wanted else {}
        return CaptionerStatus(
            name=self.name,
            state=self._state,
            message=self._message,
            pending=counts.get("pending", 0),
            failed=counts.get("failed", 0),
        )

    def start(self) -> None:
        if self.captioner is None or self._state == "error" or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="captions", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """New work arrived (an upload, a retry): look at the queue now instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._leave()
        if self._state != "error":
            self._state = "stopped"

    def run_until_empty(self, on_caption: Callable[[], None] | None = None) -> tuple[int, int]:
        """Caption everything pending in this thread (the CLI); returns (captioned, failed). Raises
        CaptionsNotRecorded when the library takes no writes, rather than asking for the same caption again.
        Images another worker holds are left to it; this returns once nothing is pending."""
        captioned = failed = 0
        self._beat()
        try:
            while self.captioner is not None and not self._broken() and not self._stop.is_set():
                batch = self.library.captions.pending()
                if not batch:
                    break
                taken = False
                for record in batch:
                    if self._stop.is_set() or self._broken():
                        break
                    outcome = self._take(record)
                    taken = taken or outcome is not None
                    captioned += outcome is True
                    failed += outcome is False
                    if outcome is not None and on_caption is not None:
                        on_caption()
                if not taken:
                    self._stop.wait(1.0)  # every pending image is another worker's now
        finally:
            self._leave()
        return captioned, failed

    def _loop(self) -> None:
        log.info("caption worker started (%s, %.1f requests/s for the library)", self.name, self.limiter.rate)
        pause = _STORE_ERROR_PAUSE_S
        while not self._stop.is_set():
            try:
                self._beat()
                batch = self.library.captions.pending()
                if not batch:
                    self._state = "idle"
                    self._clear_error()
                    self._wake.wait(_IDLE_POLL_S)
                    self._wake.clear()
                    continue
                self._state = "working"
                taken = False
                for record in batch:
                    if self._stop.is_set() or self._broken():
                        break
                    taken = self._take(record) is not None or taken
                self._clear_error()
                pause = _STORE_ERROR_PAUSE_S
                if not taken:
                    self._wake.wait(1.0)  # every pending image is another worker's now
                    self._wake.clear()
            except Exception as error:  # the thread never dies: say why once, wait, try again
                message = str(error) if isinstance(error, CaptionsNotRecorded) else f"{type(error).__name__}: {error}"
                self._note_error(f"caption worker: {message}", f"; trying again in {pause:.0f} s")
                self._state = "idle"
                self._stop.wait(pause)
                pause = min(pause * 2, _STORE_ERROR_PAUSE_CAP_S)
            if self._broken():
                return

    # sharing the library with other workers

    def _take(self, record: ImageRecord) -> bool | None:
        """Caption one image if no other worker holds it and it still waits: True, False as _caption says, None
        when it was not this worker's to caption."""
        if not self._claim(record.id):
            return None
        try:
            current = self.library.store.get(record.id)  # another worker may have captioned it meanwhile
            if current is None or current.caption_status != CaptionStatus.PENDING:
                return None
            return self._guarded_caption(current)
        finally:
            with contextlib.suppress(Exception):  # an unreleased lease expires
                self._release(record.id)

    def _claim(self, image_id: str) -> bool:
        # The store is read once, outside the lock: `library.store` may move to a new generation, which waits
        # for the library's writes, and one of those may be waiting for this lock.
        store = self._documents
        lock = store.exclusive()
        with lock:
            held = store.get_document(LEASES, image_id)
            if held is not None:
                lease = json.loads(held)
                if lease["owner"] != self.owner and float(lease["until"]) > time.time():
                    return False
            self._renew(image_id, store)
        if not isinstance(lock, contextlib.nullcontext):
            return True
        # No lock (a Milvus server, Pinecone): a worker that read the lease free just before this write writes
        # its own within SETTLE_S; the last write stands, and only its writer goes on.
        self._stop.wait(SETTLE_S)
        held = store.get_document(LEASES, image_id)
        return held is not None and json.loads(held)["owner"] == self.owner

    def _renew(self, image_id: str, store: Documents | None = None) -> None:
        lease = {"owner": self.owner, "until": time.time() + LEASE_S}
        (store or self._documents).put_document(LEASES, image_id, json.dumps(lease))

    def _release(self, image_id: str) -> None:
        store = self._documents
        held = store.get_document(LEASES, image_id)
        if held is not None and json.loads(held)["owner"] == self.owner:
            store.delete_document(LEASES, image_id)

    def _beat(self) -> None:
        """Say this worker is alive (at most every HEARTBEAT_S), so the others leave it its share of the rate."""
        now = time.time()
        if now - self._beat_at < HEARTBEAT_S:
            return
        self._documents.put_document(WORKERS, self.owner, repr(now + 3 * HEARTBEAT_S))
        self._beat_at = now

    def _leave(self) -> None:
        with contextlib.suppress(Exception):  # a heartbeat left behind expires
            if self._beat_at:
                self._documents.delete_document(WORKERS, self.owner)
                self._beat_at = 0.0

    def _share(self) -> float:
        """This worker's part of the library's rate: 1 / the workers alive now (read before every request)."""
        try:
            self._beat()
            now = time.time()
            alive = {self.owner}
            for owner, until in self._documents.list_documents(WORKERS).items():
                if float(until) > now:
                    alive.add(owner)
                elif float(until) < now - LEASE_S:
                    self._documents.delete_document(WORKERS, owner)  # long gone
            self._workers = len(alive)
        except Exception as error:
            self._note_error(f"caption worker: cannot count the workers, keeping {self._workers}: {error}")
        return 1.0 / self._workers

    def _note_error(self, message: str, then: str = "") -> None:
        """Log an error once, not on every retry, and show it in the status while it lasts."""
        if message != self._last_error:
            log.error("%s%s", message, then)
        self._last_error = message
        if not self._broken():
            self._message = message

    def _clear_error(self) -> None:
        if self._last_error and not self._broken():
            self._message = ""
        self._last_error = ""

    def _guarded_caption(self, record: ImageRecord) -> bool | None:
        """_caption, with any error it lets through logged once and recorded on the image (False). When even that
        cannot be written, CaptionsNotRecorded: the same image would come back from the queue at once."""
        try:
            return self._caption(record)
        except Exception as error:
            reason = f"unexpected error: {type(error).__name__}: {error}"
            try:
                self.library.captions.fail(record.id, reason)  # which logs it
            except Exception as store_error:
                raise CaptionsNotRecorded(
                    f"caption of {record.id} failed ({reason}), and the library cannot record it: {store_error}"
                ) from None
            return False

    def _caption(self, record: ImageRecord) -> bool | None:
        """True when captioned, False when marked failed, None when interrupted or paused."""
        assert self.captioner is not None
        data = self.library.blobs.read_original(record.id)
        if data is None:
            self.library.captions.fail(record.id, "the original file is missing")
            return False
        try:
            image = media.decode(data, max_pixels=max(self.library.settings.max_pixels, record.width * record.height))
        except Exception as error:
            self.library.captions.fail(record.id, f"cannot read the original: {error}")
            return False
        delay = self.backoff
        for attempt in range(self.retries + 1):
            if not self.limiter.wait(self._stop):
                return None
            self._renew(record.id)  # the lease lasts through every try
            try:
                text = self.captioner.caption(image.image, self.length)
            except CaptionError as error:
                failure = error
            else:
                self.library.captions.apply(record.id, text)
                return True
            if failure.fatal:
                self._fail_setup(str(failure))
                return None
            if attempt == self.retries or not failure.retry:
                tries = f" after {attempt + 1} tries" if attempt else ""
                self.library.captions.fail(record.id, f"{failure}{tries}")
                return False
            log.info("caption %s: %s; retrying in %.0fs", record.id, failure, delay)
            if self._stop.wait(delay):
                return None
            delay = min(delay * 2, self.backoff_cap)
        return None

    def _broken(self) -> bool:
        """The configuration is wrong (no key, a rejected key); nothing is tried until it is fixed."""
        return self._state == "error"

    def _fail_setup(self, message: str) -> None:
        if self._state != "error":
            log.error("captions are paused: %s", message)
        self._state = "error"
        self._message = message
