"""DNS rebinding: a web page that points its own name at 127.0.0.1 must not reach the library through the
owner's browser. The app answers only to its own host names (web/hosts.py); anything else gets 400 on every
route, before any work, and changes nothing."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagematch.factory import build_library
from imagematch.settings import SettingsError, load_settings
from imagematch.web.app import create_app
from testkit.images import jpeg
from tests.security.conftest import Harness, app_routes, make_settings, snapshot

ATTACKER = "rebind.attacker.example"
# What a browser sends after the attacker's name was rebound to 127.0.0.1: to it, the page is same-origin.
REBOUND = {"Host": ATTACKER, "Origin": f"http://{ATTACKER}", "Sec-Fetch-Site": "same-origin"}


def _concrete(path: str, harness: Harness) -> str:
    return path.replace("{image_id}", harness.stored_id).replace("{job_id}", "job").replace("{token}", "t" * 22)


def _is_refused(path: str, response: Any) -> bool:
    if response.status_code != 400:
        return False
    if response.request.method == "HEAD":
        return bool(response.content == b"")
    if path.startswith("/api/") or path == "/openapi.json":  # the API and its schema answer in JSON
        return ATTACKER in response.json()["detail"] and "IMAGEMATCH_ALLOWED_HOSTS" in response.json()["detail"]
    return response.headers["content-type"].startswith("text/html") and "not one of this server" in response.text


def test_the_rebinding_attack_cannot_read_or_wipe_the_library(harness: Harness) -> None:
    """The attack of the report against the default no-auth server: list, download, delete, reset."""
    before = snapshot(harness.library)
    client = harness.client
    listed = client.get("/api/v1/images", headers=REBOUND)
    assert listed.status_code == 400 and harness.stored_id not in listed.text
    original = client.get(f"/api/v1/images/{harness.stored_id}/file", headers=REBOUND)
    assert original.status_code == 400 and not original.content.startswith(b"\xff\xd8")
    assert client.delete(f"/api/v1/images/{harness.stored_id}", headers=REBOUND).status_code == 400
    reset = client.post("/api/v1/reset", json={"confirm": "DELETE ALL"}, headers=REBOUND)
    assert reset.status_code == 400 and reset.json()["detail"].startswith("this server does not answer")
    assert snapshot(harness.library) == before and harness.library.catalog.count() == 2
    assert client.get("/api/v1/images").json()["total"] == 2  # its own name still works


def test_every_route_refuses_a_foreign_host_and_changes_nothing(harness: Harness) -> None:
    routes = app_routes(harness.client.app)  # type: ignore[arg-type]
    assert ("POST", "/api/v1/reset") in routes
    before = snapshot(harness.library)
    for method, template in [*routes, ("GET", "/static/style.css"), ("GET", "/no-such-page")]:
        path = _concrete(template, harness)
        response = harness.client.request(
            method,
            path,
            headers={**REBOUND, "content-type": "application/json"} if method in ("PATCH", "POST") else REBOUND,
            content=json.dumps({"confirm": "DELETE ALL", "description": "changed"}) if method != "GET" else None,
            follow_redirects=False,
        )
        assert _is_refused(path, response), (method, path, response.status_code)
    assert snapshot(harness.library) == before
    assert harness.client.app.state.jobs.recent() == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8000",
        "127.0.0.1",
        "localhost:8000",
        "LocalHost.:8000",
        "localhost.",
        "[::1]:8000",
        "[::1]",
        "127.0.0.2:8000",  # any loopback address
        "photos.localhost:8000",  # *.localhost is this machine (RFC 6761); nobody can register it
    ],
)
def test_loopback_names_and_addresses_are_answered(harness: Harness, host: str) -> None:
    assert harness.client.get("/api/v1/images", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        ATTACKER,
        f"{ATTACKER}:8000",
        "localhost.attacker.example",
        "attacker.example.localhost.evil",
        "127.0.0.1.nip.io",  # a public name that resolves to 127.0.0.1
        "localhost:8000@evil.example",
        "localhost:80:80",
        "localhost:port",
        "192.168.1.20",  # an address of the machine the server is not bound to
        "",
        " ",
        "[::1",
    ],
)
def test_other_and_malformed_hosts_are_refused(harness: Harness, host: str) -> None:
    response = harness.client.get("/api/v1/images", headers={"Host": host})
    assert response.status_code == 400 and "does not answer" in response.json()["detail"]


def test_a_page_gets_a_friendly_page_and_the_name_is_escaped(harness: Harness) -> None:
    response = harness.client.get("/images", headers={"Host": ATTACKER})
    assert response.status_code == 400 and "That request did not work" in response.text and ATTACKER in response.text
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    hostile = harness.client.get("/images", headers={"Host": '<img src=x onerror="alert(1)">'})
    assert hostile.status_code == 400 and "<img src=x" not in hostile.text and "&lt;img src=x" in hostile.text


def test_two_host_headers_are_refused(harness: Harness) -> None:
    response = harness.client.get("/api/v1/images", headers=[("Host", "localhost"), ("Host", ATTACKER)])
    assert response.status_code == 400 and "more than one host" in response.json()["detail"]


def test_a_request_without_host_is_answered(harness: Harness) -> None:
    """HTTP/1.0 clients may send no Host; browsers always do, so this is no rebinding."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.0",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/images",
        "raw_path": b"/api/v1/images",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    with ThreadPoolExecutor(1) as fresh:  # its own event loop, whatever another test left running in this thread
        fresh.submit(asyncio.run, harness.client.app(scope, receive, send)).result()  # type: ignore[arg-type]
    assert messages[0]["type"] == "http.response.start" and messages[0]["status"] == 200


