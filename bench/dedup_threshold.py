"""Measure pHash Hamming distances: edited copies of a photo versus distinct photos.

Prints, for each kind of edit, the distance from the original, and the smallest distance between distinct
photos, so the duplicate threshold (IMAGEMATCH_DUPLICATE_DISTANCE) can be chosen between the two.

    .venv/bin/python bench/dedup_threshold.py [--json bench/results/dedup.json]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from skimage import data as skdata

from imagematch.fingerprint import hamming, perceptual_hash
from imagematch.media import decode

PHOTOS = [
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "clock",
    "brick", "grass", "gravel", "immunohistochemistry", "hubble_deep_field", "retina", "colorwheel", "cell",
]  # fmt: skip
SAME_PHOTO = {frozenset(("cat", "chelsea"))}  # skimage ships the same photo twice


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _jpeg(image: Image.Image, quality: int = 92) -> bytes:
    return _encode(image, "JPEG", quality=quality)


def _watermark(image: Image.Image) -> Image.Image:
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    w, h = marked.size
    draw.text((int(w * 0.80), int(h * 0.92)), "© 2026", fill=(255, 255, 255))
    return marked


def _crop(fraction: float) -> Callable[[Image.Image], Image.Image]:
    def crop(image: Image.Image) -> Image.Image:
        w, h = image.size
        dx, dy = int(w * fraction / 2), int(h * fraction / 2)
        return image.crop((dx, dy, w - dx, h - dy))

    return crop


EDITS: dict[str, Callable[[Image.Image], bytes]] = {
    "jpeg q50": lambda im: _jpeg(im, 50),
    "half size": lambda im: _jpeg(im.resize((im.width // 2, im.height // 2))),
    "brightness +15%": lambda im: _jpeg(ImageEnhance.Brightness(im).enhance(1.15)),
    "watermark": lambda im: _jpeg(_watermark(im)),
    "png re-encode": lambda im: _encode(im, "PNG"),
    "crop 4%": lambda im: _jpeg(_crop(0.04)(im)),
    "crop 10%": lambda im: _jpeg(_crop(0.10)(im)),
    "mirror": lambda im: _jpeg(ImageOps.mirror(im)),
    "rotate 90°": lambda im: _jpeg(im.rotate(90, expand=True)),
}


def _photo(name: str) -> Image.Image:
    array = getattr(skdata, name)()
    if array.dtype != np.uint8:
        array = (array * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def _hash(data: bytes) -> int:
    return perceptual_hash(decode(data, max_pixels=10**9).image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    originals = {name: _photo(name) for name in PHOTOS}
    hashes = {name: _hash(_jpeg(image)) for name, image in originals.items()}
    edits: dict[str, list[int]] = {}
    for edit, apply in EDITS.items():
        edits[edit] = [hamming(hashes[name], _hash(apply(image))) for name, image in originals.items()]
    distinct = sorted(
        hamming(hashes[a], hashes[b])
        for a, b in itertools.combinations(PHOTOS, 2)
        if frozenset((a, b)) not in SAME_PHOTO
    )

    print(f"pHash Hamming distance (64 bits) over {len(PHOTOS)} skimage photos")
    print(f"{'edit':<18}{'min':>5}{'median':>8}{'max':>5}")
    for edit, values in edits.items():
        print(f"{edit:<18}{min(values):>5}{int(np.median(values)):>8}{max(values):>5}")
    print(
        f"{'distinct pairs':<18}{distinct[0]:>5}{int(np.median(distinct)):>8}{distinct[-1]:>5}  ({len(distinct)} pairs)"
    )
    for threshold in (4, 6, 8, 10, 12):
        caught = {e: sum(v <= threshold for v in values) for e, values in edits.items()}
        false = sum(d <= threshold for d in distinct)
        summary = ", ".join(f"{e} {c}/{len(PHOTOS)}" for e, c in caught.items())
        print(f"threshold {threshold:>2}: false duplicates {false}/{len(distinct)}; caught: {summary}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"edits": edits, "distinct": distinct}, indent=2))


if __name__ == "__main__":
    main()
