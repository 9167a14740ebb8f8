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
import io
import json
import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for tests.fake_moondream

from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance

from imagematch.demo_data import COLOURS, SHAPES, Scene, random_scene, render
from imagematch.factory import build_caption_worker, build_library
from imagematch.fingerprint import hamming, perceptual_hash
from imagematch.settings import Settings
from imagematch.web.app import create_app

PER_QUERY = 5  # relevant images per (colour, shape) query


@dataclass(frozen=True, slots=True)
class Item:
    scene: Scene
    data: bytes
    name: str


def held_out(seed: int = 4242, queries: int = 24, cluttered: bool = False) -> list[Item]:
    """`queries` (colour, shape) pairs with PER_QUERY images each, varied in everything else."""
    rng = random.Random(seed)
    pairs = rng.sample([(c, s) for c in COLOURS for s in SHAPES], queries)
    items: list[Item] = []
    for colour, shape in pairs:
        for n in range(PER_QUERY):
            base = random_scene(rng, cluttered=cluttered)
            background = base.background if base.background != colour else "gray"
            scene = Scene(shape, colour, base.size, base.pattern, background, base.x, base.y, base.angle, cluttered)
            buffer = io.BytesIO()
            render(scene, side=256, seed=seed * 1000 + len(items)).save(buffer, "PNG")
            items.append(Item(scene, buffer.getvalue(), f"{colour}-{shape}-{n}.png"))
    return items


def variant(data: bytes) -> bytes:
    """A near-identical copy: brighter, smaller, re-encoded as JPEG."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image = ImageEnhance.Brightness(image.resize((200, 200))).enhance(1.1)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def quality_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "model": "demo",
        "background_removal": "off",
        "captioner": "none",
        "duplicate_distance": 0,  # synthetic graphics can be close in pHash; keep every held-out image
        "runtime": "torch",  # quality is the model's; runtimes agree to cosine 0.999 (tests/ai/test_onnx.py)
        "model_cache_dir": data_dir / "models",
        "log_level": "WARNING",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def product(settings: Settings) -> Iterator[TestClient]:
    # A loopback name: the app answers only to its own host names, and TestClient's default is testserver.
    with TestClient(create_app(settings, build_library(settings)), base_url="http://127.0.0.1") as client:
        yield client


def ingest(client: TestClient, items: list[Item]) -> dict[str, Item]:
    stored = {}
    for item in items:
        response = client.post("/api/v1/images", files={"file": (item.name, item.data, "image/png")})
        if response.status_code == 201:
            stored[response.json()["id"]] = item
    return stored


def _search(client: TestClient, k: int = 5, image: bytes | None = None, **form: str) -> list[str]:
    files = {"image": ("q.jpg", image, "image/jpeg")} if image is not None else None
    response = client.post("/api/v1/search", data={"k": str(k), **form}, files=files)
    response.raise_for_status()
    return [hit["id"] for hit in response.json()["hits"]]


def text_metrics(client: TestClient, stored: dict[str, Item]) -> dict[str, float]:
    pairs = sorted({(i.scene.colour, i.scene.shape) for i in stored.values()})
    precisions = []
    for colour, shape in pairs:
        hits = _search(client, text=f"a {colour} {shape}")
        precisions.append(sum((stored[h].scene.colour, stored[h].scene.shape) == (colour, shape) for h in hits) / 5)
    recall = [image_id in _search(client, text=item.scene.caption) for image_id, item in stored.items()]
    return {"short_query_p@5": sum(precisions) / len(precisions), "own_caption_r@5": sum(recall) / len(recall)}


def image_metrics(client: TestClient, stored: dict[str, Item]) -> dict[str, float]:
    first = [_search(client, k=1, image=variant(item.data))[0] == image_id for image_id, item in stored.items()]
    return {"variant_first": sum(first) / len(first)}


def multimodal_curve(client: TestClient, stored: dict[str, Item]) -> list[dict[str, float]]:
    """Text asks for one (colour, shape); the query image shows another. Share of the top 5 that answers
    the text, and whether the query image's own original is first, for image_weight 0 .. 1."""
    by_pair: dict[tuple[str, str], list[str]] = {}
    for image_id, item in stored.items():
        by_pair.setdefault((item.scene.colour, item.scene.shape), []).append(image_id)
    pairs = sorted(by_pair)
    curve = []
    for weight in (0.0, 0.25, 0.5, 0.75, 1.0):
        text_share = image_first = 0.0
        trials = 0
        for index, (colour, shape) in enumerate(pairs):
            other = pairs[(index + len(pairs) // 2) % len(pairs)]
            if other[0] == colour or other[1] == shape:
                continue
            query_id = by_pair[other][0]
            hits = _search(
                client, image=variant(stored[query_id].data), text=f"a {colour} {shape}", image_weight=str(weight)
            )
            text_share += sum((stored[h].scene.colour, stored[h].scene.shape) == (colour, shape) for h in hits) / 5
            image_first += hits[0] == query_id
            trials += 1
        curve.append(
            {"image_weight": weight, "text_answer_p@5": text_share / trials, "image_first": image_first / trials}
        )
    return curve


def caption_server_for(items: list[Item]) -> Any:
    """A local caption server that answers each image's ground-truth caption (matched by pHash)."""
    from tests.fake_moondream import FakeMoondream

    known = [(perceptual_hash(Image.open(io.BytesIO(i.data)).convert("RGB")), i.scene.caption) for i in items]

    def caption_for(jpeg: bytes) -> str:
        phash = perceptual_hash(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        return min(known, key=lambda entry: hamming(entry[0], phash))[1]

    return FakeMoondream(caption_for=caption_for)


def evaluate(workdir: Path) -> dict[str, Any]:
    from tests.fake_moondream import running

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
