"""`imagematch tune`: the search learns a library's own words from its descriptions, measured on pairs it did
not learn from, shared by every process on the library, and undone (migrate: test_migrate.py; reindex:
test_model_switch.py)."""

from __future__ import annotations

import io
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from imagematch.ai import adapter as adapters
from imagematch.ai.adapter import TextAdapter
from imagematch.demo_data import random_scene, render
from imagematch.factory import build_library
from imagematch.jobs import JobRunner
from imagematch.library import Library, SimpleSearch
from imagematch.records import Condition, Filter, InvalidInput, Metadata
from imagematch.services import tuning as tuning_service
from imagematch.settings import Settings
from imagematch.store import tuned
from imagematch.store.tuned import Applied
from imagematch.web.app import create_app
from testkit.cli_env import env_for
from testkit.quality import quality_settings
from testkit.server_process import ServerProcess
from testkit.tinymodel import tiny_settings
from testkit.tuning import MADE_UP, build, measure

IMAGES = 360


@pytest.fixture(scope="module")
def demo_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return quality_settings(tmp_path_factory.mktemp("tuned"))


@pytest.fixture(scope="module")
def measured(demo_settings: Settings) -> Iterator[tuple[Library, dict[str, float], dict[str, float]]]:
    """A library described with made-up colour words, measured before and after tuning."""
    library = build_library(demo_settings)
    build(library, IMAGES, seed=5)
    before = measure(library)
    report = library.tuning.tune()
    assert report.applied, report.reason
    yield library, before, measure(library)
    library.close()


@pytest.mark.slow
def test_tuning_teaches_the_librarys_words_and_keeps_the_models_own(
    measured: tuple[Library, dict[str, float], dict[str, float]],
) -> None:
    _, before, after = measured
    assert before["made_up_p@5"] <= 0.3  # a made-up word finds its colour about by chance (1 in 8)
    assert after["made_up_p@5"] >= 0.7  # images without a description, of that colour, fill the top 5
    assert after["own_words_p@5"] >= before["own_words_p@5"] - 0.05


@pytest.mark.slow
def test_images_uploaded_after_tuning_are_found_by_the_learned_words(
    measured: tuple[Library, dict[str, float], dict[str, float]],
) -> None:
    library, _, _ = measured
    rng = random.Random(77)
    for n in range(40):
        scene = replace(random_scene(rng), colour=list(MADE_UP)[n % 4])  # red, green, blue, yellow
        buffer = io.BytesIO()
        render(scene, side=96, seed=900 + n).save(buffer, "PNG")
        metadata: Metadata = {"split": "fresh", "colour": scene.colour}
        library.ingest.add(buffer.getvalue(), filename=f"fresh-{n}.png", metadata=metadata)
    fresh = Filter((Condition("split", "eq", "fresh"),))
    hits = library.search.simple(SimpleSearch(text=MADE_UP["red"], k=5, filter=fresh)).hits
    colours = [hit.record.metadata["colour"] for hit in hits]
    assert colours.count("red") >= 4, colours


@pytest.mark.slow
def test_every_process_on_the_library_uses_the_tuning_and_undo_reverts_it(
    measured: tuple[Library, dict[str, float], dict[str, float]], demo_settings: Settings
) -> None:
    library, _, after = measured
    other = build_library(demo_settings)  # what a second server or the CLI opens
    try:
        assert other.tuning.adapter() is not None
        assert measure(other)["made_up_p@5"] == after["made_up_p@5"]
        assert set(MADE_UP.values()) & set(other.info().tuned_words)
        other.tuning.undo()
        time.sleep(tuning_service.CHECK_EVERY + 0.1)
        assert library.tuning.adapter() is None  # the first one notices by itself
        assert measure(library)["made_up_p@5"] <= 0.3
        with pytest.raises(InvalidInput, match="nothing to undo"):
            other.tuning.undo()
    finally:
        other.close()


@pytest.mark.slow
def test_a_tuning_that_does_not_help_is_not_applied(tmp_path: Path) -> None:
    """Descriptions in the model's own words teach it nothing new: it says so and changes nothing."""
    library = build_library(quality_settings(tmp_path))
    try:
        build(library, 200, seed=9, words={colour: colour for colour in MADE_UP})
        report = library.tuning.tune()
        assert not report.applied
        assert "less than" in report.reason
        assert library.tuning.state().current is None
    finally:
        library.close()


