"""How the cost of each operation grows with the library: 20 000 and 200 000 images (1 000 000 with --huge).

For each size a synthetic library is written straight through the store's upsert (random unit vectors, random
pHashes, times spread over two years, a tiny original and thumbnail file per record so `check` has files to
look at), the store maintains itself (scalar and ANN indexes), and then, on a Library over it:

- per request: browse the first page, a deep page (by cursor, and by offset for comparison), count, get,
  search (text, through the model), upload with its duplicate check (Ingest.add of a real small JPEG);
- full passes: reading every record (Catalog.iter_records, the pages every pass is made of), duplicate
  review (DuplicateReview.groups), the same review again after one upload (its page visited again: the pairs
  known are brought up to date) and `check` (integrity.check).

It prints each figure and, per operation, the growth factor from the smallest size to each larger one.
Targets: a per-request operation grows at most 1.5×, a full pass at most 12× (20k -> 200k, 10× the images).

    .venv/bin/python -m bench.scale [--sizes 20000,200000] [--huge] [--no-check] [--store lancedb] [--words 0.5]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import synthetic_record
from imagematch import integrity
from imagematch.factory import build_library, build_store
from imagematch.library import Library
from imagematch.records import PageCursor, Query, StoredImage, TextTerm
from imagematch.settings import Settings

PER_REQUEST = ("browse first page", "browse deep page (cursor)", "count", "get", "search (text)", "upload + dup check")
FULL_PASS = ("read every record", "duplicate review", "duplicate review again", "check")
CONTRAST = ("browse deep page (offset)",)  # the old way, for comparison: no target
SPAN = timedelta(days=730)
CHUNK = 10_000


def record_id(n: int) -> str:
    return f"{n:016x}-{n:08x}"


def build(settings: Settings, model_id: str, dim: int, size: int, with_files: bool, words: float = 0.0) -> float:
    """The library, with a words vector (as a caption or a description gives) on a share `words` of the images."""
    rng = np.random.default_rng(size)
    store = build_store(settings)
    store.open(model_id, dim)
    started = time.perf_counter()
    newest = datetime.now(UTC) - timedelta(hours=1)
    thumbnail = small_jpeg(0)  # a real one: duplicate review reads the colour layout of close pairs from it
    for start in range(0, size, CHUNK):
        count = min(CHUNK, size - start)
        vectors = rng.normal(size=(count, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        hashes = rng.integers(0, 2**64, size=count, dtype=np.uint64)  # uniform over all 64 bits
        items = []
        for offset in range(count):
            n = start + offset
            when = newest - SPAN * (1 - n / size)
            record = synthetic_record(n, record_id(n), int(hashes[offset]), when, model_id)
            worded = n % 100 < words * 100
            items.append(StoredImage(record, vectors[offset], vectors[(offset + 1) % count] if worded else None))
            if with_files:
                for kind, data in (("originals", b"\xff\xd8\xff"), ("thumbnails", thumbnail)):
                    folder = settings.data_dir / kind / record.id[:2]
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{record.id}.jpg").write_bytes(data)
        store.upsert(items)
    store.maintain()
    store.close()
    return time.perf_counter() - started


def small_jpeg(seed: int) -> bytes:
    """A real 256-pixel photo-like JPEG, different for each seed (noise), so no upload is a duplicate."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, 256, dtype=np.float32)
    pixels = (base[None, :, None] + base[:, None, None] * rng.uniform(-1, 1, 3)) % 256
    pixels = np.clip(pixels + rng.normal(0, 40, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def timed(work: Callable[[], Any], repeat: int) -> float:
    """The median of `repeat` runs after one warm-up, in seconds."""
    work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(library: Library, size: int, with_files: bool) -> dict[str, float]:
    rng = np.random.default_rng(1)
    deep = size // 2  # newest first, the page after the record at the middle of the library
    middle = library.catalog.get(record_id(size - 1 - deep))
    cursor = PageCursor.of(middle)
    ids = [record_id(int(n)) for n in rng.integers(0, size, 50)]
    uploads = iter(range(10_000))
    figures = {
        "browse first page": timed(lambda: library.catalog.page(limit=50), 5),
        "browse deep page (cursor)": timed(lambda: library.catalog.page(limit=50, after=cursor), 5),
        "browse deep page (offset)": timed(lambda: library.catalog.page(offset=deep, limit=50), 2),
        "count": timed(library.catalog.count, 5),
        "get": timed(lambda: library.catalog.get(ids[int(rng.integers(0, 50))]), 20),
        "search (text)": timed(lambda: library.search.run(Query((TextTerm("a red bicycle"),), k=20)), 10),
        "upload + dup check": timed(lambda: library.ingest.add(small_jpeg(next(uploads)), filename="up.jpg"), 5),
    }
    assert [r.id for r in library.catalog.page(limit=50, after=cursor)] == [
        record_id(size - 2 - deep - n) for n in range(50)
    ]
    started = time.perf_counter()
    assert sum(1 for _ in library.catalog.iter_records()) == library.catalog.count()  # the pages a full pass is made of
    figures["read every record"] = time.perf_counter() - started
    started = time.perf_counter()
    groups = library.duplicates.groups()
    figures["duplicate review"] = time.perf_counter() - started
    print(f"  {len(groups)} duplicate groups")
    library.ingest.add(small_jpeg(next(uploads)), filename="between.jpg")  # what changes between two visits
    started = time.perf_counter()
    library.duplicates.groups()
    figures["duplicate review again"] = time.perf_counter() - started
    if with_files:
        started = time.perf_counter()
        report = integrity.check(library)
        figures["check"] = time.perf_counter() - started
        print(f"  check: {report.records} records, {report.originals} originals, {len(report.problems)} problems")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--huge", action="store_true", help="also 1 000 000 images")
    parser.add_argument("--no-check", action="store_true", help="no files, no `check`")
    parser.add_argument("--store", default="lancedb")
    parser.add_argument("--keep", action="store_true", help="keep the libraries (paths printed)")
    parser.add_argument(
        "--words", type=float, default=0.0, help="share of images with a words vector (0: no captioner, the default)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.huge else [])
    with_files = not args.no_check
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start, words on {args.words:.0%}")
    results: dict[int, dict[str, float]] = {}
    for size in sizes:
        workdir = Path(tempfile.mkdtemp(prefix=f"imagematch-scale-{size}-"))
        settings = Settings(  # type: ignore[call-arg]
            data_dir=workdir,
            store=args.store,
            model="demo",
            captioner="none",
            background_removal="off",
            milvus_uri=str(workdir / "milvus.db"),
            log_level="WARNING",
        )
        library = build_library(settings)
        library.open()
        model_id, dim = library.embedder.model_id, library.embedder.dim
        library.close()
        built = build(settings, model_id, dim, size, with_files, args.words)
        print(f"{size} images: built in {built:.0f} s (load average {os.getloadavg()[0]:.2f})")
        library = build_library(settings)
        library.open()
        results[size] = measure(library, size, with_files)
        library.close()
        for name, seconds in results[size].items():
            print(f"  {name:28s} {seconds * 1000:10.1f} ms")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"  kept in {workdir}")
    smallest = sizes[0]
    print(f"\ngrowth from {smallest} images (targets: per request <= 1.5x, full pass <= 12x at 10x the images)")
    for name in (*PER_REQUEST, *CONTRAST, *FULL_PASS):
        if name not in results[smallest]:
            continue
        cells = []
        for size in sizes[1:]:
            factor = results[size][name] / results[smallest][name]
            # A full pass may grow 1.2x per 1x more images (12x at 10x); a request 1.5x whatever the size.
            target = 1.5 if name in PER_REQUEST else 1.2 * size / smallest if name in FULL_PASS else None
            verdict = "" if target is None else (" met" if factor <= target else " MISSED")
            cells.append(f"{size}: {factor:6.2f}x{verdict}")
        print(f"  {name:28s} " + "   ".join(cells))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
