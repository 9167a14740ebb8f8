"""Builds the Library from Settings: the one place where backends are chosen."""

from __future__ import annotations

from imagematch.ai.embedder import OpenClipEmbedder
from imagematch.ai.model_source import parse_model_spec
from imagematch.blobs import LocalBlobStore
from imagematch.library import Library
from imagematch.settings import Settings, SettingsError
from imagematch.store.base import VectorStore


def build_store(settings: Settings) -> VectorStore:
    if settings.store == "lancedb":
        from imagematch.store.lancedb import LanceStore

        return LanceStore(settings.store_dir)
    raise SettingsError(f"IMAGEMATCH_STORE={settings.store} is not available in this build")


def build_embedder(settings: Settings) -> OpenClipEmbedder:
    return OpenClipEmbedder(
        parse_model_spec(settings.model),
        settings.model_cache_dir,
        batch_size=settings.embed_batch_size,
        threads=settings.torch_threads,
    )


def build_library(settings: Settings) -> Library:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return Library(settings, build_embedder(settings), build_store(settings), LocalBlobStore(settings.data_dir))
