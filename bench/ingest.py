"""End-to-end `index` throughput on camera-sized JPEGs, against raw model throughput measured in the same run.

Generates N 4000×3000 JPEGs (photographic content with sensor-like noise, 3–5 MB each, cached under
bench/results/camera/), indexes them with the product's batch pipeline (decode in worker threads, embed in
batches, write in batches) with background removal off and on, captions off, and prints images/s and the
ratio to the model's work alone ("raw"). Then the same files as uploads: 8 clients at once (--clients), each in
its own thread calling `Ingest.add` as POST /api/v1/images does, and the same through real HTTP against the
web app under uvicorn on 127.0.0.1 (started and stopped here), each into a fresh library, with the ratio to
`index` of the same run and how many model calls the uploads took.

"Raw" is the model's work alone, measured in the same run before and after the index runs: embedding already
prepared inputs, or with background removal on, cutting out and embedding already decoded images. `index` has
more to do on the same cores (read, hash, decode, thumbnail, write), so the ratio says how much of that the
pipeline hides behind the model. The CPU cost of decoding one image (which cannot be skipped: even at 1/8 scale
every byte of a JPEG is entropy-decoded) is printed beside it.

The default count is large enough that the pipeline's start (the first batch waits for its images to be
decoded) and end (the last batch is embedded with nothing left to decode beside it) weigh little, as in a real
import of a photo folder; a small --count measures mostly those two.

    .venv/bin/python -m bench.ingest [--count 144] [--model demo] [--clients 8] [--skip-http]
        [--json bench/results/ingest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.common import runnable_model
from imagematch import media
from imagematch.ai.batching import SharedCallsEmbedder
from imagematch.factory import build_library
from imagematch.library import Library, Upload
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.serving import serve

CAMERA = (4000, 3000)


def camera_jpegs(folder: Path, count: int) -> list[Path]:
    """Distinct camera-sized photos: smooth random scenes plus per-pixel noise, like a real sensor's output."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"camera-{n:04d}.jpg"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng([2026, n])  # its own seed: a cache made by a smaller --count is not repeated
        scene = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize(
            CAMERA, Image.Resampling.BICUBIC
        )
        pixels = np.asarray(scene, dtype=np.int16) + rng.normal(0, 12, (CAMERA[1], CAMERA[0], 3)).astype(np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=92)
    return paths


def decoded_sample(settings: Settings, paths: list[Path], count: int = 8) -> tuple[list[Image.Image], float]:
    """The first images decoded as `index` decodes them (draft mode, at the sides it needs), and the CPU seconds
    that took per image."""
    library = build_library(settings.model_copy(update={"background_removal": "off"}))
    sides = library.embedding.decode_sides()
    sample = [p.read_bytes() for p in paths[:count]]
    started = time.process_time()
    images = [media.decode(data, max_pixels=settings.max_pixels, **sides).image for data in sample]
    return images, (time.process_time() - started) / len(sample)


def model_throughput(
    settings: Settings, images: list[Image.Image], batch: int, seconds: float = 8.0
) -> tuple[float, str]:
    """Images/s of the model's work alone, on images already decoded, at the batch size ingest uses: embedding
    prepared inputs, or with background removal on, cutting out (in as many threads as index uses) and
    embedding. Also the runtime used."""
    library = build_library(settings)
    library.open()
    chosen = [images[n % len(images)] for n in range(batch)]
    cutters = ThreadPoolExecutor(settings.decode_workers)  # cut-outs run as index runs them: in its decode threads
    if library.embedding.remover is None:
        prepared = [library.embedder.prepare(image) for image in chosen]

        def work() -> None:
            library.embedder.encode_prepared(prepared)

    else:

        def work() -> None:
            library.embedder.encode_prepared([cut[0] for cut in cutters.map(library.embedding.embeddable, chosen)])

    work()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 2:
        work()
        runs += 1
    per_second = runs * batch / (time.perf_counter() - started)
    cutters.shutdown()
    return per_second, library.embedder.runtime


def index_throughput(settings: Settings, paths: list[Path]) -> dict[str, Any]:
    library = build_library(settings)
    library.open()
    started = time.perf_counter()
    results = library.ingest.add_many(Upload.from_path(p) for p in paths)
    elapsed = time.perf_counter() - started
    added = sum(r.status == "added" for r in results)
    return {"images": len(paths), "added": added, "seconds": elapsed, "images_per_s": len(paths) / elapsed}


def model_calls(library: Library) -> tuple[int, int]:
    """Image-encoder calls made so far for one-image requests, and the images they took."""
    embedder = library.embedder
    if not isinstance(embedder, SharedCallsEmbedder):
        return 0, 0
    return embedder.images.calls, embedder.images.inputs


def concurrent_uploads(
    library: Library, paths: list[Path], clients: int, upload: Callable[[Path], str]
) -> dict[str, Any]:
    """`clients` threads uploading the files at once, each taking the next file when its upload is answered."""
    calls_before, inputs_before = model_calls(library)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients, thread_name_prefix="client") as pool:
        statuses = list(pool.map(upload, paths))
    elapsed = time.perf_counter() - started
    calls, inputs = model_calls(library)
    return {
        "images": len(paths),
        "added": statuses.count("added"),
        "clients": clients,
        "seconds": elapsed,
        "images_per_s": len(paths) / elapsed,
        "model_calls": calls - calls_before,
        "model_inputs": inputs - inputs_before,
    }


