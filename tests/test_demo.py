"""The built-in demo model: the product runs offline, says so, and understands simple shapes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imagematch.ai.model_source import DEMO_DIR
from imagematch.cli import app
from imagematch.demo_data import COLOURS, SHAPES, write_demo_images
from imagematch.factory import build_library
from imagematch.records import ModelUnavailable
from imagematch.settings import DEFAULT_MODEL, Settings
from imagematch.web.app import create_app


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the hub is unreachable


@pytest.fixture
def default_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"model": DEFAULT_MODEL})


def test_the_demo_model_ships_with_the_package() -> None:
    assert (DEMO_DIR / "open_clip_config.json").is_file()
    weights = DEMO_DIR / "open_clip_model.safetensors"
    assert weights.is_file() and weights.stat().st_size < 12_000_000


def test_default_model_offline_falls_back_to_demo_with_a_warning(offline: None, default_settings: Settings) -> None:
    library = build_library(default_settings)
    assert library.embedder.model_id.startswith("demo@")
    [warning] = library.warnings
    assert "demo model" in warning and "IMAGEMATCH_MODEL=local-dir:" in warning and "reindex" in warning
    with TestClient(create_app(default_settings, library)) as client:
        health = client.get("/api/v1/health").json()
        assert health["model"].startswith("demo@") and any("demo model" in w for w in health["warnings"])
        for page in ("/", "/images", "/upload-samples"):
            assert "built-in demo model" in client.get(page).text


def _asked(hub: socket.socket) -> bool:
    """Whether anything connected to this listening (and never answering) hub."""
    try:
        hub.accept()[0].close()
    except BlockingIOError:
        return False
    return True


def test_a_search_of_a_demo_library_does_not_ask_the_hub(
    offline: None, default_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Built offline on the demo model, the library can only be searched with it: a search (the CLI's, a process
    of its own each time) takes it without asking the hub, so it never waits on a network that is not there."""
    build_library(default_settings).open()  # built offline: the demo model is the library's
    with socket.create_server(("127.0.0.1", 0)) as hub:
        hub.setblocking(False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{hub.getsockname()[1]}")
        searching = build_library(default_settings, short_lived=True)
        assert searching.embedder.model_id.startswith("demo@")
        [warning] = searching.warnings
        assert "demo model, which this library was built with" in warning and "imagematch reindex" in warning
        assert not _asked(hub)
        build_library(default_settings)  # any other command asks, so that `reindex` can move to the default model
        assert _asked(hub)


def test_a_model_named_explicitly_is_never_swapped(offline: None, settings: Settings) -> None:
    named = settings.model_copy(update={"model": "ViT-B-16/openai"})
    library = build_library(named)
    assert not library.warnings
    with pytest.raises(ModelUnavailable, match="cannot be reached"):
        library.open()


def test_serve_starts_on_the_demo_model_offline(
    offline: None, default_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    monkeypatch.setenv("IMAGEMATCH_DATA_DIR", str(default_settings.data_dir))
    monkeypatch.setenv("IMAGEMATCH_MODEL_CACHE_DIR", str(default_settings.model_cache_dir))
    monkeypatch.setenv("IMAGEMATCH_BACKGROUND_REMOVAL", "off")
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.append(app))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 0, result.output
    assert started and "demo model" in result.output


def test_demo_images_cover_shapes_and_colours_without_near_duplicates(tmp_path: Path) -> None:
    paths = write_demo_images(tmp_path / "samples", 40)
    assert len(paths) == 40
    names = " ".join(p.name for p in paths)
    assert sum(shape in names for shape in SHAPES) >= 5 and sum(colour in names for colour in COLOURS) >= 6
    library = build_library(
        Settings(_env_file=None, data_dir=tmp_path / "data", model="demo", background_removal="off")  # type: ignore[call-arg]
    )
    from imagematch.library import Upload

    results = library.ingest.add_many([Upload.from_path(p) for p in paths])
    assert [r.status for r in results].count("added") == 40


def test_demo_images_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo-images", str(tmp_path / "out"), "--count", "5"])
    assert result.exit_code == 0 and "wrote 5 demo images" in result.output
    assert len(list((tmp_path / "out").glob("*.png"))) == 5
