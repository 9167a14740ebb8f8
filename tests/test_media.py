from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imagematch.media import crop_region, decode, make_thumbnail
from imagematch.records import InvalidImage, TooLarge, UnsupportedFormat
from testkit.images import encode, jpeg, photo

CAP = 50_000_000


@pytest.mark.parametrize(
    ("fmt", "options", "expected"),
    [
        ("JPEG", {"quality": 90}, "JPEG"),
        ("PNG", {}, "PNG"),
        ("WEBP", {"quality": 80}, "WEBP"),
        ("GIF", {}, "GIF"),
        ("BMP", {}, "BMP"),
        ("TIFF", {}, "TIFF"),
        ("HEIF", {"quality": 80}, "HEIF"),
        ("AVIF", {"quality": 60}, "AVIF"),
    ],
)
def test_accepted_formats_decode_to_rgb(fmt: str, options: dict[str, object], expected: str) -> None:
    decoded = decode(encode(photo("coffee"), fmt, **options), max_pixels=CAP)
    assert decoded.format == expected
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (600, 400)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), color) for color in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    decoded = decode(buffer.getvalue(), max_pixels=CAP)
    red, green, blue = decoded.image.getpixel((16, 16))  # type: ignore[misc]
    assert red > 200 and blue < 50 and green < 50


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    """Once: Pillow's TIFF plugin turns the image itself as it loads it."""
    image = Image.new("RGB", (200, 100), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 100, 100))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    decoded = decode(encode(image, fmt, exif=exif.tobytes()), max_pixels=CAP)
    assert (decoded.width, decoded.height) == (100, 200)
    top = decoded.image.getpixel((50, 20))
    assert top[0] > 200 and top[1] < 80  # type: ignore[index]  # the red half is now on top


def test_bad_orientation_tag_is_ignored() -> None:
    exif = Image.Exif()
    exif[0x0112] = 42
    decoded = decode(encode(photo("coins").resize((120, 90)), "JPEG", exif=exif.tobytes()), max_pixels=CAP)
    assert (decoded.width, decoded.height) == (120, 90)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("CMYK", (40, 30), (0, 255, 255, 0)),
        Image.new("P", (40, 30)),
        Image.new("LA", (40, 30), (128, 100)),
        Image.new("RGBA", (40, 30), (10, 20, 30, 0)),
        Image.new("1", (40, 30), 1),
        Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50),
        Image.frombytes("I;16B", (40, 30), (np.arange(1200, dtype=">u2") * 50).tobytes()),
        Image.frombytes("I;16L", (40, 30), (np.arange(1200, dtype="<u2") * 50).tobytes()),
    ],
    ids=[
        "cmyk",
        "palette",
        "gray-alpha",
        "transparent",
        "bilevel",
        "16-bit",
        "16-bit-big-endian",
        "16-bit-little-endian",
    ],
)
def test_unusual_modes_become_rgb(image: Image.Image) -> None:
    fmt = "JPEG" if image.mode == "CMYK" else ("TIFF" if image.mode.startswith("I;16") else "PNG")
    decoded = decode(encode(image, fmt), max_pixels=CAP)
    assert decoded.image.mode == "RGB" and decoded.image.size == (40, 30)


@pytest.mark.parametrize("mode", ["I;16B", "I;16L"])
def test_sixteen_bit_tiffs_in_either_byte_order_are_stretched_like_native_sixteen_bit(mode: str) -> None:
    """A big-endian TIFF (as many scanners write) opens as I;16B, whose strips Pillow's point() and getextrema()
    refuse: it was refused as corrupt."""
    values = np.linspace(1000, 60000, 64 * 48).astype(np.uint16).reshape(48, 64)
    native = np.asarray(decode(encode(Image.fromarray(values), "PNG"), max_pixels=CAP).image)
    ordered = Image.frombytes(mode, (64, 48), values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    decoded = np.asarray(decode(encode(ordered, "TIFF"), max_pixels=CAP).image)
    assert np.array_equal(decoded, native)
    assert decoded.min() == 0 and decoded.max() == 255


def test_transparent_pixels_become_white() -> None:
    decoded = decode(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "PNG"), max_pixels=CAP)
    assert decoded.image.getpixel((4, 4)) == (255, 255, 255)