def upload_throughput(settings: Settings, paths: list[Path], clients: int) -> dict[str, Any]:
    """Uploads as the API runs them (`Ingest.add` in a worker thread per request), without HTTP."""
    library = build_library(settings)
    library.open(ingest=True)
    try:
        return concurrent_uploads(
            library, paths, clients, lambda path: library.ingest.add(path.read_bytes(), filename=path.name).status
        )
    finally:
        library.close()


def http_upload_throughput(settings: Settings, paths: list[Path], clients: int) -> dict[str, Any]:
    """The same uploads as multipart POST /api/v1/images over real sockets, one connection per client."""
    settings = settings.model_copy(update={"rate_limit": 0})
    library = build_library(settings)
    statuses = {201: "added", 409: "duplicate"}
    try:
        with (
            serve(create_app(settings, library), timeout_s=120) as url,
            httpx.Client(timeout=600, limits=httpx.Limits(max_connections=clients)) as client,
        ):

            def upload(path: Path) -> str:
                files = {"file": (path.name, path.read_bytes(), "image/jpeg")}
                answer = client.post(f"{url}/api/v1/images", files=files)
                return statuses.get(answer.status_code, f"HTTP {answer.status_code}")

            return concurrent_uploads(library, paths, clients, upload)
    finally:
        library.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=144)
    parser.add_argument("--model", default="", help="default: IMAGEMATCH_MODEL")
    parser.add_argument("--runtime", default="auto", choices=("torch", "onnx", "onnx-int8", "auto"))
    parser.add_argument("--skip-background", action="store_true", help="do not measure with rembg on")
    parser.add_argument("--clients", type=int, default=8, help="uploads at once")
    parser.add_argument("--skip-http", action="store_true", help="do not measure uploads through HTTP")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    images = camera_jpegs(Path("bench/results/camera"), args.count)
    size_mb = np.mean([p.stat().st_size for p in images]) / 1e6
    workdir = Path(tempfile.mkdtemp(prefix="imagematch-ingest-"))
    configured = Settings()  # type: ignore[call-arg]
    model, weights = runnable_model(args.model or configured.model, configured.model_cache_dir)
    overrides = {"captioner": "none", "runtime": args.runtime, "log_level": "WARNING", "model": model}
    base = configured.model_copy(update=overrides)
    modes = ("off",) if args.skip_background else ("off", "on")
    sample, decode_cpu = decoded_sample(base.model_copy(update={"data_dir": workdir / "raw"}), images)

    def raw(mode: str) -> tuple[float, str]:
        settings = base.model_copy(update={"data_dir": workdir / "raw", "background_removal": mode})
        return model_throughput(settings, sample, base.embed_batch_size)

    raw_before = {mode: raw(mode)[0] for mode in modes}
    runs = {
        mode: index_throughput(base.model_copy(update={"data_dir": workdir / mode, "background_removal": mode}), images)
        for mode in modes
    }
    for mode in modes:
        settings = base.model_copy(update={"background_removal": mode})
        uploads = {
            "uploads": upload_throughput(
                settings.model_copy(update={"data_dir": workdir / f"{mode}-add"}), images, args.clients
            )
        }
        if not args.skip_http:
            uploads["http uploads"] = http_upload_throughput(
                settings.model_copy(update={"data_dir": workdir / f"{mode}-http"}), images, args.clients
            )
        for upload in uploads.values():
            upload["ratio_to_index"] = upload["images_per_s"] / runs[mode]["images_per_s"]
        runs[mode].update(uploads)
    raw_after = {mode: raw(mode) for mode in modes}
    runtime = raw_after["off"][1]
    report: dict[str, Any] = {
        "model": args.model or configured.model,
        "weights": weights,
        "runtime": f"{args.runtime} ({runtime})" if args.runtime == "auto" else runtime,
        "cpus": os.cpu_count(),
        "jpeg_mb": round(size_mb, 2),
        "decode_cpu_ms_per_image": decode_cpu * 1000,
        "runs": {},
    }
    for mode, run in runs.items():
        # Shared machines drift: each ratio uses the model at its best in this run.
        run["raw_images_per_s"] = {"before": raw_before[mode], "after": raw_after[mode][0]}
        run["ratio_to_raw"] = run["images_per_s"] / max(raw_before[mode], raw_after[mode][0])
        report["runs"][f"background {mode}"] = run
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shutil.rmtree(workdir, ignore_errors=True)

    described = f"{len(images)} JPEGs of 4000×3000 ({size_mb:.1f} MB each)"
    load = " ".join(f"{n:.2f}" for n in os.getloadavg())
    report["load_average"] = load
    print(f"model {report['model']} ({weights}), runtime {report['runtime']}, {os.cpu_count()} CPUs, {described}")
    print(f"decoding one (draft mode) costs {decode_cpu * 1000:.0f} ms of CPU; batch {base.embed_batch_size}")
    for name, run in report["runs"].items():
        before, after = run["raw_images_per_s"]["before"], run["raw_images_per_s"]["after"]
        print(
            f"{name:<15}: raw {before:5.1f} images/s before, {after:5.1f} after; index {run['images_per_s']:5.1f} "
            f"images/s = {run['ratio_to_raw'] * 100:3.0f}% of raw"
        )
        for kind in ("uploads", "http uploads"):
            if kind in run:
                upload = run[kind]
                print(
                    f"{'':<15}  {upload['clients']} clients, {kind:<12}: {upload['images_per_s']:5.1f} images/s = "
                    f"{upload['ratio_to_index'] * 100:3.0f}% of index; {upload['added']} added, "
                    f"{upload['model_inputs']} images in {upload['model_calls']} model calls"
                )
    print(f"load average at the end {load}")
    print(f"peak RSS {report['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
