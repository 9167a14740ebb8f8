"""What decoding an image may cost: small files that decode into huge images get a memory budget, a JPEG that
claims more pixels than it holds is refused, and no decode holds up the event loop (health and searches answer
while an upload or a query image is decoded, at every entry point that takes one)."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from imagematch import media
from imagematch.factory import build_library
from imagematch.library import Library
from imagematch.records import InvalidImage, TooLarge
from imagematch.settings import Settings
from imagematch.web.app import create_app
from testkit.bombs import sixteen_bit_bomb
from testkit.images import encode, jpeg, photo
from testkit.serving import serve
from tests.security.conftest import make_settings
from tests.security.payloads import lying_jpeg

ROOT = Path(__file__).resolve().parents[2]

# Decodes the file named on the command line in a fresh interpreter (after one small decode, so that plugins and
# Pillow's allocator are set up) and prints how much its peak memory grew. The peak is VmHWM, this process's own:
# ru_maxrss would start from the peak of pytest, which Linux carries over into a child through fork and exec, so
# any decode smaller than what pytest had once held measured as growing by nothing.
_PEAK_OF_A_DECODE = """
import io, sys
from PIL import Image
from imagematch import media

def high_water():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

warm = io.BytesIO()
Image.new("L", (64, 64)).save(warm, "JPEG")
media.decode(warm.getvalue(), max_pixels=10_000)
with open(sys.argv[1], "rb") as file:
    data = file.read()
cap, short_side, long_side = map(int, sys.argv[2:])
before = high_water()
decoded = media.decode(data, max_pixels=cap, short_side=short_side, long_side=long_side)
print(high_water() - before, decoded.width, decoded.height, *decoded.image.size)
"""


def _peak_of_a_decode(
    path: Path, cap: int, short_side: int = media.WORK_SIZE, long_side: int = media.WORK_SIZE
) -> list[int]:
    """How much the peak memory of a fresh interpreter grows while it decodes the file, then the sizes decode()
    reports: the upright original's, then the decoded image's."""
    finished = subprocess.run(
        [sys.executable, "-c", _PEAK_OF_A_DECODE, str(path), str(cap), str(short_side), str(long_side)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [int(word) for word in finished.stdout.split()]


def test_a_sixteen_bit_png_at_the_pixel_cap_costs_what_pillow_holds_not_gigabytes(tmp_path: Path) -> None:
    """200 KB that decode to 10000×10000 16-bit pixels: Pillow holds 200 MB of them; converting to RGB must add
    little to that (it took 2.2 GB through float64 copies)."""
    path = tmp_path / "deep.png"
    path.write_bytes(sixteen_bit_bomb())
    grown, width, height, *_ = _peak_of_a_decode(path, 100_000_000, short_side=224, long_side=384)
    assert (width, height) == (10_000, 10_000)
    held = 2 * 10_000 * 10_000  # bytes: Pillow keeps 16-bit grey in 2 bytes a pixel
    assert grown < held * 1.5, f"decoding took {grown / 2**20:.0f} MB"


def test_a_decode_that_needs_more_memory_than_the_budget_is_refused_before_it_starts() -> None:
    """Pixels alone do not bound memory: an RGBA strip at the pixel cap that is too narrow to reduce holds 4 bytes
    a pixel plus an RGB working copy of the same size."""
    strip = encode(Image.new("RGBA", (4000, 40), (10, 200, 30, 128)), "PNG")
    with pytest.raises(TooLarge, match=r"needs 1.2 MB of memory; the limit is 0.8 MB"):
        media.decode(strip, max_pixels=4000 * 40)
    assert media.decode(strip, max_pixels=4000 * 80).width == 4000


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_decode_stays_within_the_budget_it_was_checked_against_when_it_is_turned(
    tmp_path: Path, orientation: int
) -> None:
    """A grey 2000×20000 JPEG is too narrow to reduce: 40 MB decoded and a 160 MB RGB copy, just the budget of a
    40-megapixel cap (200 MB). Turning the RGB copy for the EXIF orientation made a third, uncounted image of
    160 MB (350 MB in all); the grey image is turned before the copy is made instead, at 40 MB."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "tall.jpg"
    path.write_bytes(encode(Image.new("L", (2000, 20_000), 128), "JPEG", exif=exif.tobytes()))
    cap = 40_000_000
    grown, *sizes = _peak_of_a_decode(path, cap)
    upright = (2000, 20_000) if orientation == 1 else (20_000, 2000)
    assert sizes == [*upright, *upright]
    strips = media._STRIP_PIXELS * 16  # the strip-wise conversion, which the budget does not count
    assert grown < media.DECODE_BYTES_PER_PIXEL * cap + strips, f"decoding took {grown / 2**20:.0f} MB"


