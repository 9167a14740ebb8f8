"""Access control: with an API key or a UI password set, nothing but the health check, static files and the login
page answers without credentials; the key and the login both work, wrong ones do not; `serve` refuses to listen
beyond loopback without authentication."""

from __future__ import annotations

import re
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from imagematch.cli import app as cli
from imagematch.cli import is_loopback
from imagematch.factory import build_library
from imagematch.passwords import hash_password, is_password_hash, verify_password
from imagematch.settings import SettingsError, load_settings
from imagematch.web.app import create_app
from imagematch.web.auth import (
    LOGIN_ATTEMPTS_PER_MINUTE,
    SECRET_FILE,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    Authenticator,
    safe_next,
    session_secret,
)
from testkit.cli_env import env_for
from testkit.images import jpeg
from testkit.serving import serve
from tests.security.conftest import Harness, app_routes, csrf_token, make_settings, snapshot

KEY = "k3y-for-the-tests-0123456789abcdef"
PASSWORD = "correct horse battery staple"
OPEN_ROUTES = {
    ("GET", "/api/v1/health"),
    ("HEAD", "/api/v1/health"),
    ("GET", "/login"),
    ("HEAD", "/login"),
    ("POST", "/login"),
}


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, password_hash: str) -> Iterator[Harness]:
    """An app with both an API key and a UI password, holding one image and its cut-out preview."""
    settings = make_settings(
        tmp_path_factory.mktemp("locked"), tiny_model_dir, api_key=KEY, ui_password_hash=password_hash
    )
    library = build_library(settings)
    stored = library.ingest.add(jpeg("astronaut"), filename="astronaut.jpg")
    assert stored.record is not None
    library.blobs.put_cutout(stored.record.id, jpeg("coffee"))
    with TestClient(create_app(settings, library), raise_server_exceptions=False) as client:
        yield Harness(client, library, settings, stored.record.id)


def _log_in(client: TestClient, password: str = PASSWORD, next_page: str = "/") -> Any:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    return client.post(
        "/login", data={"csrf_token": token.group(1), "password": password, "next": next_page}, follow_redirects=False
    )


def _concrete(path: str, harness: Harness) -> str:
    return path.replace("{image_id}", harness.stored_id).replace("{job_id}", "job").replace("{token}", "t" * 22)


def _is_refused(method: str, path: str, response: Any) -> bool:
    """401 in JSON for the API and the schema; a page redirects to the login page or answers a 401 page; HEAD
    as GET, without the body."""
    answers_json = path.startswith("/api/") or path == "/openapi.json"
    if method == "HEAD":
        return bool(response.content == b"" and response.status_code == (401 if answers_json else 303))
    if answers_json:
        return bool(response.status_code == 401 and response.json()["detail"].startswith("authentication required"))
    if method == "GET":
        return bool(
            response.status_code == 303 and response.headers["location"] == f"/login?next={quote(path, safe='')}"
        )
    return bool(response.status_code == 401 and "private" in response.text)


def test_every_route_refuses_anonymous_requests_and_changes_nothing(locked: Harness) -> None:
    client = TestClient(locked.client.app, raise_server_exceptions=False)  # no cookies, no key
    token = csrf_token(client)
    routes = app_routes(locked.client.app)  # type: ignore[arg-type]
    changing = [(m, p) for m, p in routes if m != "GET"]
    assert len(changing) >= 12 and ("DELETE", "/api/v1/images/{image_id}") in changing
    before = snapshot(locked.library)
    checked = 0
    for method, template in routes:
        if (method, template) in OPEN_ROUTES:
            continue
        path = _concrete(template, locked)
        # A request that would change the library if it were let in.
        response = client.request(
            method,
            path,
            data={"csrf_token": token, "confirm": "DELETE ALL", "description": "changed"} if method == "POST" else None,
            files={"file": ("a.jpg", jpeg("coffee"), "image/jpeg")} if path == "/api/v1/images" else None,
            headers={"content-type": "application/json"} if method == "PATCH" else None,
            content=b'{"description": "changed"}' if method == "PATCH" else None,
            follow_redirects=False,
        )
        assert _is_refused(method, path, response), (method, path, response.status_code)
        checked += 1
    assert checked == len(routes) - len(OPEN_ROUTES)
    assert snapshot(locked.library) == before
    assert locked.client.app.state.jobs.recent() == []  # type: ignore[attr-defined]


def test_health_static_and_the_login_page_stay_open(locked: Harness) -> None:
    client = TestClient(locked.client.app)
    health = client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert client.get("/static/style.css").status_code == 200
    login = client.get("/login")
    assert login.status_code == 200 and 'type="password"' in login.text
    assert "footer-count" not in login.text and "astronaut" not in login.text  # nothing about the library


