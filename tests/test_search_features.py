"""Beyond simple search, through the Library: query arithmetic, hybrid search, filters with any query, the
relevance cut-off, region search, duplicates beyond pHash and GPS stripping."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from imagematch import duplicates, media
from imagematch.ai.embedder import Matrix
from imagematch.duplicates import DuplicateRule, KnownPairs, close_pairs, groups_of
from imagematch.exif import GPS_IFD, without_gps
from imagematch.factory import build_library
from imagematch.filters import parse_filter
from imagematch.fingerprint import file_hash, perceptual_hash, perceptual_hashes
from imagematch.library import Library, SimpleSearch
from imagematch.records import (
    MAX_QUERY_TERMS,
    ImageTerm,
    InvalidInput,
    InvalidQuery,
    Query,
    RecordPatch,
    StoredImageTerm,
    TextTerm,
)
from imagematch.services import duplicate_review
from imagematch.services.search import Search
from imagematch.settings import Settings
from testkit.images import PHOTOS, encode, jpeg, look_alikes, photo


def _fill(library: Library, names: tuple[str, ...] = PHOTOS) -> dict[str, str]:
    ids = {}
    for name in names:
        result = library.ingest.add(jpeg(name), filename=f"{name}.jpg")
        assert result.record is not None, result
        ids[name] = result.record.id
    return ids


def _ids(library: Library, query: Query) -> list[str]:
    return [hit.record.id for hit in library.search.run(query).hits]


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ((), "needs text"),
        ((TextTerm("a", 0.0), TextTerm("b", 0.0)), "non-zero"),
        ((TextTerm("a", math.inf),), "finite"),
        ((TextTerm("a", math.nan),), "finite"),
        (tuple(TextTerm(f"w{i}") for i in range(MAX_QUERY_TERMS + 1)), "at most 16"),
        ((ImageTerm(b"x", region=(0.5, 0.0, 0.4, 1.0)),), "inside the image"),
        ((StoredImageTerm("x", region=(0.0, 0.0, 1.0)),), "four numbers"),  # type: ignore[arg-type]
    ],
)
def test_queries_that_cannot_be_answered_are_refused(terms: tuple[TextTerm, ...], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        Query(terms)


def test_min_score_must_be_a_similarity() -> None:
    for bad in (1.5, -2.0, math.nan):
        with pytest.raises(InvalidQuery, match="min_score"):
            Query((TextTerm("a"),), min_score=bad)


def test_query_arithmetic_adds_and_subtracts_terms(library: Library) -> None:
    ids = _fill(library, ("astronaut", "coffee", "rocket", "coins"))
    rocket, coins = ImageTerm(jpeg("rocket")), ImageTerm(jpeg("coins"))
    plus = _ids(library, Query((rocket, coins), k=2))
    assert set(plus) == {ids["rocket"], ids["coins"]}
    alone = _ids(library, Query((rocket,), k=4))
    away = _ids(library, Query((rocket, replace(coins, weight=-0.9)), k=4))
    assert away[0] == ids["rocket"]
    assert away.index(ids["coins"]) >= alone.index(ids["coins"]) and away.index(ids["coins"]) > 0  # steered away
    mixed = library.search.run(Query((TextTerm("a rocket", 2.0), StoredImageTerm(ids["coffee"], 0.5)), k=3))
    assert len(mixed.hits) == 3
    with pytest.raises(InvalidQuery, match="cancel"):
        library.search.run(Query((StoredImageTerm(ids["coins"], 1.0), StoredImageTerm(ids["coins"], -1.0))))


def test_the_stored_images_of_a_query_are_not_its_results(library: Library) -> None:
    """ "Find similar" shows other images: the image itself would always come first at 1.000."""
    ids = _fill(library, ("astronaut", "coffee", "rocket", "coins"))
    similar = _ids(library, Query((StoredImageTerm(ids["rocket"]),), k=3))
    assert len(similar) == 3 and ids["rocket"] not in similar
    both = _ids(library, Query((StoredImageTerm(ids["rocket"]), StoredImageTerm(ids["coins"])), k=2, hybrid=True))
    assert set(both) == {ids["astronaut"], ids["coffee"]}
    with_words = _ids(library, Query((StoredImageTerm(ids["rocket"]), TextTerm("rocket")), k=3))
    assert ids["rocket"] not in with_words and len(with_words) == 3
    assert ids["rocket"] in _ids(library, Query((ImageTerm(jpeg("rocket")),), k=1))  # an uploaded copy is found


def test_hybrid_search_finds_an_exact_caption_word_that_the_vectors_rank_last(library: Library) -> None:
    """With random weights the vector ranking is arbitrary; the keyword ranking still puts the one image that
    says "invoice" first."""
    ids = _fill(library)
    vector_ranking = _ids(library, Query((TextTerm("invoice"),), k=len(PHOTOS)))
    target = vector_ranking[-1]
    library.catalog.update(target, RecordPatch(caption="Invoice from ACME, March"))
    plain = _ids(library, Query((TextTerm("invoice"),), k=1))
    hybrid = library.search.run(Query((TextTerm("invoice"),), k=3, hybrid=True)).hits
    assert plain != [target]
    assert hybrid[0].record.id == target
    first, second = (hit.why for hit in hybrid[:2])
    assert first is not None and second is not None
    assert first.rank_fusion is not None and second.rank_fusion is not None
    assert first.rank_fusion > second.rank_fusion  # reciprocal rank fusion: 1/61 + 1/(60 + its vector rank)
    assert first.keywords == ("invoice",) and second.keywords == ()
    # The score shown stays on the vectors' scale: what the same search without keywords gives the image.
    everything = library.search.run(Query((TextTerm("invoice"),), k=len(PHOTOS))).hits
    assert hybrid[0].score == pytest.approx(next(h.score for h in everything if h.record.id == target))
    assert len(hybrid) == 3 and ids  # still k results


def test_a_unique_keyword_match_beyond_the_vector_candidates_comes_first(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vector ranking reads only so many candidates: an image the keywords alone find must not tie with the
    vectors' first (and lose by its id), whichever image it is."""
    library = build_library(settings)
    ids = _fill(library)
    monkeypatch.setattr(Search, "_depth", lambda self, k: 3)  # the vectors rank 3 of the library
    for n, image_id in enumerate(ids.values()):
        word = f"quokka{n}"
        library.catalog.update(image_id, RecordPatch(description=f"the {word} sign"))
        assert _ids(library, Query((TextTerm(word),), k=1, hybrid=True)) == [image_id], word


