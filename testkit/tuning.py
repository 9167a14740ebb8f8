"""A library whose owners describe its images in words the demo model never saw, and how search fares on the
images they did not describe: what `imagematch tune` is measured by (tests/test_tuning.py, bench/quality/tune.py).

Three quarters of the images are described with a made-up word for their colour ("a blorf circle" for a red
one); the rest have no description and metadata split=undescribed, and every measure ranks only those.
"""

from __future__ import annotations

import io
import random

from imagematch.demo_data import COLOURS, SHAPES, random_scene, render
from imagematch.library import Library, SimpleSearch
from imagematch.records import Condition, Filter
from imagematch.services.ingest import Upload

MADE_UP = dict(
    zip(COLOURS, ("blorf", "zindle", "quopa", "vextan", "mirrox", "dafflin", "plenth", "gurbo"), strict=True)
)
UNDESCRIBED = Filter((Condition("split", "eq", "undescribed"),))


def build(library: Library, size: int, seed: int, words: dict[str, str] = MADE_UP) -> None:
    """`size` images; one in four without a description, the others "a <word of its colour> <shape>"."""
    rng = random.Random(seed)
    uploads = []
    for n in range(size):
        scene = random_scene(rng)
        buffer = io.BytesIO()
        render(scene, side=96, seed=seed * 100_000 + n).save(buffer, "PNG")
        data = buffer.getvalue()
        described = n % 4 != 0
        uploads.append(
            Upload(
                f"{n}-{scene.colour}-{scene.shape}.png",
                lambda data=data: data,  # type: ignore[misc]
                f"a {words[scene.colour]} {scene.shape}" if described else "",
                {"split": "described" if described else "undescribed", "colour": scene.colour, "shape": scene.shape},
            )
        )
    library.ingest.add_many(uploads)


def precision(library: Library, text: str, colour: str, shape: str | None = None) -> float:
    hits = library.search.simple(SimpleSearch(text=text, k=5, filter=UNDESCRIBED)).hits
    right = [h for h in hits if h.record.metadata["colour"] == colour and shape in (None, h.record.metadata["shape"])]
    return len(right) / 5


def measure(library: Library) -> dict[str, float]:
    made_up = [precision(library, word, colour) for colour, word in MADE_UP.items()]
    own = [precision(library, f"a {colour} {shape}", colour, shape) for colour in COLOURS for shape in SHAPES]
    return {"made_up_p@5": round(sum(made_up) / len(made_up), 3), "own_words_p@5": round(sum(own) / len(own), 3)}
