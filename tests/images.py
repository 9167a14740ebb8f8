"""Real test images: photos from scikit-image, encoded in any format, plus generated ones."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image
from skimage import data as skdata

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "clock", "retina")


@cache
def photo(name: str) -> Image.Image:
    array = getattr(skdata, name)()
    if array.dtype != np.uint8:
        array = (np.asarray(array, dtype=np.float64) * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def jpeg(name: str, quality: int = 90) -> bytes:
    return encode(photo(name), "JPEG", quality=quality)


def solid(color: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    return encode(Image.new("RGB", size, color), "PNG")