def test_the_next_process_scores_words_with_the_reference_vectors_kept_on_disk(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Words are measured against fixed reference texts; a CLI search, a process of its own, reads their vectors
    from the model cache instead of encoding them again, and scores exactly as the first did."""
    library = build_library(settings)
    ids = _fill(library, ("coffee", "rocket"))
    library.catalog.update(ids["coffee"], RecordPatch(description="a cup of coffee"))
    query = Query((TextTerm("a cup of coffee"),), k=2)
    first = [(hit.record.id, hit.score) for hit in library.search.run(query).hits]
    later = build_library(settings)
    encoded: list[int] = []
    encode = later.embedder.encode_texts

    def counted(texts: Sequence[str]) -> Matrix:
        encoded.append(len(texts))
        return encode(texts)

    monkeypatch.setattr(later.embedder, "encode_texts", counted)
    assert [(hit.record.id, hit.score) for hit in later.search.run(query).hits] == first
    assert encoded == [1]  # the query only


def test_filters_combine_with_every_kind_of_query_and_apply_before_top_k(library: Library) -> None:
    ids = _fill(library)
    wanted = {ids["moon"], ids["clock"]}
    for name in ("moon", "clock"):
        library.catalog.update(ids[name], RecordPatch(metadata={"album": "night"}, description="an invoice"))
    night = parse_filter({"album": "night"})
    queries = [
        Query((TextTerm("a cup of coffee"),), k=2, filter=night),
        Query((ImageTerm(jpeg("coffee")),), k=2, filter=night),
        Query((StoredImageTerm(ids["coffee"]), TextTerm("people", -0.5)), k=2, filter=night),
        Query((TextTerm("invoice"),), k=2, filter=night, hybrid=True),
        Query((StoredImageTerm(ids["coffee"], region=(0.2, 0.2, 0.8, 0.8)),), k=2, filter=night),
    ]
    for query in queries:
        assert set(_ids(library, query)) == wanted, query
    by_format = parse_filter({"image.format": "JPEG", "image.width": {"$gte": 513}})
    assert all(h.record.width >= 513 for h in library.search.run(Query((TextTerm("x"),), k=10, filter=by_format)).hits)


def test_min_score_can_leave_nothing(library: Library) -> None:
    ids = _fill(library, ("astronaut", "coffee", "rocket"))
    coffee = ImageTerm(jpeg("coffee"))
    everything = library.search.run(Query((coffee,), k=3)).hits
    assert len(everything) == 3
    cut = everything[1].score
    kept = library.search.run(Query((coffee,), k=3, min_score=cut)).hits
    assert [h.record.id for h in kept] == [h.record.id for h in everything[:2]]
    assert library.search.run(Query((TextTerm("a rocket"),), k=3, min_score=1.0)).hits == []
    simple = library.search.simple(SimpleSearch(image=jpeg("coffee"), k=3, min_score=0.999)).hits
    assert [h.record.id for h in simple] == [ids["coffee"]]
    assert library.search.simple(SimpleSearch(image_id=ids["coffee"], k=3, min_score=0.999)).hits == []


def test_region_search_embeds_only_that_part(library: Library) -> None:
    ids = _fill(library, ("astronaut", "coffee", "rocket"))
    box = (0.25, 0.1, 0.75, 0.6)
    decoded = media.decode(jpeg("astronaut"), max_pixels=10**8)
    crop = encode(media.crop_region(decoded.image, box), "PNG")
    by_upload = library.search.run(Query((ImageTerm(crop),), k=3)).hits
    by_stored = library.search.run(Query((StoredImageTerm(ids["astronaut"], region=box),), k=2)).hits
    by_region = library.search.run(Query((ImageTerm(jpeg("astronaut"), region=box),), k=3)).hits
    assert [h.record.id for h in by_upload] == [h.record.id for h in by_region]
    others = [h for h in by_upload if h.record.id != ids["astronaut"]]  # the stored image is the query there
    assert [h.record.id for h in by_stored] == [h.record.id for h in others]
    for a, b in zip(by_stored, others, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-3)
    whole = library.search.run(Query((StoredImageTerm(ids["astronaut"]),), k=2)).hits
    assert [h.score for h in by_stored] != pytest.approx([h.score for h in whole], abs=1e-3)
    with pytest.raises(InvalidQuery, match="region needs an image"):
        library.search.simple(SimpleSearch(text="x", region=box))


# Duplicates


@pytest.mark.parametrize(
    "transpose",
    [
        Image.Transpose.FLIP_LEFT_RIGHT,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_180,
        Image.Transpose.ROTATE_270,
    ],
    ids=["mirror", "rotate-90", "rotate-180", "rotate-270"],
)
def test_mirrored_and_rotated_uploads_are_duplicates(library: Library, transpose: Image.Transpose) -> None:
    ids = _fill(library, ("astronaut", "coffee", "chelsea"))
    turned = library.ingest.add(
        encode(photo("chelsea").transpose(transpose), "JPEG", quality=90), filename="turned.jpg"
    )
    assert turned.status == "duplicate" and turned.image_id == ids["chelsea"]
    assert "chelsea.jpg" in turned.reason and "bits differ" in turned.reason and "similarity" in turned.reason
    assert library.catalog.count() == 3


@pytest.mark.parametrize(
    "update",
    [{"duplicate_variants": False}, {"duplicate_variant_similarity": 1.0}],
    ids=["variants-off", "vectors-must-agree"],
)
def test_a_turned_copy_needs_the_variants_and_agreeing_vectors(settings: Settings, update: dict[str, object]) -> None:
    """A turned hash alone is not enough: plain graphics match one by chance, so the vectors must agree too."""
    library = build_library(settings.model_copy(update=update))
    _fill(library, ("chelsea",))
    mirrored = encode(photo("chelsea").transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert library.ingest.add(mirrored, filename="m.jpg").status == "added"


def test_variant_hashes_match_hashes_of_the_turned_images() -> None:
    for name in ("astronaut", "rocket", "coins"):
        image = photo(name)
        own, variants = perceptual_hashes(image)
        assert own == perceptual_hash(image)
        real = {
            "mirrored": image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            "rotated 90°": image.transpose(Image.Transpose.ROTATE_90),
            "rotated 180°": image.transpose(Image.Transpose.ROTATE_180),
            "rotated 270°": image.transpose(Image.Transpose.ROTATE_270),
        }
        for label, turned in real.items():
            assert (variants[label] ^ perceptual_hash(turned)).bit_count() <= 4, (name, label)


def test_duplicate_rule_decisions() -> None:
    rule = DuplicateRule(max_distance=10, crop_distance=18, min_similarity=0.97)
    assert rule.is_duplicate(10, None) and rule.is_duplicate(3, 0.1)  # the pHash alone settles it
    assert rule.is_duplicate(16, 0.98)  # a crop: nearby hash, very close vectors
    assert not rule.is_duplicate(16, 0.96)  # vectors not close enough
    assert not rule.is_duplicate(19, 0.999)  # hash too far for a crop
    assert not rule.is_duplicate(16, None)  # vectors not compared
    assert rule.reach == 18
    off = DuplicateRule(max_distance=10, crop_distance=0, min_similarity=0.97)
    assert not off.uses_vectors and off.reach == 10 and not off.is_duplicate(12, 1.0)
    for bad in ({"max_distance": 40}, {"min_similarity": 1.5}):
        with pytest.raises(InvalidInput):
            DuplicateRule(**{"max_distance": 10, "crop_distance": 18, "min_similarity": 0.9, **bad})  # type: ignore[arg-type]


def test_a_close_phash_is_a_duplicate_only_when_the_colours_agree() -> None:
    rule = DuplicateRule(max_distance=10, crop_distance=18, min_similarity=0.97, max_colour_distance=30)
    assert rule.is_duplicate(4, None, 12.0) and not rule.is_duplicate(4, None, 45.0)
    assert not rule.is_duplicate(4, 0.999, 45.0)  # parted by colour: no crop either
    assert rule.is_duplicate(4, None, None)  # no layout to compare (no thumbnail nor original): the pHash decides
    assert rule.is_duplicate(16, 0.98)  # the crop rule is the vectors' to decide
    with pytest.raises(InvalidInput):
        DuplicateRule(10, 18, 0.97, -1.0)


def test_duplicate_review_does_not_group_look_alikes(settings: Settings) -> None:
    """Look-alike graphics share pHashes; only the photo and its edited copy are a group."""
    library = build_library(settings.model_copy(update={"duplicate_distance": 0, "duplicate_crop_distance": 0}))
    for n, picture in enumerate(look_alikes()):
        assert library.ingest.add(picture, filename=f"star-{n}.png").status == "added"
    original = library.ingest.add(jpeg("astronaut"), filename="astronaut.jpg").record
    edited = encode(ImageEnhance.Contrast(photo("astronaut")).enhance(1.5), "PNG")
    copy = library.ingest.add(edited, filename="astronaut.png").record
    assert original is not None and copy is not None
    groups = library.duplicates.groups(DuplicateRule(10, 0, 1.0, settings.duplicate_colour_distance))
    assert [{r.filename for r in group.records} for group in groups] == [{"astronaut.jpg", "astronaut.png"}]


def test_duplicate_review_reads_a_damaged_thumbnail_from_the_original(settings: Settings) -> None:
    """A thumbnail that no longer decodes (a damaged disk, a truncated copy) does not fail the review: the colour
    check reads the original instead, and the edited copy is still found."""
    library = build_library(settings.model_copy(update={"duplicate_distance": 0, "duplicate_crop_distance": 0}))
    original = library.ingest.add(jpeg("astronaut"), filename="astronaut.jpg").record
    edited = encode(ImageEnhance.Contrast(photo("astronaut")).enhance(1.5), "PNG")
    copy = library.ingest.add(edited, filename="astronaut.png").record
    assert original is not None and copy is not None
    library.blobs.put_thumbnail(original.id, b"\xff\xd8\xff")
    groups = library.duplicates.groups(DuplicateRule(10, 0, 1.0, settings.duplicate_colour_distance))
    assert [{r.filename for r in group.records} for group in groups] == [{"astronaut.jpg", "astronaut.png"}]


def test_crops_are_caught_by_vectors_and_a_nearby_hash(settings: Settings) -> None:
    """The tiny model's similarities are meaningless, so the thresholds are set to make the decision visible."""
    image = photo("camera")
    crop = encode(image.crop((0, 0, int(image.width * 0.93), int(image.height * 0.93))), "JPEG", quality=90)
    distance = (perceptual_hash(image) ^ perceptual_hash(Image.open(io.BytesIO(crop)))).bit_count()
    assert distance > settings.duplicate_distance  # the pHash alone lets this crop through
    strict = {"duplicate_crop_distance": 32, "duplicate_similarity": 1.0}
    lenient = {"duplicate_crop_distance": 32, "duplicate_similarity": 0.5}
    for update, status in ((strict, "added"), (lenient, "duplicate")):
        library = build_library(settings.model_copy(update={**update, "data_dir": settings.data_dir / status}))
        _fill(library, ("camera",))
        result = library.ingest.add(crop, filename="crop.jpg")
        assert result.status == status, result.reason
    assert "crop" in result.reason and "similarity" in result.reason


def test_close_pairs_and_groups_are_exact() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=3000, dtype=np.uint64)
    hashes[10] = hashes[2000] ^ np.uint64(0b1011)
    hashes[2500] = hashes[2000] ^ np.uint64(1 << 40)
    pairs = close_pairs(hashes, 4)
    found = set(zip(pairs.first.tolist(), pairs.second.tolist(), pairs.distance.tolist(), strict=True))
    assert found == {(10, 2000, 3), (10, 2500, 4), (2000, 2500, 1)}
    assert groups_of(list(zip(pairs.first.tolist(), pairs.second.tolist(), strict=True))) == [[10, 2000, 2500]]
    assert groups_of([(1, 2), (5, 6), (2, 3)]) == [[1, 2, 3], [5, 6]]


