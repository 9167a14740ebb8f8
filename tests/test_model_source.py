from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from imagematch.ai.model_source import PRESETS, local_model_dir, parse_model_spec
from imagematch.records import ModelUnavailable
from tests.tinymodel import build_tiny_model


def test_presets_and_names_resolve_without_network() -> None:
    assert parse_model_spec("fast").model_id == PRESETS["fast"]
    source = parse_model_spec("ViT-B-32/openai")
    assert (source.kind, source.name, source.tag) == ("builtin", "ViT-B-32", "openai")
    assert parse_model_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K").kind == "hf-hub"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ViT-Q-99/none", "unknown model"),
        ("ViT-B-32", "needs a pretrained tag"),
        ("hf-hub:justone", "org/repo"),
    ],
)
def test_bad_names_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(ModelUnavailable, match=message):
        parse_model_spec(spec)


def test_uncached_model_without_network_fails_fast_and_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="local-dir:") as raised:
        local_model_dir(parse_model_spec("fast"), tmp_path / "cache")
    assert time.monotonic() - started < 10
    assert "not in the cache" in str(raised.value)


def test_local_dir_must_hold_config_and_weights(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"open_clip_config\.json"):
        local_model_dir(parse_model_spec(f"local-dir:{tmp_path / 'empty'}"), tmp_path)


def test_local_model_identity_follows_the_weights_not_the_path(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", seed=0)
    moved = tmp_path / "elsewhere" / "a"
    shutil.copytree(first, moved)
    other = build_tiny_model(tmp_path / "b", seed=1)
    assert parse_model_spec(f"local-dir:{first}").model_id == parse_model_spec(f"local-dir:{moved}").model_id
    assert parse_model_spec(f"local-dir:{first}").model_id != parse_model_spec(f"local-dir:{other}").model_id
