"""Zero-shot retrieval on Flickr30k (1K test) and MS-COCO (5K test), through the whole product.

Every test image is ingested through the REST API (captions and background removal off, duplicates allowed
through so no test image is lost), then each caption searches the API (text -> image) and each image searches
by its stored id (image -> text, scored against the caption embeddings). Recall@1/5/10 are printed beside
open_clip's published figures for the same model, with the difference.

Needs local copies (no download happens here):

    flickr30k: --flickr-images DIR --flickr-captions FILE   (Karpathy split JSON: dataset_flickr30k.json)
    coco:      --coco-images DIR   --coco-captions FILE     (Karpathy split JSON: dataset_coco.json)

    .venv/bin/python -m bench.quality.retrieval --model ViT-B-32-256/datacomp_s34b_b86k \\
        --flickr-images ~/data/flickr30k/images --flickr-captions ~/data/dataset_flickr30k.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from imagematch.factory import build_library
from imagematch.settings import Settings
from imagematch.web.app import create_app

# open_clip's published zero-shot retrieval (docs/openclip_retrieval_results.csv): text->image R@1/5/10 and
# image->text R@1/5/10, as fractions.
PUBLISHED: dict[tuple[str, str], dict[str, float]] = {
    ("ViT-B-32/openai", "flickr30k"): {
        "t2i@1": 0.5878,
        "t2i@5": 0.8356,
        "t2i@10": 0.9002,
        "i2t@1": 0.7890,
        "i2t@5": 0.9490,
        "i2t@10": 0.9820,
    },
    ("ViT-B-32/openai", "coco"): {
        "t2i@1": 0.3044,
        "t2i@5": 0.5594,
        "t2i@10": 0.6687,
        "i2t@1": 0.5012,
        "i2t@5": 0.7500,
        "i2t@10": 0.8352,
    },
    ("ViT-B-32-256/datacomp_s34b_b86k", "flickr30k"): {
        "t2i@1": 0.6492,
        "t2i@5": 0.8722,
        "t2i@10": 0.9216,
        "i2t@1": 0.8480,
        "i2t@5": 0.9670,
        "i2t@10": 0.9850,
    },
    ("ViT-B-32-256/datacomp_s34b_b86k", "coco"): {
        "t2i@1": 0.3993,
        "t2i@5": 0.6543,
        "t2i@10": 0.7524,
        "i2t@1": 0.5792,
        "i2t@5": 0.8056,
        "i2t@10": 0.8810,
    },
    ("ViT-B-16-SigLIP-256/webli", "flickr30k"): {
        "t2i@1": 0.7504,
        "t2i@5": 0.9242,
        "t2i@10": 0.9626,
        "i2t@1": 0.9040,
        "i2t@5": 0.9830,
        "i2t@10": 0.9930,
    },
    ("ViT-L-16-SigLIP-256/webli", "flickr30k"): {
        "t2i@1": 0.7904,
        "t2i@5": 0.9446,
        "t2i@10": 0.9684,
        "i2t@1": 0.9180,
        "i2t@5": 0.9900,
        "i2t@10": 0.9980,
    },
}


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    captions: tuple[str, ...]


def karpathy_test_split(images: Path, captions: Path) -> list[Sample]:
    data = json.loads(captions.read_text())
    return [
        Sample(images / entry["filename"], tuple(s["raw"] for s in entry["sentences"][:5]))
        for entry in data["images"]
        if entry.get("split") == "test"
    ]


def evaluate(samples: list[Sample], settings: Settings) -> dict[str, float]:
    library = build_library(settings)
    ids: list[str] = []
    with TestClient(create_app(settings, library), base_url="http://127.0.0.1") as client:  # a name it answers to
        for sample in samples:
            response = client.post("/api/v1/images", files={"file": (sample.path.name, sample.path.read_bytes())})
            if response.status_code not in (201, 409):
                raise SystemExit(f"{sample.path}: {response.status_code} {response.text}")
            body = response.json()
            ids.append(body["id"] if response.status_code == 201 else body["existing_id"])
        position = {image_id: n for n, image_id in enumerate(ids)}
        text_ranks = []
        for n, sample in enumerate(samples):
            for caption in sample.captions:
                hits = client.post("/api/v1/search", data={"text": caption, "k": "10"}).json()["hits"]
                ranked = [position[h["id"]] for h in hits]
                text_ranks.append(ranked.index(n) if n in ranked else 10)
    captions = [c for s in samples for c in s.captions]
    owner = np.array([n for n, s in enumerate(samples) for _ in s.captions])
    caption_vectors = library.embedder.encode_texts(captions)
    stored = library.store.get_vectors(ids)
    image_ranks = []
    for n, image_id in enumerate(ids):
        scores = caption_vectors @ stored[image_id][0]
        best = owner[np.argsort(-scores)[:10]].tolist()
        image_ranks.append(best.index(n) if n in best else 10)
    text_array, image_array = np.array(text_ranks), np.array(image_ranks)
    return {
        **{f"t2i@{k}": float(np.mean(text_array < k)) for k in (1, 5, 10)},
        **{f"i2t@{k}": float(np.mean(image_array < k)) for k in (1, 5, 10)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--flickr-images", type=Path)
    parser.add_argument("--flickr-captions", type=Path)
    parser.add_argument("--coco-images", type=Path)
    parser.add_argument("--coco-captions", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    datasets = {
        "flickr30k": (args.flickr_images, args.flickr_captions),
        "coco": (args.coco_images, args.coco_captions),
    }
    report: dict[str, Any] = {"model": args.model, "results": {}}
    for name, (images, captions) in datasets.items():
        if images is None or captions is None:
            continue
        samples = karpathy_test_split(images, captions)
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                data_dir=Path(folder),
                model=args.model,
                background_removal="off",
                captioner="none",
                duplicate_distance=0,
                words_weight=0.0,
                max_k=1000,
            )
            started = time.perf_counter()
            measured = evaluate(samples, settings)
        published = PUBLISHED.get((args.model, name), {})
        report["results"][name] = {
            "measured": measured,
            "published": published,
            "seconds": time.perf_counter() - started,
        }
        print(f"{name}: {len(samples)} images, model {args.model}")
        for metric, value in measured.items():
            reference = published.get(metric)
            compared = (
                f"published {reference * 100:5.1f}  difference {(value - reference) * 100:+5.1f}"
                if reference
                else "no published figure"
            )
            print(f"  {metric:<7} {value * 100:5.1f}   {compared}")
    if not report["results"]:
        raise SystemExit(
            "give at least one dataset: --flickr-images/--flickr-captions or --coco-images/--coco-captions"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
