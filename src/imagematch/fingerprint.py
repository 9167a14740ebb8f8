"""Content fingerprints: the file hash, the 64-bit perceptual hash, the image id made from both, and the colour
layout that confirms a pHash match."""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import numpy.typing as npt
from PIL import Image

PHASH_BITS = 64
_HASH_SIDE = 8
_DCT_SIDE = 32  # imagehash's pHash: a 32×32 grey image, the 8×8 lowest frequencies of its DCT
# The DCT of a sequence read backwards is the DCT of the sequence with odd frequencies negated, so the hashes
# of mirrored and rotated images follow from the original's DCT block without decoding anything again.
_ALTERNATE = np.array([(-1.0) ** i for i in range(_HASH_SIDE)])


def file_hash(data: bytes) -> str:
    """sha256 of the exact bytes: identical files always share it."""
    return hashlib.sha256(data).hexdigest()


def perceptual_hash(image: Image.Image) -> int:
    """imagehash's DCT pHash as a 64-bit unsigned integer.

    It survives re-encoding, resizing and small edits, so near-identical photos land a few bits apart.
    """
    import imagehash  # with scipy below: imported when an image is hashed, not by every command

    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def _dct_block(image: Image.Image) -> npt.NDArray[np.float64]:
    pixels = np.asarray(image.convert("L").resize((_DCT_SIDE, _DCT_SIDE), Image.Resampling.LANCZOS))
    import scipy.fftpack  # type: ignore[import-untyped]

    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    return np.asarray(dct[:_HASH_SIDE, :_HASH_SIDE], dtype=np.float64)


def _bits(block: npt.NDArray[np.float64]) -> int:
    value = 0
    for bit in (block > np.median(block)).flatten():
        value = (value << 1) | int(bit)
    return value


def perceptual_hashes(image: Image.Image) -> tuple[int, dict[str, int]]:
    """The pHash (bit for bit imagehash's) and the pHashes of the image mirrored and turned by 90°, 180° and 270°
    (counter-clockwise), from one DCT: an upload is looked up under all of them, so a mirrored or rotated copy
    of a stored photo is found although its own hash is unrelated."""
    block = _dct_block(image)
    rows, columns = _ALTERNATE[:, None], _ALTERNATE[None, :]
    variants = {
        "mirrored": block * columns,
        "rotated 90°": block.T * rows,
        "rotated 180°": block * rows * columns,
        "rotated 270°": block.T * columns,
    }
    return _bits(block), {name: _bits(variant) for name, variant in variants.items()}


# The colour layout: mean colours of a COLOUR_GRID × COLOUR_GRID grid, compared in CIE Lab (ΔE 1 is about the least
# visible difference). pHash sees grey low frequencies only, so pictures of other colours or with another small
# shape in the same place share a hash; their layouts differ by tens of ΔE in some cell (bench/dedup_graphics.py).
# 32 cells a side see shapes a few percent of the picture wide; with _SHIFT they still line up after a 10% crop.
COLOUR_GRID = 32
_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
_WHITE = np.array([0.95047, 1.0, 1.08883])  # D65
# How far a global tone change may go when two layouts are lined up: brightness and contrast edits scale the
# encoded RGB values of every channel alike (about a mid grey for contrast), which no change of hue does.
_TONE_GAIN = (0.6, 1.6)
# Each cell is compared with the nearest of the other layout's cells within this many cells: crops and resizes
# shift content by a fraction of a cell, a different shape or position moves it further.
_SHIFT = 1
ColourLayout = npt.NDArray[np.float64]  # COLOUR_GRID × COLOUR_GRID × 3 mean sRGB values, 0..1
# How a turned (mirrored, rotated) upload's layout is lined up with a stored one; names as perceptual_hashes'.
LAYOUT_TURNS: dict[str, tuple[bool, int]] = {  # (mirror first, quarter turns counter-clockwise)
    "": (False, 0),
    "mirrored": (True, 0),
    "rotated 90°": (False, 1),
    "rotated 180°": (False, 2),
    "rotated 270°": (False, 3),
}


