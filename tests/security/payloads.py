"""Hostile and odd inputs, one table each, shared by the tests of every entry point.

Refused files must get a clear 4xx (or a failed line with the reason); odd but valid images must be stored
correctly. Files are built once per session: the bombs (testkit/bombs.py) and the 3000-frame GIF take a moment.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from testkit.bombs import decompression_bomb, sixteen_bit_bomb
from testkit.images import encode, jpeg, photo

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" onload="alert(1)"><script>alert(2)</script></svg>'
)
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def _flipped(data: bytes, start: int, length: int) -> bytes:
    """The bytes with a stretch inverted: damage in the middle of a file, not at its end."""
    damaged = bytearray(data)
    for i in range(start, min(len(damaged), start + length)):
        damaged[i] ^= 0xFF
    return bytes(damaged)


@cache
def animated_gif(frames: int = 3000) -> bytes:
    """A GIF of thousands of frames; only the first (a photo) counts."""
    first = photo("coins").resize((48, 32)).quantize(64)
    palette = first.getpalette()
    rest = []
    for n in range(1, frames):
        frame = Image.new("P", first.size, n % 64)
        frame.putpalette(palette or [])
        rest.append(frame)
    buffer = io.BytesIO()
    first.save(buffer, "GIF", save_all=True, append_images=rest, duration=20, optimize=False)
    return buffer.getvalue()


def _with_orientation(name: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(photo(name), "JPEG", quality=85, exif=exif.tobytes())


def lying_jpeg(side: int = 10_000) -> bytes:
    """A complete 40 × 40 JPEG of about 1.6 KB whose frame header claims side × side pixels: the decoder would
    paint everything it lacks grey and the file would be stored as a photo of that size."""
    data = bytearray(encode(photo("astronaut").resize((40, 40)), "JPEG", quality=85))
    frame = data.find(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def _with_raw_orientation(name: str, kind: int, value: bytes, extra: bytes = b"") -> bytes:
    """A photo whose EXIF orientation tag (0x0112) has a TIFF type and a value no camera writes."""
    entry = struct.pack("<HHI", 0x0112, kind, 1 if kind != 2 else len(value)) + value
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0) + extra
    return encode(photo(name), "JPEG", quality=85, exif=b"Exif\x00\x00" + tiff)


def _text_orientation() -> bytes:
    return _with_raw_orientation("page", 2, b"six\x00")


def _zero_over_zero_orientation() -> bytes:
    after_the_directory = 26  # the offset of the rational 0/0, written after the one-entry directory
    return _with_raw_orientation("retina", 5, struct.pack("<I", after_the_directory), struct.pack("<II", 0, 0))


def _sixteen_bit() -> bytes:
    gray = np.asarray(photo("camera").convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(gray), "PNG")


def _sixteen_bit_grey(name: str, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(photo(name).convert("L").resize(size), dtype=np.uint16) * 257


def _sixteen_bit_tiff(name: str, size: tuple[int, int], byte_order: str, orientation: int = 1) -> bytes:
    """A 16-bit grey TIFF as scanners write it, big-endian ("MM", which Pillow opens as mode I;16B) or
    little-endian ("II"), optionally with an orientation tag (which Pillow's TIFF plugin applies as it loads)."""
    mode, dtype = ("I;16B", ">u2") if byte_order == "big" else ("I;16L", "<u2")
    image = Image.frombytes(mode, size, _sixteen_bit_grey(name, size).astype(dtype).tobytes())
    return encode(image, "TIFF", tiffinfo={0x0112: orientation} if orientation != 1 else {})


def _sixteen_bit_rotated_png() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 8
    return encode(Image.fromarray(_sixteen_bit_grey("immunohistochemistry", (480, 320))), "PNG", exif=exif.tobytes())


def _corrupt_jpeg() -> bytes:
    data = jpeg("astronaut")
    return _flipped(data, data.find(b"\xff\xda") + 20, 2000)


def _corrupt_png() -> bytes:
    data = encode(photo("astronaut"), "PNG")
    return _flipped(data, data.find(b"IDAT") + 100, 64)


def _half(make: Callable[[], bytes]) -> Callable[[], bytes]:
    def first_half() -> bytes:
        data = make()
        return data[: len(data) // 2]

    return first_half


@dataclass(frozen=True, slots=True)
class RefusedFile:
    case: str
    filename: str
    make: Callable[[], bytes]
    status: int
    reason: str  # words the answer must contain


@dataclass(frozen=True, slots=True)
class OddImage:
    case: str
    filename: str
    make: Callable[[], bytes]
    size: tuple[int, int]  # width, height as the record must report them (upright)
    format: str


# Anything that is not an accepted image format is 415, whether Pillow knows the format (ICO, PPM, JPEG 2000)
# or not (text, HTML, SVG, PDF, noise); 422 is for an accepted format whose data is empty, cut or damaged.
UNSUPPORTED = "not an image we can read"

REFUSED_FILES = [
    RefusedFile("zero-bytes", "empty.jpg", lambda: b"", 422, "empty"),
    RefusedFile("random-bytes", "noise.jpg", lambda: np.random.default_rng(3).bytes(4096), 415, UNSUPPORTED),
    RefusedFile("truncated-jpeg", "cut.jpg", _half(lambda: jpeg("astronaut")), 422, "truncated"),
    RefusedFile("corrupt-jpeg", "damaged.jpg", _corrupt_jpeg, 422, "corrupt"),
    RefusedFile("truncated-png", "cut.png", _half(lambda: encode(photo("astronaut"), "PNG")), 422, "truncated"),
    RefusedFile("corrupt-png", "damaged.png", _corrupt_png, 422, "corrupt"),
    RefusedFile("truncated-webp", "cut.webp", _half(lambda: encode(photo("astronaut"), "WEBP")), 422, "corrupt"),
    RefusedFile("text", "notes.txt", lambda: b"just some notes\n" * 20, 415, UNSUPPORTED),
    RefusedFile("text-named-jpg", "notes.jpg", lambda: b"just some notes\n" * 20, 415, UNSUPPORTED),
    RefusedFile("html-named-jpg", "page.jpg", lambda: HTML, 415, UNSUPPORTED),
    RefusedFile("svg-named-jpg", "drawing.jpg", lambda: SVG, 415, UNSUPPORTED),
    RefusedFile("svg", "drawing.svg", lambda: SVG, 415, UNSUPPORTED),
    RefusedFile("pdf", "paper.pdf", lambda: encode(photo("page"), "PDF"), 415, UNSUPPORTED),
    RefusedFile(
        "ico",
        "favicon.ico",
        lambda: encode(Image.new("RGB", (32, 32), (200, 30, 30)), "ICO"),
        415,
        f"{UNSUPPORTED}: ICO",
    ),
    RefusedFile(
        "ico-named-jpg",
        "icon.jpg",
        lambda: encode(Image.new("RGB", (32, 32), (9, 90, 9)), "ICO"),
        415,
        f"{UNSUPPORTED}: ICO",
    ),
    RefusedFile("ppm", "photo.ppm", lambda: encode(photo("coffee"), "PPM"), 415, UNSUPPORTED),
    RefusedFile("jpeg-2000", "scan.jp2", lambda: encode(photo("coffee"), "JPEG2000"), 415, UNSUPPORTED),
    RefusedFile("decompression-bomb", "bomb.png", decompression_bomb, 413, "30000×30000 pixels"),
    RefusedFile("jpeg-header-lies", "lies.jpg", lying_jpeg, 422, "its header is false"),
]

ODD_IMAGES = [
    OddImage("one-pixel", "dot.png", lambda: encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"), (1, 1), "PNG"),
    OddImage("sixteen-bit", "deep.png", _sixteen_bit, (512, 512), "PNG"),
    OddImage("sixteen-bit-rotated-by-exif", "deep-turned.png", _sixteen_bit_rotated_png, (320, 480), "PNG"),
    OddImage(
        "sixteen-bit-big-endian-tiff",
        "scan-mm.tif",
        lambda: _sixteen_bit_tiff("gravel", (512, 384), "big"),
        (512, 384),
        "TIFF",
    ),
    OddImage(
        "sixteen-bit-little-endian-tiff",
        "scan-ii.tif",
        lambda: _sixteen_bit_tiff("hubble_deep_field", (500, 436), "little"),
        (500, 436),
        "TIFF",
    ),
    OddImage(
        "sixteen-bit-big-endian-tiff-rotated",
        "scan-turned.tif",
        lambda: _sixteen_bit_tiff("cell", (550, 660), "big", 6),
        (660, 550),
        "TIFF",
    ),
    OddImage("cmyk", "print.jpg", lambda: encode(photo("coffee").convert("CMYK"), "JPEG"), (600, 400), "JPEG"),
    OddImage("palette", "palette.png", lambda: encode(photo("chelsea").quantize(256), "PNG"), (451, 300), "PNG"),
    OddImage("bad-orientation-tag", "tag42.jpg", lambda: _with_orientation("rocket", 42), (640, 427), "JPEG"),
    OddImage("rotated-by-exif", "turned.jpg", lambda: _with_orientation("clock", 6), (300, 400), "JPEG"),
    OddImage("text-orientation-tag", "tagtext.jpg", _text_orientation, (384, 191), "JPEG"),
    OddImage("zero-over-zero-orientation-tag", "tag00.jpg", _zero_over_zero_orientation, (1411, 1411), "JPEG"),
    OddImage("sixteen-bit-at-the-pixel-cap", "deep-bomb.png", sixteen_bit_bomb, (10_000, 10_000), "PNG"),
    OddImage("animated-3000-frames", "frames.gif", animated_gif, (48, 32), "GIF"),
]

# Names a client may send; only the last path part, without control or bidi characters, is kept as a label.
HOSTILE_FILENAMES = [
    ("../../etc/passwd.jpg", "passwd.jpg"),
    ("..\\..\\windows\\win.ini.jpg", "win.ini.jpg"),
    ("photo\u202egpj.exe", "photogpj.exe"),
    ("日本語の写真.jpg", "日本語の写真.jpg"),
]

# Descriptions (and captions) every form and the API refuse with 422.
BAD_TEXTS = [
    ("ten-thousand-chars", "x" * 10_000, "limit"),
    ("nul", "before\x00after", "control characters"),
    ("escape-sequence", "\x1b[31mred\x1b[0m", "control characters"),
    ("bell", "ding\x07", "control characters"),
]

# The `metadata` field of an API upload: (case, text, status). PATCH sends the same values as JSON.
BAD_METADATA_JSON = [
    ("not-json", "{oops", 422),
    ("top-level-array", "[1, 2]", 422),
    ("nested-object", '{"a": {"b": 1}}', 422),
    ("list-value", '{"a": [1, 2]}', 422),
    ("deeply-nested", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", 422),
    ("deeply-nested-objects", '{"a": ' * 50_000 + "1" + "}" * 50_000, 422),
    ("over-one-megabyte", '{"k": "' + "v" * 1_100_000 + '"}', 400),
    ("too-many-keys", "{" + ", ".join(f'"k{i}": {i}' for i in range(101)) + "}", 422),
    ("long-key", '{"' + "k" * 129 + '": 1}', 422),
    ("long-value", '{"k": "' + "v" * 2001 + '"}', 422),
    ("control-in-key", '{"a\\u0000b": 1}', 422),
    ("control-in-value", '{"a": "x\\u001by"}', 422),
    ("nan", '{"a": NaN}', 422),
    ("infinity", '{"a": -Infinity}', 422),
    ("five-thousand-digits", '{"a": 1' + "0" * 5000 + "}", 422),
    ("keys-differing-by-spaces", '{"a": 1, " a ": 2}', 422),
    ("list-of-lists", '{"tags": [["a"]]}', 422),
    ("empty-list", '{"tags": []}', 422),
    ("blank-tag", '{"tags": ["a", " "]}', 422),
    ("tag-twice", '{"tags": ["a", "a"]}', 422),
    ("too-many-tags", '{"tags": [' + ", ".join(f'"t{i}"' for i in range(101)) + "]}", 422),
    ("tags-too-long-in-all", '{"tags": [' + ", ".join('"' + "t" * 100 + f'{i:02d}"' for i in range(20)) + "]}", 422),
    ("control-in-tag", '{"tags": ["x\\u001by"]}', 422),
    ("surrogate-in-tag", '{"tags": ["\\ud800"]}', 422),
    # Keys a filter would read as something else, so that the value could never be found.
    ("built-in-prefix", '{"image.format": "mine"}', 422),
    ("metadata-prefix", '{"metadata.album": "x"}', 422),
    ("operator-key", '{"$or": "x"}', 422),
]

# The typed metadata rows of the upload and edit forms: (case, keys, values).
BAD_METADATA_ROWS = [
    ("control-in-key", ["a\x00b"], ["1"]),
    ("control-in-value", ["a"], ["x\x1by"]),
    ("long-value", ["a"], ["v" * 2001]),
    ("long-key", ["k" * 129], ["1"]),
    ("too-many-rows", [f"k{i}" for i in range(101)], ["1"] * 101),
    ("same-key-twice", ["a", "a"], ["1", "2"]),
    ("value-without-key", ["", "year"], ["kept?", "2024"]),
    ("built-in-prefix", ["image.format"], ["mine"]),
]

# Search fields with their expected status. "{stored}" is replaced by a stored image's id.
BAD_SEARCHES = [
    ("k-zero", {"text": "x", "k": "0"}, 422),
    ("k-negative", {"text": "x", "k": "-1"}, 422),
    ("k-a-billion", {"text": "x", "k": "1000000000"}, 422),
    ("k-not-a-number", {"text": "x", "k": "ten"}, 422),
    ("weight-below-zero", {"text": "x", "image_id": "{stored}", "image_weight": "-0.1"}, 422),
    ("weight-above-one", {"text": "x", "image_id": "{stored}", "image_weight": "1.5"}, 422),
    ("weight-nan", {"text": "x", "image_id": "{stored}", "image_weight": "nan"}, 422),
    ("weight-infinite", {"text": "x", "image_id": "{stored}", "image_weight": "inf"}, 422),
    ("unknown-image-id", {"image_id": "0123456789abcdef-01234567"}, 404),
    ("quote-in-image-id", {"image_id": "x' OR '1'='1"}, 404),
    ("text-over-ten-thousand-chars", {"text": "word " * 2001}, 422),
]

# Ids that must never reach a file or a record.
BAD_IDS = [
    "0123456789abcdef-01234567",
    "nope",
    "x' OR '1'='1",
    "..%2f..%2fetc%2fpasswd",
    "..\\..\\windows",
    "<script>alert(1)</script>",
    "f" * 300,
]

# JSON filters every filter entry point refuses with 422: (case, filter, words the detail must contain).
BAD_FILTERS = [
    ("surrogate-in-key", '{"\\ud800": 1}', "not valid Unicode"),
    ("surrogate-in-value", '{"album": "\\ud800"}', "not valid Unicode"),
    ("surrogate-in-list", '{"album": {"$in": ["moon", "\\udfff"]}}', "not valid Unicode"),
    ("surrogate-in-builtin", '{"image.camera": "\\ud800"}', "not valid Unicode"),
    ("surrogate-in-date", '{"image.taken_at": {"$gte": "2024\\ud800"}}', "not valid Unicode"),
    ("four-hundred-digits", '{"rating": 1' + "0" * 400 + "}", "too large"),
    ("four-hundred-digits-range", '{"rating": {"$gt": -1' + "0" * 400 + "}}", "too large"),
    ("utc-after-year-9999", '{"image.taken_at": {"$gte": "9999-12-31T23:59:59-23:59"}}', "outside the dates"),
    ("utc-before-year-one", '{"image.created_at": {"$lt": "0001-01-01T00:00:00+00:01"}}', "outside the dates"),
    ("keys-differing-by-spaces", '{"album": "moon", " album ": "sun"}', "appears twice"),
    ("key-with-and-without-prefix", '{"album": "moon", "metadata.album": "sun"}', "appears twice"),
    # `{"$or": ...}` was a metadata key named "$or" that matched nothing: operators are known, or refused.
    ("unknown-top-level-operator", '{"$xor": [{"album": "a"}]}', "use $and or $or"),
    ("not-at-the-top", '{"$nin": ["a"]}', "inside a key use $eq, $ne, $in, $nin"),
    ("or-not-a-list", '{"$or": {"album": "a"}}', "non-empty list of filter objects"),
    ("or-empty", '{"$or": []}', "non-empty list of filter objects"),
    ("or-of-an-empty-object", '{"$or": [{}]}', "at least one key"),
    ("or-of-text", '{"$and": ["album"]}', "at least one key"),
    ("nested-too-deep", '{"$or": [' * 12 + '{"a": 1}' + "]}" * 12, "nested at most 10 deep"),
    ("too-many-conditions-inside-or", '{"$or": [' + ", ".join(f'{{"a": {i}}}' for i in range(51)) + "]}", "at most 50"),
    ("surrogate-inside-or", '{"$or": [{"album": "\\ud800"}]}', "not valid Unicode"),
    ("nin-of-text", '{"tags": {"$nin": "beach"}}', "$nin takes a non-empty list"),
    ("list-as-a-value", '{"tags": ["beach", "sun"]}', "goes in $in or $nin"),
    ("camera-without-a-word", '{"image.camera": "--"}', "no letters or digits"),
]

# Filters beyond what a field holds, which mean something all the same: (case, filter, whether every stored
# image matches it, or none). Width and height are Int32 in LanceDB, size Int64 everywhere.
ODD_FILTERS = [
    ("width-beyond-int32", '{"image.width": {"$gt": 3000000000}}', False),
    ("width-below-beyond-int32", '{"image.width": {"$lt": 3000000000}}', True),
    ("width-beyond-int64", '{"image.width": {"$gte": 9223372036854775808}}', False),
    ("width-equals-beyond-int32", '{"image.width": 3000000000}', False),
    ("size-below-four-hundred-digits", '{"image.size": {"$lt": 1' + "0" * 400 + "}}", True),
    ("height-between-integers", '{"image.height": {"$gt": 1.5}}', True),
    ("width-in-beyond-int32", '{"image.width": {"$in": [3000000000, 0.5]}}', False),
    ("from-year-999", '{"image.created_at": {"$gte": "0999-01-01"}}', True),
    ("before-year-2", '{"image.created_at": {"$lt": "0002-01-01"}}', False),
    ("until-year-9999", '{"image.created_at": {"$lte": "9999-12-31T23:59:59.999999"}}', True),
]

# Query weights refused with a 422 that names the weights: a sum of 1e300s was NaN, an empty 200.
BAD_WEIGHTS = [("huge", [1e300, 1e300]), ("huge-negative", [1.0, -1e300]), ("float32-overflow", [1e39])]
