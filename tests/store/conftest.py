"""Store backends under test. Each entry opens (or reopens) a store at a path; the conformance suite runs
against every one of them.

`pinecone-fake` is our Pinecone code talking to testkit/fake_pinecone.py on 127.0.0.1 (one index per test);
`pinecone-fake-lagging` the same fake made eventually consistent, as the service is.
`pinecone` is the real service: it runs only with PINECONE_API_KEY set, in one index made for the run (and
deleted after it), one namespace prefix per test.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from milvus_lite.server_manager import server_manager_instance
from pinecone import NotFoundError, Pinecone

from imagematch.store.base import VectorStore
from imagematch.store.lancedb import LanceStore
from imagematch.store.milvus import MilvusStore
from imagematch.store.pinecone import PineconeStore, Retry
from testkit.fake_pinecone import FakePinecone

StoreFactory = Callable[[], VectorStore]

# Read before tests/conftest.py clears the environment for each test.
PINECONE_API_KEY = os.environ.get("PINECONE_API_KEY", "")
REAL_INDEX = f"imagematch-test-{uuid.uuid4().hex[:8]}"


@functools.cache
def fake_pinecone(lag_reads: int = 0) -> FakePinecone:
    """One fake per kind for the whole run; each test gets its own index in it."""
    return FakePinecone(lag_reads=lag_reads).start()


def _tag(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()[:12]


def _lancedb(path: Path) -> VectorStore:
    return LanceStore(path / "lancedb")


def _milvus_lite(path: Path) -> VectorStore:
    return MilvusStore(str(path / "milvus.db"))


def _pinecone_fake(path: Path) -> VectorStore:
    return PineconeStore(
        "fake-key", index_name=f"t-{_tag(path)}", host=fake_pinecone().url, retry=Retry(first_delay=0.01)
    )


def _pinecone_fake_lagging(path: Path) -> VectorStore:
    """Eventually consistent, as the service is: a write shows only after two more reads."""
    return PineconeStore(
        "fake-key",
        index_name=f"t-{_tag(path)}",
        host=fake_pinecone(lag_reads=2).url,
        retry=Retry(first_delay=0.01),
        sleep=lambda _seconds: None,
    )


def _pinecone(path: Path) -> VectorStore:
    return PineconeStore(PINECONE_API_KEY, index_name=REAL_INDEX, namespace_prefix=f"{_tag(path)}-")


BACKENDS: dict[str, Callable[[Path], VectorStore]] = {
    "lancedb": _lancedb,
    "milvus": _milvus_lite,
    "pinecone-fake": _pinecone_fake,
    "pinecone-fake-lagging": _pinecone_fake_lagging,
    "pinecone": _pinecone,
}
_NEEDS_KEY = pytest.mark.skipif(
    not PINECONE_API_KEY, reason="PINECONE_API_KEY not set: the real-service Pinecone run needs a key"
)


@pytest.fixture(
    params=[pytest.param(name, marks=[_NEEDS_KEY] if name == "pinecone" else []) for name in sorted(BACKENDS)]
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Calling it opens the same store again, as a new process would."""
    make = BACKENDS[request.param]
    return lambda: make(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _delete_real_pinecone_index() -> Iterator[None]:
    """The real-service run makes one index; it is deleted at the end, whatever happened."""
    yield
    if PINECONE_API_KEY:
        with contextlib.suppress(NotFoundError):
            Pinecone(api_key=PINECONE_API_KEY).indexes.delete(REAL_INDEX)


@pytest.fixture(autouse=True)
def _stop_milvus_lite() -> Iterator[None]:
    """Each test's Milvus Lite file gets its own in-process server; stop them instead of keeping ~5 threads each."""
    yield
    server_manager_instance.release_all()
