"""Reviewing duplicates across the library: groups of images that look alike, and keeping one of a group.
The check at upload is ingest's; both use the rule made from the settings here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imagematch.duplicates import DuplicateRule, KnownPairs, Pairs, groups_of
from imagematch.fingerprint import ColourLayout, colour_distance
from imagematch.records import ImageRecord, InvalidInput
from imagematch.services.catalog import Catalog
from imagematch.services.pairing import Pairing, one_generation
from imagematch.settings import Settings

log = logging.getLogger(__name__)


_VECTOR_PAIRS_AT_ONCE = 20_000  # duplicate review: pairs whose vectors are held at once (all are compared)
_VECTOR_BATCH = 1000


@dataclass(frozen=True, slots=True)
class DuplicateGroup:
    """Images that look like one another; `links` says why: (id, id, pHash bits, vector cosine or None)."""

    records: list[ImageRecord]
    links: list[tuple[str, str, int, float | None]]


@dataclass(frozen=True, slots=True)
class DuplicateLink:
    first: int
    second: int
    distance: int
    similarity: float | None


def rule_of(settings: Settings) -> DuplicateRule:
    """The duplicate rule the settings describe: at upload and in review alike."""
    return DuplicateRule(
        settings.duplicate_distance,
        settings.duplicate_crop_distance,
        settings.duplicate_similarity,
        settings.duplicate_colour_distance,
    )


class DuplicateReview:
    def __init__(self, settings: Settings, pairing: Pairing, catalog: Catalog) -> None:
        self.settings = settings
        self.pairing = pairing
        self.catalog = catalog
        self._known_pairs = KnownPairs()
        # Image-vector cosine of the pairs the last review compared, by model: an image's vector changes only
        # with the model (a reindex), so a review after a few changes compares only the new pairs' vectors.
        self._similarities: dict[str, dict[tuple[str, str], float]] = {}
        self._similarities_lock = threading.Lock()

    @property
    def rule(self) -> DuplicateRule:
        return rule_of(self.settings)

    def groups(self, rule: DuplicateRule | None = None, *, limit: int = 50) -> list[DuplicateGroup]:
        """Near-duplicates across the library, grouped, largest groups first, at most `limit` groups.

        Pairs come from buckets of the pHashes (duplicates.close_pairs: candidate pairs only, never every pair;
        brought up to date from the last review's when few images changed since, duplicates.KnownPairs),
        fingerprint distances up to the rule's reach; pairs within the pHash distance are decided by their colour
        layouts (from the thumbnails, as at upload), every other pair by the two stored image vectors, a bounded
        chunk of pairs at a time, however many there are.
        """
        rule = rule or self.rule
        store = self.pairing.store
        ids, hashes = store.phashes()  # two columns, not every record: records are read for what is found
        pairs = self._known_pairs.pairs(ids, hashes, rule.reach)
        settled = pairs.select(pairs.distance <= rule.max_distance)
        layouts: dict[int, ColourLayout | None] = {}  # read once each, only for images in a close pair

        def layout(index: int) -> ColourLayout | None:
            if index not in layouts:
                layouts[index] = self.catalog.stored_layout(ids[index])
            return layouts[index]

        links = []
        for a, b, d in zip(*_columns(settled), strict=True):
            one, other = layout(int(a)), layout(int(b))
            colours = None if one is None or other is None else colour_distance(one, other)
            if rule.is_duplicate(int(d), None, colours):
                links.append(DuplicateLink(int(a), int(b), int(d), None))
        undecided = pairs.select(pairs.distance > rule.max_distance)
        model_id = self.pairing.embedder.model_id
        with self._similarities_lock:
            known = self._similarities.get(model_id, {})
        similarities: dict[tuple[str, str], float] = {}  # of the pairs there now: what the next review starts from
        for start in range(0, len(undecided), _VECTOR_PAIRS_AT_ONCE):
            chunk = undecided.select(np.arange(start, min(start + _VECTOR_PAIRS_AT_ONCE, len(undecided))))
            keys = [_key(ids[a], ids[b]) for a, b in zip(chunk.first.tolist(), chunk.second.tolist(), strict=True)]
            unknown = [n for n, key in enumerate(keys) if key not in known]
            involved = sorted({i for n in unknown for i in (int(chunk.first[n]), int(chunk.second[n]))})
            vectors = {}
            for batch in range(0, len(involved), _VECTOR_BATCH):
                wanted = [ids[i] for i in involved[batch : batch + _VECTOR_BATCH]]
                vectors.update({key: value[0] for key, value in store.get_vectors(wanted).items()})
            for key, (a, b, d) in zip(keys, zip(*_columns(chunk), strict=True), strict=True):
                similarity = known.get(key)
                if similarity is None and key[0] in vectors and key[1] in vectors:
                    similarity = float(vectors[key[0]] @ vectors[key[1]])
                if similarity is None:
                    continue
                similarities[key] = similarity
                if rule.is_duplicate(int(d), similarity):
                    links.append(DuplicateLink(int(a), int(b), int(d), similarity))
        with self._similarities_lock:
            self._similarities = {model_id: similarities}
        # Records deleted since the hashes were read leave their links: a group is never joined through them.
        records = store.get_many(sorted({ids[i] for link in links for i in (link.first, link.second)}))
        links = [link for link in links if ids[link.first] in records and ids[link.second] in records]
        found = []
        for members in groups_of([(link.first, link.second) for link in links])[:limit]:
            inside = set(members)
            found.append(
                DuplicateGroup(
                    records=[records[ids[i]] for i in members],
                    links=[
                        (ids[link.first], ids[link.second], link.distance, link.similarity)
                        for link in links
                        if link.first in inside
                    ],
                )
            )
        return found

    @one_generation
    def keep_one(self, keep: str, delete: Sequence[str]) -> list[ImageRecord]:
        """Resolve a duplicate group: delete the others, never the one kept. Returns what was deleted."""
        self.catalog.get(keep)
        if keep in delete:
            raise InvalidInput("the image to keep cannot also be deleted")
        targets = [self.catalog.get(image_id) for image_id in dict.fromkeys(delete)]
        for record in targets:
            self.catalog.delete(record.id)
        return targets


def _columns(pairs: Pairs) -> tuple[list[int], list[int], list[int]]:
    return pairs.first.tolist(), pairs.second.tolist(), pairs.distance.tolist()


def _key(one: str, other: str) -> tuple[str, str]:
    """A pair by its ids, whichever order the store listed them in this time."""
    return (one, other) if one < other else (other, one)
