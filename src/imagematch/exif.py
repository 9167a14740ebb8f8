"""Removing GPS positions from an original before it is stored (IMAGEMATCH_STRIP_GPS).

Only metadata is rewritten where the format allows it, so the pixels stay byte for byte what was uploaded:

- JPEG: the EXIF segment (APP1) is replaced by the same EXIF without its GPS directory, and an XMP packet that
  names a GPS position is dropped; every other byte is kept.
- PNG and WebP: the same for their EXIF chunk (`eXIf`, `EXIF`), with the chunk checksum or RIFF size fixed.
- TIFF, HEIC and AVIF keep EXIF inside their own structures: a file of these formats that carries GPS is
  re-encoded by Pillow without it (lossless for TIFF, quality 95 for HEIC and AVIF). GIF and BMP carry none.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from PIL import Image

from imagematch.records import InvalidImage

GPS_IFD = 0x8825
_EXIF_HEADER = b"Exif\x00\x00"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_GPS = (b"GPSLatitude", b"GPSLongitude", b"GPSCoordinates")
_MAX_SEGMENT = 0xFFFF - 2
_REENCODE: dict[str, dict[str, Any]] = {
    "TIFF": {"compression": "tiff_lzw"},
    "HEIF": {"quality": 95},
    "AVIF": {"quality": 95},
}


def _exif_without_gps(tiff: bytes) -> bytes | None:
    """The EXIF (TIFF structure, no header) without the GPS directory; None when it had none."""
    exif = Image.Exif()
    exif.load(tiff)
    if GPS_IFD not in exif:
        return None
    exif.get_ifd(0x8769)  # load the sub-directories so they are written back
    del exif[GPS_IFD]
    return exif.tobytes()[len(_EXIF_HEADER) :]


def _jpeg(data: bytes) -> bytes:
    if data[:2] != b"\xff\xd8":
        raise InvalidImage("not a JPEG file")
    out = bytearray(data[:2])
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker in (0xDA, 0xD9):  # start of scan: entropy-coded data follows, copied as it is
            break
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        segment = data[position : position + 2 + length]
        payload = segment[4:]
        if marker == 0xE1 and payload.startswith(_EXIF_HEADER):
            cleaned = _exif_without_gps(payload[len(_EXIF_HEADER) :])
            if cleaned is not None:
                body = _EXIF_HEADER + cleaned
                if len(body) > _MAX_SEGMENT:
                    raise InvalidImage("the EXIF data is too large to rewrite")
                segment = b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body
        elif marker == 0xE1 and payload.startswith(_XMP_HEADER) and any(tag in payload for tag in _XMP_GPS):
            segment = b""
        out += segment
        position += 2 + length
    out += data[position:]
    return bytes(out)


def _png(data: bytes) -> bytes:
    out = bytearray(data[:8])
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position : position + 12 + length]
        if kind == b"eXIf":
            cleaned = _exif_without_gps(chunk[8 : 8 + length])
            if cleaned is not None:
                chunk = struct.pack(">I4s", len(cleaned), kind) + cleaned
                chunk += struct.pack(">I", zlib.crc32(kind + cleaned) & 0xFFFFFFFF)
        out += chunk
        position += 12 + length
    return bytes(out)


def _webp(data: bytes) -> bytes:
    out = bytearray()
    position = 12
    while position + 8 <= len(data):
        kind, length = struct.unpack("<4sI", data[position : position + 8])
        padded = length + (length & 1)
        chunk = data[position : position + 8 + padded]
        if kind == b"EXIF":
            tiff = chunk[8 : 8 + length]
            tiff = tiff[len(_EXIF_HEADER) :] if tiff.startswith(_EXIF_HEADER) else tiff
            cleaned = _exif_without_gps(tiff)
            if cleaned is not None:
                chunk = struct.pack("<4sI", kind, len(cleaned)) + cleaned + b"\x00" * (len(cleaned) & 1)
        out += chunk
        position += 8 + padded
    return b"RIFF" + struct.pack("<I", len(out) + 4) + b"WEBP" + bytes(out)


def _reencoded(data: bytes, fmt: str) -> bytes:
    image = Image.open(io.BytesIO(data))
    exif = image.getexif()
    if GPS_IFD not in exif:
        return data
    exif.get_ifd(0x8769)
    del exif[GPS_IFD]
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, exif=exif.tobytes(), **_REENCODE[fmt])
    return buffer.getvalue()


def without_gps(data: bytes, fmt: str) -> bytes:
    """The file without GPS tags (see the module's notes per format); unchanged when it had none."""
    if fmt in ("JPEG", "MPO"):
        return _jpeg(data)
    if fmt == "PNG":
        return _png(data)
    if fmt == "WEBP":
        return _webp(data)
    if fmt in _REENCODE:
        return _reencoded(data, fmt)
    return data
