"""Search latency over HTTP and recall of the ANN index, at 10k, 100k and 1M stored images.

For each store backend available offline and each size: fill a store with clustered, CLIP-like synthetic
vectors (half the images also get a words vector; no files are stored, the search path does not read them),
let the store maintain itself (the embedded store builds its ANN index past the threshold), then:

- recall@10 of the store's search against exact brute force, on held-out queries from the same clusters;
- start `imagematch serve` on it (127.0.0.1, the configured model) and measure the time to the first answered
  search, text / image / multimodal latency p50/p95/p99 over HTTP, queries/s with 8 clients, and the server's
  RSS idle, after searching and after uploading images.

    .venv/bin/python -m bench.search [--sizes 10000,100000,1000000] [--backends lancedb,milvus]
        [--json bench/results/search.json]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.common import runnable_model, synthetic_record
from imagematch.ai.model_source import parse_model_spec
from imagematch.factory import build_embedder, build_store
from imagematch.records import StoredImage
from imagematch.settings import Settings
from testkit.cli_env import env_for

QUERIES = (
    "a dog on the beach",
    "a red bicycle against a wall",
    "mountains at sunset",
    "a bowl of fruit",
    "two people walking in the rain",
    "a city street at night",
    "a cat asleep on a sofa",
    "an old car in a field",
)


def clustered(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    picks = centres[rng.integers(0, len(centres), count)]
    vectors = picks + 0.35 * rng.normal(size=picks.shape) / np.sqrt(centres.shape[1] / 64)
    unit: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return unit


def fill(settings: Settings, model_id: str, dim: int, size: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """Write `size` synthetic images; returns held-out queries (same clusters) and the seconds it took.

    The image vectors are also kept in `vectors.npy` beside the store, for the exact search recall compares with.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(16, size // 200), dim))
    kept = np.lib.format.open_memmap(settings.data_dir / "vectors.npy", mode="w+", dtype=np.float32, shape=(size, dim))
    store = build_store(settings)
    store.open(model_id, dim)
    started = time.perf_counter()
    now = datetime.now(UTC)
    chunk = 20_000
    for start in range(0, size, chunk):
        count = min(chunk, size - start)
        vectors = clustered(rng, centres, count)
        words = clustered(rng, centres, count)
        kept[start : start + count] = vectors
        items = []
        for offset in range(count):
            n = start + offset
            when = now - timedelta(seconds=size - n)
            record = synthetic_record(n, f"{n:016x}-{n:08x}", int(rng.integers(0, 2**63)), when, model_id)
            items.append(StoredImage(record, vectors[offset], words[offset] if n % 2 else None))
        store.upsert(items)
    store.maintain()
    seconds = time.perf_counter() - started
    kept.flush()
    store.close()
    return clustered(rng, centres, 100), seconds


def recall_at_10(settings: Settings, queries: np.ndarray) -> float:
    """The store's top 10 against exact brute force over the same vectors."""
    stored = np.load(settings.data_dir / "vectors.npy", mmap_mode="r")
    best: list[list[tuple[float, int]]] = [[] for _ in queries]
    for start in range(0, len(stored), 50_000):
        scores = queries @ np.asarray(stored[start : start + 50_000]).T
        for q, row in enumerate(scores):
            top = np.argpartition(-row, 10)[:10]
            best[q] = sorted(best[q] + [(float(row[i]), start + int(i)) for i in top], reverse=True)[:10]
    store = build_store(settings)
    found = [[int(h.record.filename[4:-4]) for h in store.search(q, k=10)] for q in queries]
    store.close()
    return float(np.mean([len({n for _, n in b} & set(f)) / 10 for b, f in zip(best, found, strict=True)]))


def fill_and_recall(settings: Settings, model_id: str, dim: int, size: int) -> tuple[float, float]:
    """Run in a child process: an embedded engine (Milvus Lite) keeps its files locked until its process ends,
    and the server measured next must open them."""
    queries, seconds = fill(settings, model_id, dim, size)
    return seconds, recall_at_10(settings, queries)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of a process, MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentiles(laps: list[float]) -> dict[str, float]:
    ordered = sorted(laps)

    def pick(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000

    return {"p50_ms": pick(0.5), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "mean_ms": statistics.mean(ordered) * 1000}


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((640, 480), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def serve_and_measure(env: dict[str, str], rounds: int, clients: int) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "imagematch", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    report: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"the server stopped: {server.stderr.read().decode() if server.stderr else ''}")
                try:
                    if client.post("/api/v1/search", data={"text": "warm-up"}).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            report["start_to_first_search_s"] = time.perf_counter() - started
            report["rss_idle_mb"] = rss_mb(server.pid)[0]
            image = jpeg(1)
            kinds: dict[str, Any] = {
                "text": lambda i: client.post("/api/v1/search", data={"text": QUERIES[i % len(QUERIES)]}),
                "image": lambda i: client.post("/api/v1/search", files={"image": ("q.jpg", image, "image/jpeg")}),
                "multimodal": lambda i: client.post(
                    "/api/v1/search",
                    data={"text": QUERIES[i % len(QUERIES)], "image_weight": "0.5"},
                    files={"image": ("q.jpg", image)},
                ),
            }
            for name, call in kinds.items():
                laps, encode = [], []
                for i in range(rounds):
                    lap = time.perf_counter()
                    response = call(i)
                    laps.append(time.perf_counter() - lap)
                    assert response.status_code == 200, response.text
                    encode.append(response.json()["encode_ms"])
                # the model's share, as the server reports it; the rest is the store, fusion and HTTP
                report[name] = {**percentiles(laps), "encode_p50_ms": statistics.median(encode)}
        report["text_qps_8_clients"] = _throughput(base, clients, rounds)
        report["rss_after_search_mb"] = rss_mb(server.pid)[1]
        with httpx.Client(base_url=base, timeout=120) as client:
            for i in range(32):
                client.post("/api/v1/images", files={"file": (f"new-{i}.jpg", jpeg(1000 + i), "image/jpeg")})
        report["rss_after_ingest_mb"] = rss_mb(server.pid)[1]
    finally:
        server.terminate()
        server.wait(30)
    return report


def _throughput(base: str, clients: int, rounds: int) -> float:
    done = [0] * clients

    def work(slot: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            for i in range(rounds):
                assert (
                    client.post("/api/v1/search", data={"text": QUERIES[(slot + i) % len(QUERIES)]}).status_code == 200
                )
                done[slot] += 1

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--backends", default="lancedb,milvus")
    parser.add_argument("--milvus-max", type=int, default=100_000, help="Milvus Lite is a test engine; skip above")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--cache",
        type=Path,
        help="keep each filled library in this folder and reuse it in later runs (filling 1 000 000 takes long)",
    )
    args = parser.parse_args()

    configured = Settings()  # type: ignore[call-arg]
    model, weights = runnable_model(configured.model, configured.model_cache_dir)
    probe = build_embedder(configured.model_copy(update={"model": model}))
    probe.load()  # a first load may export to ONNX; the servers below start from the cache, as in production
    dim, model_id = probe.dim, parse_model_spec(model).model_id
    results: list[dict[str, Any]] = []
    print(f"model {configured.model} ({weights}), {dim} dimensions, {os.cpu_count()} CPUs")
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            if backend == "milvus" and size > args.milvus_max:
                print(f"{backend} {size}: skipped (Milvus Lite is a test engine; use a Milvus server at this size)")
                continue
            if args.cache:
                workdir = args.cache / f"{backend}-{size}-{model_id.replace('/', '_').replace(':', '_')}"
                workdir.mkdir(parents=True, exist_ok=True)
            else:
                workdir = Path(tempfile.mkdtemp(prefix=f"imagematch-search-{backend}-{size}-"))
            settings = configured.model_copy(
                update={"data_dir": workdir, "store": backend, "model": model, "milvus_uri": str(workdir / "milvus.db")}
            )
            filled = workdir / "filled.json"
            if filled.is_file():
                fill_s, recall = json.loads(filled.read_text())
            else:
                with multiprocessing.get_context("spawn").Pool(1) as child:
                    fill_s, recall = child.apply(fill_and_recall, (settings, model_id, dim, size))
                if args.cache:
                    filled.write_text(json.dumps([fill_s, recall]))
            env = {
                **os.environ,
                # rate_limit 0: the clients here are the load, not abuse
                **env_for(settings, background_removal="off", captioner="none", log_level="WARNING", rate_limit=0),
            }
            measured = serve_and_measure(env, args.rounds, args.clients)
            row = {"backend": backend, "images": size, "fill_s": fill_s, "recall_at_10": recall, **measured}
            results.append(row)
            print(
                f"{backend:>8} {size:>8}: recall@10 {recall:.3f}; text p50/p95/p99 "
                f"{row['text']['p50_ms']:.0f}/{row['text']['p95_ms']:.0f}/{row['text']['p99_ms']:.0f} ms "
                f"(model {row['text']['encode_p50_ms']:.0f} ms); "
                f"image p95 {row['image']['p95_ms']:.0f} ms; multimodal p95 {row['multimodal']['p95_ms']:.0f} ms; "
                f"{row['text_qps_8_clients']:.1f} text q/s with {args.clients} clients; first search after "
                f"{row['start_to_first_search_s']:.1f} s; RSS idle/search/ingest {row['rss_idle_mb']:.0f}/"
                f"{row['rss_after_search_mb']:.0f}/{row['rss_after_ingest_mb']:.0f} MB",
                flush=True,
            )
            if args.json:  # after every row: a long run that fails later keeps what it measured
                args.json.parent.mkdir(parents=True, exist_ok=True)
                report = {"model": configured.model, "weights": weights, "results": results}
                args.json.write_text(json.dumps(report, indent=2))
            if not args.cache:
                shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
