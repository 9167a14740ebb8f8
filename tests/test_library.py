from __future__ import annotations

import functools
import io
import itertools
import os
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from imagematch.factory import build_library
from imagematch.fingerprint import hamming, perceptual_hash
from imagematch.library import RESET_PHRASE, Library, SimpleSearch, Upload
from imagematch.records import (
    ImageMatchError,
    ImageTerm,
    InvalidImage,
    InvalidInput,
    InvalidQuery,
    NotFound,
    Query,
    RecordPatch,
    StoredImageTerm,
    StoreMismatch,
    TextTerm,
    TooLarge,
)
from imagematch.settings import Settings
from testkit.images import PHOTOS, encode, jpeg, look_alikes, photo


def _fill(library: Library, names: tuple[str, ...] = PHOTOS) -> dict[str, str]:
    ids = {}
    for name in names:
        result = library.ingest.add(jpeg(name), filename=f"{name}.jpg")
        assert result.status == "added", result
        assert result.record is not None
        ids[name] = result.record.id
    return ids


def _ranking(library: Library, request: SimpleSearch) -> list[str]:
    return [hit.record.id for hit in library.search.simple(request).hits]


def test_an_image_searched_by_itself_comes_first(library: Library) -> None:
    ids = _fill(library)
    for name in ("astronaut", "coins", "retina"):
        hits = library.search.simple(SimpleSearch(image=jpeg(name), k=3)).hits
        assert hits[0].record.id == ids[name]
        assert hits[0].score >= 0.99
        by_id = library.search.simple(SimpleSearch(image_id=ids[name], k=2)).hits
        assert [hit.record.id for hit in by_id] == [hit.record.id for hit in hits[1:]]  # all but itself


def test_weight_one_is_image_only_and_zero_is_text_only(library: Library) -> None:
    _fill(library)
    image, text = jpeg("rocket"), "a rocket on a launch pad"
    k = len(PHOTOS)
    image_only = _ranking(library, SimpleSearch(image=image, k=k))
    text_only = _ranking(library, SimpleSearch(text=text, k=k))
    assert _ranking(library, SimpleSearch(text=text, image=image, image_weight=1.0, k=k)) == image_only
    assert _ranking(library, SimpleSearch(text=text, image=image, image_weight=0.0, k=k)) == text_only
    mixed = library.search.simple(SimpleSearch(text=text, image=image, image_weight=0.5, k=k)).hits
    assert [h.score for h in mixed] == sorted((h.score for h in mixed), reverse=True)


def test_results_are_ranked_best_first_with_scores(library: Library) -> None:
    _fill(library)
    hits = library.search.simple(SimpleSearch(text="a cup of coffee", k=5)).hits
    assert len(hits) == 5
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)


