"""What decoding an image may cost: small files that decode into huge images get a memory budget, a JPEG that
claims more pixels than it holds is refused, and no decode holds up the event loop (health and searches answer
while the search page decodes a query image)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagematch import media
from imagematch.factory import build_library
from imagematch.records import InvalidImage, TooLarge
from imagematch.web.app import create_app
from tests.browser.live import serve
from tests.images import encode, jpeg, photo
from tests.security.conftest import make_settings
from tests.security.payloads import lying_jpeg

ROOT = Path(__file__).resolve().parents[2]

# Decodes the 16-bit PNG at the pixel cap in a fresh interpreter and prints how much its peak memory grew.
_PEAK_OF_A_DECODE = """
import resource
from imagematch import media
from tests.security.payloads import sixteen_bit_bomb
data = sixteen_bit_bomb()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
decoded = media.decode(data, max_pixels=100_000_000, short_side=224, long_side=384)
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(grown, decoded.width, decoded.height)
"""


def test_a_sixteen_bit_png_at_the_pixel_cap_costs_what_pillow_holds_not_gigabytes() -> None:
    """200 KB that decode to 10000×10000 16-bit pixels: Pillow holds 200 MB of them; converting to RGB must add
    little to that (it took 2.2 GB through float64 copies)."""
    finished = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_A_DECODE], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    grown, width, height = finished.stdout.split()
    assert (int(width), int(height)) == (10_000, 10_000)
    held = 2 * 10_000 * 10_000  # bytes: Pillow keeps 16-bit grey in 2 bytes a pixel
    assert int(grown) < held * 1.5, f"decoding took {int(grown) / 2**20:.0f} MB"


def test_a_decode_that_needs_more_memory_than_the_budget_is_refused_before_it_starts() -> None:
    """Pixels alone do not bound memory: an RGBA strip at the pixel cap that is too narrow to reduce holds 4 bytes
    a pixel plus an RGB working copy of the same size."""
    strip = encode(Image.new("RGBA", (4000, 40), (10, 200, 30, 128)), "PNG")
    with pytest.raises(TooLarge, match=r"needs 1.2 MB of memory; the limit is 0.8 MB"):
        media.decode(strip, max_pixels=4000 * 40)
    assert media.decode(strip, max_pixels=4000 * 80).width == 4000


def test_a_jpeg_whose_header_claims_more_pixels_than_it_holds_is_refused() -> None:
    with pytest.raises(InvalidImage, match="claims 10000×10000 pixels"):
        media.decode(lying_jpeg(), max_pixels=100_000_000)


@pytest.mark.parametrize("progressive", [False, True])
def test_very_compressible_jpegs_that_hold_their_pixels_are_kept(progressive: bool) -> None:
    """A flat grey 8000×8000 JPEG is a few hundred KB, and photos far more: none of them looks like a lie."""
    flat = encode(Image.new("L", (8000, 8000), 128), "JPEG", progressive=progressive)
    assert media.decode(flat, max_pixels=100_000_000, short_side=224, long_side=384).width == 8000
    big_photo = encode(photo("astronaut").resize((6000, 6000)), "JPEG", quality=30, progressive=progressive)
    assert media.decode(big_photo, max_pixels=100_000_000, short_side=224, long_side=384).height == 6000


def _csrf_token(client: httpx.Client) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert found is not None
    return found.group(1)


def test_health_and_searches_answer_while_the_search_page_decodes_a_query_image(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decode that takes long (held here until released) runs in a worker thread: the event loop serves the
    other requests meanwhile. On the event loop, health would wait for the decode and time out."""
    settings = make_settings(tmp_path, tiny_model_dir)
    library = build_library(settings)
    library.add(jpeg("astronaut"), filename="astronaut.jpg")
    decoding, release = threading.Event(), threading.Event()
    real_decode = media.decode

    def held_decode(data: bytes, **options: Any) -> media.DecodedImage:
        decoding.set()
        release.wait(30)
        return real_decode(data, **options)

    monkeypatch.setattr(media, "decode", held_decode)
    with (
        serve(create_app(settings, library)) as url,
        httpx.Client(base_url=url, timeout=30) as searcher,
        httpx.Client(base_url=url, timeout=5) as other,
        ThreadPoolExecutor(1) as pool,
    ):
        form = {"csrf_token": _csrf_token(searcher), "text": ""}
        submitted = pool.submit(
            searcher.post, "/search", data=form, files={"image": ("query.jpg", jpeg("coffee"), "image/jpeg")}
        )
        try:
            assert decoding.wait(10)
            health = other.get("/api/v1/health")
            found = other.post("/api/v1/search", data={"text": "a person"})
            still_decoding = not submitted.done()
        finally:
            release.set()
        answer = submitted.result()
    assert health.status_code == 200 and found.status_code == 200 and found.json()["hits"]
    assert still_decoding
    assert answer.status_code == 303 and "query_image=" in answer.headers["location"]
