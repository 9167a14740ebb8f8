"""The same open_clip model run by ONNX Runtime: exported once, checked against PyTorch, cached on disk.

The export (both encoders, dynamic batch) lives beside the model cache. Before it is used it must agree with
PyTorch (cosine >= 0.999 on probe images and texts); an int8 variant (dynamic quantisation of the image
encoder's weights) is offered only with its measured agreement recorded. `auto` keeps whichever runtime is
faster on this machine, measured once at export time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from imagematch.ai.embedder import (
    FittedText,
    Matrix,
    OpenClipEmbedder,
    Prepared,
    encode_trimmed_text,
    ends_at_end_of_text,
    normalise,
    trim_to_end_of_text,
)
from imagematch.records import ModelUnavailable

log = logging.getLogger(__name__)

Runtime = Literal["auto", "torch", "onnx", "onnx-int8"]
Encoder = Literal["text", "image"]
MIN_AGREEMENT = 0.999  # cosine between ONNX and PyTorch vectors of the same input
EXPORT_FORMAT = 2  # 2: the text encoder takes ids cut after the end of text (a dynamic sequence axis)
_PROBE_TEXTS = (
    "a photo of a dog",
    "a red circle on a striped background",
    "an invoice from the plumber",
    "a long description " * 30,  # past the context: cut by the tokenizer, ends at the last position
)


def _probe_images() -> list[Image.Image]:
    """Deterministic, varied pictures for checking an export against PyTorch."""
    rng = np.random.default_rng(0)
    pictures = []
    for i in range(6):
        blocks = rng.integers(0, 255, (6 + i, 8, 3), dtype=np.uint8)
        pictures.append(Image.fromarray(blocks).resize((320, 240), Image.Resampling.BICUBIC))
    return pictures


class _TextModule:
    """The text encoder as a module the exporter can trace: on trimmed ids where the model allows it."""

    @staticmethod
    def build(model: Any, trimmed: bool) -> Any:
        import torch

        class TextEncoder(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                if trimmed:
                    return encode_trimmed_text(self.model, tokens)  # type: ignore[no-any-return]
                return self.model.encode_text(tokens)  # type: ignore[no-any-return]

        return TextEncoder()


def agreement(a: Matrix, b: Matrix) -> float:
    """The smallest row-wise cosine between two sets of vectors of the same inputs."""
    return float(np.min(np.sum(normalise(a) * normalise(b), axis=1)))


class _OpenClipDescribed:
    """What another runtime takes from the open_clip embedder as it is: the model's identity and shapes, the
    preprocessing and the tokeniser (both PyTorch-free for the usual models)."""

    def __init__(self, base: OpenClipEmbedder) -> None:
        self.base = base

    @property
    def model_id(self) -> str:
        return self.base.model_id

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def context_length(self) -> int:
        return self.base.context_length

    @property
    def image_size(self) -> int:
        return self.base.image_size

    def prepare(self, image: Image.Image) -> Prepared:
        return self.base.prepare(image)

    def count_tokens(self, text: str) -> int:
        return self.base.count_tokens(text)

    def fit_text(self, parts: Sequence[str]) -> FittedText:
        return self.base.fit_text(parts)


class OnnxEmbedder(_OpenClipDescribed):
    """Embedder protocol on ONNX Runtime; preprocessing and tokenising stay with the open_clip embedder.

    Each encoder's session opens when it is first needed (or both at `load`): a text search never reads the
    image encoder, the larger of the two. short_lived (a CLI search) opens them in the quickest way rather
    than the one that encodes fastest.
    """

    def __init__(
        self,
        base: OpenClipEmbedder,
        cache_dir: Path,
        *,
        quantized: bool = False,
        threads: int = 0,
        short_lived: bool = False,
    ) -> None:
        super().__init__(base)
        self.quantized = quantized
        self.short_lived = short_lived
        self.threads = threads or base.threads
        self.folder = cache_dir / "onnx" / hashlib.sha256(base.model_id.encode()).hexdigest()[:16]
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}  # "text", "image"
        self._trims_text = False
        self.report: dict[str, Any] = {}

    @property
    def runtime(self) -> str:
        return "onnx-int8" if self.quantized else "onnx"

    @property
    def loaded(self) -> bool:
        return bool(self.report)

    def load(self) -> None:
        """The export (made now if it is missing) and both encoders' sessions."""
        self.session("text")
        self.session("image")

    def prepare_export(self) -> None:
        """The export checked and its record read, without opening a session; the PyTorch weights are freed."""
        if self.report:
            return
        with self._lock:
            if self.report:
                return
            report = self._ensure_export()  # loads the PyTorch weights only when it has to export
            self._trims_text = bool(report.get("text_trimmed"))
            self.report = report
            self.base.drop_model()

    def session(self, kind: Encoder) -> Any:
        """The session of one encoder, opened at its first use."""
        session = self._sessions.get(kind)
        if session is not None:
            return session
        self.prepare_export()
        with self._lock:
            if kind in self._sessions:
                return self._sessions[kind]
            started = time.perf_counter()
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            # Idle worker threads sleep instead of spinning, leaving the cores to the decode threads of ingest.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if self.short_lived:
                # Weights are used as stored instead of being copied into the layout the matrix kernels like:
                # a ViT-B-32 text encoder opens in 0.1 s instead of 0.4 s (the image encoder saves more) and
                # runs a query some 40 ms slower, which a process that encodes a query or two comes out ahead on.
                options.add_session_config_entry("session.disable_prepacking", "1")
            name = "text.onnx" if kind == "text" else "image_int8.onnx" if self.quantized else "image.onnx"
            try:
                session = ort.InferenceSession(str(self.folder / name), options, providers=["CPUExecutionProvider"])
            except Exception as error:
                raise ModelUnavailable(f"cannot open the ONNX export in {self.folder}: {error}") from error
            self._sessions[kind] = session
            log.info(
                "ONNX Runtime %s %s encoder ready in %.2fs (%s)",
                self.runtime,
                kind,
                time.perf_counter() - started,
                self.folder,
            )
            return session

    def _ensure_export(self) -> dict[str, Any]:
        """The export's record; a failed export is recorded too, so it is not retried at every start."""
        meta_path = self.folder / "export.json"
        if meta_path.is_file():
            meta: dict[str, Any] = json.loads(meta_path.read_text())
            current = meta.get("model_id") == self.model_id and meta.get("format") == EXPORT_FORMAT
            if current and (not self.quantized or "int8" in meta or "error" in meta):
                if "error" in meta:
                    raise ModelUnavailable(meta["error"])
                return meta
        log.info(
            "exporting %s to ONNX Runtime: once for this model, checked against PyTorch, kept in %s",
            self.model_id,
            self.folder,
        )
        try:
            meta = export(self.base, self.folder, quantize=self.quantized)
        except Exception as error:
            self.folder.mkdir(parents=True, exist_ok=True)
            reason = f"the ONNX export of {self.model_id} failed: {error}"
            failure = {"model_id": self.model_id, "format": EXPORT_FORMAT, "error": reason}
            meta_path.write_text(json.dumps(failure, indent=2))
            raise ModelUnavailable(reason) from error
        meta_path.write_text(json.dumps(meta, indent=2))
        return meta

    def encode_prepared(self, batch: Sequence[Prepared]) -> Matrix:
        session = self.session("image")
        if not batch:
            return np.zeros((0, self.dim), np.float32)
        outputs = []
        for start in range(0, len(batch), self.base.batch_size):
            pixels = np.stack(batch[start : start + self.base.batch_size]).astype(np.float32)
            outputs.append(session.run(None, {"pixels": pixels})[0])
        return normalise(np.concatenate(outputs))

    def encode_images(self, images: Sequence[Image.Image]) -> Matrix:
        return self.encode_prepared([self.prepare(image) for image in images])

    def encode_texts(self, texts: Sequence[str]) -> Matrix:
        session = self.session("text")
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        tokens = self.base.tokenize(texts)
        if self._trims_text:
            tokens = trim_to_end_of_text(tokens)
        return normalise(session.run(None, {"tokens": tokens})[0])


