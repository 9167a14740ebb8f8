"""The Model page's tuning card in a real browser: a tune job runs and reports, and the tuning in use is undone."""

from __future__ import annotations

import time

import numpy as np
import pytest
from playwright.sync_api import Browser, expect

from imagematch.ai.adapter import TextAdapter
from imagematch.services.tuning import CHECK_EVERY
from imagematch.store import tuned
from imagematch.store.tuned import Applied
from testkit.tuning import build
from tests.browser.conftest import DESKTOP, PHONE, LiveApp, _tab

pytestmark = pytest.mark.browser


def test_a_tune_job_reports_what_it_measured_and_the_card_shows_the_tuning_in_use(
    browser: Browser, app: LiveApp
) -> None:
    build(app.library, 120, seed=2)
    with _tab(browser, app, javascript=True, viewport=DESKTOP) as page:
        page.goto("/model")
        expect(page.get_by_test_id("tuning-state")).to_have_text("In use: none")
        page.get_by_test_id("start-tune").click()
        expect(page.get_by_test_id("tune-job-state")).to_have_text("done", timeout=120_000)
        message = page.get_by_test_id("tune-job-message")
        expect(message).to_contain_text("Held-out recall@5")
        current = app.library.tuning.state().current
        if current is None:  # the tiny random model may gain too little: the card says so and nothing changed
            expect(message).to_contain_text("Not applied")
            expect(page.get_by_test_id("tuning-state")).to_have_text("In use: none")
        else:
            expect(message).to_contain_text(f"Applied (version {current.version})")
            expect(page.get_by_test_id("tuning-state")).to_contain_text(f"version {current.version}")


def test_the_tuning_in_use_is_undone_from_the_model_page_on_a_phone(browser: Browser, app: LiveApp) -> None:
    library = app.library
    library.open()
    model_id, dim = library.embedder.model_id, library.embedder.dim
    weights = TextAdapter(("biscuit",), np.full((1, dim), 0.1, dtype=np.float32)).to_json()
    applied = Applied("f00dcafe", "2026-12-02T12:00:00+00:00", 120, 24, {"recall@5": 0.2}, {"recall@5": 0.7})
    tuned.apply(library.store, model_id, weights, applied)  # as another process would
    time.sleep(CHECK_EVERY)  # what it takes this process to notice
    try:
        with _tab(browser, app, javascript=True, viewport=PHONE) as page:
            page.goto("/model")
            state = page.get_by_test_id("tuning-state")
            expect(state).to_contain_text("version f00dcafe of 2026-12-02 12:00, 120 pairs")
            expect(state).to_contain_text("held-out recall@5 0.20 → 0.70; learned biscuit")
            page.get_by_test_id("undo-tune").click()
            expect(state).to_have_text("In use: none")
            expect(page.get_by_test_id("undo-tune")).to_have_count(0)
        assert library.tuning.state().current is None
    finally:
        tuned.forget(library.store)