@pytest.mark.slow
def test_a_cancelled_tune_stops_and_leaves_the_tuning_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled while it trains, a tune job ends there as cancelled; cancelled after it has measured, a tune
    still applies nothing. Either way the tuning in use stays."""
    settings = quality_settings(tmp_path)
    library = build_library(settings)
    build(library, 160, seed=3)
    library.open()
    in_use = TextAdapter(("biscuit",), np.full((1, library.embedder.dim), 0.1, dtype=np.float32))
    tuned.apply(library.store, library.embedder.model_id, in_use.to_json(), _applied("in-use"))
    epochs: list[int] = []
    train = adapters.train
    with TestClient(create_app(settings, library), base_url="http://127.0.0.1") as client:
        runner: JobRunner = client.app.state.jobs  # type: ignore[attr-defined]

        def cancelled_in_the_first_epoch(*args: Any, on_epoch: Callable[[int, int], None], **kwargs: Any) -> Any:
            def epoch(done: int, total: int) -> None:
                epochs.append(done)
                runner.cancel()  # what stopping the server does to a running job
                on_epoch(done, total)

            return train(*args, on_epoch=epoch, **kwargs)

        monkeypatch.setattr(adapters, "train", cancelled_in_the_first_epoch)
        before = client.get("/api/v1/tuning").json()
        assert before["version"] == "in-use"
        job = _tune_job(client, timeout_s=120)
        assert job["state"] == "cancelled", job["message"]
        assert job["message"] == "Cancelled. Nothing was changed."
        assert epochs == [1]
        assert client.get("/api/v1/tuning").json() == before
    monkeypatch.setattr(adapters, "train", train)
    cancel = threading.Event()

    def cancel_once_measured(step: str, done: int, total: int) -> None:
        if step == "evaluating" and done == total:
            cancel.set()

    with pytest.raises(tuning_service.Cancelled):
        library.tuning.tune(on_progress=cancel_once_measured, cancel=cancel)
    assert library.tuning.state().current.version == "in-use"  # type: ignore[union-attr]
    assert library.tuning.tune().applied  # not cancelled, the same tune replaces it
    library.close()


def test_tuning_trains_with_the_models_threads_and_puts_the_process_count_back(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMAGEMATCH_TORCH_THREADS holds for training too, not torch's own default; searches beside it in the same
    process get their count back afterwards."""
    import torch

    library = build_library(tiny_settings(tmp_path, tiny_model_dir, runtime="torch", torch_threads=1))
    build(library, 80, seed=3)
    during: list[int] = []
    train = adapters.train

    def counting(*args: Any, **kwargs: Any) -> Any:
        during.append(torch.get_num_threads())
        return train(*args, **kwargs)

    monkeypatch.setattr(adapters, "train", counting)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # what the process runs with otherwise (torch's default where no model set it)
    try:
        library.tuning.tune(dry_run=True)
        assert during == [1]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        library.close()


def test_too_few_pairs_is_a_clear_error(library: Library) -> None:
    with pytest.raises(InvalidInput, match="at least 40 images with a description"):
        library.tuning.tune()


def test_a_tune_job_on_a_library_without_descriptions_fails_saying_why(client: TestClient) -> None:
    job = _tune_job(client, timeout_s=10)
    assert job["state"] == "failed"
    assert job["message"].startswith("Tuning needs at least 40 images with a description")
    assert job["message"].endswith("Nothing was changed.")


def test_a_damaged_tuned_state_is_searched_untuned_not_answered_with_an_error(
    client: TestClient, library: Library
) -> None:
    library.open()
    library.store.put_document(tuned.STATES, library.embedder.model_id, '{"current": {"version": "x"}}')
    response = client.post("/api/v1/search", data={"text": "a photo", "k": "3"})
    assert response.status_code == 200
    assert library.tuning.adapter() is None
    assert client.get("/api/v1/health").json()["tuning"] is None


def test_the_tuned_state_keeps_earlier_versions_and_survives_an_unfinished_write(library: Library) -> None:
    library.open()
    store, model_id = library.store, library.embedder.model_id
    dim = library.embedder.dim
    for version in ("one", "two"):
        adapter = TextAdapter(("biscuit",), np.full((1, dim), 0.1, dtype=np.float32))
        tuned.apply(store, model_id, adapter.to_json(), _applied(version))
    assert tuned.read_state(store, model_id).current.version == "two"  # type: ignore[union-attr]
    store.put_document(tuned.ADAPTERS, f"{model_id}@crashed", "{}")  # weights written, the state never named them
    tuned.sweep(store, model_id)
    assert set(store.list_documents(tuned.ADAPTERS)) == {f"{model_id}@one", f"{model_id}@two"}
    assert tuned.undo(store, model_id).current.version == "one"  # type: ignore[union-attr]
    assert tuned.undo(store, model_id).current is None
    assert store.list_documents(tuned.ADAPTERS) == {}


