"""Scoring an image by both of its vectors: what it looks like, and its own words.

Text-to-text cosines (a query against a caption) run much higher than text-to-image cosines, so the raw
numbers cannot be mixed. Each score list is standardised over the candidates (z-scores), mixed with the
words weight, and mapped back onto the image-similarity scale, so the reported score still reads like a
cosine similarity and equals it exactly when the words weight is 0 or no image has words.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Scores = npt.NDArray[np.float64]
_MIN_SPREAD = 1e-6


def _standardise(values: Scores) -> tuple[Scores, float, float]:
    mean = float(values.mean())
    spread = max(float(values.std()), _MIN_SPREAD)
    return (values - mean) / spread, mean, spread


def fuse(image_scores: Scores, words_scores: Scores, has_words: npt.NDArray[np.bool_], weight: float) -> Scores:
    """Fused scores for candidates. Images without words keep their image score's standing."""
    if weight <= 0 or not has_words.any():
        return image_scores.astype(np.float64)
    image_z, mean, spread = _standardise(image_scores.astype(np.float64))
    words_z = image_z.copy()
    present = words_scores[has_words].astype(np.float64)
    if present.size > 1:
        words_z[has_words] = _standardise(present)[0]
    mixed = (1.0 - weight) * image_z + weight * words_z
    return mean + spread * mixed


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