def export(base: OpenClipEmbedder, folder: Path, *, quantize: bool) -> dict[str, Any]:
    """Export both encoders, check them against PyTorch, and time both runtimes on this machine."""
    import onnxruntime as ort
    import torch

    started = time.perf_counter()
    base.load()
    # A copy: the exporter folds batch norms into convolutions in place, which would corrupt the live model.
    model = copy.deepcopy(base.torch_model)
    folder.mkdir(parents=True, exist_ok=True)
    side = base.image_size
    trimmed = ends_at_end_of_text(model)
    with warnings.catch_warnings():  # grad stays on: inference mode would trace fused ops ONNX lacks
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.visual,
            (torch.zeros(1, 3, side, side),),
            str(folder / "image.onnx"),
            input_names=["pixels"],
            output_names=["embedding"],
            dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=18,
            dynamo=False,
        )
        _export_text(_TextModule.build(model, trimmed).eval(), base, folder / "text.onnx", trimmed)
    options = ort.SessionOptions()
    options.intra_op_num_threads = base.threads
    image = ort.InferenceSession(str(folder / "image.onnx"), options, providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(str(folder / "text.onnx"), options, providers=["CPUExecutionProvider"])
    pixels = np.stack([base.prepare(p) for p in _probe_images()])
    token_ids = base.tokenize(list(_PROBE_TEXTS))
    torch_images = base.encode_prepared(list(pixels))
    with torch.inference_mode():  # the full, untrimmed encoder: trimming must not change a vector
        torch_texts = base.torch_model.encode_text(torch.from_numpy(token_ids)).float().numpy()
    onnx_texts = np.concatenate(  # one by one, each cut at its own end of text as in search
        [text.run(None, {"tokens": trim_to_end_of_text(ids[None]) if trimmed else ids[None]})[0] for ids in token_ids]
    )
    meta: dict[str, Any] = {
        "model_id": base.model_id,
        "format": EXPORT_FORMAT,
        "text_trimmed": trimmed,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "image_agreement": agreement(image.run(None, {"pixels": pixels})[0], torch_images),
        "text_agreement": agreement(onnx_texts, torch_texts),
    }
    if min(meta["image_agreement"], meta["text_agreement"]) < MIN_AGREEMENT:
        raise ModelUnavailable(
            f"it disagrees with PyTorch (cosine {meta['image_agreement']:.4f} for images, "
            f"{meta['text_agreement']:.4f} for texts)"
        )
    meta["timing"] = _race(base, image, pixels)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(folder / "image.onnx"), str(folder / "image_int8.onnx"), weight_type=QuantType.QInt8)
        quantized = ort.InferenceSession(str(folder / "image_int8.onnx"), options, providers=["CPUExecutionProvider"])
        int8_vectors = quantized.run(None, {"pixels": pixels})[0]
        meta["int8"] = {"image_agreement": agreement(int8_vectors, torch_images)}
    meta["export_seconds"] = round(time.perf_counter() - started, 1)
    timing = meta["timing"]
    log.info(
        "exported %s to ONNX in %.0fs; it agrees with PyTorch (cosine %.4f for images, %.4f for texts); one image "
        "takes %.1f ms with ONNX Runtime and %.1f ms with PyTorch here",
        base.model_id,
        meta["export_seconds"],
        meta["image_agreement"],
        meta["text_agreement"],
        timing["onnx_batch1"] * 1000,
        timing["torch_batch1"] * 1000,
    )
    return meta


