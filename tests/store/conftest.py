"""Store backends under test. Each entry opens (or reopens) a store at a path; the conformance suite runs
against every one of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imagematch.store.base import VectorStore
from imagematch.store.lancedb import LanceStore

StoreFactory = Callable[[], VectorStore]


def _lancedb(path: Path) -> VectorStore:
    return LanceStore(path / "lancedb")


BACKENDS: dict[str, Callable[[Path], VectorStore]] = {"lancedb": _lancedb}


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Calling it opens the same store again, as a new process would."""
    make = BACKENDS[request.param]
    return lambda: make(tmp_path)
