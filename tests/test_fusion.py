"""How an image's picture and its own words make one score: words only ever add evidence, an image's score
depends on its own vectors alone, and a near-identical picture stays first when the image weighs most."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from imagematch.fusion import MAX_WORDS_STANDING, fuse, words_standing
from imagematch.library import Library, SimpleSearch
from imagematch.records import Query, RecordPatch, TextTerm
from testkit.images import PHOTOS, jpeg

Scores = npt.NDArray[np.float64]
_similarity = st.floats(-1.0, 1.0, allow_nan=False)
_standing = st.one_of(st.just(float("nan")), st.floats(-20.0, 20.0, allow_nan=False))


@st.composite
def _candidates(draw: st.DrawFn) -> tuple[Scores, Scores, Scores, float]:
    n = draw(st.integers(2, 30))
    image = np.array(draw(st.lists(_similarity, min_size=n, max_size=n)))
    standing = np.array(draw(st.lists(_standing, min_size=n, max_size=n)))
    baseline = image[: draw(st.integers(1, n))]
    return image, standing, baseline, draw(st.floats(0.0, 1.0))


def _rank(scores: Scores, index: int) -> int:
    return int((scores > scores[index]).sum())


@settings(max_examples=300, deadline=None)
@given(_candidates())
def test_words_never_lower_a_score_and_lift_it_at_most_towards_a_perfect_match(
    case: tuple[Scores, Scores, Scores, float],
) -> None:
    image, standing, baseline, weight = case
    fused = fuse(image, standing, baseline, weight)
    assert np.all(fused >= image - 1e-12)
    assert np.all(fused <= image + weight * np.maximum(1.0 - image, 0.0) + 1e-12)
    without_words = np.isnan(standing)
    assert np.array_equal(fused[without_words], image[without_words])


@settings(max_examples=300, deadline=None)
@given(_candidates(), st.data())
def test_describing_an_image_moves_no_other_image_and_never_lowers_its_rank(
    case: tuple[Scores, Scores, Scores, float], data: st.DataObject
) -> None:
    image, standing, baseline, weight = case
    described = data.draw(st.integers(0, len(image) - 1))
    before_standing = standing.copy()
    before_standing[described] = np.nan
    after_standing = standing.copy()
    after_standing[described] = data.draw(st.floats(-20.0, 20.0, allow_nan=False))
    before = fuse(image, before_standing, baseline, weight)
    after = fuse(image, after_standing, baseline, weight)
    others = np.arange(len(image)) != described
    assert np.array_equal(before[others], after[others])
    assert _rank(after, described) <= _rank(before, described)


@settings(max_examples=300, deadline=None)
@given(_candidates(), st.floats(0.9, 1.0))
def test_a_near_identical_picture_stays_first_at_image_weight_eighty_percent(
    case: tuple[Scores, Scores, Scores, float], top: float
) -> None:
    image, standing, baseline, _ = case
    image = np.minimum(image, top - 0.01)  # every other picture at least a little less alike
    image[0] = top
    weight = 0.3 * 0.2  # the default words weight times the text's share at image weight 0.8
    fused = fuse(image, standing, baseline, weight)
    assert int(np.argmax(fused)) == 0


def test_words_standing_is_robust_to_a_reference_that_matches_and_capped() -> None:
    references = np.linspace(0.40, 0.60, 24)
    matching = references.copy()
    matching[-1] = 0.95  # one reference text happens to be about the query
    words = np.array([0.5, 0.7, 0.99])
    assert np.allclose(words_standing(words, references), words_standing(words, matching), atol=0.5)
    assert words_standing(np.array([5.0]), references)[0] == MAX_WORDS_STANDING


def _smaller(name: str) -> bytes:
    image = Image.open(io.BytesIO(jpeg(name)))
    image.thumbnail((160, 160))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def _describe_all_but(library: Library, ids: dict[str, str], undescribed: set[str]) -> None:
    for n, (name, image_id) in enumerate(ids.items()):
        if name not in undescribed:
            library.catalog.update(image_id, RecordPatch(description=f"holiday picture number {n} from the old album"))


@pytest.fixture
def photo_ids(library: Library) -> dict[str, str]:
    ids = {}
    for name in PHOTOS:
        result = library.ingest.add(jpeg(name), filename=f"{name}.jpg")
        assert result.record is not None
        ids[name] = result.record.id
    return ids


def test_a_described_photo_keeps_first_place_for_its_smaller_copy(library: Library, photo_ids: dict[str, str]) -> None:
    """A smaller copy of a stored photo and words its description does not mention, at 80% image: the photo is
    first whether or not it, or the others, are described."""
    for undescribed in ({"coins"}, {"coins", "camera"}, set()):
        _describe_all_but(library, photo_ids, undescribed)
        for name in ("rocket", "astronaut", "coffee"):
            request = SimpleSearch(text="a red circle", image=_smaller(name), image_weight=0.8, k=3)
            hits = library.search.simple(request).hits
            assert hits[0].record.id == photo_ids[name], (name, undescribed)


def test_an_unrelated_description_never_lowers_a_photo_in_text_search(
    library: Library, photo_ids: dict[str, str]
) -> None:
    queries = ("a rocket on a launch pad", "a cup of coffee", "a red circle")
    k = len(PHOTOS)
    for name in ("coins", "rocket", "moon"):
        before = {q: [h.record.id for h in library.search.run(Query((TextTerm(q),), k=k)).hits] for q in queries}
        library.catalog.update(photo_ids[name], RecordPatch(description="the view from a train window"))
        for query in queries:
            after = [h.record.id for h in library.search.run(Query((TextTerm(query),), k=k)).hits]
            assert after.index(photo_ids[name]) <= before[query].index(photo_ids[name]), (name, query)
