"""Reading images safely: validate, decode once (cheaply), orient, convert to RGB, thumbnail, read EXIF.

Every other module works on the `DecodedImage` this returns, so a photo is decoded exactly once per ingest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

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
    mode can decode a camera photo at 1/8 scale.
    """
    if not data:
        raise InvalidImage("the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage(f"not an image we can read (accepted: {ACCEPTED_NAMES})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImage(f"the image is corrupt ({error})") from None

    fmt = image.format or ""
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedFormat(f"{fmt or 'this'} images are not supported (accepted: {ACCEPTED_NAMES})")
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage("the image has no pixels")
    if width * height > max_pixels:
        raise TooLarge(f"the image is {width}×{height} pixels; the limit is {max_pixels:,} pixels")

    try:
        exif = image.getexif()
        orientation = int(exif.get(_ORIENTATION_TAG, 1) or 1)
        info = _read_exif(exif)
        if fmt in ("JPEG", "MPO"):
            stored_w, stored_h = image.size  # draft works on the stored orientation
            wanted = (long_side, short_side) if stored_w >= stored_h else (short_side, long_side)
            image.draft("RGB", wanted)
        image.load()
        upright = _apply_orientation(image, orientation)
        rgb = _to_rgb(upright)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InvalidImage(f"the image is truncated or corrupt ({error})") from None

    if orientation in (5, 6, 7, 8):
        width, height = height, width
    shrunk = _shrink(rgb, short_side, long_side)
    return DecodedImage(image=shrunk, format=fmt, width=width, height=height, exif=info)


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


def _apply_orientation(image: Image.Image, orientation: int) -> Image.Image:
    if orientation not in range(2, 9):
        return image  # 1 is upright; anything else is a bad tag, which we ignore
    return ImageOps.exif_transpose(image) or image


def _shrink(image: Image.Image, short_side: int, long_side: int) -> Image.Image:
    """Formats without draft mode: reduce very large images once, so later steps work on fewer pixels."""
    scale = max(short_side / min(image.size), long_side / max(image.size))
    if scale > 0.5:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = np.zeros_like(array) if high <= low else (array - low) * (255.0 / (high - low))
        return Image.fromarray(scaled.astype(np.uint8), mode="L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


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
