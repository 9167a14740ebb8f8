"""Search quality through the whole product, offline, with the built-in demo model: held-out synthetic images,
the product under test settings behind its REST API, and the metrics. bench/quality/ reports them and
tests/quality/ holds them to thresholds.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance

from imagematch.demo_data import COLOURS, SHAPES, Scene, random_scene, render
from imagematch.factory import build_library
from imagematch.fingerprint import hamming, perceptual_hash
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.fake_moondream import FakeMoondream

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


def caption_server_for(items: list[Item]) -> FakeMoondream:
    """A local caption server that answers each image's ground-truth caption (matched by pHash)."""
    known = [(perceptual_hash(Image.open(io.BytesIO(i.data)).convert("RGB")), i.scene.caption) for i in items]

    def caption_for(jpeg: bytes) -> str:
        phash = perceptual_hash(Image.open(io.BytesIO(jpeg)).convert("RGB"))
        return min(known, key=lambda entry: hamming(entry[0], phash))[1]

    return FakeMoondream(caption_for=caption_for)
