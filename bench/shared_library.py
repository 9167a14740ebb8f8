"""What sharing a library between processes costs each upload and each caption, on the default store.

Prints, measured in one run on a LanceDB library of `--records` records:

- the exclusive lock (fcntl.flock on a file under the store's folder) taken and released uncontended, which
  every upload now holds around its duplicate re-check and write;
- one single-record upsert, the write that lock surrounds, for the ratio;
- a caption lease (read the lease, write it, read it back, delete it) and a heartbeat count (list the workers'
  documents), which each caption now costs, beside the 500 ms between two requests at the default rate.

    .venv/bin/python -m bench.shared_library [--records 2000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from imagematch.captions import LEASES, WORKERS
from imagematch.records import ImageRecord, StoredImage
from imagematch.store.lancedb import LanceStore

DIM = 512


def _item(n: int, rng: np.random.Generator) -> StoredImage:
    now = datetime.now(UTC)
    record = ImageRecord(f"{n:016x}-bench", f"{n:016x}", f"hash-{n}", f"{n}.jpg", 1, 1, 1, "JPEG", now, now, "bench")
    vector = rng.standard_normal(DIM).astype(np.float32)
    return StoredImage(record, vector / np.linalg.norm(vector))


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        store = LanceStore(Path(folder) / "store")
        store.open("bench", DIM)
        for start in range(0, args.records, 500):
            store.upsert([_item(n, rng) for n in range(start, min(args.records, start + 500))])
        store.maintain()

        lock = store.exclusive()
        timings = []
        for _ in range(args.repeat * 50):
            began = time.perf_counter()
            with lock:
                pass
            timings.append(time.perf_counter() - began)
        lock_us = statistics.median(timings) * 1e6

        upserts = []
        for n in range(args.records, args.records + args.repeat):
            item = _item(n, rng)
            began = time.perf_counter()
            store.upsert([item])
            upserts.append(time.perf_counter() - began)

        leases, counts = [], []
        for n in range(args.repeat):
            began = time.perf_counter()
            with lock:
                store.get_document(LEASES, str(n))
                store.put_document(LEASES, str(n), json.dumps({"owner": "bench", "until": time.time() + 120}))
            store.get_document(LEASES, str(n))
            store.delete_document(LEASES, str(n))
            leases.append(time.perf_counter() - began)
            store.put_document(WORKERS, f"w{n % 2}", repr(time.time() + 15))
            began = time.perf_counter()
            store.list_documents(WORKERS)
            counts.append(time.perf_counter() - began)

    upsert_ms = _median_ms(upserts)
    print(f"load average {os.getloadavg()[0]:.2f}, {args.records} records, medians of {args.repeat} runs")
    print(f"exclusive lock, uncontended:      {lock_us:8.1f} µs")
    print(f"one-record upsert:                {upsert_ms:8.2f} ms   lock / upsert = {lock_us / 1000 / upsert_ms:.4f}")
    print(f"caption lease (take and release): {_median_ms(leases):8.2f} ms")
    print(f"count of live caption workers:    {_median_ms(counts):8.2f} ms")
    print(f"both, per caption, / 500 ms between requests at 2/s: {(_median_ms(leases) + _median_ms(counts)) / 500:.3f}")


if __name__ == "__main__":
    main()
