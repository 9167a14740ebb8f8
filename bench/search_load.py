"""Where a text search's machine time goes, alone and with many searches at once (in-process, no HTTP).

On a library filled by `bench.search --cache` (reused as it is): the CPU time of the whole process (every
thread, LanceDB's and ONNX Runtime's included) per query for each stage of a fused text search run on its own,
one query after the other; then the whole `Library.search` one at a time and from `--clients` threads at once,
with the model's calls shared between concurrent searches and without (alternating, `--repeats` times each), and
what the searching threads were doing meanwhile, sampled every 2 ms from `sys._current_frames`.

    .venv/bin/python -m bench.search_load --library bench/results/search-cache/lancedb-100000-... [--clients 8]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import runnable_model
from bench.search import QUERIES
from imagematch.factory import build_library
from imagematch.library import Library, SimpleSearch
from imagematch.settings import Settings

# Where a sampled thread is, by the first of these found walking out from its innermost frame.
PLACES = (
    ("onnxruntime", "the text encoder (ONNX Runtime)"),
    ("ai/batching.py", "waiting for a shared model call"),
    ("lancedb", "the store's queries (LanceDB)"),
    ("pyarrow", "the store's queries (LanceDB)"),
    ("store/lancedb.py", "turning store results into vectors and records"),
    ("ai/clip_text.py", "tokenising"),
    ("fusion.py", "scoring and fusion"),
    ("library.py", "the search itself (scoring, fusion, bookkeeping)"),
)


def cpu_per_call(work: Callable[[int], object], count: int) -> tuple[float, float]:
    """Milliseconds of the process's CPU (all threads) and of the wall clock per call, one call at a time."""
    work(0)
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        work(i)
    return (time.process_time() - cpu) * 1000 / count, (time.perf_counter() - wall) * 1000 / count


def stages(library: Library, count: int) -> dict[str, tuple[float, float]]:
    """Each stage of a fused text search alone, on the vectors a real query makes."""
    embedder, store = library.embedder, library.store
    depth = library.search._depth(10)
    vectors = [embedder.encode_texts([q])[0] for q in QUERIES]
    found = store.nearest(vectors[0], k=depth)
    return {
        "text encoder (one query)": cpu_per_call(lambda i: embedder.encode_texts([QUERIES[i % 8]]), count),
        "image-vector list (100)": cpu_per_call(lambda i: store.nearest(vectors[i % 8], k=depth), count),
        "words-vector list (100)": cpu_per_call(lambda i: store.nearest(vectors[i % 8], k=depth, field="words"), count),
        "the 10 records shown": cpu_per_call(lambda i: store.get_many([n.id for n in found[i % 8 :][:10]]), count),
        "whole search, in-process": cpu_per_call(lambda i: search(library, i), count),
    }


def search(library: Library, i: int) -> object:
    return library.search.simple(SimpleSearch(text=QUERIES[i % len(QUERIES)]))


def under_load(library: Library, clients: int, per_client: int) -> dict[str, Any]:
    """q/s, CPU per query, latency p95 and where the searching threads were, `clients` threads at once."""
    laps: list[float] = []
    places: collections.Counter[str] = collections.Counter()
    searching: set[int] = set()
    stop = threading.Event()

    def client(slot: int) -> None:
        searching.add(threading.get_ident())
        for i in range(per_client):
            lap = time.perf_counter()
            search(library, slot + i)
            laps.append(time.perf_counter() - lap)

    def sample() -> None:
        while not stop.wait(0.002):
            for ident, frame in sys._current_frames().items():
                if ident in searching:
                    places[place(frame)] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(clients)]
    sampler.start()
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    sampler.join()
    done = clients * per_client
    total = sum(places.values()) or 1
    return {
        "queries_per_s": done / wall,
        "cpu_ms_per_query": cpu * 1000 / done,
        "p95_ms": sorted(laps)[int(0.95 * len(laps))] * 1000,
        "threads_were": {name: count / total for name, count in places.most_common()},
        "loadavg": Path("/proc/loadavg").read_text().split()[0],
    }


def place(frame: Any) -> str:
    seen = []
    while frame is not None:
        seen.append(frame.f_code.co_filename)
        frame = frame.f_back
    for path in seen:  # innermost first
        for marker, name in PLACES:
            if marker in path:
                return name
    return "elsewhere (threading, HTTP-free glue)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", type=Path, required=True, help="a folder bench.search --cache filled")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=20)
    parser.add_argument("--count", type=int, default=40, help="calls per stage, one at a time")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    configured = Settings()  # type: ignore[call-arg]
    model, weights = runnable_model(configured.model, configured.model_cache_dir)
    base = configured.model_copy(
        update={"data_dir": args.library, "model": model, "captioner": "none", "background_removal": "off"}
    )
    libraries = {
        shared: build_library(base.model_copy(update={"shared_model_calls": shared})) for shared in (False, True)
    }
    for library in libraries.values():
        library.open()
        search(library, 0)
    report: dict[str, Any] = {"model": configured.model, "weights": weights, "cpus": os.cpu_count()}
    print(f"model {configured.model} ({weights}), {os.cpu_count()} CPUs, {libraries[False].catalog.count()} images")
    report["stages"] = stages(libraries[False], args.count)
    print(f"one at a time (load average {Path('/proc/loadavg').read_text().split()[0]}):")
    for name, (cpu, wall) in report["stages"].items():
        print(f"  {name:<28} {cpu:6.1f} ms CPU, {wall:6.1f} ms wall")
    report["load"] = []
    for repeat in range(args.repeats):
        for shared in (False, True):
            row: dict[str, Any] = {"shared_model_calls": shared, "repeat": repeat}
            row |= under_load(libraries[shared], args.clients, args.per_client)
            report["load"].append(row)
            where = ", ".join(f"{name} {share:.0%}" for name, share in row["threads_were"].items())
            print(
                f"{args.clients} clients, shared model calls {'on ' if shared else 'off'}: "
                f"{row['queries_per_s']:5.1f} q/s, {row['cpu_ms_per_query']:5.1f} ms CPU per query, "
                f"p95 {row['p95_ms']:4.0f} ms (load average {row['loadavg']}); threads were in: {where}",
                flush=True,
            )
    shared_calls = libraries[True].embedder
    print(
        f"shared text calls: {getattr(getattr(shared_calls, 'texts', None), 'inputs', 0)} queries in "
        f"{getattr(getattr(shared_calls, 'texts', None), 'calls', 0)} encoder calls"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
