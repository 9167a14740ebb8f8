"""Reading images safely: validate, decode once (cheaply), orient, convert to RGB, thumbnail, read EXIF.

Every other module works on the `DecodedImage` this returns, so a photo is decoded exactly once per ingest.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pillow_heif
from PIL import Image, UnidentifiedImageError

from imagematch.records import InvalidImage, TooLarge, UnsupportedFormat

pillow_heif.register_heif_opener()
# Every image we open goes through decode(), which enforces the configurable pixel cap before decoding;
# Pillow's own fixed limit would otherwise refuse some images under our cap and word the error its way.
Image.MAX_IMAGE_PIXELS = None

# Pillow format name -> file extension used for the stored original.
ACCEPTED_FORMATS: dict[str, str] = {
    "JPEG": "jpg",
    "MPO": "jpg",  # multi-picture JPEG, as written by many phones and cameras
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
    "HEIF": "heic",
    "AVIF": "avif",
}
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF and AVIF"
# Decoding works on an image whose short side is at least this: enough for thumbnails, pHash and any
# CLIP-family preprocessing (<= 448 px), and JPEG draft mode makes it several times cheaper than full size.
WORK_SIZE = 1024
THUMBNAIL_SIZE = 384
# The memory one decode may take, per pixel of the pixel cap. A decode holds the decoded pixels (decoded_bytes:
# 1 byte a pixel for grey and palette, 2 for 16-bit grey, 4 for the rest, RGB included) and, unless the image is
# RGB and needs no box reduction, an RGB copy at the box-reduced size (4 bytes a pixel; the full size for a strip
# too narrow to reduce); the resized image comes after the decoded pixels are freed. EXIF orientation turns the
# smaller of the decoded image and the result, so a turn costs a second copy of that one. 5 lets through, at the
# cap, every image box-reduced by 2 or more each way (at most 4 + 1), every RGB image that needs no turn, and grey
# strips too narrow to reduce (1 + 4); such a strip in a deeper mode (16-bit 2 + 4, RGBA or CMYK 4 + 4), or an RGB
# one that must be turned (4 + 4), is refused near the cap. _check_budget counts all of this before decoding.
# Conversion works a strip of rows at a time, which adds up to about _STRIP_PIXELS × 16 bytes whatever the size,
# uncounted.
DECODE_BYTES_PER_PIXEL = 5
_STRIP_PIXELS = 1 << 20
_DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# 16-bit modes that Pillow's point() and getextrema() refuse ("I;16B" is how a big-endian 16-bit TIFF, common from
# scanners, opens); a strip of them converted to "I" supports both.
_POINTLESS_MODES = ("I;16B", "I;16L", "I;16N")
# Formats whose Pillow plugin applies the EXIF orientation itself as it loads (reporting the turned size from
# the start) and then drops the tag: decode() must not turn them again.
_TURNED_ON_LOAD = frozenset({"TIFF"})
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Huffman-coded JPEG frames (baseline, extended, progressive, lossless); the arithmetic-coded ones (0xC9-0xCF)
# can code a flat image in almost no bytes, so no lower bound on their size holds.
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})

_ORIENTATION_TAG = 0x0112
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_TAG_MAKE = 0x010F
_TAG_MODEL = 0x0110
_TAG_DATETIME = 0x0132
_TAG_DATETIME_ORIGINAL = 0x9003
_TAG_OFFSET_TIME_ORIGINAL = 0x9011
_TAG_LENS_MODEL = 0xA434
_MAX_EXIF_TEXT = 200


@dataclass(frozen=True, slots=True)
class ExifInfo:
    taken_at: datetime | None = None
    camera: str = ""
    lens: str = ""
    gps_lat: float | None = None
    gps_lon: float | None = None


@dataclass(frozen=True, slots=True)
class DecodedImage:
    image: Image.Image  # RGB, upright, reduced to the sides decode() was asked for (never below them)
    format: str
    width: int  # of the upright original
    height: int
    exif: ExifInfo

    @property
    def extension(self) -> str:
        return ACCEPTED_FORMATS[self.format]


def decode(data: bytes, *, max_pixels: int, short_side: int = WORK_SIZE, long_side: int = WORK_SIZE) -> DecodedImage:
    """Validate and decode image bytes, or raise InvalidImage / UnsupportedFormat / TooLarge.

    The decoded image keeps at least `short_side` pixels on its short side and `long_side` on its long side
    (when the original has them): ingest asks for just what the model and the thumbnail need, so JPEG draft
    mode can decode a camera photo at 1/8 scale. What the decode needs in memory is checked before it starts
    (DECODE_BYTES_PER_PIXEL × max_pixels, after the draft), and a JPEG must hold the data its header claims.
    """
    if not data:
        raise InvalidImage("the file is empty")
    # One rule for files of a kind we do not take, whether Pillow knows the kind (ICO, PPM, JPEG 2000) or not
    # (text, SVG, PDF): UnsupportedFormat. InvalidImage is left for accepted formats whose data is broken.
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise UnsupportedFormat(f"not an image we can read (accepted: {ACCEPTED_NAMES})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImage(f"the image is corrupt ({error})") from None

    fmt = image.format or ""
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedFormat(
            f"not an image we can read: {fmt or 'its format'} is not supported (accepted: {ACCEPTED_NAMES})"
        )
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage("the image has no pixels")
    if width * height > max_pixels:
        raise TooLarge(f"the image is {width}×{height} pixels; the limit is {max_pixels:,} pixels")

    try:
        exif = image.getexif()
        orientation = _orientation(exif)
        info = _read_exif(exif)
        if fmt in ("JPEG", "MPO"):
            _check_jpeg_holds(data, width, height)
            stored_w, stored_h = image.size  # draft works on the stored orientation
            wanted = (long_side, short_side) if stored_w >= stored_h else (short_side, long_side)
            image.draft("RGB", wanted)
        plan = _Reduction.of(image.size, short_side, long_side)
        turn = _Turn.of(orientation, fmt, image.mode, image.size, plan)
        _check_budget(image, plan, turn, max_pixels)
        image.load()
        if turn.first:  # the decoded image is smaller than the result: turn it, then drop it
            image = image.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
            plan = _Reduction.of(image.size, short_side, long_side)
        decoded_size = image.size
        rgb = _reduced_copy(image, plan)
        del image  # unless the reduced copy is the decoded image itself, the decoded pixels are freed here
        rgb = _resized(rgb, plan, decoded_size)
        if turn.after:
            rgb = rgb.transpose(_TRANSPOSE_FOR_ORIENTATION[orientation])
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImage(f"the image is truncated or corrupt ({error})") from None

    if orientation in (5, 6, 7, 8) and fmt not in _TURNED_ON_LOAD:
        width, height = height, width
    return DecodedImage(image=rgb, format=fmt, width=width, height=height, exif=info)


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """What Pillow holds in memory for an image of this mode and size: 1 byte a pixel for 1-bit, grey and palette
    images (Pillow keeps 1-bit images a byte a pixel), 2 for 16-bit grey, 4 for everything else (RGB included)."""
    if mode in ("1", "L", "P"):
        per_pixel = 1
    elif mode.startswith("I;16"):
        per_pixel = 2
    else:
        per_pixel = 4
    return per_pixel * size[0] * size[1]


def make_thumbnail(image: Image.Image, max_side: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG no larger than max_side on its long side, for grids and result lists."""
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85, optimize=True, progressive=True)
    return buffer.getvalue()