def test_allowed_hosts_adds_names_and_patterns(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, allowed_hosts=("Photos.Example.org.", "*.lan"))
    with TestClient(create_app(settings, build_library(settings)), base_url="http://127.0.0.1") as client:
        for host in ("photos.example.org", "PHOTOS.example.org:443", "nas.lan", "a.b.lan:8000", "localhost"):
            assert client.get("/api/v1/images", headers={"Host": host}).status_code == 200, host
        for host in ("example.org", "lan", "evil.photos.example.org", "testserver"):
            assert client.get("/api/v1/images", headers={"Host": host}).status_code == 400, host


def test_the_configured_host_is_answered(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, host="nas.home.arpa", allowed_hosts=())
    with TestClient(create_app(settings, build_library(settings)), base_url="http://nas.home.arpa:8000") as client:
        assert client.get("/api/v1/images").status_code == 200
        assert client.get("/api/v1/images", headers={"Host": ATTACKER}).status_code == 400


def test_bound_to_every_interface_addresses_pass_and_names_must_be_listed(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, host="0.0.0.0", allowed_hosts=(), api_key="k" * 20)
    with TestClient(create_app(settings, build_library(settings)), headers={"X-API-Key": "k" * 20}) as client:
        for host in ("192.168.1.20:8000", "10.0.0.5", "[fe80::1]:8000", "localhost:8000"):
            assert client.get("/api/v1/images", headers={"Host": host}).status_code == 200, host
        for host in ("nas.lan:8000", ATTACKER):
            assert client.get("/api/v1/images", headers={"Host": host}).status_code == 400, host


def test_a_star_turns_the_check_off(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, allowed_hosts=("*",))
    with TestClient(create_app(settings, build_library(settings))) as client:
        assert client.get("/api/v1/images", headers={"Host": ATTACKER}).status_code == 200


def test_allowed_hosts_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEMATCH_ALLOWED_HOSTS", " photos.example.org, *.lan ,")
    assert load_settings().allowed_hosts == ("photos.example.org", "*.lan")
    for bad in ("http://photos.example.org", "photos.example.org/", "a b", "::1", "*.*"):
        monkeypatch.setenv("IMAGEMATCH_ALLOWED_HOSTS", bad)
        with pytest.raises(SettingsError, match="IMAGEMATCH_ALLOWED_HOSTS"):
            load_settings()


def test_uploads_from_the_pages_own_name_still_work(harness: Harness) -> None:
    added = harness.client.post(
        "/api/v1/images",
        files={"file": ("rocket.jpg", jpeg("rocket"), "image/jpeg")},
        headers={"Host": "localhost:8000", "Origin": "http://localhost:8000", "Sec-Fetch-Site": "same-origin"},
    )
    assert added.status_code == 201
    assert harness.client.delete(f"/api/v1/images/{added.json()['id']}").status_code == 204


def test_every_refusal_carries_the_security_headers(harness: Harness) -> None:
    """Refusals of the outermost layers too: a wrong host (400) and a cross-site write (403)."""
    for response in (
        harness.client.get("/", headers={"Host": "rebind.attacker.example"}),
        harness.client.get("/api/v1/images", headers={"Host": "rebind.attacker.example"}),
        harness.client.delete(f"/api/v1/images/{harness.stored_id}", headers={"Origin": "http://127.0.0.1:9999"}),
        harness.client.get("/"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff", response.status_code
        assert response.headers["x-frame-options"] == "DENY" and response.headers["referrer-policy"] == "same-origin"