def test_turning_an_rgb_strip_that_is_used_as_it_is_counts_the_turned_copy() -> None:
    """An RGB strip too narrow to reduce is returned as decoded (no working copy: 4 bytes a pixel, within the
    budget at the cap), but turning it for its EXIF orientation holds a second copy (8 bytes a pixel)."""
    strip = Image.new("RGB", (4000, 40), (10, 200, 30))
    assert media.decode(encode(strip, "PNG"), max_pixels=4000 * 40).image.size == (4000, 40)
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = encode(strip, "PNG", exif=exif.tobytes())
    with pytest.raises(TooLarge, match=r"needs 1.2 MB of memory; the limit is 0.8 MB"):
        media.decode(turned, max_pixels=4000 * 40)
    assert media.decode(turned, max_pixels=4000 * 80).image.size == (40, 4000)


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


# How long a held call waits to be released before it gives up. Only a failing run waits this long: on the
# event loop, a held call stops every other request until it gives up, so the release comes too late.
_HOLD_S = 60.0


class _Hold:
    """Wraps a function so that its first call, in whichever thread makes it, waits until the test releases it.

    `released` records how that wait ended: True when the release came, False when it gave up.
    """

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.entered, self.release = threading.Event(), threading.Event()
        self.released: list[bool] = []
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            first = not self.entered.is_set()
            self.entered.set()
        if first:
            self.released.append(self.release.wait(_HOLD_S))
        return self.real(*args, **kwargs)


def _image_file(field: str) -> dict[str, tuple[str, bytes, str]]:
    return {field: ("query.jpg", jpeg("coffee"), "image/jpeg")}


# Every way a request brings an image to decode: (path, form fields, files, JSON, the status it answers).
_IMAGE_ENTRY_POINTS: dict[str, tuple[str, dict[str, str], dict[str, Any], Any, int]] = {
    "search page": ("/search", {"text": ""}, _image_file("image"), None, 303),
    "page upload": ("/upload", {}, _image_file("files"), None, 200),
    "API upload": ("/api/v1/images", {}, _image_file("file"), None, 201),
    "API search": ("/api/v1/search", {}, _image_file("image"), None, 200),
    "query arithmetic": (
        "/api/v1/search/query",
        {},
        {},
        {"terms": [{"image": base64.b64encode(jpeg("coffee")).decode()}], "k": 3},
        200,
    ),
}


def _others_answer_while_held(
    settings: Settings, library: Library, hold: _Hold, arm: Callable[[], None], send: Callable[..., httpx.Response]
) -> httpx.Response:
    """Sends one request whose work `hold` holds, and meanwhile health and a search by words from another client.

    They must answer while the held call still waits for its release: had it run on the event loop, nothing
    else would be served until it gave up. No timing is measured; only which of them finished first.
    """
    with (
        serve(create_app(settings, library)) as url,
        httpx.Client(base_url=url, timeout=_HOLD_S * 2) as sender,
        httpx.Client(base_url=url, timeout=_HOLD_S * 2) as other,
        ThreadPoolExecutor(1) as pool,
    ):
        token = _csrf_token(sender)
        arm()
        submitted = pool.submit(send, sender, token)
        try:
            assert hold.entered.wait(_HOLD_S), "the request never reached the held call"
            health = other.get("/api/v1/health")
            found = other.post("/api/v1/search", data={"text": "a person"})
        finally:
            hold.release.set()
        answer = submitted.result()
    assert hold.released == [True], "health and the search waited for the held call: it ran on the event loop"
    assert health.status_code == 200 and found.status_code == 200 and found.json()["hits"]
    return answer


@pytest.mark.parametrize("entry", list(_IMAGE_ENTRY_POINTS))
def test_health_and_searches_answer_while_an_image_is_decoded(
    entry: str, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads, searches by an image and the search page's query image all decode in a worker thread."""
    path, fields, files, body, status = _IMAGE_ENTRY_POINTS[entry]
    settings = make_settings(tmp_path, tiny_model_dir)
    library = build_library(settings)
    library.ingest.add(jpeg("astronaut"), filename="astronaut.jpg")
    hold = _Hold(media.decode)

    def send(client: httpx.Client, token: str) -> httpx.Response:
        form = {"csrf_token": token, **fields} if not path.startswith("/api/") else fields
        if body is not None:
            return client.post(path, json=body)
        return client.post(path, data=form, files=files)

    answer = _others_answer_while_held(
        settings, library, hold, lambda: monkeypatch.setattr(media, "decode", hold), send
    )
    assert answer.status_code == status, answer.text
    if entry == "search page":
        assert "query_image=" in answer.headers["location"]


def test_the_search_page_refuses_an_unusable_query_image_off_the_event_loop(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page that says a query image cannot be used shows the library's facts, which come from the store (a
    network call for a remote one): it is made in the worker thread too, not on the event loop."""
    settings = make_settings(tmp_path, tiny_model_dir)
    library = build_library(settings)
    library.ingest.add(jpeg("astronaut"), filename="astronaut.jpg")
    hold = _Hold(library.info)

    def send(client: httpx.Client, token: str) -> httpx.Response:
        form = {"csrf_token": token, "text": ""}
        return client.post("/search", data=form, files={"image": ("query.jpg", b"not an image", "image/jpeg")})

    answer = _others_answer_while_held(
        settings, library, hold, lambda: monkeypatch.setattr(library, "info", hold), send
    )
    assert answer.status_code == 415 and "The query image cannot be used" in answer.text
