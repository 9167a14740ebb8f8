"""Reading the text in pictures: PP-OCRv4 mobile detection and recognition (PaddleOCR's models, Apache-2.0),
run on ONNX Runtime through the models the `rapidocr-onnxruntime` wheel ships, so nothing is downloaded.

The detector looks at the picture with its short side at DETECT_SIDE; only where it finds text is the picture
decoded larger (READ_SIDE) and each line cut out, turned upright by the angle classifier and read. A picture
without text costs the detector alone. Screenshots, slides and scans carry small print that a reduced picture
loses entirely: a picture that looks like a page (much of it one flat colour) is searched for text at up to
PAGE_SIDE instead. Lines read with little confidence, or that hold no letter or digit, are dropped:
a photo of a brick wall must not get text (docs/ocr.md measures how often it still does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from PIL import Image

from imagematch.records import ImageText, TextLine

log = logging.getLogger(__name__)

ENGINE = "PP-OCRv4 mobile"
# The short side of the picture the detector sees: finding a line needs far fewer pixels than reading it, and
# the detector's cost grows with its input (docs/ocr.md: 448 finds what 736, the models' default, finds at a
# sixth of the cost; 320 misses small print).
DETECT_SIDE = 448
DETECT_LONGEST = 4096  # px: the detector's input is never longer (a 1:10 receipt keeps a 410 px short side)
PAGE_SIDE = 1600  # the long side a page-like picture is searched for text at: UI text of 13 px on 1920 is 11 px
# The share of a picture in its most common colour (16 levels a channel, so that a scan's noise stays in one)
# from which it looks like a page: colour photos stay below 0.25, grey ones and a moon on black reach 0.7 (they
# only cost more), screenshots and slides are near 1 (docs/ocr.md).
PAGE_SHARE = 0.35
READ_SIDE = 2048  # the most a picture is decoded to for the recogniser
READ_HEIGHT = 32  # px: lines are cut from a picture decoded large enough for the smallest to be this tall
# A line read with less confidence is more often garbage than text (docs/ocr.md: the false-text rate on photos).
MIN_CONFIDENCE = 0.8
MAX_LINES = 200  # a page of small print; more is a texture, not text


class OcrUnavailable(RuntimeError):
    """The OCR engine is not installed (or failed to load): IMAGEMATCH_OCR=auto turns reading off."""


class OcrFailed(RuntimeError):
    """The engine failed on one picture (ONNX Runtime, OpenCV and the box geometry raise their own kinds)."""


class TextReader(Protocol):
    """Reads the text in a picture. `larger` decodes the same picture at up to READ_SIDE on its long side,
    called only when the detector found text in `image`."""

    engine: str

    def load(self) -> None: ...

    def read(self, image: Image.Image, larger: Callable[[int], Image.Image]) -> ImageText: ...


def _bgr(image: Image.Image) -> np.ndarray[Any, Any]:
    """The models were trained on OpenCV's channel order."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """The picture with its long side at most `side`."""
    scale = side / max(image.size)
    if scale >= 1:
        return image
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
    )


def _detector_input(image: Image.Image, *, page: bool) -> Image.Image:
    """The picture the detector sees: its short side brought to DETECT_SIDE (a page's long side at most PAGE_SIDE
    unless that makes it shorter), and never longer than DETECT_LONGEST, so that a long thin strip cannot make the
    detector's input gigabytes."""
    short, long = min(image.size), max(image.size)
    scale = max(min(1.0, PAGE_SIDE / long), DETECT_SIDE / short) if page else DETECT_SIDE / short
    scale = min(scale, DETECT_LONGEST / long)
    if abs(scale - 1.0) < 1e-3:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def looks_like_a_page(image: Image.Image) -> bool:
    """Much of the picture one flat colour: a screenshot, a slide, a scan, a graphic."""
    levels = (np.asarray(image.convert("RGB"), dtype=np.uint8) // 16).reshape(-1, 3).astype(np.int32)
    colours = np.bincount(levels[:, 0] * 256 + levels[:, 1] * 16 + levels[:, 2])
    return bool(colours.max() >= PAGE_SHARE * len(levels))


def is_text(line: str) -> bool:
    """A read line worth keeping: at least two letters or digits (a lone mark is usually a texture)."""
    return sum(character.isalnum() for character in line) >= 2


class PaddleTextReader:
    """Lazy: the three ONNX sessions open at the first read (or `load()`), once, under a lock."""

    engine = ENGINE

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._lock = threading.Lock()
        self._ocr: Any = None

    def load(self) -> None:
        with self._lock:
            if self._ocr is not None:
                return
            started = time.perf_counter()
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as error:
                raise OcrUnavailable(
                    f"reading text in pictures needs the rapidocr-onnxruntime package ({error})"
                ) from error
            try:  # det_limit_side_len=1: the engine resizes nothing itself, _detector_input has
                self._ocr = RapidOCR(intra_op_num_threads=self._threads, inter_op_num_threads=1, det_limit_side_len=1)
            except Exception as error:  # a model file that will not load, whatever ONNX Runtime raises for it
                raise OcrUnavailable(f"the OCR models failed to load ({type(error).__name__}: {error})") from error
            log.info("opened the OCR models (%s) in %.0f ms", ENGINE, (time.perf_counter() - started) * 1000)

    def read(self, image: Image.Image, larger: Callable[[int], Image.Image]) -> ImageText:
        self.load()
        try:
            return self._read(image, larger)
        except Exception as error:  # the engine's own kinds: cv2.error is no subclass of anything ours
            raise OcrFailed(f"{type(error).__name__}: {error}") from error

    def _read(self, image: Image.Image, larger: Callable[[int], Image.Image]) -> ImageText:
        ocr = self._ocr
        source = _reduced(larger(READ_SIDE), READ_SIDE) if looks_like_a_page(image) else None
        seen = _detector_input(image if source is None else source, page=source is not None)
        boxes, _ = ocr.text_det(_bgr(seen))
        if boxes is None or len(boxes) == 0:
            return ImageText(engine=ENGINE)
        boxes = ocr.sorted_boxes(boxes)[:MAX_LINES]
        if source is None:
            smallest = max(min(float(np.ptp(np.asarray(box)[:, 1])) for box in boxes), 1.0)
            longest = max(seen.size)  # never cut lines from a smaller picture than they were found in
            side = round(max(longest, min(READ_SIDE, longest * READ_HEIGHT / smallest)))
            source = _reduced(larger(side), side)
        scale = np.array([source.width / seen.width, source.height / seen.height], dtype=np.float32)
        corners = [np.asarray(box, dtype=np.float32) * scale for box in boxes]
        crops = ocr.get_crop_img_list(_bgr(source), corners)
        crops, _, _ = ocr.text_cls(crops)
        read, _ = ocr.text_rec(crops, False)
        lines = []
        for box, (raw, confidence) in zip(corners, read, strict=True):
            text = " ".join(str(raw).split())
            if float(confidence) < MIN_CONFIDENCE or not is_text(text):
                continue
            left, top = (box.min(axis=0) / [source.width, source.height]).tolist()
            right, bottom = (box.max(axis=0) / [source.width, source.height]).tolist()
            edges = tuple(round(min(max(v, 0.0), 1.0), 4) for v in (left, top, right, bottom))
            lines.append(TextLine(text, (edges[0], edges[1], edges[2], edges[3]), round(float(confidence), 4)))
        return ImageText(engine=ENGINE, lines=tuple(lines))
