"""JSON shapes of the REST API (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagematch import shapes
from imagematch.jobs import MODEL_JOBS, JobStatus
from imagematch.records import ImageRecord, IngestResult
from imagematch.shapes import image_fields

API = shapes.API  # the prefix of every API route


class ErrorOut(BaseModel):
    detail: str = Field(description="What went wrong and what to change, in words.")


# Every error the API answers has the same shape: {"detail": "..."}.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The request body cannot be read (e.g. a form field over 1 MB)."},
    401: {"model": ErrorOut, "description": "Authentication is on and no valid API key or login came with it."},
    404: {"model": ErrorOut, "description": "No such image or job."},
    413: {"model": ErrorOut, "description": "The upload, or the image's pixel count, is over the limit."},
    415: {"model": ErrorOut, "description": "Not an accepted image format."},
    422: {"model": ErrorOut, "description": "Invalid input; the detail says what to change."},
    429: {"model": ErrorOut, "description": "Too many requests from this client; wait as long as Retry-After says."},
}


class Exif(BaseModel):
    taken_at: datetime | None = None
    camera: str = ""
    lens: str = ""
    gps_lat: float | None = None
    gps_lon: float | None = None


class Links(BaseModel):
    self: str
    file: str
    thumbnail: str
    page: str
    cutout: str | None = None


class TextLineOut(BaseModel):
    text: str
    box: list[float] = Field(description="Where the line stands: left, top, right, bottom as fractions.")
    confidence: float = Field(description="How sure the reader was, 0 to 1.")


class TextInImage(BaseModel):
    text: str = Field(description="The text in the picture that search counts: the correction, or the lines read.")
    status: Literal["pending", "read", "edited"] = Field(
        description="`pending`: not read yet (`imagematch ocr` reads it); `read`: read, maybe no text found; "
        "`edited`: a user's correction, which wins."
    )
    engine: str = Field(description="The reader that read it.")
    lines: list[TextLineOut] = Field(description="The lines read, top to bottom, with their boxes.")


class ImageOut(BaseModel):
    id: str = Field(description="Content-based id: the pHash, a dash, and 8 hex digits of the file's sha256.")
    phash: str = Field(description="64-bit perceptual hash, hex.")
    file_hash: str
    filename: str
    size: int = Field(description="Bytes of the stored original.")
    width: int
    height: int
    format: str
    created_at: datetime
    updated_at: datetime
    description: str
    caption: str
    caption_status: str
    caption_error: str
    caption_edited: bool
    metadata: dict[str, str | int | float | bool | list[str]] = Field(description="Custom metadata; a list holds tags.")
    model_id: str
    cutout: bool
    ocr: TextInImage
    exif: Exif
    links: Links

    @classmethod
    def of(cls, record: ImageRecord) -> ImageOut:
        return cls.model_validate(image_fields(record))


class ImagePage(BaseModel):
    items: list[ImageOut]
    total: int
    offset: int
    limit: int
    next: str | None = Field(
        None, description="Pass as `cursor` for the page after this one; null when this page is the last."
    )


class DuplicateOut(BaseModel):
    detail: str
    existing_id: str
    distance: int
    existing: ImageOut


class ImagePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, description="Replaces the description.")
    metadata: dict[str, Any] | None = Field(None, description="Replaces all custom metadata.")
    caption: str | None = Field(None, description="A correction of the automatic caption; it wins from then on.")
    ocr_text: str | None = Field(
        None, description="A correction of the text read in the picture; it wins from then on."
    )


class MatchOut(BaseModel):
    image: float = Field(description="Cosine similarity of the query with the image itself.")
    words: float | None = Field(
        description="Cosine similarity of the query's words with the image's own words (description, caption); "
        "null when they were not compared (no words in the query or the image, or words weight 0)."
    )
    words_added: float = Field(description="What the image's words added to its score (0 when they say nothing).")
    keywords: list[str] = Field(description="Hybrid search: the query's words found in the image's own text.")
    rank_fusion: float | None = Field(
        description="Hybrid search: the reciprocal rank fusion value results are ordered by (1/61 for a first "
        "place in one ranking); null otherwise."
    )


class HitOut(BaseModel):
    id: str
    score: float = Field(
        description="How well the image matches, on one scale in every mode: the cosine similarity to the query, "
        "plus what the image's own words add (`why`); min_score and cutoff act on it. Hybrid search orders by "
        "`why.rank_fusion` and keeps this score."
    )
    why: MatchOut = Field(description="The parts of the evidence behind the score and the rank.")
    thumbnail_url: str
    url: str
    image: ImageOut


class SearchOut(BaseModel):
    hits: list[HitOut]
    truncated: bool = Field(description="True when query text was cut at the model's context length.")
    took_ms: float = Field(description="Time the search took in the library, in milliseconds.")
    encode_ms: float = Field(description="Of took_ms, the time the model took to turn the query into a vector.")


class ResetIn(BaseModel):
    confirm: str = Field(description='Must be exactly "DELETE ALL".')


class ResetOut(BaseModel):
    deleted: int


class UploadOut(BaseModel):
    """One file's outcome in a multi-file upload."""

    filename: str
    status: Literal["added", "duplicate", "failed"]
    id: str | None = None
    reason: str = ""
    distance: int | None = None
    image: ImageOut | None = None

    @classmethod
    def of(cls, result: IngestResult) -> UploadOut:
        record = result.record or result.existing
        return cls(
            filename=result.filename,
            status=result.status,
            id=result.image_id,
            reason=result.reason,
            distance=result.distance,
            image=ImageOut.of(record) if record else None,
        )


