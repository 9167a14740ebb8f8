"""Every page but the search page (another test's) on a desktop and on a phone, as a newcomer on an offline
machine meets it: the built-in demo model, background removal off and captions paused, so all three banners
are up; a library with long unbroken names and texts, two pages to browse, near-duplicates and a batch upload's
report. Nothing may be wider than the screen or out of reach, and the banners must be short and dismissible.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import ImageEnhance
from playwright.sync_api import Browser, Page, ViewportSize, expect

from imagematch.demo_data import write_demo_images
from imagematch.factory import build_library
from imagematch.passwords import hash_password
from imagematch.records import RecordPatch
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.images import encode, jpeg, photo
from testkit.serving import serve
from tests.browser.conftest import DESKTOP, PHONE, LiveApp, _tab

pytestmark = pytest.mark.browser

PASSWORD = "a long and private passphrase"
LONG = "unbroken" * 15  # 120 characters without a space, as camera and export file names often are


@dataclass(frozen=True, slots=True)
class Degraded:
    app: LiveApp
    long_id: str
    duplicate_ids: tuple[str, str]
    job_id: str


DEMO_IMAGES = 25


@pytest.fixture(scope="module")
def degraded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Degraded]:
    """The default model cannot be downloaded (so the demo model runs), rembg has no model, Moondream no key."""
    root = tmp_path_factory.mktemp("first-minutes")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the hub is unreachable
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=root / "data",
            samples_dir=root / "samples",
            model_cache_dir=root / "cache",
            background_removal="auto",
            rembg_model_path=root / "no-such-model.onnx",
            captioner="moondream",
            ui_password_hash=hash_password(PASSWORD),
            rate_limit=0,
        )
        library = build_library(settings)
        # The demo images, stored and then left in the samples folder: the batch upload finds them all again.
        for path in write_demo_images(settings.samples_dir / "demo", DEMO_IMAGES):
            assert library.ingest.add(path.read_bytes(), filename=path.name).status == "added"
        long = library.ingest.add(
            jpeg("astronaut"), filename=f"{LONG}.jpg", description=LONG * 3, metadata={LONG[:100]: LONG * 2}
        ).record
        assert long is not None
        library.catalog.update(long.id, RecordPatch(caption=LONG * 2))
        # A retouched copy, stored past the upload's duplicate check, for the duplicates page.
        library.settings = settings.model_copy(
            update={"duplicate_distance": 0, "duplicate_variants": False, "duplicate_crop_distance": 0}
        )
        copy = library.ingest.add(
            encode(ImageEnhance.Contrast(photo("astronaut")).enhance(1.5), "PNG"), filename="copy.png"
        )
        assert copy.record is not None
        library.settings = settings
        odd = settings.samples_dir / LONG
        odd.mkdir(parents=True)
        (odd / f"{LONG}.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
        (odd / "coffee.jpg").write_bytes(jpeg("coffee"))
        app = create_app(settings, library)
        with serve(app) as url:
            assert len(library.warnings) == 2, library.warnings  # the demo model and background removal
            job = app.state.jobs.start_folder(settings.samples_dir)
            app.state.jobs.wait(timeout=120)
            done = app.state.jobs.get(job.id)
            assert (done.added, done.duplicates, done.failed) == (1, DEMO_IMAGES, 1), done
            yield Degraded(LiveApp(url, library, settings), long.id, (long.id, copy.record.id), job.id)


def log_in(page: Page) -> None:
    page.goto("/login")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Upload and search")


# What a user would call out of reach: a control cut off at a side of the screen (or wider than it).
FIT = """() => {
    const width = window.innerWidth;
    const cut = [];
    for (const control of document.querySelectorAll(
        "a[href], button, input:not([type=hidden]), select, textarea, summary"
    )) {
        // The skip link is off screen until focused; elements not rendered (hidden, folded) are not on screen.
        if (control.closest(".skip-link") || !control.getClientRects().length) continue;
        const box = control.getBoundingClientRect();
        if (box.left < -0.5 || box.right > width + 0.5) cut.push(control.outerHTML.slice(0, 100));
    }
    return {overflow: document.documentElement.scrollWidth - width, cut};
}"""


def pages_of(degraded: Degraded) -> list[str]:
    first, second = degraded.duplicate_ids
    return [
        "/",
        "/images",
        "/images?page=2",
        "/images?page=99",
        f"/images/{degraded.long_id}",
        f"/images/{degraded.long_id}/delete",
        "/duplicates",
        f"/duplicates/resolve?keep={first}&member={first}&member={second}",
        "/upload-samples",
        f"/upload-samples?job={degraded.job_id}",
        "/reset",
        "/model",
        "/images/0000000000000000-00000000",
        "/duplicates/resolve",
    ]


def assert_fits(page: Page, where: str) -> None:
    fit = page.evaluate(FIT)
    assert fit["overflow"] <= 0, f"{where} is {fit['overflow']} px wider than the screen"
    assert fit["cut"] == [], f"{where}: controls cut off at the side: {fit['cut']}"


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_page_fits_the_screen_with_every_control_in_reach(
    browser: Browser, degraded: Degraded, viewport: ViewportSize
) -> None:
    with _tab(browser, degraded.app, javascript=True, viewport=viewport) as page:
        page.goto("/login")
        assert_fits(page, "/login")
        log_in(page)
        for path in pages_of(degraded):
            page.goto(path)
            assert_fits(page, path)
        page.goto(f"/upload-samples?job={degraded.job_id}")
        for section in ("duplicate", "added"):  # unfolded, what they hold fits too
            page.get_by_test_id(f"job-section-{section}").locator("summary").click()
        assert_fits(page, "the batch report, unfolded")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_banners_are_plain_and_short(browser: Browser, degraded: Degraded, viewport: ViewportSize) -> None:
    with _tab(browser, degraded.app, javascript=True, viewport=viewport) as page:
        log_in(page)
        banners = page.get_by_test_id("banner")
        expect(banners).to_have_count(3)
        expect(banners.nth(0)).to_contain_text("Running on the small built-in demo model")
        expect(banners.nth(1)).to_contain_text("Background removal is off")
        expect(banners.nth(2)).to_contain_text("Captions are paused")
        for leak in ("Error", "Errno", "http://127.0.0.1", str(degraded.app.settings.data_dir)):
            expect(page.locator("[data-banners]")).not_to_contain_text(leak)
        area = page.locator("[data-banners]").bounding_box()
        assert area is not None and area["height"] <= viewport["height"] / 4, f"the banners take {area} px"
        # Folded, what to do is one tap away.
        banners.nth(0).get_by_text("Running on the small built-in demo model").click()
        expect(banners.nth(0)).to_contain_text("IMAGEMATCH_MODEL=local-dir:")
        assert_fits(page, "/ with a banner unfolded")


def test_dismissed_banners_stay_away_for_the_browser_session(browser: Browser, degraded: Degraded) -> None:
    with _tab(browser, degraded.app, javascript=True, viewport=PHONE) as page:
        log_in(page)
        banners = page.get_by_test_id("banner")
        page.get_by_role("button", name="Dismiss this notice").first.click()
        expect(banners.first).to_be_hidden()
        expect(banners.nth(1)).to_be_visible()
        page.get_by_role("link", name="Browse", exact=True).click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Browse")
        expect(banners.first).to_be_hidden()
        for _ in range(2):
            page.get_by_role("button", name="Dismiss this notice").first.click()  # the first one still shown
        expect(page.locator("[data-banners]")).to_be_hidden()
        page.reload()
        expect(page.locator("[data-banners]")).to_be_hidden()
    with _tab(browser, degraded.app, javascript=True, viewport=PHONE) as page:  # another browser session
        log_in(page)
        expect(page.get_by_test_id("banner")).to_have_count(3)
        expect(page.get_by_test_id("banner").first).to_be_visible()


def test_without_javascript_the_banners_stay_and_unfold(browser: Browser, degraded: Degraded) -> None:
    with _tab(browser, degraded.app, javascript=False, viewport=PHONE) as page:
        log_in(page)
        expect(page.get_by_test_id("banner")).to_have_count(3)
        dismiss = page.get_by_test_id("dismiss-banner")
        expect(dismiss).to_have_count(3)
        for index in range(3):
            expect(dismiss.nth(index)).to_be_hidden()  # it would do nothing without the script
        page.get_by_text("Background removal is off").click()
        expect(page.get_by_text("Its model could not be loaded (the server log says why)")).to_be_visible()


def test_a_browse_page_past_the_end_says_how_many_there_are(browser: Browser, degraded: Degraded) -> None:
    with _tab(browser, degraded.app, javascript=True, viewport=PHONE) as page:
        log_in(page)
        page.goto("/images?page=99")
        expect(page.get_by_test_id("browse-empty")).to_have_text(
            "There is no page 99: the 28 images fill 2 pages. Go to the last page or the first."
        )
        expect(page.get_by_test_id("page-position")).to_have_count(0)
        page.get_by_role("link", name="Go to the last page").click()
        expect(page.get_by_test_id("page-position")).to_have_text("Page 2 of 2")
        expect(page.get_by_test_id("image-tile")).to_have_count(4)


def test_the_batch_report_folds_its_long_lists(browser: Browser, degraded: Degraded) -> None:
    """25 duplicates made a report of screens and screens; folded, the page fits in little more than one."""
    with _tab(browser, degraded.app, javascript=True) as page:
        log_in(page)
        page.goto(f"/upload-samples?job={degraded.job_id}")
        expect(page.get_by_test_id("job-item-failed")).to_be_visible()  # failures stay in view
        duplicates = page.get_by_test_id("job-item-duplicate")
        expect(duplicates).to_have_count(DEMO_IMAGES)
        expect(duplicates.first).to_be_hidden()
        expect(page.get_by_test_id("job-section-duplicate")).to_contain_text(f"Duplicates {DEMO_IMAGES}")
        height: int = page.evaluate("document.documentElement.scrollHeight")
        assert height < 1.5 * DESKTOP["height"], f"the report is {height} px long"
        page.get_by_test_id("job-section-duplicate").locator("summary").click()
        expect(duplicates.last).to_be_visible()
        expect(duplicates.first).to_contain_text(".png")
