"""One app and one chromium for the whole browser session; every test starts with an empty library."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, sync_playwright

from imagematch.factory import build_library
from imagematch.library import RESET_PHRASE, Library
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.browser import launch_chromium
from testkit.serving import serve
from testkit.tinymodel import tiny_settings

DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass(frozen=True, slots=True)
class LiveApp:
    url: str
    library: Library
    settings: Settings


@pytest.fixture(scope="session")
def live_app(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[LiveApp]:
    root = tmp_path_factory.mktemp("live")
    settings = tiny_settings(root, tiny_model_dir)
    library = build_library(settings)
    with serve(create_app(settings, library)) as url:
        yield LiveApp(url, library, settings)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def app(live_app: LiveApp) -> LiveApp:
    """The live app with an empty library and no samples folder."""
    live_app.library.catalog.reset(RESET_PHRASE)
    shutil.rmtree(live_app.settings.samples_dir, ignore_errors=True)
    return live_app


@contextmanager
def _tab(
    browser: Browser,
    app: LiveApp,
    *,
    javascript: bool,
    expected: tuple[str, ...] = (),
    viewport: ViewportSize = DESKTOP,
) -> Iterator[Page]:
    """A fresh browser context; any script error or policy violation on any page fails the test, but for
    console errors that contain one of the expected texts. A phone's viewport comes with touch, as on a phone."""
    phone = viewport["width"] < 600
    context = browser.new_context(
        base_url=app.url, viewport=viewport, java_script_enabled=javascript, is_mobile=phone, has_touch=phone
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # Refused uploads (duplicates, broken files) are expected 4xx answers, not problems.
        if (
            message.type == "error"
            and "status of 4" not in message.text
            and not any(text in message.text for text in expected)
        ):
            problems.append(message.text)

    tab.on("console", on_console)
    tab.on("pageerror", lambda error: problems.append(str(error)))
    yield tab
    context.close()
    assert problems == [], problems


@pytest.fixture
def page(browser: Browser, app: LiveApp) -> Iterator[Page]:
    with _tab(browser, app, javascript=True) as tab:
        yield tab


@pytest.fixture
def page_without_js(browser: Browser, app: LiveApp) -> Iterator[Page]:
    with _tab(browser, app, javascript=False) as tab:
        yield tab
