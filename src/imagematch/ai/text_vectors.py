"""Vectors of fixed texts, kept on disk per model and runtime.

The library measures a query's words against a fixed set of reference texts (imagematch.fusion). A server
encodes them once, but the CLI starts a process for every search, and with a real model encoding them costs
more than the rest of the search (about 0.5 s for ViT-B-32 on two cores). They are kept beside the model cache,
named by the model, the runtime and the texts, like the ONNX export that makes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from imagematch.ai.embedder import Embedder, Matrix

log = logging.getLogger(__name__)

FOLDER = "text_vectors"


def _path(embedder: Embedder, texts: Sequence[str], cache_dir: Path) -> Path:
    key = json.dumps([embedder.model_id, embedder.runtime, list(texts)])
    return cache_dir / FOLDER / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"


def cached_text_vectors(embedder: Embedder, texts: Sequence[str], cache_dir: Path) -> Matrix:
    """`embedder.encode_texts(texts)`, read from the cache when it holds them; written there when it did not.

    An embedder that has not chosen its runtime yet (`auto` before its first input) encodes them: its
    runtime is known after that, and names the file.
    """
    if embedder.runtime != "auto":
        try:
            stored = np.load(_path(embedder, texts, cache_dir), allow_pickle=False)
        except (OSError, ValueError):  # missing, or not a complete file
            stored = None
        if stored is not None and stored.dtype == np.float32 and stored.shape == (len(texts), embedder.dim):
            kept: Matrix = stored
            return kept
    vectors = embedder.encode_texts(texts)
    path = _path(embedder, texts, cache_dir)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with temp.open("wb") as handle:
            np.save(handle, vectors)
        os.replace(temp, path)  # whole or not at all, whoever else writes it at the same time
    except OSError as error:  # a read-only cache: encoded again next time
        log.debug("cannot keep text vectors in %s: %s", path.parent, error)
        with contextlib.suppress(OSError):
            temp.unlink()
    return vectors
