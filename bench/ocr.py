"""Reading the text in pictures: how well, how often it invents text, what it costs, and what it does for search.

    .venv/bin/python -m bench.ocr [--images 120]

- Rendered words: made-up words (no model knows them) drawn in DejaVu fonts at several sizes, colours, small
  rotations and with noise, on plain and on busy backgrounds. Character accuracy of what is read, and recall@1
  of a hybrid search for the word in a library of all of them, with text reading on and off.
- False text: photos bundled with scikit-image (but `page` and `text`, which show text) and the demo images; a
  picture "gets text" when anything at all is read in it.
- Cost: milliseconds per picture with and without text, and `add_many` throughput with reading on and off, on
  the same files in the same run.
"""

from __future__ import annotations

import argparse
import functools
import io
import random
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from skimage import data as skdata

from bench.common import runnable_model
from bench.dedup_threshold import PHOTOS
from imagematch.ai.ocr import PaddleTextReader
from imagematch.demo_data import render, scenes
from imagematch.factory import build_library
from imagematch.keywords import read_words, tokens
from imagematch.library import Library, Upload
from imagematch.media import decode
from imagematch.records import Query, TextTerm
from imagematch.settings import Settings

FONTS = sorted(Path("/usr/share/fonts/truetype/dejavu").glob("DejaVu*.ttf"))
SANS = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # what user interfaces look like
SYLLABLES = ["ka", "zo", "mi", "tru", "vel", "dra", "quo", "ne", "pha", "lin", "bor", "ste", "xu", "ri", "gan"]
TEXT_PHOTOS = ("page", "text")  # these photos show printed text


def made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()


def rendered_word(word: str, rng: random.Random, index: int) -> tuple[Image.Image, dict[str, object]]:
    """One picture with `word` in it; the settings it was drawn with, for the report."""
    size = rng.choice([12, 14, 18, 24, 32, 48, 72])
    busy = index % 2 == 1
    if busy:
        picture = render(next(scenes(index, 1)), side=640, seed=index).resize((800, 600))
    else:
        picture = Image.new("RGB", (800, 600), tuple(rng.randint(180, 255) for _ in range(3)))
    ink = tuple(rng.randint(0, 90) for _ in range(3))
    font = ImageFont.truetype(str(rng.choice(FONTS)), size)
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    left, top = rng.randint(20, 300), rng.randint(40, 480)
    if busy:  # a label on a busy picture: a light band behind the word, as on a sign
        box = draw.textbbox((left, top), word, font=font)
        draw.rectangle((box[0] - 8, box[1] - 8, box[2] + 8, box[3] + 8), fill=(245, 245, 235, 255))
    draw.text((left, top), word, fill=(*ink, 255), font=font)
    angle = rng.uniform(-8, 8)
    layer = layer.rotate(angle, resample=Image.Resampling.BICUBIC, center=(left, top))
    picture.paste(layer, (0, 0), layer)
    noisy = np.asarray(picture, dtype=np.float32) + np.random.default_rng(index).normal(0, 8, (600, 800, 3))
    picture = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.4))
    return picture, {"size": size, "busy": busy, "angle": angle}


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def edit_distance(first: str, second: str) -> int:
    previous = list(range(len(second) + 1))
    for i, a in enumerate(first, 1):
        current = [i]
        for j, b in enumerate(second, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]


def _read(reader: PaddleTextReader, data: bytes) -> tuple[str, float]:
    """What the library reads in a picture (the same two decodes as an upload), and the milliseconds."""
    started = time.perf_counter()
    decoded = decode(data, max_pixels=50_000_000, short_side=224, long_side=384)
    text = reader.read(
        decoded.image, lambda side: decode(data, max_pixels=50_000_000, short_side=64, long_side=side).image
    )
    return text.text, (time.perf_counter() - started) * 1000


def _photo(name: str) -> Image.Image:
    array = getattr(skdata, name)()
    if array.dtype != np.uint8:
        array = (array * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def _library(root: Path, ocr: Literal["auto", "off"], model: str = "demo") -> Library:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=root / ocr, model=model, background_removal="off", captioner="none", ocr=ocr
    )
    return build_library(settings)


