"""What `imagematch tune` buys, through the whole product, offline, with the built-in demo model.

A library of synthetic shapes whose owners describe three quarters of the images with a made-up word per
colour ("a blorf circle" for a red one); the model never saw those words (testkit/tuning.py). The other
quarter has no description, and every measure ranks only those, through Library.search:

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
import json
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import synthetic_record
from imagematch.factory import build_library
from imagematch.library import TuneReport
from imagematch.records import StoredImage
from testkit.quality import quality_settings
from testkit.tinymodel import build_tiny_model, vit_b_32
from testkit.tuning import build, measure


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
        model = build_tiny_model(root / "vit-b-32", config=vit_b_32())
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
        running = [""]  # the step under way
        since = [time.perf_counter()]

        def progress(step: str, done: int, total: int) -> None:
            """Charge the time since the last call to the step that was running."""
            now = time.perf_counter()
            if running[0]:
                steps[running[0]] = steps.get(running[0], 0.0) + now - since[0]
            running[0], since[0] = step, now

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
