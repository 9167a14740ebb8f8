"""Fuzzing: schemathesis writes requests for every operation of our own OpenAPI schema (valid ones and broken
ones), and hypothesis fills the no-JavaScript forms with arbitrary text. Whatever arrives, the app answers
without a server error, in the shape the schema documents, and refuses what it cannot use.

A fixed seed keeps the run the same in every `make test`; the number of cases keeps it within a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from schemathesis.python import asgi

from imagematch.factory import build_library
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.images import jpeg
from tests.security.conftest import Harness, snapshot
from tests.security.conftest import make_settings as security_settings

FUZZ = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
FUZZ_API = settings(FUZZ, max_examples=30)


def _operations() -> list[tuple[str, str]]:
    """Every operation in the API's schema, read from the app itself (building the schema needs no library)."""
    unused = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=Path("unused"),
        session_secret="s" * 32,  # the app's form tokens need a secret; this one is not written to disk
        api_key="",
        ui_password_hash="",
        rate_limit=0,
    )
    app = create_app(unused)
    return [(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Any]:
    settings = security_settings(tmp_path_factory.mktemp("fuzz"), tiny_model_dir)
    library = build_library(settings)
    for name in ("astronaut", "coffee"):
        library.ingest.add(jpeg(name), filename=f"{name}.jpg", description=name, metadata={"album": "fuzz"})
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, library))
    asgi.shutdown_lifespans()  # stops the app's background workers


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_generated_request_gets_a_server_error(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]

    @FUZZ_API
    @given(case=operation.as_strategy())
    def call(case: Any) -> None:
        response = case.call()
        case.validate_response(
            response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
        )

    call()


form_text = st.text(st.characters(codec="utf-8"), max_size=300)


@FUZZ
@given(description=form_text, key=form_text, value=form_text, caption=form_text)
def test_the_edit_form_takes_any_text_without_a_server_error(
    harness: Harness, description: str, key: str, value: str, caption: str
) -> None:
    others = [r for r in snapshot(harness.library).records if r[0] != harness.stored_id]
    response = harness.client.post(
        f"/images/{harness.stored_id}/edit",
        data={
            "csrf_token": harness.token(),
            "description": description,
            "caption": caption,
            "meta_key": key,
            "meta_value": value,
        },
        follow_redirects=False,
    )
    assert response.status_code in (303, 422), response.text[:300]
    record = harness.library.catalog.get(harness.stored_id)
    if response.status_code == 303:
        assert record.description == description.strip()
    assert [r for r in snapshot(harness.library).records if r[0] != harness.stored_id] == others


@FUZZ
@given(text=form_text, k=form_text, weight=form_text, key=form_text, value=form_text)
def test_the_search_page_takes_any_text_without_a_server_error(
    harness: Harness, text: str, k: str, weight: str, key: str, value: str
) -> None:
    params = {"text": text, "k": k, "image_weight": weight, "image_id": harness.stored_id, "key": key, "value": value}
    response = harness.client.get("/search", params=params)
    assert response.status_code in (200, 404, 422), response.text[:300]
    assert response.headers["content-type"].startswith("text/html")