def camera_cost(spec: str, count: int) -> None:
    """What reading text adds to ingesting camera-sized colour photos (4000×3000 JPEGs) with a real-size model."""
    with tempfile.TemporaryDirectory() as folder:
        model, weights = runnable_model(spec, Path(folder) / "cache")
        photos = [_photo(name) for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")]
        files = []
        for i in range(count):
            big = photos[i % len(photos)].resize((4000, 3000)).rotate(i * 7 % 360, expand=False)
            files.append(_jpeg(big))
        seconds = {}
        modes: tuple[Literal["auto", "off"], ...] = ("off", "auto")
        for ocr in modes:
            library = _library(Path(folder), ocr, model)
            library.ingest.add_many([Upload("warm.jpg", functools.partial(bytes, _jpeg(photos[0])))])
            uploads = [Upload(f"camera-{i}.jpg", functools.partial(bytes, data)) for i, data in enumerate(files)]
            started = time.perf_counter()
            library.ingest.add_many(uploads)
            seconds[ocr] = (time.perf_counter() - started) / len(files) * 1000
            library.close()
        print(
            f"ingest (add_many, {spec}, {weights}) of {count} camera JPEGs without text: {seconds['off']:.0f} ms per "
            f"picture, {seconds['auto']:.0f} ms reading text ({seconds['off'] / seconds['auto']:.2f}× the throughput)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120, help="pictures of rendered words")
    parser.add_argument("--camera-model", default="", help="also measure camera JPEGs with this model (ViT-B-32)")
    parser.add_argument("--camera-only", action="store_true", help="only the camera JPEG cost")
    args = parser.parse_args()
    if args.camera_model:
        camera_cost(args.camera_model, 36)
        if args.camera_only:
            return
    rng = random.Random(7)
    words = list(dict.fromkeys(made_up_word(rng) for _ in range(args.images * 2)))[: args.images]
    pictures = [rendered_word(word, rng, i) for i, word in enumerate(words)]
    files = [_png(picture) for picture, _ in pictures]
    reader = PaddleTextReader()
    reader.load()

    print(f"rendered words: {len(words)} pictures, fonts {len(FONTS)}, sizes 12-72 px, rotation ±8°, noise σ=8")
    accuracy: dict[str, list[float]] = {}
    text_ms = []
    for word, (_, drawn), data in zip(words, pictures, files, strict=True):
        read, ms = _read(reader, data)
        text_ms.append(ms)
        found = min((edit_distance(word.lower(), part.lower()) for part in read.split()), default=len(word))
        score = max(0.0, 1 - found / len(word))
        for key in ("all", f"{drawn['size']} px", "busy" if drawn["busy"] else "plain"):
            accuracy.setdefault(key, []).append(score)
    for key in ["all", *(f"{s} px" for s in (12, 14, 18, 24, 32, 48, 72)), "plain", "busy"]:
        scores = accuracy.get(key, [])
        if scores:
            exact = sum(s == 1.0 for s in scores)
            print(f"  {key:8s} character accuracy {np.mean(scores):.3f}, word exact {exact}/{len(scores)}")

    print("screenshots: 1920×1080, 18 lines of 4 made-up words in UI sizes")
    for size in (13, 15, 18):
        shot_words = [[made_up_word(rng) for _ in range(4)] for _ in range(18)]
        shot = Image.new("RGB", (1920, 1080), (248, 248, 250))
        draw = ImageDraw.Draw(shot)
        for n, line in enumerate(shot_words):
            draw.text((80, 60 + n * 52), " ".join(line), fill=(30, 30, 30), font=ImageFont.truetype(SANS, size))
        read, ms = _read(reader, _png(shot))
        keywords = set(tokens(read_words(read)))
        kept = sum(word.lower() in keywords for line in shot_words for word in line)
        print(f"  {size} px: {kept} of {18 * 4} words found as keywords, {ms:.0f} ms")
    print("false text (anything read in a picture without text):")
    plain: list[bytes] = []
    photo_ms = []
    for label, sources in (
        ("photos", [_jpeg(_photo(name)) for name in PHOTOS if name not in TEXT_PHOTOS]),
        ("demo images", [_jpeg(render(scene, side=512, seed=i)) for i, scene in enumerate(scenes(2026, 48))]),
    ):
        plain += sources
        invented = []
        for data in sources:
            read, ms = _read(reader, data)
            photo_ms.append(ms)
            if read.strip():
                invented.append(read.replace("\n", " | ")[:40])
        print(f"  {label}: {len(invented)} of {len(sources)} got text {invented}")
    print(
        f"reader alone, one thread: with text median {np.median(text_ms):.0f} ms, without text median "
        f"{np.median(photo_ms):.0f} ms per picture (its decodes included)"
    )

    with tempfile.TemporaryDirectory() as folder:
        rank_of: dict[str, list[int]] = {}
        seconds: dict[tuple[str, str], float] = {}
        modes: tuple[Literal["auto", "off"], ...] = ("off", "auto")
        for ocr in modes:
            library = _library(Path(folder), ocr)
            for label, batch in (("with text", files), ("without text", plain)):
                uploads = [Upload(f"{label}-{i}.png", functools.partial(bytes, data)) for i, data in enumerate(batch)]
                started = time.perf_counter()
                library.ingest.add_many(uploads)
                seconds[ocr, label] = (time.perf_counter() - started) / len(batch)
            ids = {r.filename: r.id for r in library.catalog.iter_records()}
            stored = sum(f"with text-{i}.png" in ids for i in range(len(words)))
            print(
                f"  reading {'on' if ocr == 'auto' else 'off'}: {stored} of {len(words)} word pictures stored "
                "(the rest refused as duplicates of another)"
            )
            ranks = []
            for i, word in enumerate(words):
                hits = library.search.run(Query((TextTerm(word),), k=5, hybrid=True)).hits
                ranked = [hit.record.id for hit in hits]
                wanted = ids.get(f"with text-{i}.png")
                ranks.append(ranked.index(wanted) + 1 if wanted in ranked else 99)
            rank_of[ocr] = ranks
            library.close()
        for ocr in modes:
            ranks = rank_of[ocr]
            print(
                f"hybrid search for the word, reading {'on' if ocr == 'auto' else 'off'}: recall@1 "
                f"{sum(r == 1 for r in ranks) / len(ranks):.3f}, recall@5 {sum(r <= 5 for r in ranks) / len(ranks):.3f}"
                f" (demo model, {len(words)} pictures among {len(words) + len(plain)})"
            )
        for label in ("with text", "without text"):
            on, off = seconds["auto", label] * 1000, seconds["off", label] * 1000
            print(
                f"ingest (add_many, demo model) {label}: {off:.0f} ms per picture, {on:.0f} ms reading text "
                f"(+{on - off:.0f} ms, {off / on:.2f}× the throughput)"
            )


if __name__ == "__main__":
    main()
