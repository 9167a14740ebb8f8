"""Measure rembg masks on scikit-image photos, to choose when `auto` background removal uses the cut-out.

For each photo: the share of pixels the mask calls foreground (coverage), the share it is sure about
(confidence: mask below 0.1 or above 0.9), the time per image, and what `auto` decides with the configured
thresholds.

    U2NET_HOME=.cache/u2net .venv/bin/python bench/cutout_coverage.py [--model u2netp] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from imagematch.ai.background import MIN_CONFIDENCE, RembgRemover
from imagematch.settings import Settings

# What a person would want: a cut-out for photos with one clear subject, the whole image otherwise.
SUBJECTS = ("astronaut", "coffee", "chelsea", "camera", "clock", "coins", "colorwheel", "retina")
WHOLE = ("rocket", "moon", "page", "grass", "gravel", "brick", "hubble_deep_field", "text", "cell")
WHOLE_MIXED = ("immunohistochemistry",)


def _photo(name: str) -> Image.Image:
    array = getattr(skdata, name)()
    if array.dtype != np.uint8:
        array = (np.asarray(array, dtype=np.float64) * 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="u2netp")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    defaults = Settings.model_fields
    low = float(defaults["cutout_min_coverage"].default)
    high = float(defaults["cutout_max_coverage"].default)
    remover = RembgRemover("auto", model=args.model, min_coverage=low, max_coverage=high)
    remover.load()
    rows = []
    print(
        f"rembg {args.model}; auto uses the cut-out when {low} <= coverage <= {high} and confidence >= {MIN_CONFIDENCE}"
    )
    print(f"{'photo':<22}{'coverage':>9}{'confidence':>11}{'ms':>6}  auto      wanted")
    for name in SUBJECTS + WHOLE + WHOLE_MIXED:
        image = _photo(name)
        started = time.perf_counter()
        result = remover.cutout(image)
        ms = (time.perf_counter() - started) * 1000
        wanted = "cut-out" if name in SUBJECTS else "whole"
        decided = "cut-out" if result.image is not None else "whole"
        rows.append(
            {
                "photo": name,
                "coverage": result.coverage,
                "confidence": result.confidence,
                "ms": ms,
                "auto": decided,
                "wanted": wanted,
            }
        )
        mark = "" if decided == wanted else "  <- differs"
        print(f"{name:<22}{result.coverage:>9.3f}{result.confidence:>11.2f}{ms:>6.0f}  {decided:<9} {wanted}{mark}")
    agree = sum(r["auto"] == r["wanted"] for r in rows)
    print(f"auto agrees with the wanted choice on {agree}/{len(rows)} photos")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
