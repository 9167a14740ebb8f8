"""/docs and /redoc in a real browser with every request beyond 127.0.0.1 blocked: both viewers render the
API's operations from this server's own assets, under the page's Content-Security-Policy (a violation or a
script error fails the test, see conftest._tab)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.browser.conftest import LiveApp, _tab

pytestmark = pytest.mark.browser


REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@pytest.fixture
def offline_page(page: Page) -> list[str]:
    return _offline(page)


def _offline(page: Page) -> list[str]:
    """Refuse every request of the tab to another host; returns the list of those that tried."""
    blocked: list[str] = []

    def only_this_machine(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_machine)
    return blocked


def test_swagger_ui_renders_offline_and_runs_a_request(page: Page, offline_page: list[str]) -> None:
    page.goto("/docs")
    health = page.locator("#operations-admin-health_api_v1_health_get")
    expect(health).to_be_visible()
    expect(page.locator(".opblock", has_text="/api/v1/images").first).to_be_visible()
    health.locator(".opblock-summary").click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    expect(page.locator(".live-responses-table tbody .response-col_status").first).to_have_text("200")
    assert offline_page == []


def test_redoc_renders_offline(browser: Browser, app: LiveApp) -> None:
    # ReDoc's logo from its CDN is refused by the page's policy before any request is made.
    with _tab(browser, app, javascript=True, expected=(f"'{REDOC_LOGO}' violates",)) as page:
        blocked = _offline(page)
        page.goto("/redoc")
        expect(page.get_by_role("heading", name="ImageMatch", exact=False).first).to_be_visible()
        expect(page.get_by_text("/api/v1/health").first).to_be_attached()
        page.get_by_placeholder("Search...").fill("health")
        expect(page.locator("[role=search] li", has_text="health").first).to_be_visible()
        expect(page.get_by_alt_text("redocly logo")).to_have_count(0)
    assert blocked == []