@pytest.mark.parametrize("kind", ["file", "thumbnail", "cutout"])
def test_image_files_need_credentials(locked: Harness, kind: str) -> None:
    url = f"/api/v1/images/{locked.stored_id}/{kind}"
    anonymous = TestClient(locked.client.app).get(url)
    assert anonymous.status_code == 401 and anonymous.content.startswith(b"{")
    allowed = TestClient(locked.client.app).get(url, headers={"X-API-Key": KEY})
    assert allowed.status_code == 200 and allowed.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-API-Key": KEY}, 200),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"Authorization": f"bearer {KEY}"}, 200),
        ({}, 401),
        ({"X-API-Key": KEY.upper()}, 401),
        ({"X-API-Key": KEY[:-1]}, 401),
        ({"X-API-Key": KEY + "x"}, 401),
        ({"Authorization": f"Basic {KEY}"}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"X-API-Key": PASSWORD}, 401),  # the UI password is not an API key
    ],
    ids=[
        "x-api-key",
        "bearer",
        "bearer-lowercase",
        "none",
        "wrong-case",
        "too-short",
        "too-long",
        "basic",
        "empty",
        "pw",
    ],
)
def test_the_api_key_and_only_it_opens_the_api(locked: Harness, headers: dict[str, str], status: int) -> None:
    response = TestClient(locked.client.app).get("/api/v1/images", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_the_api_key_can_change_the_library(locked: Harness) -> None:
    client = TestClient(locked.client.app, headers={"Authorization": f"Bearer {KEY}"})
    added = client.post("/api/v1/images", files={"file": ("rocket.jpg", jpeg("rocket"), "image/jpeg")})
    assert added.status_code == 201
    assert client.delete(f"/api/v1/images/{added.json()['id']}").status_code == 204
    assert locked.library.catalog.count() == 1


def test_logging_in_opens_pages_and_the_api_of_the_pages_and_logging_out_closes_them(locked: Harness) -> None:
    browser = TestClient(locked.client.app)
    to_login = browser.get("/images?sort=oldest", follow_redirects=False)
    assert to_login.status_code == 303 and to_login.headers["location"] == "/login?next=%2Fimages%3Fsort%3Doldest"

    wrong = _log_in(browser, "not the password")
    assert wrong.status_code == 401 and "That password is not right" in wrong.text
    assert SESSION_COOKIE not in browser.cookies

    logged_in = _log_in(browser, next_page="/images?sort=oldest")
    assert logged_in.status_code == 303 and logged_in.headers["location"] == "/images?sort=oldest"
    cookie = logged_in.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and f"Max-Age={SESSION_MAX_AGE_S}" in cookie

    page = browser.get("/images")
    assert page.status_code == 200 and 'data-testid="logout"' in page.text and "Log out" in page.text
    assert browser.get("/login", follow_redirects=False).headers["location"] == "/"
    assert browser.get("/api/v1/images").json()["total"] == 1
    assert browser.get(f"/api/v1/images/{locked.stored_id}/thumbnail").status_code == 200
    same_origin = {"Sec-Fetch-Site": "same-origin"}
    files = {"file": ("clock.jpg", jpeg("clock"), "image/jpeg")}
    uploaded = browser.post("/api/v1/images", files=files, headers=same_origin)  # what app.js does
    assert uploaded.status_code == 201
    cross_site = browser.delete(f"/api/v1/images/{uploaded.json()['id']}", headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403
    assert browser.delete(f"/api/v1/images/{uploaded.json()['id']}", headers=same_origin).status_code == 204

    logged_out = browser.post("/logout", data={"csrf_token": csrf_token(browser)}, follow_redirects=False)
    assert logged_out.status_code == 303 and logged_out.headers["location"] == "/login"
    assert SESSION_COOKIE not in browser.cookies
    assert browser.get("/images", follow_redirects=False).status_code == 303
    assert browser.get("/api/v1/images").status_code == 401


def test_forged_expired_and_outdated_sessions_are_refused(locked: Harness, password_hash: str) -> None:
    settings = locked.settings
    secret = session_secret(settings)
    issued_long_ago = Authenticator(settings, secret, clock=lambda: 1_000_000.0).new_session()
    other_secret = Authenticator(settings, b"another secret, another server.").new_session()
    before_password_change = Authenticator(
        settings.model_copy(update={"ui_password_hash": hash_password("the old password")}), secret
    ).new_session()
    valid = Authenticator(settings, secret).new_session()
    issued, nonce, signature = valid.split(".")
    forged = [
        f"{int(issued) + 3600}.{nonce}.{signature}",  # a later expiry under the old signature
        f"{issued}.{nonce}.{signature[:-1]}0" if signature[-1] != "0" else f"{issued}.{nonce}.{signature[:-1]}1",
        f"{issued}.{nonce}",
        "",
        "garbage",
    ]
    for value in [issued_long_ago, other_secret, before_password_change, *forged]:
        client = TestClient(locked.client.app, cookies={SESSION_COOKIE: value})
        assert client.get("/api/v1/images").status_code == 401, value
    assert TestClient(locked.client.app, cookies={SESSION_COOKIE: valid}).get("/api/v1/images").status_code == 200


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/images?page=2", "/images?page=2"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/\r\nSet-Cookie: x=1", "/"),
    ],
)
def test_the_login_sends_people_back_only_to_this_site(locked: Harness, target: str, kept: str) -> None:
    assert safe_next(target) == kept
    response = _log_in(TestClient(locked.client.app), next_page=target)
    assert response.status_code == 303 and response.headers["location"] == kept


