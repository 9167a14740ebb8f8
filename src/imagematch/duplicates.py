"""When two images count as the same picture, and how near-duplicates are grouped across a library.

Signals, measured in bench/dedup_threshold.py, bench/dedup_graphics.py and docs/duplicates.md:

- pHash: within `max_distance` bits is the same picture (re-encoded, resized, lightly edited) when the colour
  layouts agree too (fingerprint.colour_distance within `max_colour_distance`): pHash is grey and low-frequency,
  so distinct graphics (other colours, another small shape on the same background) share hashes. An upload is also
  looked up under the hashes of its mirrored and rotated versions (fingerprint.perceptual_hashes), within
  VARIANT_DISTANCE bits and confirmed by image vectors at least `duplicate_variant_similarity` alike and by the
  colour layouts, turned alike.
- CLIP: a small crop moves the pHash by more bits than distinct photos are apart at the closest, so a crop
  counts only when the image vectors agree too: cosine similarity of at least `min_similarity` and a pHash
  still within `crop_distance` bits. Either signal alone would join distinct photos.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from imagematch.records import InvalidInput

_BLOCK = 1024  # rows of the pairwise distance matrix computed at once: 1024 × 100k bytes ≈ 100 MB
# A turned hash matches within this many bits: mirrored and rotated copies land 0–4 bits from the original's
# hash (bench/dedup_threshold.py), while plain graphics match a turned hash by chance up to 10 bits and more.
VARIANT_DISTANCE = 4
# ΔE the colour layouts of a pHash match may differ by (IMAGEMATCH_DUPLICATE_COLOUR_DISTANCE's default): mild edits
# of photos stay within 28 (a 4% crop the farthest), and all but 0.6% of distinct generated graphics that share a
# pHash are further apart (bench/dedup_graphics.py).
COLOUR_DISTANCE = 30.0


@dataclass(frozen=True, slots=True)
class DuplicateRule:
    max_distance: int  # pHash bits: at most this far is a duplicate when the colour layouts agree
    crop_distance: int  # pHash bits: at most this far is a duplicate when the vectors agree too
    min_similarity: float  # cosine of the image vectors for the crop rule
    max_colour_distance: float = COLOUR_DISTANCE  # ΔE: how far the colour layouts of a pHash match may differ

    def __post_init__(self) -> None:
        if not 0 <= self.max_distance <= 32 or not 0 <= self.crop_distance <= 32:
            raise InvalidInput("pHash distances must be between 0 and 32 bits")
        if not (0.0 <= self.min_similarity <= 1.0):
            raise InvalidInput("the similarity must be between 0 and 1")
        if not self.max_colour_distance >= 0:
            raise InvalidInput("the colour distance must be 0 or more")

    def colours_agree(self, colour_distance: float | None) -> bool:
        """None: no colour layout could be made for one side (neither thumbnail nor original is there), so the
        pHash decides alone, as it did before layouts were compared."""
        return colour_distance is None or colour_distance <= self.max_colour_distance

    @property
    def uses_vectors(self) -> bool:
        """The crop rule only adds anything when it reaches further than the pHash rule."""
        return self.crop_distance > self.max_distance

    @property
    def reach(self) -> int:
        """The farthest pHash distance either rule accepts: pairs beyond it are never duplicates."""
        return max(self.max_distance, self.crop_distance if self.uses_vectors else 0)

    def is_duplicate(self, distance: int, similarity: float | None, colour_distance: float | None = None) -> bool:
        """The decision for one pair; `similarity` is None when the vectors were not compared. Within
        `max_distance` the colour layouts decide with the pHash (and a pair they part is no crop either)."""
        if distance <= self.max_distance:
            return self.colours_agree(colour_distance)
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
    """Every pair of hashes within max_distance bits, each once (first < second), from candidate pairs.

    Multi-index hashing: the 64 bits are cut into m blocks, and two hashes within r bits are within r // m
    bits of each other in at least one block (pigeonhole). Each block is bucketed by value (a counting sort);
    a hash's candidates are the hashes in the buckets within r // m bits of its own block value, so no pair
    outside those buckets is ever looked at. m is chosen for the library's size, where probing few buckets and
    finding few candidates in them balance. The pairs are exactly those of comparing every pair (tested).
    Small libraries (and reaches past 32 bits, where nothing is gained) compare every pair, in blocks.
    """
    count = len(hashes)
    if count < _BUCKETS_FROM or max_distance >= 32:
        return _all_pairs(hashes, max_distance)
    blocks = _blocks(count, max_distance)
    within = max_distance // len(blocks)
    firsts, seconds, distances = [], [], []
    for number, (shift, bits) in enumerate(blocks):
        keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        by_bucket = hashes[order]  # the hashes bucket after bucket: a bucket is a contiguous run
        sizes = np.bincount(keys, minlength=1 << bits)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        earlier = blocks[:number]
        for mask in _masks(bits, within):
            probed = keys ^ mask
            # Each pair of buckets once: a bucket with itself (mask 0) or with the one above it.
            found = np.where(probed >= keys, sizes[probed], 0) if mask else sizes[probed]
            ends = np.cumsum(found)
            total = int(ends[-1])
            if total == 0:
                continue
            # Candidate n compares one hash with by_bucket[position]; only the close pairs get their indexes.
            position = np.arange(total, dtype=np.int64) + np.repeat(starts[probed] - (ends - found), found)
            distance = np.bitwise_count(np.repeat(hashes, found) ^ by_bucket[position])
            close = np.flatnonzero(distance <= max_distance)
            first = np.searchsorted(ends, close, side="right").astype(np.int64)
            second = order[position[close]]
            distance = distance[close].astype(np.int64)
            low, high = np.minimum(first, second), np.maximum(first, second)
            keep = low < high if mask else first < second  # within a bucket each pair comes both ways
            xor = hashes[low] ^ hashes[high]
            # Found once: in the first block where the pair is within `within` bits (later blocks skip it).
            for prior_shift, prior_bits in earlier:
                part = (xor >> np.uint64(prior_shift)) & np.uint64((1 << prior_bits) - 1)
                keep &= np.bitwise_count(part) > within
            firsts.append(low[keep])
            seconds.append(high[keep])
            distances.append(distance[keep])
    return _pairs(firsts, seconds, distances)


_BUCKETS_FROM = 4096  # below this many hashes comparing every pair is as fast


def _masks(bits: int, within: int) -> npt.NDArray[np.int64]:
    """Every value of `bits` bits with at most `within` bits set: the bucket offsets probed."""
    masks = [0]
    for ones in range(1, within + 1):
        masks.extend(sum(1 << b for b in chosen) for chosen in itertools.combinations(range(bits), ones))
    return np.asarray(masks, dtype=np.int64)


def _blocks(count: int, max_distance: int) -> list[tuple[int, int]]:
    """(shift, bits) of each block, for the block count whose estimated work is least at this size: per hash,
    buckets probed times (one probe plus the candidates expected in a bucket of uniformly spread hashes)."""

    def cut(parts: int) -> list[tuple[int, int]]:
        sizes = [64 // parts + (1 if n < 64 % parts else 0) for n in range(parts)]
        return [(sum(sizes[:n]), size) for n, size in enumerate(sizes)]

    def work(parts: int) -> float:
        within = max_distance // parts
        probes = [sum(math.comb(bits, k) for k in range(within + 1)) for _, bits in cut(parts)]
        return float(sum(p * (2 + count / 2.0**bits) for p, (_, bits) in zip(probes, cut(parts), strict=True)))

    best = min((parts for parts in range(3, 9) if 64 // parts <= 22), key=work)
    return cut(best)


def _all_pairs(hashes: npt.NDArray[np.uint64], max_distance: int) -> Pairs:
    """Every pair compared, by a blocked, vectorised pass (memory bounded by the block size)."""
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
    return _pairs(firsts, seconds, distances)


def _pairs(firsts: list[npt.NDArray[np.int64]], seconds: list[Any], distances: list[Any]) -> Pairs:
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty, empty)
    first = np.concatenate(firsts).astype(np.int64)
    second = np.concatenate(seconds).astype(np.int64)
    order = np.lexsort((second, first))  # the same order whichever way they were found
    return Pairs(first[order], second[order], np.concatenate(distances).astype(np.int64)[order])


_REDO_SHARE = 20  # more than 1 in this many hashes new or changed: close_pairs anew is the cheaper way


class KnownPairs:
    """The close pairs of the hashes seen last, brought up to date from what changed since instead of found anew.

    Duplicate review runs on every visit of its page (and again after each group is resolved), while between two
    visits only a few images come and go: the pairs of the images still there with the same hash are kept, and
    each new or changed hash is compared with every hash (one vectorised pass each). Finding every pair anew costs
    what the library's square of chance pairs costs (docs/benchmarks.md); the result is the same (tested).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: tuple[int, dict[str, int], npt.NDArray[np.uint64], Pairs] | None = None

    def pairs(self, ids: Sequence[str], hashes: npt.NDArray[np.uint64], max_distance: int) -> Pairs:
        """close_pairs(hashes, max_distance), for the images `ids` (each once) whose hashes these are."""
        with self._lock:
            known = self._known
        found = None if known is None or known[0] != max_distance else _updated(known, ids, hashes, max_distance)
        if found is None:
            found = close_pairs(hashes, max_distance)
        with self._lock:
            self._known = (max_distance, {image_id: n for n, image_id in enumerate(ids)}, hashes, found)
        return found


