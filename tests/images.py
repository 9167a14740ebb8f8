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


def look_alikes() -> list[bytes]:
    """Three distinct pictures (PNG) with one layout in other colours: a red star on blue stripes, a green one on
    pink and a blue one on cyan. Their pHashes are a few bits apart (pHash sees grey structure, not colour)."""
    from imagematch.demo_data import Scene, render

    star = ("star", "large", "striped")
    colours = (("red", "blue"), ("green", "pink"), ("blue", "cyan"))
    scenes = [Scene(star[0], colour, star[1], star[2], background, 0.5, 0.5, 0.3) for colour, background in colours]
    return [encode(render(scene), "PNG") for scene in scenes]
