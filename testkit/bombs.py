"""Small files that decode into huge images: what a decoder must refuse, or decode without running out of memory.

Built once per process: each takes a moment.
"""

from __future__ import annotations

import struct
import zlib
from functools import cache


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@cache
def decompression_bomb(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of side × side pixels (900 megapixels) that compresses to about 100 KB."""
    row = b"\x00" * (1 + (side + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


@cache
def sixteen_bit_bomb(side: int = 10_000, squares: int = 3) -> bytes:
    """A valid 16-bit grey PNG of side × side pixels (exactly the default pixel cap) in about 200 KB, a
    staircase of squares: Pillow holds it in 200 MB, and a careless conversion to 8 bits in gigabytes. The first row of
    each row of squares is written out, the others say "same as the row above" (PNG filter 2)."""
    square = side // squares
    same_as_above = b"\x02" + b"\x00" * (side * 2)
    compressor = zlib.compressobj(9)
    rows = []
    for y in range(side):
        if y % square:
            rows.append(compressor.compress(same_as_above))
            continue
        values = [((x // square) * squares + y // square) * 5000 for x in range(side)]
        rows.append(compressor.compress(b"\x00" + struct.pack(f">{side}H", *values)))
    pixels = b"".join(rows) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")