def test_a_query_without_the_learned_words_is_left_exactly_as_the_model_made_it() -> None:
    adapter = TextAdapter(("biscuit",), np.array([[0.0, 1.0]], dtype=np.float32))
    vector = np.array([1.0, 0.0], dtype=np.float32)
    assert adapter.apply("a dog on the sofa", vector) is vector
    moved = adapter.apply("Biscuit on the sofa", vector)
    assert np.allclose(moved, [2**-0.5, 2**-0.5])
    assert TextAdapter.from_json(adapter.to_json()).words == ("biscuit",)


@pytest.mark.slow
def test_tune_from_the_api_the_model_page_and_the_cli_while_a_server_follows(tmp_path: Path) -> None:
    settings = quality_settings(tmp_path)
    library = build_library(settings)
    build(library, 240, seed=3)
    with TestClient(create_app(settings, library), base_url="http://127.0.0.1") as client:
        assert client.get("/api/v1/health").json()["tuning"] is None
        job = _tune_job(client, timeout_s=120)
        assert job["state"] == "done", job["message"]
        assert job["message"].startswith("Applied")
        tuning = client.get("/api/v1/health").json()["tuning"]
        assert tuning["after"]["recall@5"] > tuning["before"]["recall@5"]
        assert set(MADE_UP.values()) & set(tuning["learned"])
        page = client.get("/model").text
        assert "In use: <strong>version " + tuning["version"] in page
        assert client.post("/api/v1/tuning/undo").json() is None
        response = client.post("/api/v1/tuning/undo")
        assert response.status_code == 422
        assert "nothing to undo" in response.json()["detail"]
    library.close()
    source = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "300", "PYTHONPATH": source, **env_for(settings)}
    server = ServerProcess({**env_for(settings), "IMAGEMATCH_RATE_LIMIT": "0"}, tmp_path / "server.log")
    server.start()
    try:  # the CLI tunes and undoes; the server running beside it follows by itself
        tune = _cli(env, "tune")
        assert tune.returncode == 0, tune.stderr
        assert "recall@5" in tune.stdout and "applied (version" in tune.stdout
        tuning = _health_once(server.url, lambda health: health["tuning"] is not None)["tuning"]
        assert f"applied (version {tuning['version']})" in tune.stdout
        info = _cli(env, "info")
        assert "search tuning" in info.stdout and f"version {tuning['version']}" in info.stdout
        undo = _cli(env, "tune", "--undo")
        assert undo.returncode == 0 and "search tuning is now: off" in undo.stdout
        _health_once(server.url, lambda health: health["tuning"] is None)
    finally:
        server.stop()
    again = _cli(env, "tune", "--undo")
    assert again.returncode != 0 and "nothing to undo" in again.stderr
    both = _cli(env, "tune", "--undo", "--dry-run")
    assert both.returncode != 0 and "no --dry-run" in both.stderr


def _health_once(url: str, condition: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The server's health as soon as it meets `condition`: within the tuning's CHECK_EVERY and a little."""
    deadline = time.monotonic() + tuning_service.CHECK_EVERY + 2
    while True:
        health: dict[str, Any] = httpx.get(f"{url}/api/v1/health", timeout=10).json()
        if condition(health) or time.monotonic() > deadline:
            assert condition(health), health
            return health
        time.sleep(0.1)


def _tune_job(client: TestClient, timeout_s: float) -> dict[str, Any]:
    """Start a tune job through the API and return it once it has ended (or when `timeout_s` is up)."""
    job: dict[str, Any] = client.post("/api/v1/jobs/tune").json()
    deadline = time.monotonic() + timeout_s
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
        job = client.get(f"/api/v1/jobs/{job['id']}").json()
    return job


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "imagematch", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


def _applied(version: str) -> Applied:
    return Applied(version, "2026-12-02T12:00:00+00:00", 100, 20, {"recall@5": 0.1}, {"recall@5": 0.8})