def test_password_guessing_is_slowed_down(tmp_path: Path, tiny_model_dir: Path, password_hash: str) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, ui_password_hash=password_hash)
    with TestClient(create_app(settings, build_library(settings))) as browser:
        for _ in range(10):
            assert _log_in(browser, "guess").status_code == 401
        refused = _log_in(browser)  # even the right password, until the minute has passed
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert SESSION_COOKIE not in browser.cookies


def _guess(browser: httpx.Client | TestClient, forwarded_for: str, password: str = "guess", proto: str = "http") -> Any:
    headers = {"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": proto}
    page = browser.get("/login", headers=headers)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"csrf_token": token.group(1), "password": password, "next": "/"}
    return browser.post("/login", data=form, headers=headers, follow_redirects=False)


def _guesses_until_refused(browser: httpx.Client | TestClient, forwarded_for: Callable[[int], str]) -> int | None:
    """Wrong guesses let through before the first 429 (None: never refused in 15), checked against the limit:
    LOGIN_ATTEMPTS_PER_MINUTE at once, and one more for every 60/LOGIN_ATTEMPTS_PER_MINUTE seconds taken."""
    started = time.monotonic()
    for n in range(15):
        status = _guess(browser, forwarded_for(n)).status_code
        if status == 429:
            refill = (time.monotonic() - started) * LOGIN_ATTEMPTS_PER_MINUTE / 60
            assert LOGIN_ATTEMPTS_PER_MINUTE <= n <= LOGIN_ATTEMPTS_PER_MINUTE + refill + 1
            return n
        assert status == 401
    return None


def test_rotated_forwarded_for_from_loopback_does_not_escape_the_guess_limit(
    tmp_path: Path, tiny_model_dir: Path, password_hash: str
) -> None:
    """The attack: 12 guesses from 127.0.0.1, each claiming another address, against a real uvicorn as `serve`
    runs it; no proxy is trusted by default."""
    settings = make_settings(tmp_path, tiny_model_dir, ui_password_hash=password_hash)
    with serve(create_app(settings, build_library(settings))) as url, httpx.Client(base_url=url) as browser:
        assert _guesses_until_refused(browser, lambda n: f"198.51.100.{n}") is not None
        assert _guess(browser, "198.51.100.99", PASSWORD).status_code == 429


def test_behind_a_trusted_proxy_guesses_count_per_forwarded_client_and_https_is_believed(
    tmp_path: Path, tiny_model_dir: Path, password_hash: str
) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, ui_password_hash=password_hash, trusted_proxies=("127.0.0.1",))
    app = create_app(settings, build_library(settings))
    with TestClient(app, client=("127.0.0.1", 5000)) as proxy:
        assert _guesses_until_refused(proxy, lambda n: "198.51.100.1") is not None
        assert _guess(proxy, "198.51.100.2").status_code == 401  # another client, its own budget
        logged_in = _guess(proxy, "198.51.100.3", PASSWORD, proto="https")
        assert logged_in.status_code == 303 and "Secure" in logged_in.headers["set-cookie"]
    with TestClient(app, client=("192.0.2.7", 5000)) as direct:  # not the proxy: its X-Forwarded-Proto is not
        logged_in = _guess(direct, "198.51.100.4", PASSWORD, proto="https")
        assert logged_in.status_code == 303 and "Secure" not in logged_in.headers["set-cookie"]


def test_docs_and_schema_need_credentials(locked: Harness) -> None:
    anonymous = TestClient(locked.client.app)
    assert anonymous.get("/openapi.json").status_code == 401
    assert anonymous.get("/docs", follow_redirects=False).headers["location"] == "/login?next=%2Fdocs"
    keyed = TestClient(locked.client.app, headers={"X-API-Key": KEY})
    assert "/api/v1/images" in keyed.get("/openapi.json").json()["paths"]
    assert keyed.get("/docs").status_code == 200


