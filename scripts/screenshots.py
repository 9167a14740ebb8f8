"""Screenshots of every page for the README, made from a small demo library (never by hand).

    .venv/bin/python -m scripts.screenshots        # writes docs/screenshots/*.png

The app runs for real under uvicorn with the tiny random-weight test model and scikit-image's photos, and
Debian's chromium takes the pictures; with random weights the scores mean nothing, the pages look the same.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import ImageEnhance
from playwright.sync_api import FilePayload, Page, ViewportSize, sync_playwright

from imagematch.factory import build_library
from imagematch.library import Library
from imagematch.records import Metadata, RecordPatch
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.browser import launch_chromium
from testkit.images import encode, jpeg, photo
from testkit.serving import serve
from testkit.tinymodel import build_tiny_model

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE: ViewportSize = {"width": 390, "height": 844}
MAX_HEIGHT = 1500  # long pages are cut here, to keep the pictures readable in the README

# name, description, caption, metadata
DEMO_LIBRARY: list[tuple[str, str, str, Metadata]] = [
    (
        "astronaut",
        "Eileen Collins, the first woman to command a Space Shuttle",
        "an astronaut in a white suit in front of a flag",
        {"album": "space", "year": 1999, "tags": ["nasa", "portrait", "Kennedy Space Center"]},
    ),
    ("rocket", "Launch pad 39A", "a rocket on a launch pad under a clear sky", {"album": "space", "year": 2009}),
    ("coffee", "", "a cup of coffee on a saucer", {"album": "kitchen"}),
    ("chelsea", "Chelsea, the neighbour's cat", "a tabby cat looking to the side", {"album": "pets", "indoor": True}),
    ("coins", "", "old coins laid out in rows", {"album": "collection"}),
    ("camera", "", "a man with a camera on a tripod", {"album": "people"}),
]


def build_demo_library(library: Library) -> dict[str, str]:
    """The demo images, with descriptions, captions and metadata; returns their ids by name."""
    ids: dict[str, str] = {}
    for name, description, caption, metadata in DEMO_LIBRARY:
        result = library.ingest.add(jpeg(name), filename=f"{name}.jpg", description=description, metadata=metadata)
        assert result.record is not None
        ids[name] = result.record.id
        library.catalog.update(result.record.id, RecordPatch(caption=caption))
    return ids


def add_near_duplicates(library: Library, settings: Settings) -> None:
    """A small crop and a retouched copy, stored past the upload check, for the duplicate review page."""
    library.settings = settings.model_copy(
        update={"duplicate_distance": 0, "duplicate_variants": False, "duplicate_crop_distance": 0}
    )
    coffee = photo("coffee")
    cropped = coffee.crop((int(coffee.width * 0.02), int(coffee.height * 0.02), coffee.width, coffee.height))
    library.ingest.add(encode(cropped, "JPEG", quality=90), filename="coffee-cropped.jpg")
    library.ingest.add(
        encode(ImageEnhance.Contrast(photo("astronaut")).enhance(1.5), "PNG"), filename="astronaut-edit.png"
    )
    library.settings = settings


def fill_samples_folder(folder: Path) -> None:
    """New photos, a copy of a stored one and a broken file: a report with every kind of line."""
    (folder / "trip").mkdir(parents=True)
    for name in ("clock", "page", "retina"):
        (folder / f"{name}.jpg").write_bytes(jpeg(name))
    (folder / "trip" / "coffee-again.png").write_bytes(encode(photo("coffee"), "PNG"))
    (folder / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not really a JPEG")


def shoot(page: Page, path: Path) -> None:
    height = min(MAX_HEIGHT, int(page.evaluate("document.documentElement.scrollHeight")))
    width = int(page.viewport_size["width"]) if page.viewport_size else DESKTOP["width"]
    page.screenshot(path=str(path), full_page=True, clip={"x": 0, "y": 0, "width": width, "height": height})
    print(f"wrote {path}")


def take_screenshots(base_url: str, ids: dict[str, str], output: Path) -> None:
    uploads: list[FilePayload] = [
        {"name": "moon.jpg", "mimeType": "image/jpeg", "buffer": jpeg("moon")},
        {"name": "astronaut-copy.png", "mimeType": "image/png", "buffer": encode(photo("astronaut"), "PNG")},
        {"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"meeting notes, not a photo"},
    ]
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        context = browser.new_context(base_url=base_url, viewport=DESKTOP)
        page = context.new_page()

        page.goto("/")
        page.get_by_label("Images", exact=True).set_input_files(uploads)
        page.get_by_label("Metadata key").first.fill("album")
        page.get_by_label("Metadata value").first.fill("space")
        page.get_by_role("button", name="Upload").click()
        page.get_by_text("1 added, 1 duplicate, 1 failed.").wait_for()
        shoot(page, output / "home.png")

        page.goto(f"/search?text=a+cat+sitting+indoors&image_id={ids['chelsea']}")
        shoot(page, output / "search.png")

        terms = f"term=id:{ids['rocket']}&weight=0.5&term=text:people&weight=-1"
        page.goto(f"/search?text=a+launch+pad&{terms}&hybrid=1&key=album&value=space&k=6")
        shoot(page, output / "search-terms.png")

        page.goto(f"/search?image_id={ids['astronaut']}&region=0.3,0.05,0.7,0.5&k=6")
        shoot(page, output / "search-region.png")

        page.goto("/duplicates")
        shoot(page, output / "duplicates.png")

        page.goto("/images")
        shoot(page, output / "browse.png")

        page.goto(f"/images/{ids['astronaut']}")
        shoot(page, output / "image.png")

        page.goto("/upload-samples")
        page.get_by_role("button", name="Start batch upload").click()
        page.get_by_test_id("job-summary").get_by_text("Finished").wait_for()
        page.wait_for_timeout(500)  # the progress bar's last step is animated
        shoot(page, output / "upload-samples.png")

        page.goto("/reset")
        shoot(page, output / "reset.png")

        page.goto("/model")
        shoot(page, output / "model.png")

        page.goto("/images/0000000000000000-00000000")
        shoot(page, output / "not-found.png")

        phone = browser.new_context(base_url=base_url, viewport=PHONE, is_mobile=True, has_touch=True).new_page()
        phone.goto("/images")
        shoot(phone, output / "phone-browse.png")
        phone.goto("/search?text=a+cat+sitting+indoors")
        shoot(phone, output / "phone-search.png")
        phone.goto("/")
        phone.get_by_label("Images", exact=True).set_input_files([uploads[0], uploads[2]])
        phone.get_by_role("button", name="Upload").click()
        phone.get_by_text("0 added, 1 duplicate, 1 failed.").wait_for()
        phone.screenshot(path=str(output / "phone-home.png"))  # the screen as it is: the report is in view
        print(f"wrote {output / 'phone-home.png'}")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the PNG files")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imagematch-demo-") as temp:
        root = Path(temp)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=root / "data",
            samples_dir=root / "samples",
            model=f"local-dir:{build_tiny_model(root / 'tiny-clip')}",
            model_cache_dir=root / "cache",
            background_removal="off",
            captioner="none",
        )
        library = build_library(settings)
        ids = build_demo_library(library)
        add_near_duplicates(library, settings)
        fill_samples_folder(settings.samples_dir)
        with serve(create_app(settings, library)) as base_url:
            take_screenshots(base_url, ids, args.output)


if __name__ == "__main__":
    main()
