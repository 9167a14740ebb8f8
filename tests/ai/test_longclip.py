"""LongCLIP: 248-token context on the same open_clip code path, from the published checkpoint layout."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from imagematch.ai.embedder import OpenClipEmbedder
from imagematch.ai.model_source import LONGCLIP, install_longclip, parse_model_spec
from imagematch.factory import build_library
from imagematch.library import SimpleSearch
from imagematch.settings import Settings
from testkit.images import jpeg
from testkit.tinymodel import build_tiny_model

TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 248, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def _longclip_checkpoint(path: Path) -> tuple[Path, open_clip.CLIP]:
    """A checkpoint in LongCLIP's published layout, and the open_clip model it should become."""
    torch.manual_seed(3)
    reference = open_clip.CLIP(**copy.deepcopy(TINY_CFG), quick_gelu=True).eval()
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    used = state["positional_embedding"].clone()
    state["positional_embedding_res"] = used.clone()
    state["positional_embedding"][20:] = 123.0  # LongCLIP never reads these rows
    state["positional_embedding_res"][:20] = -99.0  # nor these
    torch.save(state, path)
    return path, reference


def test_longclip_names_are_known() -> None:
    for name in ("longclip-B", "longclip-L"):
        source = parse_model_spec(name)
        assert (source.kind, source.model_id) == ("longclip", name)
    assert LONGCLIP["longclip-L"][2] == "ViT-L-14"


def test_published_layout_converts_to_the_same_model(tmp_path: Path) -> None:
    checkpoint, reference = _longclip_checkpoint(tmp_path / "longclip-tiny.pt")
    folder = tmp_path / "converted"
    install_longclip(checkpoint, folder, TINY_CFG)
    embedder = OpenClipEmbedder(parse_model_spec(f"local-dir:{folder}"), tmp_path)
    assert embedder.context_length == 248
    texts = ["a long description " * 30, "short"]
    tokens = open_clip.get_tokenizer(f"local-dir:{folder}")(texts)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(reference.encode_text(tokens), dim=-1).numpy()
    assert np.allclose(embedder.encode_texts(texts), expected, atol=1e-5)


@pytest.fixture
def long_settings(settings: Settings, tmp_path: Path) -> Settings:
    folder = build_tiny_model(tmp_path / "long-tiny", context_length=248)
    return settings.model_copy(update={"model": f"local-dir:{folder}"})


def test_200_tokens_fit_and_300_are_cut_at_248_keeping_the_users_words(long_settings: Settings) -> None:
    library = build_library(long_settings)
    library.ingest.add(jpeg("astronaut"), filename="a.jpg")
    embedder = library.embedder
    words_200 = " ".join(["dog"] * 198)  # one token per word, plus start and end of text
    assert embedder.count_tokens(words_200) == 200
    assert not library.search.simple(SimpleSearch(text=words_200)).truncated
    words_300 = " ".join(["dog"] * 298)
    assert embedder.count_tokens(words_300) == 300
    assert library.search.simple(SimpleSearch(text=words_300)).truncated
    fitted = embedder.fit_text([words_200, "a caption " * 40])
    assert fitted.text.startswith(words_200) and fitted.truncated
    assert embedder.count_tokens(fitted.text) <= 248
