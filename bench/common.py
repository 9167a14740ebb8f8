"""What the benchmarks share: a model to measure even on a machine that cannot download its weights."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from imagematch.ai.model_source import parse_model_spec, unavailable_reason
from imagematch.fingerprint import phash_hex
from imagematch.records import ImageRecord

RANDOM_NOTE = "random weights of the same architecture (the real weights are not available here; cost is the same)"


def runnable_model(spec: str, cache_dir: Path) -> tuple[str, str]:
    """A model spec that loads here, and a note on its weights.

    Speed does not depend on the weights, so without network a builtin model is rebuilt with random weights
    in the local-directory layout; figures are then the architecture's, and the note says so.
    """
    import open_clip
    import torch

    source = parse_model_spec(spec)
    if unavailable_reason(source, cache_dir) is None:
        return spec, "pretrained weights"
    if source.kind != "builtin":
        raise SystemExit(f"{spec} is not available here and is not a builtin architecture to rebuild")
    folder = cache_dir / "bench-random" / source.name
    if not (folder / "open_clip_config.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        model = open_clip.create_model(source.name, pretrained=None)
        torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
        config = {"model_cfg": open_clip.get_model_config(source.name), "preprocess_cfg": {}}
        (folder / "open_clip_config.json").write_text(json.dumps(config))
    return f"local-dir:{folder}", RANDOM_NOTE


def synthetic_record(n: int, image_id: str, phash: int, when: datetime, model_id: str) -> ImageRecord:
    """Record number n of a library made straight through a store's upsert (no file behind it)."""
    return ImageRecord(
        image_id,
        phash_hex(phash),
        f"{n:064x}",
        f"img-{n}.jpg",
        1000,
        640,
        480,
        "JPEG",
        when,
        when,
        model_id,
        metadata={"album": f"album-{n % 50}"},
    )
