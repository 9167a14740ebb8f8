"""Builds the Library and its helpers from Settings: the one place where backends are chosen."""

from __future__ import annotations

import logging
from collections.abc import Callable

from imagematch.ai.background import BackgroundRemover, RembgRemover
from imagematch.ai.batching import SharedCallsEmbedder
from imagematch.ai.captioner import Captioner, CaptionError, MoondreamCaptioner
from imagematch.ai.embedder import Embedder, OpenClipEmbedder
from imagematch.ai.model_source import DEMO, LOCAL_DIR, ModelSource, is_cached, parse_model_spec, unavailable_reason
from imagematch.ai.ocr import PaddleTextReader, TextReader
from imagematch.ai.onnx_embedder import AutoEmbedder, OnnxEmbedder
from imagematch.blobs import BlobStore, LocalBlobStore
from imagematch.captions import CaptionWorker
from imagematch.library import Library
from imagematch.records import ModelUnavailable
from imagematch.settings import Settings, SettingsError
from imagematch.store.base import VectorStore
from imagematch.store.names import StoreName

log = logging.getLogger(__name__)


def _lancedb(settings: Settings) -> VectorStore:
    from imagematch.store.lancedb import LanceStore

    return LanceStore(
        settings.store_dir,
        ann_threshold=settings.ann_threshold,
        nprobes=settings.ann_nprobes,
        rerank=settings.ann_rerank,
    )


def _milvus(settings: Settings) -> VectorStore:
    from imagematch.store.milvus import MilvusStore

    return MilvusStore(settings.milvus_target, token=settings.milvus_token, collection=settings.milvus_collection)


def _pinecone(settings: Settings) -> VectorStore:
    from imagematch.store.pinecone import PineconeStore

    if not settings.pinecone_api_key:
        raise SettingsError("IMAGEMATCH_STORE=pinecone needs PINECONE_API_KEY (from app.pinecone.io)")
    return PineconeStore(
        settings.pinecone_api_key,
        index_name=settings.index_name,
        cloud=settings.pinecone_cloud,
        region=settings.pinecone_region,
        namespace_prefix=settings.pinecone_namespace,
    )


# One builder per name of store/names.py (tests/test_factory.py checks that none is missing); each imports its
# engine only when chosen.
STORE_BUILDERS: dict[StoreName, Callable[[Settings], VectorStore]] = {
    "lancedb": _lancedb,
    "milvus": _milvus,
    "pinecone": _pinecone,
}


def build_store(settings: Settings) -> VectorStore:
    return STORE_BUILDERS[settings.store](settings)


def build_blobs(settings: Settings) -> BlobStore:
    """Originals and thumbnails: under the data directory, or in the bucket IMAGEMATCH_BLOBS_URI names."""
    if settings.blobs_uri:
        from imagematch.blobs_s3 import S3BlobStore

        return S3BlobStore(settings.blobs_uri, endpoint_url=settings.s3_endpoint_url)
    return LocalBlobStore(settings.data_dir)


DEMO_WARNING = (
    "Running on the small built-in demo model: it only knows simple coloured shapes, because the default "
    "model is not downloaded yet and cannot be downloaded now (the server log says why). Connect to the internet "
    "once, or point IMAGEMATCH_MODEL=local-dir:/path/to/folder at a downloaded model. A library built with "
    "the demo model needs `imagematch reindex` after switching."
)
DEMO_LIBRARY_WARNING = (
    "Running on the small built-in demo model, which this library was built with: it only knows simple coloured "
    "shapes. Run `imagematch reindex` while connected to the internet to download the default model and move "
    "the library to it, or point IMAGEMATCH_MODEL=local-dir:/path/to/folder at a downloaded model."
)


def choose_model(settings: Settings, *, stored_model: str | None = None) -> tuple[ModelSource, str]:
    """The configured model; or, when the default model cannot be had here, the built-in demo model and a
    warning that says so. A model the user named explicitly is never swapped: it fails with its reason.

    stored_model, the model a library was built with, is given by a process that only searches it (the CLI's
    search): a library built with the demo model can be searched with nothing else, so while the default
    model is not downloaded the demo model is taken without asking the hub. Nothing then waits on the network
    at every search of a machine that has none.
    """
    source = parse_model_spec(settings.model, settings.model_cache_dir)
    if not settings.model_is_default or is_cached(source, settings.model_cache_dir):
        return source, ""
    if stored_model is not None and stored_model.startswith(f"{DEMO}@"):
        return parse_model_spec(DEMO), DEMO_LIBRARY_WARNING
    reason = unavailable_reason(source, settings.model_cache_dir)
    if reason is None:
        return source, ""
    log.warning("the default model cannot be loaded: %s", reason)
    return parse_model_spec(DEMO), DEMO_WARNING