def colour_layout(thumbnail: bytes) -> ColourLayout:
    """The colour layout of an image from its thumbnail (media.make_thumbnail): stored images keep one, so a
    stored image and an upload are compared from the same kind of pixels, with nothing new to store."""
    image = Image.open(io.BytesIO(thumbnail)).convert("RGB")
    cells = image.resize((COLOUR_GRID, COLOUR_GRID), Image.Resampling.BOX)
    return np.asarray(cells, dtype=np.float64) / 255.0


def turned_layout(layout: ColourLayout, turn: str) -> ColourLayout:
    """The layout of the image mirrored or rotated as `turn` (a name of perceptual_hashes' variants) says."""
    mirror, quarters = LAYOUT_TURNS[turn]
    return np.rot90(layout[:, ::-1] if mirror else layout, quarters)


def colour_distance(first: ColourLayout, second: ColourLayout) -> float:
    """How far apart two colour layouts are, in ΔE: the worst inner cell of either, after lining up their tones
    (_toned_like), against the nearest cell of the other within _SHIFT cells. Symmetric."""
    return max(_one_way(first, second), _one_way(second, first))


def _one_way(moved: ColourLayout, fixed: ColourLayout) -> float:
    toned, target = _lab(_toned_like(moved, fixed)), _lab(fixed)
    side = COLOUR_GRID - 2 * _SHIFT
    inner = toned[_SHIFT : _SHIFT + side, _SHIFT : _SHIFT + side]
    nearest = np.full((side, side), np.inf)
    for dy in range(2 * _SHIFT + 1):
        for dx in range(2 * _SHIFT + 1):
            apart = np.linalg.norm(inner - target[dy : dy + side, dx : dx + side], axis=-1)
            nearest = np.minimum(nearest, apart)
    return float(nearest.max())


def _toned_like(moved: ColourLayout, fixed: ColourLayout) -> ColourLayout:
    """`moved` with one gain (within _TONE_GAIN) and one offset for all three channels fitted to `fixed`, clipped
    as an edited file is: what a brightness or contrast edit does, and nothing that turns one hue into another."""
    spread = float(moved.var())
    gain = float(((moved - moved.mean()) * (fixed - fixed.mean())).mean()) / spread if spread > 1e-4 else 1.0
    gain = float(np.clip(gain, *_TONE_GAIN))
    toned: ColourLayout = np.clip((moved - moved.mean()) * gain + fixed.mean(), 0.0, 1.0)
    return toned


def _lab(rgb: ColourLayout) -> npt.NDArray[np.float64]:
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _SRGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lightness = 116 * f[..., 1] - 16
    return np.stack([lightness, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def phash_hex(value: int) -> str:
    return f"{value:016x}"


def phash_from_hex(text: str) -> int:
    value = int(text, 16)
    if not 0 <= value < 1 << PHASH_BITS:
        raise ValueError(f"not a 64-bit pHash: {text!r}")
    return value


_ID_TEXT = re.compile(r"[0-9a-f-]{1,64}")


def could_be_image_id(text: str) -> bool:
    """Ids are hex digits and dashes (see image_id); any other text names no image, so it need not reach a
    store, which may not even be able to encode it (a lone surrogate from JSON)."""
    return _ID_TEXT.fullmatch(text) is not None


def image_id(phash: int, sha256_hex: str) -> str:
    """Deterministic, unique and readable: the pHash first, then 8 hex digits of the file hash.

    The same file always gets the same id, so re-indexing is stable; two different files never share one.
    """
    return f"{phash_hex(phash)}-{sha256_hex[:8]}"


def to_signed(value: int) -> int:
    """Store a 64-bit hash in an int64 column without overflow."""
    return value - (1 << PHASH_BITS) if value >= 1 << (PHASH_BITS - 1) else value


def from_signed(value: int) -> int:
    return value + (1 << PHASH_BITS) if value < 0 else value


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def hamming_many(needle: int, haystack: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """Hamming distance from one hash to many, vectorised (a million hashes in a few milliseconds)."""
    xor = np.bitwise_xor(haystack.astype(np.uint64, copy=False), np.uint64(needle))
    return np.bitwise_count(xor).astype(np.int64)
