"""Real test images: photos from scikit-image, encoded in any format, plus generated ones."""

from __future__ import annotations

import io
from functools import cache

import numpy as np
from PIL import Image, ImageOps
from skimage import data as skdata

from imagematch.fingerprint import hamming, perceptual_hash

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


# Bits apart, in pHash, of any two images distinct_jpegs makes, even one mirrored or turned: more than what
# any of the library's duplicate rules calls a copy, a crop or an edit.
_APART = 22


def _hashes(data: bytes) -> list[int]:
    """The pHash of a JPEG and of its mirrored and turned versions."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    turned = [image.transpose(t) for t in (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180)]
    variants = [image, ImageOps.mirror(image), *turned, image.transpose(Image.Transpose.ROTATE_270)]
    return [perceptual_hash(variant) for variant in variants]


def distinct_jpegs(count: int, seed: int = 7) -> list[bytes]:
    """Photo-like JPEGs that are no duplicates of each other: coarse random blocks, smoothly enlarged, kept only
    when far from every image kept before."""
    rng = np.random.default_rng(seed)
    images: list[bytes] = []
    kept: list[int] = []
    while len(images) < count:
        blocks = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(blocks).resize((160, 120), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        variants = _hashes(buffer.getvalue())
        if all(hamming(variant, other) >= _APART for variant in variants for other in kept):
            images.append(buffer.getvalue())
            kept.append(variants[0])
    return images
