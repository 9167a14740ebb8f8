"""Where a query's relevant results end: the automatic cut-off (`cutoff=auto`).

No single cosine separates good matches from junk for every query and model: some queries score higher on
everything than others do, and each model has its own scale. So each query is measured against pictures of
nothing, fixed images without a subject (flat greys, seeded noise) embedded once per model: what the query
scores on them is its floor, what it scores on anything merely because it is a picture. A result is kept when
its score has come at least AUTO_SHARE of the way from that floor to a perfect match:

    score ≥ floor + AUTO_SHARE × (1 − floor),   floor = the query's highest cosine on the reference images

AUTO_SHARE was chosen on one synthetic library with the demo model and measured on another
(bench/quality/cutoff.py, figures in docs/search.md).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

AUTO_SHARE = 0.2
_SIDE = 224
_GREYS = (0, 64, 128, 192, 255)
_NOISE_SEEDS = (1, 2, 3, 4, 5)
# Names the reference images in the vector cache; a change to how they are drawn needs a new version.
REFERENCE_IMAGE_NAMES = tuple(
    [f"relevance-v1 grey {value}" for value in _GREYS] + [f"relevance-v1 noise {seed}" for seed in _NOISE_SEEDS]
)


def reference_images() -> list[Image.Image]:
    """Pictures of nothing: flat greys from black to white, and coloured noise from fixed seeds."""
    images = [Image.new("RGB", (_SIDE, _SIDE), (value, value, value)) for value in _GREYS]
    for seed in _NOISE_SEEDS:
        pixels = np.random.default_rng(seed).integers(0, 256, (_SIDE, _SIDE, 3), dtype=np.uint8)
        images.append(Image.fromarray(pixels, "RGB"))
    return images


def auto_min_score(reference_scores: npt.NDArray[np.float32]) -> float:
    """The score a result needs under the automatic cut-off, from the query's cosines with the reference images:
    AUTO_SHARE of the way from the highest of them (the query's floor) to 1."""
    floor = min(float(np.max(reference_scores)), 1.0)
    return floor + AUTO_SHARE * (1.0 - floor)