def _export_text(module: Any, base: OpenClipEmbedder, path: Path, trimmed: bool) -> None:
    """The text encoder; trimmed ids need a dynamic sequence axis, which only the dynamo exporter keeps
    (the tracing exporter bakes the traced length into the attention's reshapes)."""
    import torch

    if not trimmed:
        torch.onnx.export(
            module,
            (torch.from_numpy(base.tokenize(["a photo"])),),
            str(path),
            input_names=["tokens"],
            output_names=["embedding"],
            dynamic_axes={"tokens": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=18,
            dynamo=False,
        )
        return
    example = torch.from_numpy(trim_to_end_of_text(base.tokenize(["a photo", "a dog"])))  # 2: batch stays dynamic
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=2, max=base.context_length)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["tokens"],
        output_names=["text_vector"],
        dynamic_shapes={"tokens": {0: batch, 1: sequence}},
        opset_version=18,
        dynamo=True,
        verbose=False,
    )


def _race(base: OpenClipEmbedder, session: Any, pixels: np.ndarray[Any, Any]) -> dict[str, float]:
    """Seconds per image for each runtime at batch 1 and at the batch size, on this machine, now."""
    batch = np.repeat(pixels[:1], base.batch_size, axis=0)

    def seconds(run: Any, data: np.ndarray[Any, Any]) -> float:
        run(data)
        started = time.perf_counter()
        for _ in range(3):
            run(data)
        return (time.perf_counter() - started) / (3 * len(data))

    def onnx(data: np.ndarray[Any, Any]) -> object:
        return session.run(None, {"pixels": data})

    def torch_run(data: np.ndarray[Any, Any]) -> object:
        return base.encode_prepared(list(data))

    return {
        "onnx_batch1": seconds(onnx, pixels[:1]),
        "torch_batch1": seconds(torch_run, pixels[:1]),
        "onnx_batch": seconds(onnx, batch),
        "torch_batch": seconds(torch_run, batch),
    }