def test_without_a_password_the_login_page_takes_the_api_key(tmp_path: Path, tiny_model_dir: Path) -> None:
    settings = make_settings(tmp_path, tiny_model_dir, api_key=KEY)
    with TestClient(create_app(settings, build_library(settings))) as browser:
        assert "(the API key)" in browser.get("/login").text
        assert _log_in(browser, PASSWORD).status_code == 401
        assert _log_in(browser, KEY).status_code == 303
        assert browser.get("/").status_code == 200


def test_the_session_secret_is_private_and_survives_a_restart(locked: Harness) -> None:
    path = locked.settings.data_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    session = Authenticator(locked.settings, session_secret(locked.settings)).new_session()
    restarted = create_app(locked.settings, locked.library)  # reads the same secret file
    assert TestClient(restarted, cookies={SESSION_COOKIE: session}).get("/api/v1/images").status_code == 200
    configured = locked.settings.model_copy(update={"session_secret": "s" * 40})
    assert session_secret(configured) == b"s" * 40


def test_password_hashes_are_salted_and_checked_in_full() -> None:
    first, second = hash_password(PASSWORD), hash_password(PASSWORD)
    assert first != second and is_password_hash(first) and "$" not in first
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    for wrong in ("", PASSWORD.upper(), PASSWORD + " ", PASSWORD[:-1]):
        assert not verify_password(wrong, first)
    scheme, cost, block, parallel, salt, key = first.split(":")
    for broken in (
        f"{scheme}:{cost}:{block}:{parallel}:{salt}:{key[:-4]}",
        f"{scheme}:3:{block}:{parallel}:{salt}:{key}",  # not a power of two
        f"{scheme}:{2**30}:{block}:{parallel}:{salt}:{key}",  # would take gigabytes to check
        "plain text",
        "",
    ):
        assert not verify_password(PASSWORD, broken)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IMAGEMATCH_API_KEY", "tooshortkey"),
        ("IMAGEMATCH_API_KEY", "has a space in it.."),
        ("IMAGEMATCH_UI_PASSWORD_HASH", "scrypt:not-a-real-hash"),
    ],
)
def test_bad_credentials_settings_stop_start_up_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name) as raised:
        load_settings()
    assert value not in str(raised.value)


def test_hash_password_command_prints_a_hash_that_verifies() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["hash-password", "--password-stdin"], input=f"{PASSWORD}\n")
    assert result.exit_code == 0
    printed = result.stdout.strip()
    assert is_password_hash(printed) and verify_password(PASSWORD, printed)
    short = runner.invoke(cli, ["hash-password", "--password-stdin"], input="1234\n")
    assert short.exit_code == 1 and "at least 8" in short.output


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("photos.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path) -> list[dict[str, Any]]:
    """Environment for `imagematch serve`; uvicorn.run only records how it was called."""
    for name, value in env_for(make_settings(tmp_path, tiny_model_dir), log_level="WARNING").items():
        monkeypatch.setenv(name, value)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append(options))
    return calls


def test_serve_refuses_to_listen_beyond_loopback_without_authentication(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    refused = runner.invoke(cli, ["serve", "--host", "0.0.0.0"])
    assert refused.exit_code == 2
    assert "refusing to listen on 0.0.0.0 without authentication" in refused.output
    assert "IMAGEMATCH_API_KEY" in refused.output and "--insecure" in refused.output
    assert served == []

    assert runner.invoke(cli, ["serve"]).exit_code == 0  # loopback: fine without
    insecure = runner.invoke(cli, ["serve", "--host", "0.0.0.0", "--insecure"])
    assert insecure.exit_code == 0 and "without authentication" in insecure.output
    monkeypatch.setenv("IMAGEMATCH_API_KEY", KEY)
    assert runner.invoke(cli, ["serve", "--host", "0.0.0.0"]).exit_code == 0
    assert [call["host"] for call in served] == ["127.0.0.1", "0.0.0.0", "0.0.0.0"]


def test_serve_leaves_forwarded_headers_to_the_app(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn would believe X-Forwarded-For from 127.0.0.1 (FORWARDED_ALLOW_IPS); the app decides instead."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 0 and "FORWARDED_ALLOW_IPS is ignored" in result.output
    assert "IMAGEMATCH_TRUSTED_PROXIES" in result.output
    assert [call["proxy_headers"] for call in served] == [False]


@pytest.mark.parametrize("host", ["[::1]", ""])
def test_serve_listens_on_bracketed_and_empty_hosts(served: list[dict[str, Any]], host: str) -> None:
    """`[::1]` is loopback and `""` every interface: the port check before the banner must take both."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = CliRunner().invoke(cli, ["serve", "--host", host, "--port", str(port), "--insecure"])
    assert result.exit_code == 0, result.output
    assert [call["host"] for call in served] == [host]