class CaptionerOut(BaseModel):
    name: str
    state: Literal["off", "idle", "working", "stopped", "error"]
    message: str
    pending: int
    failed: int


class PublicHealthOut(BaseModel):
    """What anyone may learn with authentication on: the server is up (details need credentials)."""

    status: Literal["ok"]


class TuningOut(BaseModel):
    """The search tuning in use for the library's model (`imagematch tune`)."""

    version: str
    tuned_at: str
    pairs: int = Field(description="Image-text pairs it was trained on.")
    held_out: int = Field(description="Pairs it was measured on and never trained on.")
    before: dict[str, float] = Field(description="Held-out recall@1/5/10 and general@10 without it.")
    after: dict[str, float] = Field(
        description="The same with it; general@10 is the share of the general queries' top 10 left in place."
    )
    learned: list[str] = Field(description="The library's words it moved most.")
    earlier: int = Field(description="Earlier tunings an undo can go back to.")


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    model: str
    model_loaded: bool
    dimensions: int | None
    context_length: int | None
    store: str
    images: int
    background_removal: str
    ocr: str = Field(description="What reads the text in pictures at upload (IMAGEMATCH_OCR), or `off`.")
    tuning: TuningOut | None = Field(description="The search tuning in use (`imagematch tune`), or null.")
    captioner: CaptionerOut
    warnings: list[str] = []


class RetryOut(BaseModel):
    queued: int


class JobItemOut(BaseModel):
    filename: str
    status: Literal["added", "duplicate", "failed"]
    id: str | None = None
    reason: str = ""


class JobOut(BaseModel):
    id: str
    kind: str
    folder: str
    state: Literal["running", "done", "failed", "interrupted", "cancelled"]
    total: int
    done: int
    added: int = Field(description="Images added; for an `ocr` job, the pictures found to hold text.")
    duplicates: int
    failed: int
    items: list[JobItemOut]
    started_at: str
    finished_at: str
    message: str
    model: str = Field("", description="A reindex job: the model it switches the library to.")
    links: dict[str, str]

    @classmethod
    def of(cls, status: JobStatus) -> JobOut:
        return cls(
            id=status.id,
            kind=status.kind,
            folder=status.folder,
            state=status.state,
            total=status.total,
            done=status.done,
            added=status.added,
            duplicates=status.duplicates,
            failed=status.failed,
            items=[
                JobItemOut(filename=i.filename, status=i.status, id=i.image_id, reason=i.reason)  # type: ignore[arg-type]
                for i in status.items
            ],
            started_at=status.started_at,
            finished_at=status.finished_at,
            message=status.message,
            model=status.model,
            links={
                "self": f"{API}/jobs/{status.id}",
                "page": f"/model?job={status.id}" if status.kind in MODEL_JOBS else f"/upload-samples?job={status.id}",
            },
        )


class ReindexIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=1000,
        description="What IMAGEMATCH_MODEL takes: a preset (fast, balanced, best), an open_clip name/tag, "
        "hf-hub:org/repo or local-dir:/path.",
    )


class TermIn(BaseModel):
    """One term of a query: exactly one of text, image (base64) or image_id, with a weight that may be negative."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="Words.")
    image: str | None = Field(None, description="An image file, base64-encoded.")
    image_id: str | None = Field(None, description="A stored image.")
    weight: float = Field(1.0, description="Negative weights steer away from the term.")
    region: list[float] | None = Field(
        None, description="For images: [left, top, right, bottom] as fractions; only that rectangle counts."
    )


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terms: list[TermIn] = Field(description="1 to 16 weighted terms; the query is their weighted sum.")
    k: int = Field(10, description="How many results (1 to max_k).")
    filter: dict[str, Any] | None = Field(None, description='JSON filter, e.g. {"album": "holiday"}.')
    hybrid: bool = Field(False, description="Fuse a keyword (BM25) ranking of the words with the vector ranking.")
    min_score: float | None = Field(None, description="Leave out matches whose score is below this.")
    cutoff: Literal["off", "auto"] | None = Field(
        None, description="auto: leave out what this query's own cut-off finds irrelevant; default the setting."
    )


class DuplicateLinkOut(BaseModel):
    first: str
    second: str
    distance: int = Field(description="pHash bits that differ.")
    similarity: float | None = Field(description="Cosine of the image vectors, when they were compared.")


class DuplicateGroupOut(BaseModel):
    images: list[ImageOut]
    links: list[DuplicateLinkOut]


class DuplicateGroupsOut(BaseModel):
    max_distance: int
    crop_distance: int
    min_similarity: float
    groups: list[DuplicateGroupOut]


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep: str = Field(description="The image to keep.")
    delete: list[str] = Field(description="The images to delete.")


class ResolveOut(BaseModel):
    kept: str
    deleted: list[str]
