"""Content fingerprints: the file hash, the 64-bit perceptual hash and the image id made from both."""

from __future__ import annotations

import hashlib
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
