"""The PyTorch-free tokeniser and preprocessing give exactly what open_clip gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ftfy
import numpy as np
import open_clip
import pytest
from hypothesis import given
from hypothesis import strategies as st
from open_clip.transform import PreprocessCfg, image_transform_v2

from imagematch.ai.clip_text import ClipTokenizer, repaired
from imagematch.ai.preprocess import ImagePreprocessor
from testkit.images import photo

TEXTS = [
    "a photo of a dog",
    "A RED Circle on a striped GREEN background!!!",
    "it's the cat's toy; they'll've gone & we'd   said   so",
    "café naïve résumé — “quoted” ‘text’ … 3.14159 and 42",
    "東京タワーの写真 🗼🐈 emoji and ñ",
    "&amp;lt;b&amp;gt;html&amp;lt;/b&amp;gt; &quot;entities&quot;",
    "mojibake: cafÃ© SchÃ¶n",
    "x" * 300,
    " ".join(["long"] * 120),
    "",
    "   ",
    "<start_of_text> inside the text <end_of_text>",
]


@pytest.mark.parametrize("context", [77, 32, 248])
def test_tokens_match_open_clip(context: int) -> None:
    ours = ClipTokenizer(context)(TEXTS)
    theirs = open_clip.SimpleTokenizer(context_length=context)(TEXTS).numpy()
    assert ours.dtype == np.int64
    assert np.array_equal(ours, theirs)


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="&")))
def test_printable_ascii_without_entities_needs_no_repair(text: str) -> None:
    """What lets the tokeniser skip ftfy (and its import) for such text: ftfy would change nothing."""
    assert ftfy.fix_text(text) == text == repaired(text)


def test_vocabulary_and_merges_match_open_clip() -> None:
    """Every id and every merge rank, not only those the texts above reach (we read only part of the file)."""
    ours = ClipTokenizer()
    theirs = open_clip.SimpleTokenizer()
    assert ours.ids == theirs.encoder
    assert {tuple(pair.split(" ")): rank for pair, rank in ours.rank.items()} == theirs.bpe_ranks


@pytest.mark.parametrize(
    ("size", "mode", "interpolation"),
    [(224, "shortest", "bicubic"), (64, "shortest", "bicubic"), (256, "squash", "bilinear")],
)
def test_preprocessing_matches_open_clip(size: int, mode: str, interpolation: str) -> None:
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    ours = ImagePreprocessor(size, mean, std, interpolation=interpolation, resize_mode=mode)
    cfg = PreprocessCfg(size=size, mean=mean, std=std, interpolation=interpolation, resize_mode=mode)
    theirs = image_transform_v2(cfg, is_train=False)
    for image in (photo("coffee"), photo("astronaut"), photo("page"), photo("coffee").rotate(90, expand=True)):
        expected = theirs(image).numpy()
        got = ours(image)
        assert got.shape == expected.shape == (3, size, size)
        assert np.abs(got - expected).max() < 1e-5


def test_a_server_on_onnx_runtime_never_imports_pytorch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Once exported, ONNX Runtime needs no PyTorch: about half a gigabyte less memory."""
    from imagematch.ai.embedder import OpenClipEmbedder
    from imagematch.ai.model_source import parse_model_spec
    from imagematch.ai.onnx_embedder import OnnxEmbedder

    OnnxEmbedder(OpenClipEmbedder(parse_model_spec(f"local-dir:{tiny_model_dir}"), tmp_path), tmp_path).load()
    script = f"""
import sys
from pathlib import Path
from PIL import Image
from imagematch.ai.embedder import OpenClipEmbedder
from imagematch.ai.model_source import parse_model_spec
from imagematch.ai.onnx_embedder import OnnxEmbedder
base = OpenClipEmbedder(parse_model_spec("local-dir:{tiny_model_dir}"), Path("{tmp_path}"))
onnx = OnnxEmbedder(base, Path("{tmp_path}"))
print(onnx.encode_texts(["a dog"]).shape, onnx.encode_images([Image.new("RGB", (80, 60))]).shape)
print("torch imported:", "torch" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert "(1, 64) (1, 64)" in result.stdout
    assert "torch imported: False" in result.stdout
