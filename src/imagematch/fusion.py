"""Scoring an image by both of its vectors: what it looks like, and its own words.

Text-to-text cosines (a query against a caption) run much higher than text-to-image cosines, so the raw
numbers cannot be mixed. The words are read as evidence instead: how far the query stands out against an
image's words compared with a fixed set of unrelated reference texts (a z-score the library cannot move), put
on the image-similarity scale by the spread of the query's own image candidates. An image's score is its image
similarity plus that evidence, weighted: words that say something about the query add, words never subtract.

So an image's score depends on its own vectors and the query only: describing one image cannot move another,
and describing an image can only raise it. The score still reads like a cosine similarity, and equals it
exactly where the words weight is 0, the image has no words, or its words say no more than unrelated texts.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Scores = npt.NDArray[np.float64]
_MIN_SPREAD = 1e-6
# Words that stand this many robust standard deviations above unrelated texts are as strong as evidence gets.
MAX_WORDS_STANDING = 10.0
# Unrelated descriptions of everyday pictures: what a query's words score against words that are not about it.
REFERENCE_TEXTS = (
    "a bowl of soup on a wooden table",
    "a city street at night with cars",
    "a dog running on the grass",
    "a bunch of bananas in a basket",
    "a man riding a bicycle",
    "a snowy mountain under a blue sky",
    "an old brick building with windows",
    "a plate of pasta with tomato sauce",
    "two children playing on a beach",
    "a cat sleeping on a sofa",
    "a red car parked by the road",
    "a laptop and a cup of coffee on a desk",
    "a field of yellow flowers",
    "a train at a station platform",
    "a woman holding an umbrella in the rain",
    "a boat on a calm lake",
    "a birthday cake with candles",
    "a kitchen with white cabinets",
    "a forest path in autumn",
    "a group of people at a concert",
    "a close-up of a green leaf",
    "a bird sitting on a branch",
    "a page of printed text",
    "an airplane in the sky",
)


def words_standing(words_scores: Scores, reference_scores: Scores) -> Scores:
    """How far each words score stands above the query's scores on the reference texts, in robust standard
    deviations (median and MAD, so a reference that happens to match the query barely moves it), capped."""
    centre = float(np.median(reference_scores))
    spread = max(1.4826 * float(np.median(np.abs(reference_scores - centre))), _MIN_SPREAD)
    return np.minimum((words_scores.astype(np.float64) - centre) / spread, MAX_WORDS_STANDING)


def fuse(image_scores: Scores, standing: Scores, baseline: Scores, weight: float) -> Scores:
    """Each image's score: its image similarity plus what its words add, never less, never past a perfect match.

    `standing` is words_standing() per image (NaN for an image without words); `baseline` the image similarities
    of the query's image candidates, whose spread turns a standing into a similarity: words that stand s above
    unrelated texts add `weight × spread × s`, and at most `weight × (1 − image similarity)`.
    """
    image = image_scores.astype(np.float64)
    if weight <= 0:
        return image
    spread = max(float(baseline.std()), _MIN_SPREAD)
    added = spread * np.maximum(np.nan_to_num(standing, nan=0.0), 0.0)
    return image + weight * np.minimum(added, np.maximum(1.0 - image, 0.0))


RRF_K = 60  # the constant of Cormack et al.: a rank's weight is 1 / (RRF_K + rank)


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = RRF_K) -> dict[str, float]:
    """Fused score of every id in any ranking (best first): the sum of 1 / (k + rank), ranks from 1.

    Only ranks count, so lists scored on different scales (cosines, BM25) mix without calibration.
    """
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, 1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    return fused
