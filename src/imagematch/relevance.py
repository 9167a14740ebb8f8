"""Where a query's relevant results end: the automatic cut-off (`cutoff=auto`).

No single cosine separates good matches from junk for every query and model: some queries score higher on
everything than others do, and each model has its own scale. So each query is measured against what it scores
on this library's pictures in general: its *floor* is the lower quartile (FLOOR_QUANTILE) of its cosines with
a sample of the library's images, most of which a query is not about. A result is kept when its score has come
at least AUTO_SHARE of the way from that floor to a perfect match:

    score ≥ floor + AUTO_SHARE × (1 − floor)

A library of fewer than MIN_SAMPLE images says too little about a query's floor, and is not cut. AUTO_SHARE
was chosen on one synthetic library with the demo model and measured on another (bench/quality/cutoff.py,
figures in docs/search.md).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

AUTO_SHARE = 0.5
SAMPLE_SIZE = 512  # library images the floor is measured on
MIN_SAMPLE = 20
FLOOR_QUANTILE = 0.25  # the floor is what a quarter of the sample scores below: a subject may fill most of it


def auto_min_score(sample_scores: npt.NDArray[np.float32]) -> float | None:
    """The score a result needs under the automatic cut-off, from the query's cosines with the library sample:
    AUTO_SHARE of the way from their lower quartile (the query's floor) to 1; None when the sample is too small."""
    if sample_scores.size < MIN_SAMPLE:
        return None
    floor = min(float(np.quantile(sample_scores, FLOOR_QUANTILE)), 1.0)
    return floor + AUTO_SHARE * (1.0 - floor)