@pytest.mark.parametrize(
    "edit",
    [
        lambda im: encode(im, "JPEG", quality=40),
        lambda im: encode(im.resize((im.width // 2, im.height // 2)), "JPEG"),
        lambda im: encode(im, "PNG"),
        lambda im: encode(ImageEnhance.Brightness(im).enhance(1.1), "WEBP", quality=80),
    ],
    ids=["jpeg-q40", "half-size", "png", "brighter-webp"],
)
def test_near_identical_copies_are_duplicates(library: Library, edit: object) -> None:
    ids = _fill(library, ("astronaut", "coffee"))
    before = library.catalog.count()
    result = library.ingest.add(edit(photo("coffee")), filename="copy.jpg")  # type: ignore[operator]
    assert result.status == "duplicate"
    assert result.existing is not None and result.existing.id == ids["coffee"]
    assert library.catalog.count() == before


def test_look_alike_graphics_in_other_colours_are_all_stored(library: Library) -> None:
    """Their pHashes are within the duplicate distance, yet they are different pictures: the colours tell."""
    pictures = look_alikes()
    hashes = [perceptual_hash(Image.open(io.BytesIO(picture))) for picture in pictures]
    assert all(hamming(a, b) <= library.settings.duplicate_distance for a, b in itertools.combinations(hashes, 2))
    for n, picture in enumerate(pictures):
        result = library.ingest.add(picture, filename=f"star-{n}.png")
        assert result.status == "added", result.reason
    copy = library.ingest.add(encode(Image.open(io.BytesIO(pictures[1])), "JPEG", quality=50), filename="copy.jpg")
    assert copy.status == "duplicate" and copy.existing is not None and copy.existing.filename == "star-1.png"
    assert "star-1.png" in copy.reason and "pHash bits differ" in copy.reason and "ΔE" in copy.reason
    assert library.catalog.count() == 3


@pytest.mark.parametrize("batch", [1, 16], ids=["batch-after-batch", "one-batch"])
def test_a_batch_stores_look_alikes_and_refuses_a_copy(settings: Settings, batch: int) -> None:
    """The same decision whether the other picture is already stored or waits in the same batch."""
    library = build_library(settings.model_copy(update={"embed_batch_size": batch}))
    pictures = look_alikes()
    copy = encode(Image.open(io.BytesIO(pictures[0])).resize((128, 128)), "JPEG", quality=80)
    uploads = [Upload(f"star-{n}.png", functools.partial(bytes, data)) for n, data in enumerate(pictures)]
    results = library.ingest.add_many([*uploads, Upload("small-copy.jpg", lambda: copy)])
    by_name = {r.filename: r for r in results}  # duplicates are reported before the batch is written
    assert {name: r.status for name, r in by_name.items()} == {
        "star-0.png": "added",
        "star-1.png": "added",
        "star-2.png": "added",
        "small-copy.jpg": "duplicate",
    }
    refused = by_name["small-copy.jpg"]
    assert refused.existing is not None and refused.existing.filename == "star-0.png", refused.reason
    assert library.catalog.count() == 3


def test_a_stored_image_without_its_thumbnail_is_compared_by_its_original(library: Library) -> None:
    first, second = look_alikes()[:2]
    stored = library.ingest.add(first, filename="star.png").record
    assert stored is not None
    thumbnail = library.blobs.thumbnail_path(stored.id)
    assert thumbnail is not None
    thumbnail.unlink()
    assert library.ingest.add(second, filename="other-star.png").status == "added"
    copy = library.ingest.add(encode(Image.open(io.BytesIO(first)), "JPEG", quality=50), filename="copy.jpg")
    assert copy.status == "duplicate" and copy.image_id == stored.id


@pytest.mark.parametrize(
    "edit",
    [
        lambda im: encode(ImageEnhance.Brightness(im).enhance(1.15), "JPEG"),
        lambda im: encode(im.crop((im.width // 50, im.height // 50, im.width * 49 // 50, im.height * 49 // 50))),
    ],
    ids=["brightness-15", "crop-4"],
)
def test_mildly_edited_photos_are_still_duplicates(library: Library, edit: object) -> None:
    ids = _fill(library, ("astronaut", "chelsea", "coffee"))
    for name in ids:
        result = library.ingest.add(edit(photo(name)), filename=f"edited-{name}.jpg")  # type: ignore[operator]
        assert result.status == "duplicate" and result.image_id == ids[name], result.reason
    assert library.catalog.count() == 3


def test_identical_file_is_a_duplicate_with_distance_zero(library: Library) -> None:
    ids = _fill(library, ("moon",))
    result = library.ingest.add(jpeg("moon"), filename="again.jpg")
    assert result.status == "duplicate" and result.distance == 0 and result.image_id == ids["moon"]


def test_distinct_photos_are_not_duplicates(library: Library) -> None:
    _fill(library)  # every photo added: none was taken for another
    assert library.catalog.count() == len(PHOTOS)


def test_ids_are_deterministic_and_show_the_phash(library: Library, settings: Settings, tmp_path: Path) -> None:
    first = library.ingest.add(jpeg("clock"), filename="clock.jpg").record
    assert first is not None
    assert first.id.startswith(first.phash + "-")
    other = build_library(settings.model_copy(update={"data_dir": tmp_path / "other"}))
    second = other.ingest.add(jpeg("clock"), filename="renamed.jpg").record
    assert second is not None and second.id == first.id


def test_bad_inputs_are_refused_and_change_nothing(library: Library, settings: Settings) -> None:
    ids = _fill(library, ("astronaut",))
    bad: list[tuple[bytes, dict[str, object], type[ImageMatchError]]] = [
        (b"", {}, InvalidImage),
        (b"\x00\x01garbage" * 50, {}, InvalidImage),
        (jpeg("coins")[:2000], {}, InvalidImage),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", {}, InvalidImage),
        (jpeg("coins"), {"description": "x" * 10_000}, InvalidInput),
        (jpeg("coins"), {"description": "bell\x07"}, InvalidInput),
        (jpeg("coins"), {"metadata": {"nested": {"a": 1}}}, InvalidInput),
        (jpeg("coins"), {"metadata": {1: "x"}}, InvalidInput),
        (jpeg("coins"), {"metadata": ["not", "an", "object"]}, InvalidInput),
        (b"x" * (settings.max_upload_bytes + 1), {}, TooLarge),
    ]
    for data, extra, error in bad:
        with pytest.raises(error):
            library.ingest.add(data, filename="bad.jpg", **extra)  # type: ignore[arg-type]
    assert library.catalog.count() == 1
    assert library.catalog.get(ids["astronaut"]).filename == "astronaut.jpg"


def test_pixel_cap_refuses_decompression_bombs(settings: Settings) -> None:
    library = build_library(settings.model_copy(update={"max_pixels": 100_000}))
    with pytest.raises(TooLarge, match="pixels"):
        library.ingest.add(encode(Image.new("L", (1000, 1000)), "PNG"), filename="bomb.png")
    assert library.catalog.count() == 0


def test_search_input_errors(library: Library) -> None:
    _fill(library, ("astronaut",))
    for request in (
        SimpleSearch(),
        SimpleSearch(text="x", k=0),
        SimpleSearch(text="x", k=-1),
        SimpleSearch(text="x", k=10**9),
        SimpleSearch(text="x", image=jpeg("coffee"), image_weight=1.5),
        SimpleSearch(text="x", image=jpeg("coffee"), image_weight=float("nan")),
    ):
        with pytest.raises(InvalidQuery):
            library.search.simple(request)
    with pytest.raises(NotFound):
        library.search.simple(SimpleSearch(image_id="0000000000000000-00000000"))
    with pytest.raises(InvalidQuery, match="cancel"):
        library.search.run(Query((TextTerm("a dog", 1.0), TextTerm("a dog", -1.0))))


def test_long_text_is_truncated_by_tokens_and_reported(library: Library) -> None:
    _fill(library, ("astronaut",))
    assert not library.search.simple(SimpleSearch(text="a short query")).truncated
    assert library.search.simple(SimpleSearch(text=" ".join(["word"] * 100))).truncated


def test_metadata_filter_is_applied_before_top_k(library: Library) -> None:
    ids = _fill(library)
    library.catalog.update(ids["coins"], RecordPatch(metadata={"album": "money", "year": 2020}))
    library.catalog.update(ids["moon"], RecordPatch(metadata={"album": "sky", "year": 2021}))
    from imagematch.filters import parse_filter

    hits = library.search.simple(SimpleSearch(text="anything", k=1, filter=parse_filter({"album": "sky"}))).hits
    assert [h.record.id for h in hits] == [ids["moon"]]
    hits = library.search.simple(SimpleSearch(text="x", k=10, filter=parse_filter({"year": {"$gte": 2020}}))).hits
    assert {h.record.id for h in hits} == {ids["coins"], ids["moon"]}


def test_store_built_with_another_model_is_refused(settings: Settings, other_model_dir: Path) -> None:
    _fill(build_library(settings), ("astronaut",))
    other = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    with pytest.raises(StoreMismatch, match="imagematch reindex"):
        other.verify_model()
    with pytest.raises(StoreMismatch):
        other.ingest.add(jpeg("coffee"), filename="coffee.jpg")


def test_reindex_switches_the_library_to_the_new_model(settings: Settings, other_model_dir: Path) -> None:
    first = build_library(settings)
    ids = _fill(first, ("astronaut", "coffee", "rocket"))
    first.catalog.update(ids["rocket"], RecordPatch(description="Saturn V", metadata={"mission": "Apollo"}))
    library = build_library(settings.model_copy(update={"model": f"local-dir:{other_model_dir}"}))
    progress: list[tuple[int, int]] = []
    assert library.maintenance.reindex(on_progress=lambda done, total: progress.append((done, total))) == 3
    assert progress[-1] == (3, 3)
    library.verify_model()
    assert library.store.stored_model() == (library.embedder.model_id, library.embedder.dim)
    hit = library.search.simple(SimpleSearch(image=jpeg("coffee"), k=1)).hits[0]
    assert hit.record.id == ids["coffee"] and hit.score >= 0.99
    rocket = library.catalog.get(ids["rocket"])
    assert rocket.model_id == library.embedder.model_id
    assert (rocket.description, rocket.metadata) == ("Saturn V", {"mission": "Apollo"})


def test_reset_needs_the_exact_phrase(library: Library) -> None:
    ids = _fill(library, ("astronaut", "coffee"))
    for wrong in ("", "delete all", "yes"):
        with pytest.raises(InvalidInput):
            library.catalog.reset(wrong)
    assert library.catalog.count() == 2
    assert library.catalog.reset(RESET_PHRASE) == 2
    assert library.catalog.count() == 0
    assert library.blobs.original_path(ids["coffee"]) is None
    assert library.ingest.add(jpeg("coffee"), filename="coffee.jpg").status == "added"


def test_add_many_reports_each_file_and_rerun_adds_nothing(library: Library, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        (folder / f"{name}.jpg").write_bytes(jpeg(name))
    (folder / "copy-of-coffee.png").write_bytes(encode(photo("coffee"), "PNG"))
    (folder / "notes.jpg").write_text("not an image")
    uploads = [Upload.from_path(p) for p in sorted(folder.iterdir())]
    seen: list[str] = []
    results = library.ingest.add_many(uploads, on_result=lambda r: seen.append(r.status))
    statuses = {Path(r.filename).name: r.status for r in results}
    assert statuses["notes.jpg"] == "failed"
    assert sorted([statuses["coffee.jpg"], statuses["copy-of-coffee.png"]]) == ["added", "duplicate"]
    assert sum(s == "added" for s in statuses.values()) == len(PHOTOS)
    assert len(seen) == len(uploads)
    again = library.ingest.add_many([Upload.from_path(p) for p in sorted(folder.iterdir())])
    assert not [r for r in again if r.status == "added"]
    assert library.catalog.count() == len(PHOTOS)


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are set on Linux only")
def test_bulk_decoding_yields_the_cores_to_the_model(library: Library) -> None:
    """The threads that decode ahead of the model run at the lowest priority, so they never preempt its threads;
    the caller's own priority is left as it was."""
    priorities: list[int] = []

    def read(name: str) -> bytes:
        priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return jpeg(name)

    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    results = library.ingest.add_many([Upload(f"{n}.jpg", lambda n=n: read(n)) for n in PHOTOS[:3]])  # type: ignore[misc]
    assert [r.status for r in results] == ["added"] * 3
    assert priorities == [19, 19, 19]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller


def test_edit_description_and_metadata(library: Library) -> None:
    ids = _fill(library, ("astronaut",))
    updated = library.catalog.update(ids["astronaut"], RecordPatch(description="Eileen Collins", metadata={"crew": 4}))
    assert updated.description == "Eileen Collins" and updated.metadata == {"crew": 4}
    assert library.catalog.get(ids["astronaut"]).metadata == {"crew": 4}
    vectors = library.store.get_vectors([ids["astronaut"]])[ids["astronaut"]]
    assert vectors[1] is not None  # the words vector follows the description
    with pytest.raises(InvalidInput):
        library.catalog.update(ids["astronaut"], RecordPatch(metadata={"": "empty key"}))
    with pytest.raises(NotFound):
        library.catalog.update("ffffffffffffffff-00000000", RecordPatch(description="x"))


def test_delete_removes_record_and_files(library: Library) -> None:
    ids = _fill(library, ("astronaut", "coffee"))
    _, original = library.catalog.original_file(ids["coffee"])
    assert isinstance(original, Path) and original.is_file()
    library.catalog.delete(ids["coffee"])
    assert not original.exists()
    with pytest.raises(NotFound):
        library.catalog.get(ids["coffee"])
    assert library.catalog.count() == 1
    with pytest.raises(NotFound):
        library.catalog.delete(ids["coffee"])


def test_stored_image_terms_use_the_stored_vector(library: Library) -> None:
    ids = _fill(library, ("astronaut", "coffee", "rocket"))
    by_id = library.search.run(Query((StoredImageTerm(ids["rocket"]),), k=2)).hits
    by_file = library.search.run(Query((ImageTerm(jpeg("rocket")),), k=3)).hits
    assert [hit.record.id for hit in by_id] == [hit.record.id for hit in by_file[1:]]
    assert [hit.score for hit in by_id] == pytest.approx([hit.score for hit in by_file[1:]], abs=1e-3)


def test_listing_is_paginated_newest_first(library: Library) -> None:
    ids = _fill(library)
    order = [ids[name] for name in reversed(PHOTOS)]
    first = library.catalog.page(limit=4)
    second = library.catalog.page(offset=4, limit=4)
    assert [r.id for r in first + second] == order[:8]
    assert [r.id for r in library.catalog.page(limit=3, newest_first=False)] == [ids[n] for n in PHOTOS[:3]]


def test_close_stops_the_librarys_threads(settings: Settings) -> None:
    library = build_library(settings)
    library.ingest.add(jpeg("coffee"), filename="coffee.jpg", description="a cup of coffee")
    before = set(threading.enumerate())  # other tests' libraries may have readers of their own
    assert library.search.run(Query((TextTerm("coffee"),), k=1)).hits  # a fused search starts the candidate readers
    readers = [t for t in set(threading.enumerate()) - before if t.name.startswith("candidates")]
    assert readers
    library.close()
    assert not any(t.is_alive() for t in readers)
