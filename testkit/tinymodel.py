"""A tiny random-weight CLIP of the real open_clip architecture, saved in the local-directory layout.

It proves the plumbing (loading, preprocessing, tokenising, encoding, storing), not search quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
import torch

from imagematch.settings import Settings

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def vit_b_32() -> dict[str, Any]:
    """open_clip's ViT-B-32, the default architecture at full size: for what its size costs (benchmarks)."""
    config: dict[str, Any] = open_clip.get_model_config("ViT-B-32")
    return config


def build_tiny_model(
    folder: Path, *, context_length: int = 77, seed: int = 0, config: dict[str, Any] | None = None
) -> Path:
    """Random weights of the tiny configuration, or of `config` (an open_clip model_cfg)."""
    config = config or {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {
            "context_length": context_length,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 2,
        },
    }
    torch.manual_seed(seed)
    model = open_clip.CLIP(**config)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    preprocess = {
        "mean": OPENAI_MEAN,
        "std": OPENAI_STD,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": preprocess}))
    return folder


def tiny_settings(root: Path, model_dir: Path, **overrides: Any) -> Settings:
    """Settings for a library under `root` on the tiny model: no .env, no background removal, no captions, no
    reading of text in pictures (tests/test_ocr.py turns it on)."""
    options: dict[str, Any] = {"background_removal": "off", "captioner": "none", "ocr": "off", **overrides}
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=root / "data",
        samples_dir=root / "images",
        model=f"local-dir:{model_dir}",
        model_cache_dir=root / "cache",
        embed_batch_size=4,
        allowed_hosts=("testserver",),  # fastapi's TestClient sends Host: testserver
        **options,
    )
