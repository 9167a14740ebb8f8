"""Measure the colour-layout check that confirms a pHash match: distinct graphics and photos taken for duplicates,
and edited copies still caught, for a range of colour distances (IMAGEMATCH_DUPLICATE_COLOUR_DISTANCE).

Graphics: the demo-data generator's scenes (coloured shapes on patterned backgrounds, some among clutter) and
flat icons drawn with Pillow (shapes and letters, one colour on another), all distinct pictures. They are
uploaded in order, as a library would take them: an image is refused when an earlier one is within the pHash
distance and, with the check, also within the colour distance. Photos: the skimage photos of
bench/dedup_threshold.py, each edit measured against its original, as that script does.

    .venv/bin/python -m bench.dedup_graphics [--json bench/results/dedup_graphics.json]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageEnhance

from bench.dedup_threshold import EDITS, PHOTOS, SAME_PHOTO, _encode, _jpeg, _photo
from imagematch import media
from imagematch.demo_data import BACKGROUNDS, COLOURS, render, scenes
from imagematch.duplicates import VARIANT_DISTANCE, lookup_hashes
from imagematch.fingerprint import (
    colour_distance,
    colour_layout,
    hamming,
    hamming_many,
    perceptual_hashes,
    turned_layout,
)

PHASH_DISTANCE = 10  # IMAGEMATCH_DUPLICATE_DISTANCE's default
COLOUR_DISTANCES = (20.0, 24.0, 26.0, 28.0, 30.0, 32.0, 40.0)
ICON_SHAPES = ("circle", "square", "ring", "bars", "triangle", "plus", "A", "B", "E", "H", "O", "S")
TURNS = ("mirror", "rotate 90°", "rotate 180°", "rotate 270°", "mirror + jpeg q50")
GRAPHIC_EDITS = ("jpeg q50", "half size", "brightness +15%", "watermark", "png re-encode")


@dataclass(frozen=True, slots=True)
class View:
    """What the duplicate check sees of an upload: its pHashes and the colour layout of its thumbnail."""

    phash: int
    variants: dict[str, int]
    layout: npt.NDArray[np.float64]


def _view(data: bytes) -> View:
    """As ingest sees an upload: decoded for the model and the thumbnail, hashed, thumbnailed."""
    image = media.decode(data, max_pixels=10**9, short_side=224, long_side=media.THUMBNAIL_SIZE).image
    phash, variants = perceptual_hashes(image)
    return View(phash, variants, colour_layout(media.make_thumbnail(image)))


def _icon(shape: str, ink: tuple[int, int, int], paper: tuple[int, int, int], side: int = 128) -> Image.Image:
    big = side * 2
    image = Image.new("RGB", (big, big), paper)
    draw = ImageDraw.Draw(image)
    c, r = side, side * 0.6
    if shape == "circle":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=ink)
    elif shape == "square":
        draw.rectangle((c - r, c - r, c + r, c + r), fill=ink)
    elif shape == "ring":
        draw.ellipse((c - r, c - r, c + r, c + r), outline=ink, width=int(r / 3))
    elif shape == "bars":
        for i in range(3):
            left = c - r + i * r * 0.7
            draw.rectangle((left, c + r - (i + 1) * r * 0.6, left + r * 0.5, c + r), fill=ink)
    elif shape == "triangle":
        draw.polygon([(c, c - r), (c + r, c + r), (c - r, c + r)], fill=ink)
    elif shape == "plus":
        draw.rectangle((c - r, c - r / 4, c + r, c + r / 4), fill=ink)
        draw.rectangle((c - r / 4, c - r, c + r / 4, c + r), fill=ink)
    else:
        draw.text((c - r * 0.6, c - r), shape, fill=ink, font_size=int(r * 1.8))
    return image.resize((side, side), Image.Resampling.LANCZOS)


def _graphics(scene_count: int, clutter_count: int, icons_per_shape: int) -> list[bytes]:
    """Distinct generated pictures as PNG files; a picture the generators happen to draw twice is kept once."""
    pictures = [render(scene, 256, seed=n) for n, scene in enumerate(scenes(7, scene_count))]
    pictures += [render(scene, 256, seed=n) for n, scene in enumerate(scenes(8, clutter_count, cluttered=True))]
    rng = random.Random(3)
    palette = [*COLOURS.values(), *BACKGROUNDS.values()]
    for shape in ICON_SHAPES:
        for _ in range(icons_per_shape):
            ink, paper = rng.sample(palette, 2)
            pictures.append(_icon(shape, ink, paper))
    return list(dict.fromkeys(_encode(picture, "PNG") for picture in pictures))


def _contrast(image: Image.Image) -> bytes:
    return _encode(ImageEnhance.Contrast(image).enhance(1.5), "PNG")


def _refused(views: list[View], limit: float | None) -> int:
    """Uploads refused as duplicates of an earlier upload: pHash within PHASH_DISTANCE and, unless `limit` is
    None (the pHash alone), colour layouts within `limit`."""
    stored: list[View] = []
    refused = 0
    for view in views:
        hashes = np.array([s.phash for s in stored], dtype=np.uint64)
        near = np.flatnonzero(hamming_many(view.phash, hashes) <= PHASH_DISTANCE)
        if any(limit is None or colour_distance(view.layout, stored[int(i)].layout) <= limit for i in near):
            refused += 1
        else:
            stored.append(view)
    return refused


def _apart(original: View, upload: bytes) -> tuple[int, float]:
    """pHash bits and colour distance of an edited copy from its original."""
    edited = _view(upload)
    return hamming(original.phash, edited.phash), colour_distance(original.layout, edited.layout)


def _turned_distance(upload: View, stored: View) -> tuple[int, float]:
    """The nearest turned hash of an upload to a stored pHash, and the colour distance turned the same way."""
    hashes = lookup_hashes(upload.phash, upload.variants, VARIANT_DISTANCE)
    turn, bits = min(((t, hamming(h, stored.phash)) for t, h in hashes.items()), key=lambda pair: pair[1])
    return bits, colour_distance(turned_layout(upload.layout, turn), stored.layout)


def _catch_table(title: str, measured: dict[str, list[tuple[int, float]]], reach: int) -> None:
    print(f"\n{title}: caught by the pHash alone (within {reach} bits) / with the colour check at each distance")
    print(f"{'edit':<20}{'pHash':>7}" + "".join(f"{limit:>7.0f}" for limit in COLOUR_DISTANCES) + "  worst ΔE caught")
    for edit, pairs in measured.items():
        by_hash = [colour for bits, colour in pairs if bits <= reach]
        caught = [sum(colour <= limit for colour in by_hash) for limit in COLOUR_DISTANCES]
        worst = f"{max(by_hash):.1f}" if by_hash else "-"
        print(f"{edit:<20}{len(by_hash):>4}/{len(pairs):<2}" + "".join(f"{c:>7}" for c in caught) + f"  {worst:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=400, help="demo-data scenes on patterned backgrounds")
    parser.add_argument("--cluttered", type=int, default=100, help="demo-data scenes among clutter")
    parser.add_argument("--icons", type=int, default=10, help="flat icons per shape or letter")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    graphics = _graphics(args.scenes, args.cluttered, args.icons)
    views = [_view(data) for data in graphics]
    close = [
        (a, b)
        for a, b in itertools.combinations(range(len(views)), 2)
        if hamming(views[a].phash, views[b].phash) <= PHASH_DISTANCE
    ]
    pair_colours = sorted(colour_distance(views[a].layout, views[b].layout) for a, b in close)
    print(f"{len(graphics)} distinct generated graphics; {len(close)} pairs within {PHASH_DISTANCE} pHash bits")
    print(f"  colour distance of those pairs (ΔE): lowest {[round(c, 1) for c in pair_colours[:8]]}")
    results: dict[str, object] = {"graphics": len(graphics), "graphic_pairs": len(close)}
    refused = {"pHash alone": _refused(views, None)} | {
        f"colour {limit:.0f}": _refused(views, limit) for limit in COLOUR_DISTANCES
    }
    print(f"uploaded in order, refused as duplicates (of {len(graphics)}):")
    for rule, count in refused.items():
        print(f"  {rule:<12} {count:>4}  ({100 * count / len(graphics):.1f}%)")
    results["graphics_refused"] = refused

    pictures = [Image.open(io.BytesIO(data)).convert("RGB") for data in graphics[:120]]
    graphic_edits = {
        edit: [_apart(view, EDITS[edit](picture)) for picture, view in zip(pictures, views, strict=False)]
        for edit in GRAPHIC_EDITS
    }
    _catch_table("edited copies of the first 120 graphics", graphic_edits, PHASH_DISTANCE)

    originals = {name: _photo(name) for name in PHOTOS}
    photo_views = {name: _view(_jpeg(image)) for name, image in originals.items()}
    photo_changes = {edit: apply for edit, apply in EDITS.items() if edit not in TURNS} | {"contrast +50%": _contrast}
    photo_edits = {
        edit: [_apart(photo_views[name], apply(image)) for name, image in originals.items()]
        for edit, apply in photo_changes.items()
    }
    _catch_table(f"edited copies of {len(PHOTOS)} skimage photos", photo_edits, PHASH_DISTANCE)
    turned = {
        edit: [_turned_distance(_view(EDITS[edit](image)), photo_views[name]) for name, image in originals.items()]
        for edit in TURNS
    }
    _catch_table("turned copies of the photos (nearest turned hash, layout turned alike)", turned, VARIANT_DISTANCE)
    pairs = [(a, b) for a, b in itertools.combinations(PHOTOS, 2) if frozenset((a, b)) not in SAME_PHOTO]
    photo_close = [(a, b) for a, b in pairs if hamming(photo_views[a].phash, photo_views[b].phash) <= PHASH_DISTANCE]
    lowest = min(colour_distance(photo_views[a].layout, photo_views[b].layout) for a, b in pairs)
    print(
        f"\ndistinct photo pairs: {len(photo_close)} of {len(pairs)} within {PHASH_DISTANCE} pHash bits; "
        f"lowest colour distance of any pair {lowest:.1f}"
    )
    thumbnail = media.make_thumbnail(originals["astronaut"])
    started = time.perf_counter()
    for _ in range(100):
        colour_distance(colour_layout(thumbnail), photo_views["coffee"].layout)
    each = (time.perf_counter() - started) * 10
    print(f"one colour check (a stored thumbnail's layout, then the comparison): {each:.1f} ms")
    results |= {"graphic_edits": graphic_edits, "photo_edits": photo_edits, "turned": turned}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
