from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from imagematch.fingerprint import (
    file_hash,
    from_signed,
    hamming,
    hamming_many,
    image_id,
    perceptual_hash,
    phash_from_hex,
    phash_hex,
    to_signed,
)
from tests.images import photo

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
