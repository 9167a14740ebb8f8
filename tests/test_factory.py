"""The store backends are named once (store/names.py): every name builds its store, and nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagematch.factory import STORE_BUILDERS, build_store
from imagematch.settings import Settings, SettingsError
from imagematch.store.names import STORE_NAMES
from testkit.tinymodel import tiny_settings


def test_every_store_name_has_a_builder() -> None:
    assert set(STORE_BUILDERS) == set(STORE_NAMES)


def test_an_unknown_store_is_refused_with_the_names(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="lancedb") as refused:
        tiny_settings(tmp_path, tiny_model_dir, store="sqlite")
    assert all(name in str(refused.value) for name in STORE_NAMES)


def test_the_configured_store_is_built(settings: Settings) -> None:
    assert build_store(settings).name == "lancedb"
    with pytest.raises(SettingsError, match="PINECONE_API_KEY"):
        build_store(settings.model_copy(update={"store": "pinecone"}))
