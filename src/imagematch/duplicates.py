"""When two images count as the same picture, and how near-duplicates are grouped across a library.

Two signals, measured in bench/dedup_threshold.py and docs/duplicates.md:

- pHash: within `max_distance` bits is the same picture (re-encoded, resized, lightly edited). An upload is also
  looked up under the hashes of its mirrored and rotated versions (fingerprint.perceptual_hashes), within
  VARIANT_DISTANCE bits and confirmed by image vectors at least `duplicate_variant_similarity` alike.
- CLIP: a small crop moves the pHash by more bits than distinct photos are apart at the closest, so a crop
  counts only when the image vectors agree too: cosine similarity of at least `min_similarity` and a pHash
  still within `crop_distance` bits. Either signal alone would join distinct photos.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from imagematch.records import InvalidInput

_BLOCK = 1024  # rows of the pairwise distance matrix computed at once: 1024 × 100k bytes ≈ 100 MB
# A turned hash matches within this many bits: mirrored and rotated copies land 0–4 bits from the original's
# hash (bench/dedup_threshold.py), while plain graphics match a turned hash by chance up to 10 bits and more.
VARIANT_DISTANCE = 4


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    max_distance: int  # pHash bits: at most this far is a duplicate on its own
    crop_distance: int  # pHash bits: at most this far is a duplicate when the vectors agree too
    min_similarity: float  # cosine of the image vectors for the crop rule

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= 32 or not 0 <= self.crop_distance <= 32:
            raise InvalidInput("pHash distances must be between 0 and 32 bits")
        if not (0.0 <= self.min_similarity <= 1.0):
            raise InvalidInput("the similarity must be between 0 and 1")

    @property
    def uses_vectors(self) -> bool:
        """The crop rule only adds anything when it reaches further than the pHash rule."""
        return self.crop_distance > self.max_distance

    @property
    def reach(self) -> int:
        """The farthest pHash distance either rule accepts: pairs beyond it are never duplicates."""
        return max(self.max_distance, self.crop_distance if self.uses_vectors else 0)

    def is_duplicate(self, distance: int, similarity: float | None) -> bool:
        """The decision for one pair; `similarity` is None when the vectors were not compared."""
        if distance <= self.max_distance:
            return True
        return (
            self.uses_vectors
            and similarity is not None
            and distance <= self.crop_distance
            and (similarity >= self.min_similarity)
        )


@dataclass(frozen=True, slots=True)
class Pairs:
    """Pairs of indexes into the hashes given to close_pairs (first < second), with their distances."""

    first: npt.NDArray[np.int64]
    second: npt.NDArray[np.int64]
    distance: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.first)

    def select(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Pairs:
        """The pairs a mask or an index array picks."""
        return Pairs(self.first[keep], self.second[keep], self.distance[keep])


def close_pairs(hashes: npt.NDArray[np.uint64], max_distance: int) -> Pairs:
    """Every pair of hashes within max_distance bits, by a blocked, vectorised pass over all pairs.

    At 100k images that is 5·10⁹ XOR-and-popcounts in numpy (tens of seconds on two cores, not the hours of a
    Python loop), with memory bounded by the block size.
    """
    firsts, seconds, distances = [], [], []
    for start in range(0, len(hashes), _BLOCK):
        block = hashes[start : start + _BLOCK]
        counts = np.bitwise_count(np.bitwise_xor(block[:, None], hashes[None, start:]))
        rows, columns = np.nonzero(counts <= max_distance)
        upper = columns > rows  # the block against itself and everything after it, each pair once
        rows, columns = rows[upper], columns[upper]
        firsts.append(rows + start)
        seconds.append(columns + start)
        distances.append(counts[rows, columns].astype(np.int64))
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, empty)
    return Pairs(
        np.concatenate(firsts).astype(np.int64), np.concatenate(seconds).astype(np.int64), np.concatenate(distances)
    )


def groups_of(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected groups (union-find) of the indexes joined by pairs, each sorted, largest groups first."""
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for first, second in pairs:
        a, b = root(first), root(second)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for node in parent:
        members.setdefault(root(node), []).append(node)
    return sorted((sorted(group) for group in members.values()), key=lambda group: (-len(group), group[0]))


def lookup_hashes(phash: int, variants: dict[str, int], max_distance: int) -> dict[str, int]:
    """The hashes an upload is looked up under: its own ("") and those of its mirrored and rotated versions,
    except versions within max_distance of its own hash. Such a picture looks the same turned (symmetric
    patterns, plain graphics), so that version finds nothing new, only unrelated images of the same pattern."""
    found = {"": phash}
    found.update({name: value for name, value in variants.items() if (value ^ phash).bit_count() > max_distance})
    return found