def build_embedder(settings: Settings, source: ModelSource | None = None, *, short_lived: bool = False) -> Embedder:
    """short_lived: a process that encodes a few queries and exits (CLI search), see AutoEmbedder."""
    base = OpenClipEmbedder(
        source or parse_model_spec(settings.model, settings.model_cache_dir),
        settings.model_cache_dir,
        batch_size=settings.embed_batch_size,
        threads=settings.torch_thread_count,
    )
    embedder: Embedder
    if settings.runtime == "torch":
        embedder = base
    elif settings.runtime == "auto":
        embedder = AutoEmbedder(base, settings.model_cache_dir, short_lived=short_lived)
    else:
        embedder = OnnxEmbedder(base, settings.model_cache_dir, quantized=settings.runtime == "onnx-int8")
    if settings.shared_model_calls and not short_lived:
        return SharedCallsEmbedder(embedder, largest=settings.embed_batch_size)
    return embedder


def build_remover(settings: Settings) -> BackgroundRemover | None:
    if settings.background_removal == "off":
        return None
    return RembgRemover(
        settings.background_removal,
        model=settings.rembg_model,
        model_path=settings.rembg_model_path,
        min_coverage=settings.cutout_min_coverage,
        max_coverage=settings.cutout_max_coverage,
    )


def build_text_reader(settings: Settings) -> TextReader | None:
    return None if settings.ocr == "off" else PaddleTextReader()


def portable_spec(source: ModelSource) -> str:
    """What IMAGEMATCH_MODEL has to say for another process to load the same model (a local folder in full)."""
    if source.kind == "local-dir" and source.spec != DEMO:
        return f"{LOCAL_DIR}{source.name}"
    return source.spec


def build_library(settings: Settings, *, short_lived: bool = False) -> Library:
    """short_lived: a process that searches the library and exits (CLI search); see choose_model and
    AutoEmbedder for what it changes."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = build_store(settings) if short_lived else None  # a search reads what the library was built with
    stored = store.stored_model() if store is not None else None
    source, warning = choose_model(settings, stored_model=stored[0] if stored else None)

    def resolve_model(spec: str) -> tuple[Embedder, str]:
        source = parse_model_spec(spec, settings.model_cache_dir)
        reason = unavailable_reason(source, settings.model_cache_dir)
        if reason is not None:
            raise ModelUnavailable(reason)
        return build_embedder(settings, source, short_lived=short_lived), portable_spec(source)

    library = Library(
        settings,
        build_embedder(settings, source, short_lived=short_lived),
        store or build_store(settings),
        build_blobs(settings),
        remover=build_remover(settings),
        text_reader=build_text_reader(settings),
        captions_wanted=settings.captions_wanted,
        model_spec=portable_spec(source),
        resolve_model=resolve_model,
    )
    if warning:
        log.warning(warning)
        library.warnings.append(warning)
    return library


def build_caption_worker(settings: Settings, library: Library) -> CaptionWorker:
    """The worker exists even when captions are off (it then reports `off`); a setup problem is its status."""
    captioner: Captioner | None = None
    problem = ""
    if settings.captions_wanted:
        try:
            captioner = MoondreamCaptioner(
                api_key=settings.moondream_api_key,
                endpoint=settings.moondream_endpoint,
                timeout=settings.caption_timeout,
            )
        except CaptionError as error:
            problem = str(error)
    worker = CaptionWorker(
        library,
        captioner,
        setup_error=problem,
        length=settings.caption_length,
        rate=settings.caption_rate,
        retries=settings.caption_retries,
        backoff=settings.caption_backoff,
        backoff_cap=settings.caption_backoff_cap,
    )
    library.captions.on_pending = worker.wake
    return worker
