"""End-to-end `index` throughput on camera-sized JPEGs, against raw model throughput measured in the same run.

Generates N 4000×3000 JPEGs (photographic content with sensor-like noise, 3–5 MB each, cached under
bench/results/camera/), indexes them with the product's batch pipeline (decode in worker threads, embed in
batches, write in batches) with background removal off and on, captions off, and prints images/s and the
ratio to the embedder's batched throughput on already-prepared inputs.

    PYTHONPATH=. .venv/bin/python bench/ingest.py [--count 48] [--model demo] [--json bench/results/ingest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.common import runnable_model
from imagematch.factory import build_library
from imagematch.library import Upload
from imagematch.settings import Settings

CAMERA = (4000, 3000)


def camera_jpegs(folder: Path, count: int) -> list[Path]:
    """Distinct camera-sized photos: smooth random scenes plus per-pixel noise, like a real sensor's output."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    paths = []
    for n in range(count):
        path = folder / f"camera-{n:04d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        scene = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize(
            CAMERA, Image.Resampling.BICUBIC
        )
        pixels = np.asarray(scene, dtype=np.int16) + rng.normal(0, 12, (CAMERA[1], CAMERA[0], 3)).astype(np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)
    return paths


def raw_throughput(settings: Settings, batch: int, seconds: float = 8.0) -> float:
    """Images/s of the embedder alone on prepared inputs, at the batch size ingest uses."""
    library = build_library(settings)
    library.open()
    prepared = library.embedder.prepare(Image.new("RGB", (640, 480), (120, 90, 60)))
    items = [prepared] * batch
    library.embedder.encode_prepared(items)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        library.embedder.encode_prepared(items)
        runs += 1
    return runs * batch / (time.perf_counter() - started)


def index_throughput(settings: Settings, paths: list[Path]) -> dict[str, Any]:
    library = build_library(settings)
    library.open()
    started = time.perf_counter()
    results = library.add_many(Upload.from_path(p) for p in paths)
    elapsed = time.perf_counter() - started
    added = sum(r.status == "added" for r in results)
    return {"images": len(paths), "added": added, "seconds": elapsed, "images_per_s": len(paths) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--model", default="", help="default: IMAGEMATCH_MODEL")
    parser.add_argument("--runtime", default="torch", choices=("torch", "onnx", "onnx-int8", "auto"))
    parser.add_argument("--skip-background", action="store_true", help="do not measure with rembg on")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    images = camera_jpegs(Path("bench/results/camera"), args.count)
    size_mb = np.mean([p.stat().st_size for p in images]) / 1e6
    workdir = Path(tempfile.mkdtemp(prefix="imagematch-ingest-"))
    configured = Settings()  # type: ignore[call-arg]
    model, weights = runnable_model(args.model or configured.model, configured.model_cache_dir)
    overrides = {"captioner": "none", "runtime": args.runtime, "log_level": "WARNING", "model": model}
    base = configured.model_copy(update=overrides)
    raw_settings = base.model_copy(update={"data_dir": workdir / "raw", "background_removal": "off"})
    raw = raw_throughput(raw_settings, base.embed_batch_size)
    report: dict[str, Any] = {
        "model": args.model or configured.model,
        "weights": weights,
        "runtime": args.runtime,
        "cpus": os.cpu_count(),
        "jpeg_mb": round(size_mb, 2),
        "raw_images_per_s": raw,
        "runs": {},
    }
    modes = ("off",) if args.skip_background else ("off", "on")
    for mode in modes:
        run = index_throughput(base.model_copy(update={"data_dir": workdir / mode, "background_removal": mode}), images)
        run["ratio_to_raw"] = run["images_per_s"] / raw
        report["runs"][f"background {mode}"] = run
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(workdir, ignore_errors=True)

    described = f"{len(images)} JPEGs of 4000×3000 ({size_mb:.1f} MB each)"
    print(f"model {report['model']} ({weights}), runtime {args.runtime}, {os.cpu_count()} CPUs, {described}")
    print(f"raw model throughput (batch {base.embed_batch_size}, prepared inputs): {raw:.1f} images/s")
    for name, run in report["runs"].items():
        print(f"index, {name:<15} {run['images_per_s']:6.1f} images/s  = {run['ratio_to_raw'] * 100:3.0f}% of raw")
    print(f"peak RSS {report['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
