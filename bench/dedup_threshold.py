"""Measure pHash Hamming distances: edited copies of a photo versus distinct photos.

Prints, for each kind of edit, the distance from the original, and the smallest distance between distinct
photos, so the duplicate threshold (IMAGEMATCH_DUPLICATE_DISTANCE) can be chosen between the two. Then the
same with the upload looked up under its mirrored and rotated hashes too (IMAGEMATCH_DUPLICATE_VARIANTS), the
pHash side of the crop rule (IMAGEMATCH_DUPLICATE_CROP_DISTANCE), and the time to group N random hashes.

    .venv/bin/python bench/dedup_threshold.py [--json bench/results/dedup.json] [--model SPEC] [--scale 100000]

With --model, the image-vector cosines of crops and of distinct photos are measured too (the full crop rule).
Only a model with real weights gives meaningful cosines; the tests' random-weight model does not.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps
from skimage import data as skdata

from imagematch.duplicates import VARIANT_DISTANCE, close_pairs, lookup_hashes
from imagematch.fingerprint import hamming, perceptual_hash, perceptual_hashes
from imagematch.media import decode

PHOTOS = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "coins",
    "moon",
    "page",
    "text",
    "clock",
    "brick",
    "grass",
    "gravel",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "cell",
]
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
    "rotate 180°": lambda im: _jpeg(im.rotate(180, expand=True)),
    "rotate 270°": lambda im: _jpeg(im.rotate(270, expand=True)),
    "mirror + jpeg q50": lambda im: _jpeg(ImageOps.mirror(im), 50),
}
CROPS = ("crop 4%", "crop 10%")


def _photo(name: str) -> Image.Image:
    array = getattr(skdata, name)()
    if array.dtype != np.uint8:
        array = (array * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def _hash(data: bytes) -> int:
    return perceptual_hash(decode(data, max_pixels=10**9).image)


def _lookup_hashes(data: bytes, max_distance: int = VARIANT_DISTANCE) -> list[int]:
    """What an upload is looked up under: its own pHash and those of its mirrored and rotated versions."""
    own, variants = perceptual_hashes(decode(data, max_pixels=10**9).image)
    return list(lookup_hashes(own, variants, max_distance).values())


def _nearest(candidates: list[int], stored: int) -> int:
    return min(hamming(candidate, stored) for candidate in candidates)


def _report(title: str, edits: dict[str, list[int]], distinct: list[int], thresholds: tuple[int, ...]) -> None:
    print(f"\n{title}")
    print(f"{'edit':<20}{'min':>5}{'median':>8}{'max':>5}")
    for edit, values in edits.items():
        print(f"{edit:<20}{min(values):>5}{int(np.median(values)):>8}{max(values):>5}")
    print(
        f"{'distinct pairs':<20}{distinct[0]:>5}{int(np.median(distinct)):>8}{distinct[-1]:>5}  ({len(distinct)} pairs)"
    )
    for threshold in thresholds:
        caught = {e: sum(v <= threshold for v in values) for e, values in edits.items()}
        false = sum(d <= threshold for d in distinct)
        summary = ", ".join(f"{e} {c}/{len(PHOTOS)}" for e, c in caught.items())
        print(f"threshold {threshold:>2}: false duplicates {false}/{len(distinct)}; caught: {summary}")


def _cosines(spec: str, originals: dict[str, Image.Image]) -> tuple[dict[str, list[float]], list[float]]:
    """Image-vector cosines of each crop with its original, and of distinct photos, with the given model."""
    from imagematch.factory import build_embedder
    from imagematch.settings import Settings

    embedder = build_embedder(Settings(model=spec, background_removal="off", captioner="none"))  # type: ignore[call-arg]

    def vector(image: Image.Image) -> np.ndarray:
        return np.asarray(embedder.encode_prepared([embedder.prepare(image)])[0])

    base = {name: vector(image) for name, image in originals.items()}
    crops = {
        edit: [
            float(vector(decode(EDITS[edit](image), max_pixels=10**9).image) @ base[name])
            for name, image in originals.items()
        ]
        for edit in CROPS
    }
    distinct = [
        float(base[a] @ base[b]) for a, b in itertools.combinations(PHOTOS, 2) if frozenset((a, b)) not in SAME_PHOTO
    ]
    return crops, distinct


def _scale(count: int, max_distance: int) -> None:
    hashes = np.random.default_rng(0).integers(0, 2**63, size=count, dtype=np.uint64)
    started = time.perf_counter()
    pairs = close_pairs(hashes, max_distance)
    print(
        f"\ngrouping {count:,} random hashes within {max_distance} bits: {time.perf_counter() - started:.1f} s, "
        f"{len(pairs)} pairs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--model", help="measure image-vector cosines with this model (IMAGEMATCH_MODEL syntax)")
    parser.add_argument("--scale", type=int, default=0, help="time grouping this many random hashes")
    parser.add_argument("--crop-distance", type=int, default=14)
    parser.add_argument("--similarity", type=float, default=0.97)
    args = parser.parse_args()

    originals = {name: _photo(name) for name in PHOTOS}
    hashes = {name: _hash(_jpeg(image)) for name, image in originals.items()}
    uploads = {edit: {name: apply(image) for name, image in originals.items()} for edit, apply in EDITS.items()}
    pairs = [(a, b) for a, b in itertools.combinations(PHOTOS, 2) if frozenset((a, b)) not in SAME_PHOTO]
    edits = {
        edit: [hamming(hashes[name], _hash(data)) for name, data in files.items()] for edit, files in uploads.items()
    }
    distinct = sorted(hamming(hashes[a], hashes[b]) for a, b in pairs)
    print(f"pHash Hamming distance (64 bits) over {len(PHOTOS)} skimage photos")
    _report("the upload's own pHash", edits, distinct, (4, 6, 8, 10, 12))

    lookups = {name: _lookup_hashes(_jpeg(image)) for name, image in originals.items()}
    variant_edits = {
        edit: [_nearest(_lookup_hashes(data), hashes[name]) for name, data in files.items()]
        for edit, files in uploads.items()
    }
    # An upload of b, looked up under all its hashes, against a stored a (and the other way round).
    variant_distinct = sorted(min(_nearest(lookups[b], hashes[a]), _nearest(lookups[a], hashes[b])) for a, b in pairs)
    _report("own, mirrored and rotated pHashes (nearest of the five)", variant_edits, variant_distinct, (2, 4, 6, 10))

    crop_distance = args.crop_distance
    print(f"\ncrop rule, pHash side: within {crop_distance} bits (the image vectors must also agree)")
    for edit in CROPS:
        print(f"  {edit}: {sum(v <= crop_distance for v in edits[edit])}/{len(PHOTOS)} within reach")
    near_distinct = sum(d <= crop_distance for d in distinct)
    print(f"  distinct pairs within reach: {near_distinct}/{len(distinct)} (the vectors must reject these)")
    results: dict[str, object] = {"edits": edits, "distinct": distinct, "variant_edits": variant_edits}
    results["variant_distinct"] = variant_distinct
    if args.model:
        crops, cosines = _cosines(args.model, originals)
        print(f"\nimage-vector cosine with {args.model}")
        for edit, values in crops.items():
            caught = sum(d <= crop_distance and c >= args.similarity for d, c in zip(edits[edit], values, strict=True))
            print(f"  {edit}: min {min(values):.3f} median {np.median(values):.3f}; caught {caught}/{len(PHOTOS)}")
        false = sum(
            hamming(hashes[a], hashes[b]) <= crop_distance and c >= args.similarity
            for (a, b), c in zip(pairs, cosines, strict=True)
        )
        print(f"  distinct pairs: max {max(cosines):.3f}; false duplicates {false}/{len(pairs)}")
        results["crop_cosines"], results["distinct_cosines"] = crops, cosines
    if args.scale:
        _scale(args.scale, crop_distance)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
