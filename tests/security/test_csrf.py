"""Cross-site request forgery on the page forms: a forged cookie-and-field pair, a token from before login or
from another session, and requests that a browser says come from another origin (another port of 127.0.0.1 is
"same-site", not same-origin) are refused with the friendly page and change nothing; the normal flows work."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imagematch.factory import build_library
from imagematch.passwords import hash_password
from imagematch.web.app import create_app
from imagematch.web.auth import SESSION_COOKIE
from imagematch.web.csrf import COOKIE_NAME
from testkit.images import jpeg
from tests.security.conftest import Harness, csrf_token, make_settings, snapshot

PASSWORD = "correct horse battery staple"
FORGED = "A" * 43  # the shape of a real cookie value, chosen by the attacker
ATTACKER_ORIGIN = {"Origin": "http://127.0.0.1:9999", "Sec-Fetch-Site": "same-site"}
FORMS = ["/images/{id}/delete", "/images/{id}/edit", "/duplicates/resolve", "/reset", "/upload-samples", "/logout"]


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Harness]:
    """An app with a UI password, holding two images."""
    settings = make_settings(tmp_path_factory.mktemp("csrf"), tiny_model_dir, ui_password_hash=hash_password(PASSWORD))
    library = build_library(settings)
    stored = library.ingest.add(jpeg("astronaut"), filename="astronaut.jpg", description="kept")
    library.ingest.add(jpeg("moon"), filename="moon.jpg")
    assert stored.record is not None
    with TestClient(create_app(settings, library), raise_server_exceptions=False) as client:
        yield Harness(client, library, settings, stored.record.id)


def _login_token(client: TestClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert match is not None
    return match.group(1)


def _logged_in(harness: Harness) -> TestClient:
    browser = TestClient(harness.client.app, raise_server_exceptions=False)
    response = browser.post(
        "/login", data={"csrf_token": _login_token(browser), "password": PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 303 and SESSION_COOKIE in browser.cookies
    return browser


def _plant(browser: TestClient, value: str) -> None:
    """What a page on another port of this host can do: overwrite the browser's CSRF cookie (cookies do not
    keep ports apart)."""
    browser.cookies.delete(COOKIE_NAME)
    browser.cookies.set(COOKIE_NAME, value)


def _deed(form: str, harness: Harness) -> tuple[str, dict[str, Any]]:
    """The form's URL and the fields that would change the library if the request were let in."""
    other = next(r.id for r in harness.library.catalog.iter_records() if r.id != harness.stored_id)
    url = form.replace("{id}", harness.stored_id)
    deeds: dict[str, dict[str, Any]] = {
        "/images/{id}/edit": {"description": "changed by another site"},
        "/duplicates/resolve": {"keep": harness.stored_id, "delete": [other]},
        "/reset": {"confirm": "DELETE ALL"},
    }
    return url, deeds.get(form, {})


def _assert_refused_and_nothing_changed(
    harness: Harness, browser: TestClient, token: str, headers: dict[str, str] | None = None
) -> None:
    before = snapshot(harness.library)
    for form in FORMS:
        url, fields = _deed(form, harness)
        response = browser.post(url, data={"csrf_token": token, **fields}, headers=headers, follow_redirects=False)
        assert response.status_code == 403, (url, response.status_code)
        assert response.headers["content-type"].startswith("text/html")
        assert "could not be verified" in response.text and "Reload the page" in response.text
    assert snapshot(harness.library) == before
    assert harness.client.app.state.jobs.recent() == []  # type: ignore[attr-defined]


def test_a_forged_cookie_and_field_pair_is_refused_without_auth(harness: Harness) -> None:
    browser = TestClient(harness.client.app, raise_server_exceptions=False)
    _plant(browser, FORGED)
    _assert_refused_and_nothing_changed(harness, browser, FORGED)


def test_the_attack_as_reported_is_refused_without_auth(harness: Harness) -> None:
    browser = TestClient(harness.client.app, raise_server_exceptions=False)
    _plant(browser, FORGED)
    _assert_refused_and_nothing_changed(harness, browser, FORGED, ATTACKER_ORIGIN)


def test_a_forged_pair_is_refused_when_logged_in(locked: Harness) -> None:
    browser = _logged_in(locked)
    _plant(browser, FORGED)
    _assert_refused_and_nothing_changed(locked, browser, FORGED)
    _assert_refused_and_nothing_changed(locked, browser, FORGED, ATTACKER_ORIGIN)