def crop_region(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """Crop by a box given as fractions of width and height (left, top, right, bottom)."""
    left, top, right, bottom = box
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise InvalidImage("a region must lie inside the image: 0 <= left < right <= 1, 0 <= top < bottom <= 1")
    w, h = image.size
    pixels = (
        int(left * w),
        int(top * h),
        max(int(left * w) + 1, round(right * w)),
        max(int(top * h) + 1, round(bottom * h)),
    )
    return image.crop(pixels)


def _orientation(exif: Image.Exif) -> int:
    """The EXIF orientation, 1 to 8; anything else (text, a rational 0/0, out of range) is a bad tag: upright."""
    value = exif.get(_ORIENTATION_TAG, 1)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return 1
    number = float(value)
    return int(number) if number.is_integer() and 1 <= number <= 8 else 1


def _check_jpeg_holds(data: bytes, width: int, height: int) -> None:
    """Refuse a JPEG whose header claims more pixels than its data can hold: libjpeg paints what is missing grey
    without a word, so a 1 KB file could be stored as a 10000×10000 photo.

    Every 8×8 block of the full-resolution component costs at least one bit in a Huffman-coded scan (its DC
    code), so a real image, however flat, has at least blocks / 8 bytes between its first scan and its end."""
    frame, scan = _jpeg_frame_and_scan(data)
    if frame not in _HUFFMAN_FRAMES or scan < 0:
        return
    end = data.find(b"\xff\xd9", scan)
    scan_bytes = (len(data) if end < 0 else end) - scan
    blocks = math.ceil(width / 8) * math.ceil(height / 8)
    if scan_bytes * 8 < blocks:
        raise InvalidImage(
            f"the image is truncated or its header is false: it claims {width}×{height} pixels, which need at "
            f"least {math.ceil(blocks / 8):,} bytes of image data, but it holds {scan_bytes:,}"
        )


def _jpeg_frame_and_scan(data: bytes) -> tuple[int, int]:
    """The frame marker (SOFn) and the offset of the first scan's header, walking the segments by their lengths
    (an EXIF thumbnail inside APP1 has markers of its own); -1 where the walk does not get there."""
    position, frame = 2, -1
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return frame, -1
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE_MARKERS:
            position += 2
            continue
        if marker == 0xDA:
            return frame, position
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = marker
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return frame, -1


@dataclass(frozen=True, slots=True)
class _Reduction:
    """How decode() brings an image to its working size, as resize(BILINEAR, reducing_gap=2) does: a box
    reduction by whole factors, then a bilinear resize; both None when the image is used as it is."""

    factor: tuple[int, int]
    size: tuple[int, int] | None  # the final size, or None when the image is not resized

    @classmethod
    def of(cls, size: tuple[int, int], short_side: int, long_side: int) -> _Reduction:
        """Reduce very large images once (formats without draft mode), so later steps work on fewer pixels."""
        scale = max(short_side / min(size), long_side / max(size))
        if scale > 0.5:
            return cls((1, 1), None)
        final = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        return cls((max(1, int(size[0] / final[0] / 2)), max(1, int(size[1] / final[1] / 2))), final)

    def reduced(self, size: tuple[int, int]) -> tuple[int, int]:
        return math.ceil(size[0] / self.factor[0]), math.ceil(size[1] / self.factor[1])


def _copies_made(mode: str, plan: _Reduction) -> bool:
    """Whether _reduced_copy converts and box-reduces a copy of the image (else it returns the image itself)."""
    return mode != "RGB" or plan.factor != (1, 1)


def _result_bytes(mode: str, size: tuple[int, int], plan: _Reduction) -> int:
    """What the working image holds in the end: the resized image, the reduced copy or the decoded image itself."""
    if plan.size is not None:
        return decoded_bytes("RGB", plan.size)
    return decoded_bytes("RGB", plan.reduced(size)) if _copies_made(mode, plan) else decoded_bytes(mode, size)


@dataclass(frozen=True, slots=True)
class _Turn:
    """Where decode() applies the EXIF orientation: to the decoded image before the working copy is made (`first`,
    when the decoded image is the smaller: a grey or 16-bit strip that is not reduced), to the result (`after`),
    or nowhere (upright, or the plugin turned it as it loaded). `turned_decoded` says whether the decoded image is
    turned (by decode() or by the plugin): two copies of it are held for a moment."""

    first: bool = False
    after: bool = False
    turned_decoded: bool = False

    @classmethod
    def of(cls, orientation: int, fmt: str, mode: str, size: tuple[int, int], plan: _Reduction) -> _Turn:
        if orientation == 1:
            return cls()
        if fmt in _TURNED_ON_LOAD:
            return cls(turned_decoded=True)
        if _result_bytes(mode, size, plan) > decoded_bytes(mode, size):
            return cls(first=True, turned_decoded=True)
        return cls(after=True)


def _needed_bytes(mode: str, size: tuple[int, int], plan: _Reduction, turn: _Turn) -> int:
    """The most memory a decode holds at once: the decoded pixels and the converted, box-reduced copy (when one
    is made), then that copy (the decoded image when none is made) and the resized image; a turn holds two
    copies of what it turns, the decoded image or the result (by then the only image left)."""
    decoded = decoded_bytes(mode, size)
    reduced = decoded_bytes("RGB", plan.reduced(size)) if _copies_made(mode, plan) else 0
    working = decoded + reduced
    if plan.size is not None:
        working = max(working, (reduced or decoded) + decoded_bytes("RGB", plan.size))
    if turn.turned_decoded:
        return max(working, 2 * decoded)
    if turn.after:
        return max(working, 2 * _result_bytes(mode, size, plan))
    return working


def _check_budget(image: Image.Image, plan: _Reduction, turn: _Turn, max_pixels: int) -> None:
    """Refuse, before decoding, an image whose decode needs more memory than the budget (DECODE_BYTES_PER_PIXEL ×
    the pixel cap): the pixel count alone does not say what a decode costs."""
    needed = _needed_bytes(image.mode, image.size, plan, turn)
    budget = DECODE_BYTES_PER_PIXEL * max_pixels
    if needed > budget:
        width, height = image.size
        raise TooLarge(
            f"decoding this {width}×{height} {image.mode} image needs {needed / 2**20:,.1f} MB of memory; "
            f"the limit is {budget / 2**20:,.1f} MB"
        )


def _reduced_copy(image: Image.Image, plan: _Reduction) -> Image.Image:
    """The decoded image in RGB, box-reduced by the plan's factors, converted and reduced a strip of rows at a
    time: beside the decoded pixels, memory holds one strip and the reduced image, whatever the mode (16-bit,
    float, alpha, palette, CMYK). An RGB image that needs no box reduction is returned as it is."""
    if not _copies_made(image.mode, plan):
        return image
    convert = _strip_converter(image)
    factor_y = plan.factor[1]
    width, height = image.size
    reduced = Image.new("RGB", plan.reduced(image.size))
    rows = max(1, _STRIP_PIXELS // width // factor_y) * factor_y
    for top in range(0, height, rows):
        strip = convert(image.crop((0, top, width, min(height, top + rows))))
        reduced.paste(strip.reduce(plan.factor) if plan.factor != (1, 1) else strip, (0, top // factor_y))
    return reduced


def _resized(reduced: Image.Image, plan: _Reduction, decoded_size: tuple[int, int]) -> Image.Image:
    """The reduced image resized to the plan's final size (as it is when the plan has none): together with
    _reduced_copy, what converting the whole image and then resizing it gives. The decoded image is no longer
    held by then, unless it is the reduced image."""
    if plan.size is None:
        return reduced
    box = (0, 0, decoded_size[0] / plan.factor[0], decoded_size[1] / plan.factor[1])
    return reduced.resize(plan.size, Image.Resampling.BILINEAR, box=box)


def _strip_converter(image: Image.Image) -> Callable[[Image.Image], Image.Image]:
    """How one strip of this image becomes RGB, or grey (which is reduced before it is made RGB, the same result
    for a third of the work): 16-bit and float images are stretched from their darkest to their lightest value
    (by Pillow's scale-and-offset, in C: no float64 copy), transparency is laid over white."""
    mode = image.mode
    if mode in ("RGB", "L"):
        return lambda strip: strip
    if mode in _DEEP_MODES:
        pointable = _as_int if mode in _POINTLESS_MODES else _unchanged
        low, high = _extrema(image, pointable)
        scale = 255.0 / (high - low) if high > low else 0.0
        return lambda strip: pointable(strip).point(lambda value: value * scale - low * scale).convert("L")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):

        def over_white(strip: Image.Image) -> Image.Image:
            rgba = strip.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")

        return over_white
    if mode == "1":
        return lambda strip: strip.convert("L")
    return lambda strip: strip.convert("RGB")


def _as_int(strip: Image.Image) -> Image.Image:
    return strip.convert("I")


def _unchanged(strip: Image.Image) -> Image.Image:
    return strip


def _extrema(image: Image.Image, pointable: Callable[[Image.Image], Image.Image]) -> tuple[float, float]:
    """The darkest and lightest value of a one-band image, a strip at a time for modes getextrema() refuses."""
    if pointable is _unchanged:
        extrema = image.getextrema()
        return float(extrema[0]), float(extrema[1])  # type: ignore[arg-type]
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // width)
    lows, highs = [], []
    for top in range(0, height, rows):
        low, high = pointable(image.crop((0, top, width, min(height, top + rows)))).getextrema()
        lows.append(float(low))  # type: ignore[arg-type]
        highs.append(float(high))  # type: ignore[arg-type]
    return min(lows), max(highs)


def _clean_text(value: object) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "".join(ch for ch in str(value) if ch.isprintable()).strip()
    return text[:_MAX_EXIF_TEXT]


def _parse_exif_datetime(value: object, offset: object) -> datetime | None:
    text = _clean_text(value)
    try:
        taken = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    offset_text = _clean_text(offset)
    if len(offset_text) == 6 and offset_text[0] in "+-" and offset_text[3] == ":":
        try:
            sign = 1 if offset_text[0] == "+" else -1
            delta = timedelta(hours=int(offset_text[1:3]), minutes=int(offset_text[4:6]))
            return taken.replace(tzinfo=timezone(sign * delta)).astimezone(UTC)
        except ValueError:
            pass
    # No offset recorded: keep the camera's wall-clock time, labelled UTC so it sorts and filters consistently.
    return taken.replace(tzinfo=UTC)


def _gps_degrees(parts: object, ref: object) -> float | None:
    try:
        degrees, minutes, seconds = (float(p) for p in parts)  # type: ignore[attr-defined]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = degrees + minutes / 60 + seconds / 3600
    if _clean_text(ref).upper() in ("S", "W"):
        value = -value
    return round(value, 7) if np.isfinite(value) else None


def _read_exif(exif: Image.Exif) -> ExifInfo:
    if not exif:
        return ExifInfo()
    try:
        details = exif.get_ifd(_EXIF_IFD)
        gps = exif.get_ifd(_GPS_IFD)
    except (KeyError, ValueError, TypeError, OSError):
        details, gps = {}, {}
    make = _clean_text(exif.get(_TAG_MAKE, ""))
    model = _clean_text(exif.get(_TAG_MODEL, ""))
    camera = model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()
    taken = _parse_exif_datetime(
        details.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME, ""),
        details.get(_TAG_OFFSET_TIME_ORIGINAL, ""),
    )
    lat = _gps_degrees(gps.get(2), gps.get(1)) if gps else None
    lon = _gps_degrees(gps.get(4), gps.get(3)) if gps else None
    valid_gps = lat is not None and lon is not None and abs(lat) <= 90 and abs(lon) <= 180
    return ExifInfo(
        taken_at=taken,
        camera=camera,
        lens=_clean_text(details.get(_TAG_LENS_MODEL, "")),
        gps_lat=lat if valid_gps else None,
        gps_lon=lon if valid_gps else None,
    )