def _updated(
    known: tuple[int, dict[str, int], npt.NDArray[np.uint64], Pairs],
    ids: Sequence[str],
    hashes: npt.NDArray[np.uint64],
    max_distance: int,
) -> Pairs | None:
    """The known pairs moved to the new indexes, and the pairs of the new or changed hashes; None when so much
    changed that finding every pair anew is cheaper."""
    _, positions, old_hashes, old_pairs = known
    moved = np.full(len(old_hashes), -1, dtype=np.int64)  # old index -> new index, -1 where gone or changed
    fresh = []
    for n, image_id in enumerate(ids):
        before = positions.get(image_id)
        if before is not None and old_hashes[before] == hashes[n]:
            moved[before] = n
        else:
            fresh.append(n)
    if len(fresh) * _REDO_SHARE > len(ids):
        return None
    first, second = moved[old_pairs.first], moved[old_pairs.second]
    still = (first >= 0) & (second >= 0)
    firsts, seconds = [np.minimum(first, second)[still]], [np.maximum(first, second)[still]]
    distances = [old_pairs.distance[still]]
    is_fresh = np.zeros(len(ids), dtype=bool)
    is_fresh[fresh] = True
    for n in fresh:
        distance = np.bitwise_count(hashes ^ hashes[n]).astype(np.int64)
        close = np.flatnonzero(distance <= max_distance)
        close = close[(close != n) & (~is_fresh[close] | (close > n))]  # a pair of two fresh ones once
        firsts.append(np.minimum(close, n))
        seconds.append(np.maximum(close, n))
        distances.append(distance[close])
    return _pairs(firsts, seconds, distances)


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
