"""The caption worker: captions images in the background, politely and persistently.

Ingest never waits for it: images are stored and searchable at once with caption status `pending`. The
worker takes pending images from the store (so a restart resumes), keeps to a request rate, retries
timeouts, 429 and 5xx with exponential backoff up to a cap, and marks an image `failed` with the reason after
the last try. A configuration problem (no key, a rejected key) stops it with one log line and a visible
status instead of a retry loop; fixing the setting and restarting resumes the queue. Any other error, from the
captioner or the store, is logged once with the image it concerns, the image is marked `failed` with the
reason where the store still takes it, and the worker goes on: its thread never dies while its state says
it is working.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from imagematch import media
from imagematch.ai.captioner import Captioner, CaptionError, CaptionLength
from imagematch.library import Library
from imagematch.records import ImageMatchError, ImageRecord

log = logging.getLogger(__name__)

WorkerState = Literal["off", "idle", "working", "stopped", "error"]
_IDLE_POLL_S = 5.0
# After an error the worker could not even record (the store takes no writes), it waits before trying again:
# this long at first, doubling up to the cap, so a full disk does not cost a caption request every few seconds.
_STORE_ERROR_PAUSE_S = 5.0
_STORE_ERROR_PAUSE_CAP_S = 300.0


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
    """At most `rate` starts per second, shared by every caller."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        """Block until the next slot; False if asked to stop meanwhile."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
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
        self.limiter = RateLimiter(rate)
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

    def status(self) -> CaptionerStatus:
        counts = self.library.caption_counts() if self.library.captions_wanted else {}
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
        if self._state != "error":
            self._state = "stopped"

    def run_until_empty(self, on_caption: Callable[[], None] | None = None) -> tuple[int, int]:
        """Caption everything pending in this thread (the CLI); returns (captioned, failed). Raises
        CaptionsNotRecorded when the library takes no writes, rather than asking for the same caption again."""
        captioned = failed = 0
        while self.captioner is not None and not self._broken() and not self._stop.is_set():
            batch = self.library.pending_captions()
            if not batch:
                break
            for record in batch:
                if self._stop.is_set() or self._broken():
                    break
                outcome = self._guarded_caption(record)
                captioned += outcome is True
                failed += outcome is False
                if on_caption is not None:
                    on_caption()
        return captioned, failed

    def _loop(self) -> None:
        log.info("caption worker started (%s, %.1f requests/s)", self.name, 1 / self.limiter.interval)
        pause = _STORE_ERROR_PAUSE_S
        while not self._stop.is_set():
            try:
                batch = self.library.pending_captions()
            except Exception as error:
                log.error("caption worker: cannot read the queue: %s", error)
                batch = []
            if not batch:
                self._state = "idle"
                self._wake.wait(_IDLE_POLL_S)
                self._wake.clear()
                continue
            self._state = "working"
            try:
                for record in batch:
                    if self._stop.is_set() or self._broken():
                        break
                    self._guarded_caption(record)
                pause = _STORE_ERROR_PAUSE_S
            except CaptionsNotRecorded as error:
                log.error("%s; trying again in %.0f s", error, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, _STORE_ERROR_PAUSE_CAP_S)
            if self._broken():
                return

    def _guarded_caption(self, record: ImageRecord) -> bool | None:
        """_caption, with any error it lets through logged once and recorded on the image (False). When even that
        cannot be written, CaptionsNotRecorded: the same image would come back from the queue at once."""
        try:
            return self._caption(record)
        except Exception as error:
            reason = f"unexpected error: {type(error).__name__}: {error}"
            try:
                self.library.fail_caption(record.id, reason)  # which logs it
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
            self.library.fail_caption(record.id, "the original file is missing")
            return False
        try:
            image = media.decode(data, max_pixels=max(self.library.settings.max_pixels, record.width * record.height))
        except Exception as error:
            self.library.fail_caption(record.id, f"cannot read the original: {error}")
            return False
        delay = self.backoff
        for attempt in range(self.retries + 1):
            if not self.limiter.wait(self._stop):
                return None
            try:
                text = self.captioner.caption(image.image, self.length)
            except CaptionError as error:
                failure = error
            else:
                self.library.apply_caption(record.id, text)
                return True
            if failure.fatal:
                self._fail_setup(str(failure))
                return None
            if attempt == self.retries or not failure.retry:
                tries = f" after {attempt + 1} tries" if attempt else ""
                self.library.fail_caption(record.id, f"{failure}{tries}")
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
