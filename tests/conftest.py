from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imagematch.factory import build_library
from imagematch.library import Library
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.tinymodel import build_tiny_model, tiny_settings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never see the developer's IMAGEMATCH_* variables, .env file or network."""
    for name in list(os.environ):
        if name.startswith("IMAGEMATCH_") or name in ("MOONDREAM_API_KEY", "PINECONE_API_KEY", "INDEX_NAME"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "other-clip", seed=1)


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    return tiny_settings(tmp_path, tiny_model_dir, runtime="torch")


@pytest.fixture
def library(settings: Settings) -> Library:
    return build_library(settings)


@pytest.fixture
def client(settings: Settings, library: Library) -> Iterator[TestClient]:
    with TestClient(create_app(settings, library)) as test_client:
        yield test_client
