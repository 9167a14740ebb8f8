"""Logging in and out in a real browser, against an app with a UI password; the pages' JavaScript keeps
working with the session cookie (uploads go through the JSON API)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FilePayload, expect

from imagematch.factory import build_library
from imagematch.passwords import hash_password
from imagematch.web.app import create_app
from testkit.images import jpeg
from testkit.serving import serve
from testkit.tinymodel import tiny_settings
from tests.browser.conftest import LiveApp, _tab

pytestmark = pytest.mark.browser

PASSWORD = "a long and private passphrase"


@pytest.fixture(scope="module")
def private_app(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[LiveApp]:
    root = tmp_path_factory.mktemp("private")
    settings = tiny_settings(
        root,
        tiny_model_dir,
        runtime="torch",
        api_key="",
        ui_password_hash=hash_password(PASSWORD),
        rate_limit=0,
    )
    library = build_library(settings)
    with serve(create_app(settings, library)) as url:
        yield LiveApp(url, library, settings)


def test_log_in_use_the_pages_and_log_out(browser: Browser, private_app: LiveApp) -> None:
    with _tab(browser, private_app, javascript=True) as page:
        page.goto("/images")
        expect(page).to_have_url(f"{private_app.url}/login?next=%2Fimages")
        expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
        expect(page.get_by_test_id("logout")).to_have_count(0)

        page.get_by_label("Password").fill("not it")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_test_id("notice-error")).to_have_text("That password is not right.")

        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(f"{private_app.url}/images")
        expect(page.get_by_role("heading", level=1)).to_have_text("Browse")

        page.goto("/")
        rocket: FilePayload = {"name": "rocket.jpg", "mimeType": "image/jpeg", "buffer": jpeg("rocket")}
        page.get_by_label("Images", exact=True).set_input_files([rocket])
        page.get_by_role("button", name="Upload").click()
        expect(page.get_by_test_id("upload-summary")).to_have_text("1 added, 0 duplicates, 0 failed.")
        assert private_app.library.catalog.count() == 1

        page.get_by_test_id("logout").click()
        expect(page).to_have_url(f"{private_app.url}/login")
        page.goto("/")
        expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
