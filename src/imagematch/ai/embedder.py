"""CLIP-family encoders: the `Embedder` protocol and its open_clip (PyTorch) runtime.

Vectors are L2-normalised float32, so a dot product is a cosine similarity. Loading is lazy and happens once
per process, under a lock; encoding is safe to call from several threads.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from imagematch.ai.clip_text import ClipTokenizer
from imagematch.ai.model_source import ModelSource, local_model_dir
from imagematch.ai.preprocess import SUPPORTED_MODES, ImagePreprocessor
from imagematch.records import ModelUnavailable

log = logging.getLogger(__name__)

Matrix = npt.NDArray[np.float32]
Prepared = npt.NDArray[np.float32]  # one preprocessed image, channels first


@dataclass(frozen=True, slots=True)
class FittedText:
    """Text cut to the model's context length, with what was lost reported."""

    text: str
    truncated: bool
    tokens: int  # tokens the whole input would need, special tokens included
    limit: int  # the model's context length


class Embedder(Protocol):
    @property
    def model_id(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def context_length(self) -> int: ...
    @property
    def image_size(self) -> int: ...
    @property
    def runtime(self) -> str: ...
    def load(self) -> None: ...
    def prepare(self, image: Image.Image) -> Prepared: ...
    def encode_prepared(self, batch: Sequence[Prepared]) -> Matrix: ...
    def encode_images(self, images: Sequence[Image.Image]) -> Matrix: ...
    def encode_texts(self, texts: Sequence[str]) -> Matrix: ...
    def fit_text(self, parts: Sequence[str]) -> FittedText: ...
    def count_tokens(self, text: str) -> int: ...


def _tokenizer(folder: Path, text_cfg: dict[str, Any]) -> Any:
    """Our PyTorch-free CLIP tokeniser where the model uses CLIP's BPE as is; open_clip's otherwise."""
    context = int(text_cfg.get("context_length", 77))
    plain = not text_cfg.get("hf_tokenizer_name") and not text_cfg.get("tokenizer_kwargs")
    if plain:
        return ClipTokenizer(context)
    import open_clip

    return open_clip.get_tokenizer(f"local-dir:{folder}")


def _preprocessor(side: int, preprocess_cfg: dict[str, Any]) -> Any:
    """Pillow/numpy preprocessing for the usual modes; open_clip's torchvision pipeline for the others."""
    mean = preprocess_cfg.get("mean") or (0.48145466, 0.4578275, 0.40821073)
    std = preprocess_cfg.get("std") or (0.26862954, 0.26130258, 0.27577711)
    mode = preprocess_cfg.get("resize_mode") or "shortest"
    interpolation = preprocess_cfg.get("interpolation") or "bicubic"
    if mode in SUPPORTED_MODES and len(mean) == 3 and len(std) == 3:
        return ImagePreprocessor(side, mean, std, interpolation=interpolation, resize_mode=mode)
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    wanted = {**preprocess_cfg, "size": side}
    return image_transform_v2(PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), wanted)), False)


def ends_at_end_of_text(model: Any) -> bool:
    """Whether the text tower is CLIP's causal transformer pooled at the end-of-text token.

    Then a token sees only the tokens before it, so the positions after the longest text of a batch cannot
    change any vector and need not be computed: a short query costs a fraction of the full 77-token context.
    """
    return (
        getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "positional_embedding", None) is not None
        and hasattr(model, "token_embedding")
    )


def trim_to_end_of_text(tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Token ids cut after the last end-of-text token of the batch (CLIP's highest id, where it pools)."""
    trimmed: npt.NDArray[np.int64] = tokens[:, : int(tokens.argmax(axis=1).max()) + 1]
    return trimmed


def encode_trimmed_text(model: Any, tokens: Any) -> Any:
    """open_clip's `encode_text` on ids already cut by `trim_to_end_of_text` (same vectors, less work).

    Positions and the causal mask are sliced to the ids' length; the length comes from the input's shape, so
    an ONNX export of this function keeps the sequence axis dynamic.
    """
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), tokens, "argmax")
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if callable(projection) else x @ projection