def test_a_token_from_before_login_or_from_another_session_is_refused(locked: Harness) -> None:
    """An attacker can read a valid pair off the open login page, or off a session of their own: neither
    works in the victim's logged-in browser."""
    anonymous = TestClient(locked.client.app)
    before_login = _login_token(anonymous)
    victim = _logged_in(locked)
    _plant(victim, anonymous.cookies[COOKIE_NAME])
    _assert_refused_and_nothing_changed(locked, victim, before_login)

    attacker = _logged_in(locked)
    attackers_token = csrf_token(attacker)
    _plant(victim, attacker.cookies[COOKIE_NAME])
    _assert_refused_and_nothing_changed(locked, victim, attackers_token)


def test_a_form_opened_before_login_asks_for_a_reload_after_it(locked: Harness) -> None:
    browser = TestClient(locked.client.app, raise_server_exceptions=False)
    old_form = _login_token(browser)
    browser.post("/login", data={"csrf_token": old_form, "password": PASSWORD})
    _assert_refused_and_nothing_changed(locked, browser, old_form)
    url, _ = _deed("/images/{id}/edit", locked)
    reloaded = browser.post(url, data={"csrf_token": csrf_token(browser), "description": "kept"})
    assert reloaded.status_code == 200 and "Changes saved" in reloaded.text


@pytest.mark.parametrize("headers", [{}, ATTACKER_ORIGIN], ids=["no-origin", "same-site-origin"])
def test_login_with_a_forged_pair_does_not_log_in(locked: Harness, headers: dict[str, str]) -> None:
    browser = TestClient(locked.client.app, raise_server_exceptions=False)
    _plant(browser, FORGED)
    response = browser.post(
        "/login", data={"csrf_token": FORGED, "password": PASSWORD}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 403 and "could not be verified" in response.text
    assert SESSION_COOKIE not in browser.cookies and "set-cookie" not in response.headers
    assert browser.get("/images", follow_redirects=False).headers["location"].startswith("/login")


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://127.0.0.1:9999"},
        {"Origin": "http://testserver:8000"},  # same host, another port
        {"Origin": "https://testserver"},  # same host, another scheme
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_valid_token_sent_from_another_origin_is_refused(harness: Harness, headers: dict[str, str]) -> None:
    """Origin and Sec-Fetch-Site say where the form was; the token alone would not stop a page that can
    read one (for example on another port of this host)."""
    _assert_refused_and_nothing_changed(harness, harness.client, harness.token(), headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "HTTP://TestServer:80"},
        {"Sec-Fetch-Site": "none"},
    ],
)
def test_forms_sent_from_this_origin_work(harness: Harness, headers: dict[str, str]) -> None:
    url, _ = _deed("/images/{id}/edit", harness)
    response = harness.client.post(
        url, data={"csrf_token": harness.token(), "description": "kept"}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"].endswith("notice=saved")


def test_the_origin_is_the_one_the_request_arrived_with(harness: Harness) -> None:
    over_https = TestClient(harness.client.app, base_url="https://localhost")
    url, _ = _deed("/images/{id}/edit", harness)
    token = csrf_token(over_https)
    for origin, status in [("http://localhost", 403), ("https://localhost", 303)]:
        response = over_https.post(
            url, data={"csrf_token": token, "description": "kept"}, headers={"Origin": origin}, follow_redirects=False
        )
        assert response.status_code == status, origin


@pytest.mark.parametrize("headers", [ATTACKER_ORIGIN, {"Origin": "http://127.0.0.1:9999"}])
def test_the_api_refuses_the_same_origins(harness: Harness, headers: dict[str, str]) -> None:
    before = snapshot(harness.library)
    response = harness.client.patch(
        f"/api/v1/images/{harness.stored_id}", json={"description": "changed by another site"}, headers=headers
    )
    assert response.status_code == 403 and "another origin" in response.json()["detail"]
    deleted = harness.client.delete(f"/api/v1/images/{harness.stored_id}", headers=headers)
    assert deleted.status_code == 403
    assert snapshot(harness.library) == before


@pytest.mark.parametrize(("base_url", "secure"), [("https://localhost", True), ("http://127.0.0.1", False)])
def test_the_csrf_cookie_is_secure_over_https(harness: Harness, base_url: str, secure: bool) -> None:
    cookie = TestClient(harness.client.app, base_url=base_url).get("/").headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert ("Secure" in cookie) is secure


def test_no_answer_is_shared_with_another_origin(harness: Harness) -> None:
    """Without CORS headers a script on another origin cannot read what the library answers, preflight or not."""
    headers = {"Origin": "http://127.0.0.1:9999", "Access-Control-Request-Method": "GET"}
    for response in (
        harness.client.get("/api/v1/images", headers=headers),
        harness.client.options("/api/v1/images", headers=headers),
        harness.client.get(f"/api/v1/images/{harness.stored_id}/file", headers=headers),
    ):
        assert not any(name.lower().startswith("access-control-") for name in response.headers), response.headers
