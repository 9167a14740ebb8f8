from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageEnhance

from imagematch import media
from imagematch.fingerprint import (
    LAYOUT_TURNS,
    colour_distance,
    colour_layout,
    file_hash,
    from_signed,
    hamming,
    hamming_many,
    image_id,
    perceptual_hash,
    phash_from_hex,
    phash_hex,
    to_signed,
    turned_layout,
)
from testkit.images import encode, look_alikes, photo

u64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(u64)
def test_signed_storage_round_trips(value: int) -> None:
    assert -(2**63) <= to_signed(value) < 2**63
    assert from_signed(to_signed(value)) == value
    assert phash_from_hex(phash_hex(value)) == value


@given(u64, st.lists(u64, min_size=1, max_size=50))
def test_vectorised_hamming_matches_scalar(needle: int, hay: list[int]) -> None:
    expected = [hamming(needle, h) for h in hay]
    assert hamming_many(needle, np.array(hay, dtype=np.uint64)).tolist() == expected


def test_id_shows_the_phash_and_is_deterministic() -> None:
    ph = perceptual_hash(photo("rocket"))
    sha = file_hash(b"bytes")
    assert image_id(ph, sha) == f"{phash_hex(ph)}-{sha[:8]}"
    assert perceptual_hash(photo("rocket")) == ph
    assert hamming(ph, perceptual_hash(photo("astronaut"))) > 10


def _layout(image: Image.Image) -> np.ndarray:
    return colour_layout(media.make_thumbnail(image))


def test_colour_layouts_part_look_alikes_and_keep_edited_photos_together() -> None:
    stars = [_layout(Image.open(io.BytesIO(picture))) for picture in look_alikes()]
    assert min(colour_distance(a, b) for n, a in enumerate(stars) for b in stars[n + 1 :]) > 60
    coffee = photo("coffee")
    brighter = Image.open(io.BytesIO(encode(ImageEnhance.Brightness(coffee).enhance(1.15), "JPEG", quality=50)))
    first, second = _layout(coffee), _layout(brighter)
    assert colour_distance(first, first) < 1e-9
    assert colour_distance(first, second) == colour_distance(second, first) < 20


@pytest.mark.parametrize("turn", [t for t in LAYOUT_TURNS if t])
def test_a_turned_layout_is_the_layout_of_the_turned_image(turn: str) -> None:
    transpose = {
        "mirrored": Image.Transpose.FLIP_LEFT_RIGHT,
        "rotated 90°": Image.Transpose.ROTATE_90,
        "rotated 180°": Image.Transpose.ROTATE_180,
        "rotated 270°": Image.Transpose.ROTATE_270,
    }[turn]
    image = photo("astronaut")
    turned = _layout(image.transpose(transpose))
    assert colour_distance(turned_layout(_layout(image), turn), turned) < 6
    assert colour_distance(_layout(image), turned) > 30