def onnx_is_faster(meta: dict[str, Any]) -> bool:
    timing = meta.get("timing", {})
    if not timing:
        return False
    onnx = timing["onnx_batch1"] + timing["onnx_batch"]
    torch = timing["torch_batch1"] + timing["torch_batch"]
    return bool(onnx < torch)


class AutoEmbedder(_OpenClipDescribed):
    """ONNX Runtime or PyTorch for this model on this machine, whichever measured faster when it was exported.

    The first load of a model exports it once (logged, cached); if the export fails or disagrees with
    PyTorch, PyTorch is used and the reason is logged. A short-lived process (a CLI search: a few texts or
    images, then exit) takes a good export whatever the timing: importing PyTorch alone costs seconds, more
    than the faster runtime could save on a few inputs.
    """

    def __init__(self, base: OpenClipEmbedder, cache_dir: Path, *, short_lived: bool = False) -> None:
        super().__init__(base)
        self.onnx = OnnxEmbedder(base, cache_dir, short_lived=short_lived)
        self.short_lived = short_lived
        self._chosen: OpenClipEmbedder | OnnxEmbedder | None = None
        self._lock = threading.Lock()

    def _runtime(self, encoder: Encoder) -> OpenClipEmbedder | OnnxEmbedder:
        if self._chosen is None:
            self._choose(encoder)
        assert self._chosen is not None
        return self._chosen

    @property
    def runtime(self) -> str:
        return self._chosen.runtime if self._chosen is not None else "auto"

    @property
    def loaded(self) -> bool:
        return self._chosen is not None

    def load(self) -> None:
        self._choose(None)

    def _choose(self, first: Encoder | None) -> None:
        """Pick the runtime and load it: both encoders, or in a short-lived process only the one its first
        input needs (a text search never opens the image encoder)."""
        if self._chosen is not None:
            return
        with self._lock:
            if self._chosen is not None:
                return
            try:
                use_onnx = self.short_lived or onnx_is_faster(self.onnx._ensure_export())
                if use_onnx and self.short_lived and first is not None:
                    self.onnx.session(first)
                elif use_onnx:
                    self.onnx.load()
            except Exception as error:
                log.warning("ONNX Runtime is not used for %s: %s", self.model_id, error)
                use_onnx = False
            if not use_onnx:
                self.base.load()
            self._chosen = self.onnx if use_onnx else self.base
            why = "quick start" if self.short_lived and use_onnx else "measured on this machine"
            log.info("runtime for %s: %s (%s)", self.model_id, self._chosen.runtime, why)

    def encode_prepared(self, batch: Sequence[Prepared]) -> Matrix:
        return self._runtime("image").encode_prepared(batch)

    def encode_images(self, images: Sequence[Image.Image]) -> Matrix:
        return self._runtime("image").encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> Matrix:
        return self._runtime("text").encode_texts(texts)
