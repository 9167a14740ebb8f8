"""Switching the model from the API and the web UI: a background job with progress, after which the server
searches with the new model; bad model names are refused and change nothing."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from testkit.images import jpeg


def _upload(client: TestClient, name: str) -> str:
    answer = client.post("/api/v1/images", files={"file": (f"{name}.jpg", jpeg(name), "image/jpeg")})
    assert answer.status_code == 201
    image_id: str = answer.json()["id"]
    return image_id


def _finished(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while job["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(job["links"]["self"]).json()
    return job


def test_a_reindex_job_switches_the_server_to_the_new_model(client: TestClient, other_model_dir: Path) -> None:
    ids = {name: _upload(client, name) for name in ("astronaut", "coffee", "rocket")}
    before = client.get("/api/v1/health").json()["model"]
    started = client.post("/api/v1/jobs/reindex", json={"model": f"local-dir:{other_model_dir}"})
    assert started.status_code == 202 and started.json()["kind"] == "reindex"
    job = _finished(client, started.json())
    assert job["state"] == "done" and (job["done"], job["total"]) == (3, 3), job
    assert job["model"] == f"local-dir:{other_model_dir}" and "IMAGEMATCH_MODEL" in job["message"]
    health = client.get("/api/v1/health").json()
    assert health["model"] != before and health["images"] == 3
    for image_id in ids.values():
        assert client.get(f"/api/v1/images/{image_id}").json()["model_id"] == health["model"]
    found = client.post("/api/v1/search", files={"image": ("q.jpg", jpeg("coffee"), "image/jpeg")}, data={"k": "1"})
    assert found.json()["hits"][0]["id"] == ids["coffee"]


@pytest.mark.parametrize(
    ("model", "reason"),
    [("hf-hub:no-slash", "hf-hub:org/repo"), ("", "at least 1"), ("local-dir:/no/such/folder", "cannot")],
)
def test_a_bad_model_is_refused_and_changes_nothing(client: TestClient, model: str, reason: str) -> None:
    _upload(client, "coffee")
    before = client.get("/api/v1/health").json()["model"]
    refused = client.post("/api/v1/jobs/reindex", json={"model": model})
    assert 400 <= refused.status_code < 500 and reason in refused.text, refused.text
    assert client.get("/api/v1/health").json()["model"] == before
    assert client.get("/api/v1/jobs").json() == []


def test_the_same_model_is_refused(client: TestClient, tiny_model_dir: Path) -> None:
    refused = client.post("/api/v1/jobs/reindex", json={"model": f"local-dir:{tiny_model_dir}"})
    assert refused.status_code == 422 and "already" in refused.json()["detail"]


def test_the_model_page_starts_a_switch_and_shows_its_progress(client: TestClient, other_model_dir: Path) -> None:
    _upload(client, "coffee")
    page = client.get("/model")
    assert page.status_code == 200 and 'data-testid="current-model"' in page.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    refused = client.post("/model", data={"csrf_token": token[1], "model": "hf-hub:no-slash"})
    assert refused.status_code == 422 and "hf-hub:org/repo" in refused.text
    started = client.post(
        "/model", data={"csrf_token": token[1], "model": f"local-dir:{other_model_dir}"}, follow_redirects=False
    )
    assert started.status_code == 303 and started.headers["location"].startswith("/model?job=")
    job_id = started.headers["location"].split("=")[1]
    _finished(client, client.get(f"/api/v1/jobs/{job_id}").json())
    shown = client.get(started.headers["location"])
    assert 'data-job-state="done"' in shown.text and "1 of 1 images re-embedded" in shown.text
    assert "other-clip" in shown.text  # the page names the new model
    assert client.get(f"/upload-samples?job={job_id}").status_code == 404  # not a batch upload
