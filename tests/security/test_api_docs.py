"""/docs and /redoc: every script and stylesheet they load comes from this server and answers with its type,
nothing runs inline, and the pages' Content-Security-Policy allows no script from elsewhere or inline."""

from __future__ import annotations

import re

import pytest

from tests.security.conftest import Harness

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".json": "application/json"}


def _directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for directive in policy.split(";"):
        name, *sources = directive.split()
        parsed[name] = sources
    return parsed


@pytest.mark.parametrize(("path", "viewer"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")])
def test_the_api_docs_load_only_this_servers_assets(harness: Harness, path: str, viewer: str) -> None:
    page = harness.client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    referenced = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert any(url.endswith(viewer) for url in referenced) and "/static/api-docs.js" in " ".join(referenced)
    for url in referenced:
        assert url.startswith("/") and not url.startswith("//"), url  # same origin: no host, no scheme
        asset = harness.client.get(url)
        suffix = re.search(r"\.\w+$", url.partition("?")[0])
        assert asset.status_code == 200, url
        assert suffix is not None and asset.headers["content-type"].startswith(CONTENT_TYPES[suffix.group()]), url
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)  # no inline script
    assert "on" not in {attribute[:2] for attribute in re.findall(r"\s(\w+)=", page.text)}  # no event handlers


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_api_docs_have_a_policy_without_inline_or_foreign_scripts(harness: Harness, path: str) -> None:
    policy = _directives(harness.client.get(path).headers["content-security-policy"])
    assert policy["default-src"] == ["'none'"] and policy["script-src"] == ["'self'"]
    assert policy["connect-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"]
    assert all("http" not in source and source != "*" for sources in policy.values() for source in sources)
