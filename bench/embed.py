"""Raw model throughput, and the machine's own matrix-multiply speed measured in the same run.

Prints images/s at batch 1, 8 and 32 (and at 8 again while another process keeps one core busy), text
queries/s and single-query latency, the model's FLOPs per image, the fp32 GEMM GFLOP/s of the device the
model runs on (the CPU, or the GPU where PyTorch finds one), and the share of that peak the image encoder
reaches. Writes JSON.

Without the configured model's weights (an offline machine) the same architecture is built with random
weights: cost does not depend on the weights, and the output says which was used.

    .venv/bin/python -m bench.embed [--model ViT-B-32-256/datacomp_s34b_b86k]
        [--runtime torch|onnx|onnx-int8] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import runnable_model
from imagematch.ai.embedder import Embedder, OpenClipEmbedder
from imagematch.ai.model_source import parse_model_spec
from imagematch.ai.onnx_embedder import OnnxEmbedder
from imagematch.settings import load_settings


def gemm_gflops(device: str, size: int = 2048, seconds: float = 2.0) -> float:
    """fp32 matrix-multiply speed of the device the model runs on (all CPU cores, or the GPU)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        runs += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * runs / (time.perf_counter() - started) / 1e9


def with_one_core_busy(work: Callable[[], object], seconds: float) -> tuple[int, float, list[float]]:
    """`timed(work)` while another process keeps one core busy (as a second program on the machine would)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        return timed(work, seconds)
    finally:
        spinner.kill()
        spinner.wait()


def timed(work: Callable[[], object], seconds: float) -> tuple[int, float, list[float]]:
    work()  # warm-up
    runs, laps, started = 0, [], time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        lap = time.perf_counter()
        work()
        laps.append(time.perf_counter() - lap)
        runs += 1
    return runs, time.perf_counter() - started, laps


def image_flops(embedder: OpenClipEmbedder) -> float:
    embedder.load()
    model: Any = embedder._model
    size = model.visual.image_size
    side = size[0] if isinstance(size, tuple | list) else size
    # With gradients on: in inference mode attention takes a fused fast path the counter does not see,
    # which would leave out about a third of the work.
    with FlopCounterMode(display=False) as counter, torch.enable_grad():
        model.encode_image(torch.zeros(1, 3, side, side, device=next(model.parameters()).device))
    return float(counter.get_total_flops())


def agreement(runtime: Embedder, reference: OpenClipEmbedder, count: int = 200) -> dict[str, float]:
    """How closely another runtime's image vectors follow PyTorch fp32 on the same pictures: cosine per
    image, and the overlap of each image's 10 nearest neighbours among all of them (what search would show)."""
    from imagematch.demo_data import render, scenes

    pictures = [render(scene, side=256, seed=n) for n, scene in enumerate(scenes(7, count))]
    prepared = [reference.prepare(p) for p in pictures]
    fp32 = reference.encode_prepared(prepared)
    other = runtime.encode_prepared(prepared)
    cosines = np.sum(fp32 * other, axis=1)
    top_fp32 = np.argsort(-(fp32 @ fp32.T), axis=1)[:, 1:11]
    top_other = np.argsort(-(other @ other.T), axis=1)[:, 1:11]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_fp32, top_other, strict=True)])
    return {"cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min()), "top10_overlap": float(overlap)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="default: IMAGEMATCH_MODEL")
    parser.add_argument("--runtime", choices=("torch", "onnx", "onnx-int8"), default="torch")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    settings = load_settings()
    spec = args.model or settings.model
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    runnable, weights = runnable_model(spec, settings.model_cache_dir)
    base = OpenClipEmbedder(parse_model_spec(runnable), settings.model_cache_dir, threads=threads)
    flops = image_flops(base)
    embedder: Embedder = base
    if args.runtime != "torch":
        embedder = OnnxEmbedder(base, settings.model_cache_dir, quantized=args.runtime == "onnx-int8")
    embedder.load()
    device = "cuda" if args.runtime == "torch" and torch.cuda.is_available() else "cpu"
    peak = gemm_gflops(device)
    from PIL import Image

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    prepared = embedder.prepare(photo)
    rows: list[dict[str, Any]] = []
    for batch in (1, 8, 32):
        items = [prepared] * batch
        runs, elapsed, _ = timed(lambda items=items: embedder.encode_prepared(items), args.seconds)  # type: ignore[misc]
        per_second = runs * batch / elapsed
        rows.append({"batch": batch, "images_per_s": per_second, "share_of_gemm_peak": per_second * flops / 1e9 / peak})
    eight = [prepared] * 8
    runs, elapsed, _ = with_one_core_busy(lambda: embedder.encode_prepared(eight), args.seconds)
    busy = {"images_per_s": runs * 8 / elapsed, "ratio_to_idle": runs * 8 / elapsed / rows[1]["images_per_s"]}
    query = "a photo of a dog playing with a red ball on the beach at sunset"
    runs, elapsed, laps = timed(lambda: embedder.encode_texts([query]), args.seconds)
    text = {"queries_per_s": runs / elapsed, "latency_ms_p50": statistics.median(laps) * 1000}
    agreed = agreement(embedder, base) if args.runtime != "torch" else {}

    machine = platform.processor() or platform.machine()
    print(f"model {spec}: {weights}; runtime {args.runtime} on {device}, {threads} threads, {machine}")
    print(f"GEMM fp32 peak: {peak:.0f} GFLOP/s; image encoder: {flops / 1e9:.2f} GFLOP per image")
    if args.runtime == "onnx-int8":
        print("(% of the fp32 peak: int8 arithmetic can pass it)")
    print(f"{'batch':>6}{'images/s':>10}{'% of peak':>11}")
    for row in rows:
        print(f"{row['batch']:>6}{row['images_per_s']:>10.1f}{row['share_of_gemm_peak'] * 100:>10.0f}%")
    print(
        f"batch 8 with another process keeping one core busy: {busy['images_per_s']:.1f} images/s, "
        f"{busy['ratio_to_idle'] * 100:.0f}% of idle"
    )
    print(f"text: {text['queries_per_s']:.1f} queries/s, single query p50 {text['latency_ms_p50']:.1f} ms")
    if agreed:
        print(
            f"agreement with PyTorch fp32 on 200 images: cosine mean {agreed['cosine_mean']:.4f}, "
            f"min {agreed['cosine_min']:.4f}; top-10 neighbour overlap {agreed['top10_overlap']:.3f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "model": embedder.model_id,
                    "weights": weights,
                    "runtime": args.runtime,
                    "device": device,
                    "threads": threads,
                    "gemm_gflops": peak,
                    "image_gflop": flops / 1e9,
                    "images": rows,
                    "one_core_busy": busy,
                    "text": text,
                    "agreement": agreed,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