def test_one_pixel_image_is_fine() -> None:
    assert decode(encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), max_pixels=CAP).width == 1


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", InvalidImage, "empty"),
        (b"GIF89a" + b"\x00" * 5, InvalidImage, ""),
        (b"just some text\n" * 20, UnsupportedFormat, "not an image we can read"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', UnsupportedFormat, "not an image"),
        (jpeg("astronaut")[:5000], InvalidImage, "truncated"),
        (encode(photo("astronaut"), "PNG")[:20000], InvalidImage, ""),
        (encode(photo("astronaut"), "WEBP")[:3000], InvalidImage, ""),
        (encode(Image.new("RGB", (16, 16)), "PDF"), UnsupportedFormat, "not an image we can read"),
        (encode(Image.new("RGB", (16, 16)), "TGA"), UnsupportedFormat, "not an image we can read: TGA"),
        (encode(Image.new("RGB", (16, 16)), "ICO"), UnsupportedFormat, "not an image we can read: ICO"),
    ],
    ids=["empty", "short-gif", "text", "svg", "jpeg-cut", "png-cut", "webp-cut", "pdf", "tga", "ico"],
)
def test_bad_files_are_refused_clearly(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message or None):
        decode(data, max_pixels=CAP)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("1", (30000, 30000)), "PNG", optimize=True)
    assert len(bomb) < 200_000
    with pytest.raises(TooLarge, match="30000×30000"):
        decode(bomb, max_pixels=CAP)


def test_large_jpeg_is_decoded_reduced_but_reports_full_size() -> None:
    big = photo("astronaut").resize((4000, 3000))
    decoded = decode(encode(big, "JPEG", quality=85), max_pixels=CAP)
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert min(decoded.image.size) < 3000 and min(decoded.image.size) >= 1024


def test_an_rgb_image_that_needs_no_reduction_is_not_charged_for_a_working_copy() -> None:
    """A 400×10000 RGB strip is too narrow to reduce and is returned as it is decoded: 4 bytes a pixel, 16 MB,
    within the budget of a 5-megapixel cap (24 MB). Counting an RGB working copy too (32 MB) refused it."""
    strip = encode(Image.new("RGB", (400, 10_000), (20, 90, 200)), "PNG")
    decoded = decode(strip, max_pixels=5_000_000)
    assert (decoded.width, decoded.height) == decoded.image.size == (400, 10_000)


def test_decoding_keeps_only_the_pixels_asked_for() -> None:
    camera = encode(photo("astronaut").resize((4000, 3000)), "JPEG", quality=90)
    decoded = decode(camera, max_pixels=CAP, short_side=256, long_side=384)
    assert (decoded.width, decoded.height) == (4000, 3000)
    assert decoded.image.size == (500, 375)  # JPEG draft mode at 1/8 scale
    portrait = encode(photo("astronaut").resize((300, 4000)), "PNG")
    reduced = decode(portrait, max_pixels=CAP, short_side=64, long_side=384).image
    assert min(reduced.size) >= 64 and max(reduced.size) >= 384 and max(reduced.size) < 4000


def test_exif_fields_are_read() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS R5"
    details = exif.get_ifd(0x8769)
    details[0x9003] = "2023:07:14 18:30:05"
    details[0x9011] = "+02:00"
    details[0xA434] = "RF24-105mm F4 L IS USM"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 51.0, 29.6), "E", (2.0, 17.0, 40.2)
    decoded = decode(encode(photo("rocket"), "JPEG", exif=exif.tobytes()), max_pixels=CAP)
    info = decoded.exif
    assert info.camera == "Canon EOS R5"
    assert info.lens == "RF24-105mm F4 L IS USM"
    assert info.taken_at is not None and info.taken_at.isoformat() == "2023-07-14T16:30:05+00:00"
    assert info.gps_lat == pytest.approx(48.8582, abs=1e-3) and info.gps_lon == pytest.approx(2.2945, abs=1e-3)


def test_thumbnail_is_small_jpeg() -> None:
    thumb = Image.open(io.BytesIO(make_thumbnail(photo("retina"))))
    assert thumb.format == "JPEG" and max(thumb.size) == 384


def test_crop_region_by_fractions() -> None:
    region = crop_region(Image.new("RGB", (200, 100)), (0.5, 0.0, 1.0, 0.5))
    assert region.size == (100, 50)
    with pytest.raises(InvalidImage):
        crop_region(Image.new("RGB", (10, 10)), (0.5, 0.5, 0.2, 1.0))
