"""Search quality through the whole product, offline, with the built-in demo model.

Held-out synthetic images (never seen in training) are ingested through the Library and searched through the
REST API. Printed and written as JSON:

- text -> image: precision@5 for "a <colour> <shape>" queries (5 relevant images each), and recall@5 of each
  image for its own full caption;
- image -> image: a re-encoded, resized, brightened copy finds its original first;
- weighted multimodal: as image_weight goes from 0 to 1 the results move from the text's answer to the image's;
- background removal (real u2netp) on subjects among clutter: the same metrics with it off and on;
- captions from a local caption server that answers the ground-truth caption: text search with the words
  vector off and on.

    U2NET_HOME=.cache/u2net .venv/bin/python bench/quality/offline.py [--json bench/results/quality.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for testkit

from imagematch.factory import build_caption_worker, build_library
from testkit.fake_moondream import running
from testkit.quality import (
    caption_server_for,
    held_out,
    image_metrics,
    ingest,
    multimodal_curve,
    product,
    quality_settings,
    text_metrics,
)


def evaluate(workdir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    items = held_out()
    with product(quality_settings(workdir / "plain")) as client:
        stored = ingest(client, items)
        report["stored"] = len(stored)
        report["text"] = text_metrics(client, stored)
        report["image"] = image_metrics(client, stored)
        report["multimodal"] = multimodal_curve(client, stored)

    cluttered = held_out(seed=77, cluttered=True)
    report["clutter"] = {}
    for mode in ("off", "on"):
        with product(quality_settings(workdir / f"clutter-{mode}", background_removal=mode)) as client:
            stored = ingest(client, cluttered)
            report["clutter"][mode] = {**text_metrics(client, stored), **image_metrics(client, stored)}

    report["captions"] = {}
    with running(caption_server_for(items)) as server:
        base = quality_settings(
            workdir / "captions", captioner="moondream", moondream_endpoint=server.endpoint, caption_rate=100.0
        )
        with product(base) as client:
            stored = ingest(client, items)
        library = build_library(base)
        build_caption_worker(base, library).run_until_empty()
        report["captioned"] = library.captions.counts()["done"]
        for weight in (0.0, 0.3, 0.6):
            with product(base.model_copy(update={"words_weight": weight, "captioner": "none"})) as client:
                report["captions"][f"words_weight={weight}"] = text_metrics(client, stored)
    return report


def print_report(description: str, evaluate: Callable[[Path], dict[str, Any]]) -> None:
    """A quality benchmark's command line: run `evaluate` in a scratch folder, print its report, and write it
    to `--json` when asked."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = evaluate(Path(folder))
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


def main() -> None:
    print_report(__doc__.splitlines()[0], evaluate)


if __name__ == "__main__":
    main()
