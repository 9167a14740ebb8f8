"""One app per test module (building a library per test would dominate the run), and what every test checks
afterwards: that nothing in the library changed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from imagematch.factory import build_library
from imagematch.library import Library
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.images import jpeg


def make_settings(root: Path, model_dir: Path, **overrides: Any) -> Settings:
    """Settings like the suite's, named in full so that no variable of the developer's shell leaks in."""
    values: dict[str, Any] = {
        "data_dir": root / "data",
        "samples_dir": root / "images",
        "model": f"local-dir:{model_dir}",
        "model_cache_dir": root / "cache",
        "embed_batch_size": 4,
        "background_removal": "off",
        "captioner": "none",
        "ocr": "off",
        "runtime": "torch",
        "api_key": "",
        "ui_password_hash": "",
        "session_secret": "",
        "rate_limit": 0,
        "allowed_hosts": ("testserver",),  # fastapi's TestClient sends Host: testserver
        "trusted_proxies": (),
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app answers, read from the app itself so that new routes are covered; every GET
    route answers HEAD too (web/head.py)."""
    found: list[tuple[str, str]] = []
    for route in iter_route_contexts(app.routes):
        methods = set(route.methods or ())
        if "GET" in methods:
            methods.add("HEAD")
        found.extend((method, route.path or "") for method in sorted(methods))
    return found


def csrf_token(client: TestClient) -> str:
    """The form token the pages give this client (and set in its cookie)."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert match is not None
    return match.group(1)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a user could lose or see changed: the records and the files on disk."""

    records: tuple[tuple[str, ...], ...]
    files: tuple[str, ...]


def snapshot(library: Library) -> Snapshot:
    records = tuple(
        sorted(
            (
                r.id,
                r.filename,
                r.description,
                r.caption,
                json.dumps(r.metadata, sort_keys=True),
                r.updated_at.isoformat(),
            )
            for r in library.catalog.iter_records()
        )
    )
    root = library.settings.data_dir
    files = tuple(
        sorted(
            str(p.relative_to(root))
            for kind in ("originals", "thumbnails", "cutouts")
            for p in root.glob(f"{kind}/*/*")
        )
    )
    assert len(records) == library.catalog.count()
    return Snapshot(records, files)


@dataclass(frozen=True, slots=True)
class Harness:
    client: TestClient
    library: Library
    settings: Settings
    stored_id: str  # an image every test module starts with

    def token(self) -> str:
        return csrf_token(self.client)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Harness]:
    settings = make_settings(tmp_path_factory.mktemp("security"), tiny_model_dir)
    library = build_library(settings)
    stored = library.ingest.add(
        jpeg("astronaut"), filename="astronaut.jpg", description="kept", metadata={"album": "moon"}
    )
    library.ingest.add(jpeg("moon"), filename="moon.jpg", metadata={"tags": ["night", "sky"], "rating": 4})
    assert stored.record is not None
    with TestClient(create_app(settings, library), raise_server_exceptions=False) as client:
        yield Harness(client, library, settings, stored.record.id)