@pytest.mark.parametrize("reach", [0, 4, 10, 14])
def test_bucketed_close_pairs_are_those_of_comparing_every_pair(reach: int) -> None:
    rng = np.random.default_rng(reach)
    hashes = rng.integers(0, 2**64, size=6000, dtype=np.uint64)  # past the size where buckets take over
    for n in range(300):  # near copies, 0..16 bits off, and some identical hashes
        flips = rng.choice(64, size=int(rng.integers(0, 17)), replace=False)
        hashes[5999 - n] = hashes[n] ^ np.uint64(sum(1 << int(b) for b in flips))
    hashes[100:110] = hashes[42]
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    first, second = np.nonzero(np.triu(distances <= reach, k=1))
    expected = set(zip(first.tolist(), second.tolist(), distances[first, second].tolist(), strict=True))
    pairs = close_pairs(hashes, reach)
    found = list(zip(pairs.first.tolist(), pairs.second.tolist(), pairs.distance.tolist(), strict=True))
    assert len(found) == len(set(found)) and set(found) == expected and len(expected) > 50


def test_known_pairs_brought_up_to_date_are_those_found_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review after review while images come, go, change and the store lists them in another order: the pairs
    kept and updated are exactly those of finding every pair again."""
    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64, size=6000, dtype=np.uint64)
    for n in range(200):  # near copies so that there are pairs to keep and to lose
        hashes[5999 - n] = hashes[n] ^ np.uint64(1 << int(rng.integers(0, 64)))
    ids = [f"image-{n}" for n in range(len(hashes))]
    found_anew: list[int] = []

    def counted(found: np.ndarray, reach: int) -> duplicates.Pairs:
        found_anew.append(reach)
        return close_pairs(found, reach)

    monkeypatch.setattr(duplicates, "close_pairs", counted)
    known = KnownPairs()
    for step in range(4):
        pairs = known.pairs(ids, hashes, 14)
        expected = close_pairs(hashes, 14)
        assert [a.tolist() for a in (pairs.first, pairs.second, pairs.distance)] == [
            a.tolist() for a in (expected.first, expected.second, expected.distance)
        ]
        assert len(expected) > 200
        keep = rng.random(len(ids)) > 0.01  # 1% deleted
        ids, hashes = [i for i, k in zip(ids, keep, strict=True) if k], hashes[keep]
        hashes[:20] ^= np.uint64(0b10)  # 20 hashes changed (an image replaced under its id)
        added = rng.integers(0, 2**64, size=30, dtype=np.uint64)
        added[:10] = hashes[100:110] ^ np.uint64(0b100)  # new near copies of images already there
        ids, hashes = ids + [f"new-{step}-{n}" for n in range(30)], np.concatenate([hashes, added])
        order = rng.permutation(len(ids))  # listed in another order
        ids, hashes = [ids[n] for n in order], hashes[order]
    assert found_anew == [14]  # once: every later review was brought up to date
    assert len(known.pairs(ids, hashes, 10)) == len(close_pairs(hashes, 10))
    assert found_anew == [14, 10]  # another reach: found anew


def test_duplicate_review_decides_every_pair_by_vectors_however_many(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pairs the pHash alone does not settle are all compared by vectors, a chunk at a time: none is dropped
    (the review used to compare only the 200 000 closest and say nothing of the rest)."""
    loose = {"duplicate_distance": 0, "duplicate_variants": False, "duplicate_crop_distance": 0}
    library = build_library(settings.model_copy(update=loose))
    ids = _fill(library, ("astronaut", "coffee", "rocket"))
    coffee = photo("coffee")
    width, height = coffee.size
    copy = library.ingest.add(
        encode(coffee.crop((int(width * 0.02), int(height * 0.02), width, height))), filename="c.jpg"
    )
    contrast = library.ingest.add(
        encode(ImageEnhance.Contrast(photo("astronaut")).enhance(1.5), "PNG"), filename="a.png"
    )
    assert copy.record is not None and contrast.record is not None
    monkeypatch.setattr(duplicate_review, "_MAX_VECTOR_PAIRS", 1, raising=False)  # the old cap, at its smallest
    monkeypatch.setattr(duplicate_review, "_VECTOR_PAIRS_AT_ONCE", 1, raising=False)
    groups = library.duplicates.groups(DuplicateRule(2, 10, 0.5))  # both pairs 4-8 bits apart: vectors decide
    assert [{r.id for r in group.records} for group in groups] == [
        {ids["astronaut"], contrast.record.id},
        {ids["coffee"], copy.record.id},
    ]
    assert all(similarity is not None for group in groups for *_, similarity in group.links)
    # Visited again, with a new crop of the rocket: only its pair's vectors are read, and every group is there.
    rocket = photo("rocket")
    width, height = rocket.size
    cropped = library.ingest.add(encode(rocket.crop((int(width * 0.02), int(height * 0.02), width, height))))
    assert cropped.record is not None
    store = library.pairing.store
    read_vectors, asked = store.get_vectors, []

    def counted(ids: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        asked.extend(ids)
        return read_vectors(ids)

    monkeypatch.setattr(store, "get_vectors", counted)
    again = library.duplicates.groups(DuplicateRule(2, 10, 0.5))
    assert sorted(asked) == sorted([ids["rocket"], cropped.record.id])
    assert [{r.id for r in group.records} for group in again] == [
        {ids["astronaut"], contrast.record.id},
        {ids["coffee"], copy.record.id},
        {ids["rocket"], cropped.record.id},
    ]


def test_an_image_deleted_during_the_review_joins_no_group(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review reads every pHash first and the records of what it found last: an image deleted in between
    (another user, another process) is left out, and never joins two images through itself."""
    loose = {"duplicate_distance": 0, "duplicate_variants": False, "duplicate_crop_distance": 0}
    library = build_library(settings.model_copy(update=loose))
    ids = _fill(library, ("astronaut", "coffee"))
    coffee = photo("coffee")
    width, height = coffee.size
    copy = library.ingest.add(
        encode(coffee.crop((int(width * 0.02), int(height * 0.02), width, height))), filename="c.jpg"
    )
    assert copy.record is not None
    pair = {ids["coffee"], copy.record.id}
    assert [{r.id for r in g.records} for g in library.duplicates.groups(DuplicateRule(10, 0, 1.0))] == [pair]
    store = library.pairing.store
    read_phashes = store.phashes

    def read_then_delete() -> tuple[list[str], np.ndarray]:
        found = read_phashes()
        library.catalog.delete(ids["coffee"])
        return found

    monkeypatch.setattr(store, "phashes", read_then_delete)
    assert library.duplicates.groups(DuplicateRule(10, 0, 1.0)) == []
    monkeypatch.undo()
    assert library.duplicates.groups(DuplicateRule(10, 0, 1.0)) == []  # one of the pair is gone for good


def test_duplicate_review_groups_and_keep_one(settings: Settings) -> None:
    loose = {"duplicate_distance": 0, "duplicate_variants": False, "duplicate_crop_distance": 0}
    library = build_library(settings.model_copy(update=loose))
    ids = _fill(library, ("astronaut", "coffee", "rocket"))
    coffee = photo("coffee")
    width, height = coffee.size
    copy = library.ingest.add(
        encode(coffee.crop((int(width * 0.02), int(height * 0.02), width, height))), filename="c.jpg"
    )
    contrast = encode(ImageEnhance.Contrast(photo("astronaut")).enhance(1.5), "PNG")
    smaller = library.ingest.add(contrast, filename="astronaut.png").record
    assert copy.record is not None and smaller is not None
    groups = library.duplicates.groups(DuplicateRule(10, 0, 1.0))
    assert [{r.id for r in group.records} for group in groups] == [
        {ids["astronaut"], smaller.id},  # 4 bits apart; equal sizes keep the library's order
        {ids["coffee"], copy.record.id},  # 8 bits apart
    ]
    assert sorted(distance for group in groups for _, _, distance, _ in group.links) == [4, 8]
    assert [len(g.records) for g in library.duplicates.groups(DuplicateRule(5, 0, 1.0))] == [2]
    assert library.duplicates.groups(DuplicateRule(0, 0, 1.0)) == []
    with pytest.raises(InvalidInput, match="cannot also be deleted"):
        library.duplicates.keep_one(smaller.id, [smaller.id])
    deleted = library.duplicates.keep_one(smaller.id, [ids["astronaut"]])
    assert [r.id for r in deleted] == [ids["astronaut"]]
    assert library.catalog.count() == 4 and len(library.duplicates.groups(DuplicateRule(10, 0, 1.0))) == 1


# GPS


def _jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "Canon EOS 5D"
    exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    return encode(photo("rocket"), "JPEG", quality=90, exif=exif.tobytes())


def _scan(data: bytes) -> bytes:
    """A JPEG's entropy-coded image data: from the start-of-scan marker on."""
    return data[data.index(b"\xff\xda") :]


def test_gps_is_kept_by_default(library: Library) -> None:
    record = library.ingest.add(_jpeg_with_gps(), filename="paris.jpg").record
    assert record is not None and record.gps_lat == pytest.approx(48.858333) and record.camera == "Canon EOS 5D"


def test_strip_gps_rewrites_only_the_exif_of_the_stored_file(settings: Settings) -> None:
    library = build_library(settings.model_copy(update={"strip_gps": True}))
    uploaded = _jpeg_with_gps()
    record = library.ingest.add(uploaded, filename="paris.jpg").record
    assert record is not None
    assert (record.gps_lat, record.gps_lon) == (None, None) and record.camera == "Canon EOS 5D"
    assert record.file_hash == file_hash(uploaded) and record.id.endswith(file_hash(uploaded)[:8])
    _, stored = library.catalog.original_file(record.id)
    data = stored.read_bytes() if not isinstance(stored, bytes) else stored
    assert data != uploaded and record.size == len(data)
    assert _scan(data) == _scan(uploaded)  # the pixels are untouched
    exif = Image.open(io.BytesIO(data)).getexif()
    assert not exif.get_ifd(GPS_IFD) and exif[0x0110] == "Canon EOS 5D"
    again = library.ingest.add(uploaded, filename="again.jpg")
    assert again.status == "duplicate" and again.distance == 0  # the identity is still the uploaded file


def test_strip_gps_for_png_and_webp_keeps_the_pixels() -> None:
    exif = Image.Exif()
    exif[GPS_IFD] = {1: "S", 2: (33.0, 51.0, 0.0), 3: "E", 4: (151.0, 12.0, 0.0)}
    exif[0x0110] = "Pixel"
    for fmt, options in (("PNG", {}), ("WEBP", {"lossless": True})):
        original = encode(photo("coins"), fmt, exif=exif.tobytes(), **options)
        cleaned = without_gps(original, fmt)
        opened = Image.open(io.BytesIO(cleaned))
        assert not opened.getexif().get_ifd(GPS_IFD) and opened.getexif()[0x0110] == "Pixel", fmt
        assert np.array_equal(
            np.asarray(opened.convert("RGB")), np.asarray(Image.open(io.BytesIO(original)).convert("RGB"))
        )
    plain = jpeg("moon")
    assert without_gps(plain, "JPEG") == plain  # nothing to remove: the same bytes
