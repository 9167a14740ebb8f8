"""How long `imagematch search` takes from the shell: the whole process, start-up included, as a user waits.

Prepares a library of demo images in a temporary folder (the one-time ONNX export happens there, in `index`),
then runs `imagematch search ...` N times as a subprocess and prints the wall clock's median and maximum,
the load average before and after (the benchmark itself keeps about one core busy), how many times the
searches connected to the model hub (HF_ENDPOINT points them at a listener that never answers), whether
PyTorch was imported, and the top offenders of `python -X importtime` for one more run.

    .venv/bin/python -m bench.cli_start --runs 10
    .venv/bin/python -m bench.cli_start --model local-dir:/path/to/model   # a real model instead of the demo

With no --model the product's default applies: the built-in demo model on a machine that cannot download the
default one. The model cache is kept in the temporary folder unless --cache-dir names one.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUERY = "a red circle"
HEAVY = ("torch", "open_clip", "rembg", "transformers", "fastapi", "pymilvus", "pinecone", "ftfy", "rich.progress")


def _run(arguments: list[str], env: dict[str, str], *, python_flags: tuple[str, ...] = ()) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *python_flags, "-m", "imagematch", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"imagematch {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr}")
    return seconds, done.stderr


def _import_times(stderr: str) -> list[tuple[int, int, str]]:
    """(self µs, cumulative µs, module) for every line of `-X importtime`."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        own, cumulative, name = line[len("import time:") :].split("|")
        if own.strip().isdigit():  # the name keeps its indentation: none for a top-level import
            rows.append((int(own), int(cumulative), name[1:].rstrip()))
    return rows


def _accepted(listener: socket.socket) -> int:
    """Connections waiting on a non-blocking listener."""
    count = 0
    while True:
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--model", default="", help="IMAGEMATCH_MODEL (default: the product's default)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="IMAGEMATCH_MODEL_CACHE_DIR to reuse")
    parser.add_argument("--top", type=int, default=12, help="import-time offenders to list")
    args = parser.parse_args()

    before = _load()
    with tempfile.TemporaryDirectory(prefix="cli-start-") as temp:
        root = Path(temp)
        env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEMATCH_")}
        env["IMAGEMATCH_DATA_DIR"] = str(root / "data")
        env["IMAGEMATCH_MODEL_CACHE_DIR"] = str(args.cache_dir or root / "cache")
        if args.model:
            env["IMAGEMATCH_MODEL"] = args.model
        _run(["demo-images", str(root / "images"), "--count", str(args.images)], env)
        indexed, _ = _run(["index", str(root / "images")], env)
        print(f"prepared: {args.images} demo images indexed in {indexed:.1f}s (this includes any ONNX export)")

        _run(["search", QUERY], env)  # the first search after index may still warm the OS file cache
        # The searches get a hub that listens and never answers: a search that asked it would show up here.
        with socket.create_server(("127.0.0.1", 0)) as hub:
            hub.setblocking(False)
            searching = {**env, "HF_ENDPOINT": f"http://127.0.0.1:{hub.getsockname()[1]}"}
            times = [_run(["search", QUERY, "-k", "5"], searching)[0] for _ in range(args.runs)]
            asked = _accepted(hub)
        print(
            f"imagematch search {QUERY!r}, {args.runs} runs: p50 {statistics.median(times):.2f}s, "
            f"max {max(times):.2f}s, min {min(times):.2f}s (wall clock, whole process; {os.cpu_count()} CPUs)"
        )
        print(f"load average before, after: {before}, {_load()}")
        print(f"connections to the model hub during the searches: {asked}")

        _, stderr = _run(["search", QUERY, "-k", "5"], env, python_flags=("-X", "importtime"))
        rows = _import_times(stderr)
        imported = {name.strip() for _, _, name in rows}
        print(f"heavy packages imported by search: {', '.join(h for h in HEAVY if h in imported) or 'none'}")
        print(f"imports: {len(rows)} modules, {sum(own for own, _, _ in rows) / 1e6:.2f}s in all")
        print("top-level imports by cumulative time:")
        top_level = sorted((r for r in rows if not r[2].startswith(" ")), key=lambda r: -r[1])
        for _, cumulative, name in top_level[: args.top]:
            print(f"  {cumulative / 1e6:6.2f}s  {name}")
        print("modules by own time:")
        for own, _, name in sorted(rows, key=lambda r: -r[0])[: args.top]:
            print(f"  {own / 1e6:6.2f}s  {name.strip()}")


if __name__ == "__main__":
    main()