def normalise(matrix: npt.NDArray[Any]) -> Matrix:
    values: Matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(values, axis=-1, keepdims=True)
    normalised: Matrix = (values / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised


class OpenClipEmbedder:
    """open_clip models on PyTorch (CPU, or CUDA when present).

    What preprocessing and tokenising need comes from the model's config, so they work without the weights:
    another runtime can use them while the PyTorch weights are never loaded (or are freed).
    """

    def __init__(
        self,
        source: ModelSource,
        cache_dir: Path,
        *,
        batch_size: int = 16,
        threads: int = 0,
        device: str | None = None,
    ) -> None:
        self.source = source
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self.threads = threads or (os.cpu_count() or 1)
        self._device = device
        self._lock = threading.Lock()
        self._model: Any = None
        self._preprocess: Any = None
        self._tokenizer: Any = None
        self._dim = 0
        self._context = 0
        self._image_size = 0

    @property
    def model_id(self) -> str:
        return self.source.model_id

    @property
    def runtime(self) -> str:
        return "torch"

    @property
    def dim(self) -> int:
        self._describe()
        return self._dim

    @property
    def context_length(self) -> int:
        self._describe()
        return self._context

    @property
    def image_size(self) -> int:
        """The side of the square the model looks at."""
        self._describe()
        return self._image_size

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def torch_model(self) -> Any:
        self.load()
        return self._model

    def _describe(self) -> None:
        """Preprocessing, tokeniser and shapes, read once from the model's config (no weights)."""
        if self._preprocess is not None:
            return
        with self._lock:
            if self._preprocess is not None:
                return
            folder = local_model_dir(self.source, self.cache_dir)
            try:
                config = json.loads((folder / "open_clip_config.json").read_text())
                model_cfg = config.get("model_cfg", config)
                size = model_cfg["vision_cfg"]["image_size"]
                side = int(size[0] if isinstance(size, list | tuple) else size)
                tokenizer = _tokenizer(folder, model_cfg.get("text_cfg", {}))
                preprocess = _preprocessor(side, config.get("preprocess_cfg", {}))
                dim = int(model_cfg["embed_dim"])
            except (OSError, KeyError, TypeError, ValueError) as error:
                raise ModelUnavailable(
                    f"cannot read the configuration of {self.model_id} in {folder}: {error}"
                ) from error
            self._tokenizer = tokenizer
            self._dim = dim
            self._context = int(getattr(tokenizer, "context_length", 0) or 77)
            self._image_size = side
            self._preprocess = preprocess

    def load(self) -> None:
        """The weights as well (lazily, once per process, under a lock)."""
        if self._model is not None:
            return
        self._describe()
        with self._lock:
            if self._model is not None:
                return
            started = time.perf_counter()
            folder = local_model_dir(self.source, self.cache_dir)
            import open_clip
            import torch

            torch.set_num_threads(self.threads)
            device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
            try:
                model = open_clip.create_model(f"local-dir:{folder}", device=device)
            except (OSError, RuntimeError, ValueError, KeyError) as error:
                raise ModelUnavailable(f"cannot load model {self.model_id} from {folder}: {error}") from error
            model.eval()
            self._device = device
            self._model = model
            log.info(
                "model %s loaded on %s in %.1fs (%d dimensions, %d-token context, %d threads)",
                self.model_id,
                device,
                time.perf_counter() - started,
                self._dim,
                self._context,
                self.threads,
            )

    def drop_model(self) -> None:
        """Free the PyTorch weights once another runtime took over; preprocessing and tokenising stay."""
        with self._lock:
            self._model = None

    def prepare(self, image: Image.Image) -> Prepared:
        self._describe()
        return np.asarray(self._preprocess(image), dtype=np.float32)

    def tokenize(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        self._describe()
        tokens = self._tokenizer(list(texts))
        return tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens.numpy(), dtype=np.int64)

    def encode_prepared(self, batch: Sequence[Prepared]) -> Matrix:
        self.load()
        import torch

        outputs = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                chunk = torch.from_numpy(np.stack(batch[start : start + self.batch_size])).to(self._device)
                outputs.append(self._model.encode_image(chunk).float().cpu().numpy())
        return normalise(np.concatenate(outputs)) if outputs else np.zeros((0, self.dim), np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> Matrix:
        return self.encode_prepared([self.prepare(image) for image in images])

    def encode_texts(self, texts: Sequence[str]) -> Matrix:
        self.load()
        import torch

        trims = ends_at_end_of_text(self._model)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                ids = self.tokenize(texts[start : start + self.batch_size])
                tokens = torch.from_numpy(trim_to_end_of_text(ids) if trims else ids).to(self._device)
                encoded = encode_trimmed_text(self._model, tokens) if trims else self._model.encode_text(tokens)
                outputs.append(encoded.float().cpu().numpy())
        return normalise(np.concatenate(outputs)) if outputs else np.zeros((0, self.dim), np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens the text needs, special tokens included, before any truncation."""
        self._describe()
        tokenizer = self._tokenizer
        if isinstance(tokenizer, ClipTokenizer):
            return len(tokenizer.encode(text)) + 2  # start and end of text
        inner = getattr(tokenizer, "tokenizer", None)
        if inner is not None and callable(inner):  # Hugging Face tokenizer wrapped by open_clip
            return len(inner(text)["input_ids"])
        return len(tokenizer.encode(text)) + 2  # start and end of text

    def fit_text(self, parts: Sequence[str]) -> FittedText:
        """Join parts in order, dropping words from the end of later parts first.

        The first part (the user's own words) is never cut in favour of a later one (a caption); if it
        alone exceeds the context, the tokenizer cuts it at the token limit and `truncated` says so.
        """
        limit = self.context_length
        parts = [p.strip() for p in parts if p and p.strip()]
        total = self.count_tokens(" ".join(parts)) if parts else 2
        if total <= limit or not parts:
            return FittedText(" ".join(parts), False, total, limit)
        kept = parts[0]
        if self.count_tokens(kept) < limit:
            for part in parts[1:]:
                words = part.split()
                low, high = 0, len(words)
                while low < high:  # the most words of this part that still fit
                    middle = (low + high + 1) // 2
                    if self.count_tokens(f"{kept} {' '.join(words[:middle])}") <= limit:
                        low = middle
                    else:
                        high = middle - 1
                if low:
                    kept = f"{kept} {' '.join(words[:low])}"
                if low < len(words):
                    break
        return FittedText(kept, True, total, limit)
