"""What `imagematch tune` buys, through the whole product, offline, with the built-in demo model.

A library of synthetic shapes whose owners describe three quarters of the images with a made-up word per
colour ("a blorf circle" for a red one); the model never saw those words. The other quarter has no
description (metadata split=undescribed), and every measure ranks only those, through Library.search:

- made-up words: precision@5 of the right colour for a query of the made-up word alone;
- own words: precision@5 of the right colour and shape for "a <colour> <shape>", which tuning must not spoil.

Measured before and after tuning, for libraries of several sizes (how much data tuning needs), and printed
as a table and JSON:

    .venv/bin/python -m bench.quality.tune [--sizes 100,200,400,800,1600] [--json bench/results/tune.json]

`--cost N` measures instead what tuning costs on N described images of the default architecture: a library
written straight through the store (random image vectors, eight-word descriptions from a 3 000-word pool) and
a random-weight ViT-B-32 (the real text encoder's size and cost; its answers mean nothing), timed per step of
a dry run.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import synthetic_record
from bench.quality.offline import quality_settings
from imagematch.demo_data import COLOURS, SHAPES, random_scene, render
from imagematch.factory import build_library
from imagematch.library import Library, SimpleSearch, TuneReport
from imagematch.records import Condition, Filter, StoredImage
from imagematch.services.ingest import Upload
from testkit.tinymodel import VIT_B_32, build_tiny_model

MADE_UP = dict(
    zip(COLOURS, ("blorf", "zindle", "quopa", "vextan", "mirrox", "dafflin", "plenth", "gurbo"), strict=True)
)
UNDESCRIBED = Filter((Condition("split", "eq", "undescribed"),))


def build(library: Library, size: int, seed: int, words: dict[str, str] = MADE_UP) -> None:
    """`size` images; one in four without a description, the others "a <word of its colour> <shape>"."""
    rng = random.Random(seed)
    uploads = []
    for n in range(size):
        scene = random_scene(rng)
        buffer = io.BytesIO()
        render(scene, side=96, seed=seed * 100_000 + n).save(buffer, "PNG")
        data = buffer.getvalue()
        described = n % 4 != 0
        uploads.append(
            Upload(
                f"{n}-{scene.colour}-{scene.shape}.png",
                lambda data=data: data,  # type: ignore[misc]
                f"a {words[scene.colour]} {scene.shape}" if described else "",
                {"split": "described" if described else "undescribed", "colour": scene.colour, "shape": scene.shape},
            )
        )
    library.ingest.add_many(uploads)


def precision(library: Library, text: str, colour: str, shape: str | None = None) -> float:
    hits = library.search.simple(SimpleSearch(text=text, k=5, filter=UNDESCRIBED)).hits
    right = [h for h in hits if h.record.metadata["colour"] == colour and shape in (None, h.record.metadata["shape"])]
    return len(right) / 5


def measure(library: Library) -> dict[str, float]:
    made_up = [precision(library, word, colour) for colour, word in MADE_UP.items()]
    own = [precision(library, f"a {colour} {shape}", colour, shape) for colour in COLOURS for shape in SHAPES]
    return {"made_up_p@5": round(sum(made_up) / len(made_up), 3), "own_words_p@5": round(sum(own) / len(own), 3)}


def run(size: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        library = build_library(quality_settings(Path(folder)))
        try:
            started = time.perf_counter()
            build(library, size, seed)
            built = time.perf_counter() - started
            before = measure(library)
            report: TuneReport = library.tuning.tune()
            after = measure(library)
        finally:
            library.close()
    return {
        "images": size,
        "pairs": report.pairs,
        "before": before,
        "after": after,
        "applied": report.applied,
        "held_out": {"before": report.before, "after": report.after},
        "tune_seconds": round(report.seconds, 1),
        "build_seconds": round(built, 1),
    }


def cost(pairs: int, seed: int) -> dict[str, float]:
    """Seconds per step of `tune --dry-run` on `pairs` described images, with a random-weight ViT-B-32."""
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = build_tiny_model(root / "vit-b-32", config=VIT_B_32)
        settings = quality_settings(root, model=f"local-dir:{model}")
        library = build_library(settings)
        library.open()
        dim, model_id = library.embedder.dim, library.embedder.model_id
        pool = [f"word{n}" for n in range(3000)]
        vectors = rng.normal(size=(pairs, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        now = datetime.now(UTC)
        items = []
        for n in range(pairs):
            record = synthetic_record(n, f"{n:016x}-{n:08x}", n, now, model_id)
            words = " ".join(rng.choice(pool, size=8))
            items.append(StoredImage(replace(record, description=words), vectors[n], None))
        for start in range(0, pairs, 2000):
            library.store.upsert(items[start : start + 2000])
        library.store.maintain()
        steps: dict[str, float] = {}
        last = [time.perf_counter(), ""]

        def progress(step: str, done: int, total: int) -> None:
            now = time.perf_counter()
            if last[1]:
                steps[str(last[1])] = steps.get(str(last[1]), 0.0) + now - float(last[0])
            last[:] = [now, step]

        started = time.perf_counter()
        report = library.tuning.tune(on_progress=progress, dry_run=True)
        progress("", 0, 0)
        library.close()
    return {**{k: round(v, 1) for k, v in steps.items()}, "total": round(time.perf_counter() - started, 1),
            "pairs": report.pairs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,200,400,800,1600", help="library sizes, comma-separated")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--cost", type=int, metavar="N", help="time tuning on N pairs of the default architecture")
    args = parser.parse_args()
    if args.cost:
        print(json.dumps(cost(args.cost, args.seed), indent=2))
        return
    rows = []
    print("images  pairs  applied  made-up p@5 before → after  own words p@5 before → after  tune s")
    for size in (int(s) for s in args.sizes.split(",")):
        row = run(size, args.seed)
        rows.append(row)
        b, a = row["before"], row["after"]
        print(
            f"{row['images']:>6}  {row['pairs']:>5}  {row['applied']!s:>7}  "
            f"{b['made_up_p@5']:>11.3f} → {a['made_up_p@5']:.3f}  "
            f"{b['own_words_p@5']:>19.3f} → {a['own_words_p@5']:.3f}  {row['tune_seconds']:>6}",
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
