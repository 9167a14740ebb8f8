"""Background removal with rembg, so the embedding can focus on the subject.

In `auto` mode the cut-out is used only when the foreground mask is confident and covers a sensible share
of the image: landscapes, textures and documents (almost no foreground, or an unsure mask) keep the whole
image. The thresholds come from bench/cutout_coverage.py on scikit-image photos (docs/background.md).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image

from imagematch.ai.download_host import unreachable
from imagematch.records import ModelUnavailable

log = logging.getLogger(__name__)

BackgroundMode = Literal["off", "on", "auto"]
REMBG_MODELS = ("u2netp", "u2net", "isnet-general-use", "birefnet-general")
CUTOUT_BACKGROUND = (255, 255, 255)
MIN_CONFIDENCE = 0.80  # share of mask pixels that are clearly foreground or background
MODEL_HOST = "github.com"  # where rembg downloads its models from


@dataclass(frozen=True, slots=True)
class Cutout:
    """The result of looking for a subject: the mask's statistics and, when used, the composited cut-out."""

    coverage: float  # share of the image the mask calls foreground
    confidence: float  # share of pixels the mask is sure about (below 0.1 or above 0.9)
    image: Image.Image | None  # subject on a plain background, or None when the whole image should be used


class BackgroundRemover(Protocol):
    @property
    def name(self) -> str: ...

    def load(self) -> None: ...

    def cutout(self, image: Image.Image) -> Cutout: ...


class RembgRemover:
    """rembg sessions (ONNX Runtime). Lazy, thread-safe load; one session shared by all threads."""

    def __init__(
        self,
        mode: BackgroundMode,
        *,
        model: str = "u2netp",
        model_path: Path | None = None,
        min_coverage: float = 0.10,
        max_coverage: float = 0.85,
    ) -> None:
        if mode == "off":
            raise ValueError("RembgRemover is for modes on and auto")
        self.mode = mode
        self.model = model
        self.model_path = model_path
        self.min_coverage = min_coverage
        self.max_coverage = max_coverage
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"rembg:{self.model_path.name if self.model_path else self.model}"

    def load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            started = time.perf_counter()
            try:
                session = _local_session(self.model_path) if self.model_path else _named_session(self.model)
            except Exception as error:
                raise ModelUnavailable(
                    f"background removal model {self.name} is not available ({error}). Connect to the "
                    "internet once so rembg can download it, set IMAGEMATCH_REMBG_MODEL_PATH to a local "
                    ".onnx file, or set IMAGEMATCH_BACKGROUND_REMOVAL=off"
                ) from error
            self._session = session
            log.info("background removal %s loaded in %.1fs", self.name, time.perf_counter() - started)

    def mask(self, image: Image.Image) -> np.ndarray[Any, np.dtype[np.float32]]:
        self.load()
        masks = self._session.predict(image)
        return np.asarray(masks[0], dtype=np.float32) / 255.0

    def cutout(self, image: Image.Image) -> Cutout:
        mask = self.mask(image)
        coverage = float((mask > 0.5).mean())
        confidence = float(((mask < 0.1) | (mask > 0.9)).mean())
        if self.mode == "on":
            use = coverage >= 0.01  # an empty mask would leave nothing to embed
        else:
            use = self.min_coverage <= coverage <= self.max_coverage and confidence >= MIN_CONFIDENCE
        if not use:
            return Cutout(coverage, confidence, None)
        alpha = Image.fromarray((mask * 255).astype(np.uint8), mode="L")
        plain = Image.new("RGB", image.size, CUTOUT_BACKGROUND)
        return Cutout(coverage, confidence, Image.composite(image, plain, alpha))


def _local_session(path: Path) -> Any:
    """A U²-Net-style ONNX file from any folder. rembg's own custom session refuses paths outside its home
    (~/.rembg), so the file is opened where it is by a session that skips that check, never copied."""
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    import onnxruntime as ort
    from rembg.sessions.u2net_custom import U2netCustomSession

    class LocalFileSession(U2netCustomSession):  # type: ignore[misc]
        @classmethod
        def download_models(cls, *args: Any, **kwargs: Any) -> str:
            return str(kwargs["model_path"])

    return LocalFileSession("u2net_custom", ort.SessionOptions(), model_path=str(path))


def _named_session(model: str) -> Any:
    """rembg's session for a model name. When the file is not downloaded yet and rembg's server cannot be
    reached, this fails at once instead of after a minute of retries, and announces no download."""
    from rembg import new_session
    from rembg.sessions import sessions_class

    session_class = next((c for c in sessions_class if c.name() == model), None)
    missing = session_class is not None and session_class.resolve_existing(f"{model}.onnx") is None
    # Through a proxy only the download itself can tell whether it works: the direct probe would say no.
    if missing and not urllib.request.getproxies().get("https"):
        problem = unreachable(MODEL_HOST, 443)
        if problem is not None:
            raise ModelUnavailable(f"it is not downloaded yet and {MODEL_HOST} cannot be reached ({problem})")
    return new_session(model)
