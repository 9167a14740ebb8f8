"""REST API under /api/v1. Thin: parse input, call the Library, shape the output."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette import datastructures

from imagematch import __version__
from imagematch.duplicates import DuplicateRule
from imagematch.files import IMAGE_SUFFIXES
from imagematch.filters import parse_filter
from imagematch.jobs import JobRunner
from imagematch.library import Library, SimpleSearch
from imagematch.media import ACCEPTED_FORMATS
from imagematch.query_syntax import parse_region
from imagematch.records import (
    ImageRecord,
    ImageTerm,
    InvalidInput,
    InvalidQuery,
    PageCursor,
    QueryTerm,
    RecordPatch,
    SearchResult,
    StoredImageTerm,
    TextTerm,
    TooLarge,
    check_region,
)
from imagematch.records import (
    Query as SearchQuery,
)
from imagematch.shapes import search_fields
from imagematch.validation import load_json
from imagematch.web.head import StoredFileResponse
from imagematch.web.schemas import (
    API,
    ERROR_RESPONSES,
    CaptionerOut,
    DuplicateGroupOut,
    DuplicateGroupsOut,
    DuplicateLinkOut,
    DuplicateOut,
    HealthOut,
    ImageOut,
    ImagePage,
    ImagePatch,
    JobOut,
    PublicHealthOut,
    QueryIn,
    ReindexIn,
    ResetIn,
    ResetOut,
    ResolveIn,
    ResolveOut,
    RetryOut,
    SearchOut,
    TermIn,
    TuningOut,
)
from imagematch.web.templating import human_bytes

router = APIRouter(prefix=API, tags=["images"], responses=ERROR_RESPONSES)

MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
}


def get_library(request: Request) -> Library:
    library: Library = request.app.state.library
    return library


def get_jobs(request: Request) -> JobRunner:
    jobs: JobRunner = request.app.state.jobs
    return jobs


LibraryDep = Annotated[Library, Depends(get_library)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]


FORM_TYPES = frozenset({"multipart/form-data", "application/x-www-form-urlencoded"})


def form_body(hint: str) -> Any:
    """A dependency refusing a body that is not a form with 415 and `hint`, what to send instead.

    Read as a form, a JSON body is an empty one, and the answer would complain about fields the client did send.
    A request that declares no type is left to the form's own checks.
    """

    def check(request: Request) -> None:
        declared = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if declared and declared not in FORM_TYPES:
            raise HTTPException(415, f"{request.url.path} takes a form, not {declared}: {hint}")

    return Depends(check)


SEARCH_FORM = form_body(
    'send text, image, image_id, k and filter as multipart/form-data fields (curl -F text="a dog"), or send JSON '
    f'to POST {API}/search/query: {{"terms": [{{"text": "a dog"}}], "k": 10}}'
)
UPLOAD_FORM = form_body("send the image as multipart/form-data in a field named file (curl -F file=@photo.jpg)")


def read_upload(upload: datastructures.UploadFile, limit: int) -> bytes:
    """Read at most limit bytes; a larger file is refused without reading it all (API and pages alike)."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the file is larger than the limit of {human_bytes(limit)}")
    return data


def parse_metadata(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    value = load_json(text, "metadata")
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object of key/value pairs")
    return value


@router.post(
    "/images",
    status_code=201,
    response_model=ImageOut,
    responses={409: {"model": DuplicateOut, "description": "A duplicate of a stored image; nothing was stored."}},
    dependencies=[UPLOAD_FORM],
)
def upload_image(
    library: LibraryDep,
    file: Annotated[UploadFile, File(description="JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF or AVIF")],
    description: Annotated[str, Form()] = "",
    metadata: Annotated[str, Form(description='A JSON object, e.g. {"album": "holiday"}')] = "",
) -> Any:
    data = read_upload(file, library.settings.max_upload_bytes)
    result = library.ingest.add(
        data, filename=file.filename or "", description=description, metadata=parse_metadata(metadata)
    )
    if result.status == "duplicate" and result.existing is not None:
        body = DuplicateOut(
            detail=f"duplicate of {result.existing.id}: {result.reason}",
            existing_id=result.existing.id,
            distance=result.distance or 0,
            existing=ImageOut.of(result.existing),
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=409)
    assert result.record is not None
    return ImageOut.of(result.record)


@router.get("/images", response_model=ImagePage)
def list_images(
    library: LibraryDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    sort: Annotated[str, Query(pattern="^(newest|oldest)$")] = "newest",
    filter: Annotated[str, Query(description='JSON filter, e.g. {"album": "holiday"}')] = "",
    cursor: Annotated[
        str,
        Query(
            max_length=200,
            description="The `next` of the previous page: the page after it (offset is then ignored). Paging this "
            "way costs the same at any depth, and images added meanwhile are neither repeated nor skipped.",
        ),
    ] = "",
) -> ImagePage:
    flt = parse_filter(filter)
    after = PageCursor.decode(cursor) if cursor else None
    records = library.catalog.page(offset=offset, limit=limit, newest_first=sort == "newest", flt=flt, after=after)
    return ImagePage(
        items=[ImageOut.of(r) for r in records],
        total=library.catalog.count(flt),
        offset=0 if after else offset,
        limit=limit,
        next=PageCursor.of(records[-1]).encode() if len(records) == limit else None,
    )


@router.get("/images/{image_id}", response_model=ImageOut)
def get_image(library: LibraryDep, image_id: str) -> ImageOut:
    return ImageOut.of(library.catalog.get(image_id))


@router.patch("/images/{image_id}", response_model=ImageOut)
def edit_image(library: LibraryDep, image_id: str, patch: ImagePatch) -> ImageOut:
    record = library.catalog.update(
        image_id,
        RecordPatch(
            description=patch.description, metadata=patch.metadata, caption=patch.caption, ocr_text=patch.ocr_text
        ),
    )
    return ImageOut.of(record)


@router.delete("/images/{image_id}", status_code=204)
def delete_image(library: LibraryDep, image_id: str) -> Response:
    library.catalog.delete(image_id)
    return Response(status_code=204)


# Opened on its own, a stored file may run nothing and load nothing, whatever a browser makes of it.
FILE_CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox"


def _file_response(found: Path | bytes, media_type: str, filename: str | None = None) -> Response:
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": FILE_CONTENT_SECURITY_POLICY,
        "Cache-Control": "private, max-age=31536000, immutable",
    }
    if isinstance(found, bytes):
        if filename:
            headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(filename)}"
        return Response(found, media_type=media_type, headers=headers)
    return StoredFileResponse(  # a HEAD request gets the file's headers without a read of the file
        found, media_type=media_type, headers=headers, filename=filename, content_disposition_type="inline"
    )


def download_name(record: ImageRecord) -> str:
    """The uploaded name, plus the stored format's extension when the name claims another kind of file, so that
    a saved copy of `page.html` opens as the image it is (`page.html.jpg`)."""
    if Path(record.filename).suffix.lower() in IMAGE_SUFFIXES:
        return record.filename
    return f"{record.filename}.{ACCEPTED_FORMATS.get(record.format, 'bin')}"


@router.get("/images/{image_id}/file", response_class=FileResponse)
def image_file(library: LibraryDep, image_id: str) -> Response:
    record, found = library.catalog.original_file(image_id)
    return _file_response(found, MEDIA_TYPES.get(record.format, "application/octet-stream"), download_name(record))


@router.get("/images/{image_id}/thumbnail", response_class=FileResponse)
def image_thumbnail(library: LibraryDep, image_id: str) -> Response:
    return _file_response(library.catalog.thumbnail_file(image_id), "image/jpeg")


@router.get("/images/{image_id}/cutout", response_class=FileResponse)
def image_cutout(library: LibraryDep, image_id: str) -> Response:
    """The background-removed image the embedding was made from (404 when the whole image was used)."""
    return _file_response(library.catalog.cutout_file(image_id), "image/jpeg")


@router.post("/search", response_model=SearchOut, tags=["search"], dependencies=[SEARCH_FORM])
def search(
    library: LibraryDep,
    text: Annotated[str, Form(description="What to look for, in words.")] = "",
    image: Annotated[UploadFile | None, File(description="An example image.")] = None,
    image_id: Annotated[str, Form(description="A stored image to use as the example.")] = "",
    image_weight: Annotated[
        float, Form(description="With both text and an image: 1 = only the image counts, 0 = only the text.")
    ] = 0.5,
    k: Annotated[int, Form(description="How many results (1 to 1000).")] = 10,
    filter: Annotated[str, Form(description='JSON filter, e.g. {"album": "holiday"}')] = "",
    region: Annotated[str, Form(description="Part of the image only: left,top,right,bottom as fractions.")] = "",
    hybrid: Annotated[bool, Form(description="Fuse a keyword ranking of the words (BM25) with the vectors'.")] = False,
    min_score: Annotated[float | None, Form(description="Leave out matches whose score is below this.")] = None,
    cutoff: Annotated[
        Literal["off", "auto"] | None,
        Form(description="auto: leave out what this query's own cut-off finds irrelevant; default the setting."),
    ] = None,
) -> SearchOut:
    data = read_upload(image, library.settings.max_upload_bytes) if image is not None and image.filename else None
    result = library.search.simple(
        SimpleSearch(
            text=text,
            image=data,
            image_id=image_id.strip(),
            image_weight=image_weight,
            k=k,
            filter=parse_filter(filter),
            region=parse_region(region),
            hybrid=hybrid,
            min_score=min_score,
            cutoff=cutoff,
        )
    )
    return _search_out(result)


def _search_out(result: SearchResult) -> SearchOut:
    return SearchOut.model_validate(search_fields(result))


def _term(term: TermIn, limit: int) -> QueryTerm:
    given = [name for name in ("text", "image", "image_id") if getattr(term, name) is not None]
    if len(given) != 1:
        raise InvalidQuery("each term has exactly one of text, image or image_id")
    region = check_region(term.region) if term.region is not None else None
    if term.text is not None:
        if region is not None:
            raise InvalidQuery("a region belongs to an image term, not to text")
        return TextTerm(term.text, term.weight)
    if term.image_id is not None:
        return StoredImageTerm(term.image_id.strip(), term.weight, region=region)
    encoded = term.image or ""
    if len(encoded) > limit * 4 // 3 + 4:
        raise TooLarge(f"a query image is larger than the limit of {human_bytes(limit)}")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidQuery("image must be a base64-encoded image file") from None
    return ImageTerm(data, term.weight, region=region)


@router.post("/search/query", response_model=SearchOut, tags=["search"])
def search_query(library: LibraryDep, body: QueryIn) -> SearchOut:
    """Query arithmetic: a weighted sum of text, image and stored-image terms (weights may be negative), with
    optional keyword fusion (`hybrid`), relevance cut-offs (`min_score`, `cutoff`) and image regions."""
    terms = tuple(_term(term, library.settings.max_upload_bytes) for term in body.terms)
    query = SearchQuery(
        terms,
        k=body.k,
        filter=parse_filter(body.filter),
        hybrid=body.hybrid,
        min_score=body.min_score,
        cutoff=body.cutoff,
    )
    return _search_out(library.search.run(query))


@router.get("/duplicates", response_model=DuplicateGroupsOut, tags=["duplicates"])
def duplicates(
    library: LibraryDep,
    max_distance: Annotated[int | None, Query(ge=0, le=32, description="pHash bits; default the setting.")] = None,
    min_similarity: Annotated[
        float | None, Query(ge=0, le=1, description="Image-vector cosine for crops; default the setting.")
    ] = None,
    crop_distance: Annotated[
        int | None, Query(ge=0, le=32, description="pHash bits a crop may differ by; default the setting.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many groups, largest first.")] = 50,
) -> DuplicateGroupsOut:
    """Groups of near-duplicate images across the library."""
    default = library.duplicates.rule
    rule = DuplicateRule(
        default.max_distance if max_distance is None else max_distance,
        default.crop_distance if crop_distance is None else crop_distance,
        default.min_similarity if min_similarity is None else min_similarity,
        default.max_colour_distance,
    )
    groups = library.duplicates.groups(rule, limit=limit)
    return DuplicateGroupsOut(
        max_distance=rule.max_distance,
        crop_distance=rule.crop_distance,
        min_similarity=rule.min_similarity,
        groups=[
            DuplicateGroupOut(
                images=[ImageOut.of(r) for r in group.records],
                links=[DuplicateLinkOut(first=a, second=b, distance=d, similarity=s) for a, b, d, s in group.links],
            )
            for group in groups
        ],
    )


@router.post("/duplicates/resolve", response_model=ResolveOut, tags=["duplicates"])
def resolve_duplicates(library: LibraryDep, body: ResolveIn) -> ResolveOut:
    """Keep one image of a group and delete the others."""
    deleted = library.duplicates.keep_one(body.keep, body.delete)
    return ResolveOut(kept=body.keep, deleted=[r.id for r in deleted])


@router.post("/jobs/samples", status_code=202, response_model=JobOut, tags=["jobs"])
def start_samples_job(library: LibraryDep, jobs: JobsDep) -> JobOut:
    """Index every image in the configured samples folder, in the background. Poll the job for progress."""
    return JobOut.of(jobs.start_folder(library.settings.samples_dir))


@router.post("/jobs/reindex", status_code=202, response_model=JobOut, tags=["jobs"])
def start_reindex_job(jobs: JobsDep, body: ReindexIn) -> JobOut:
    """Re-embed every image with another model, in the background, while searches and uploads go on with the
    current one; at the end every server on the library moves to the new model. Poll the job for progress."""
    return JobOut.of(jobs.start_reindex(body.model))


@router.post("/jobs/ocr", status_code=202, response_model=JobOut, tags=["jobs"])
def start_text_reading_job(jobs: JobsDep) -> JobOut:
    """Read the text in every picture not read yet (images stored before text was read, or with
    IMAGEMATCH_OCR=off), in the background; a second job goes on where an interrupted one stopped."""
    return JobOut.of(jobs.start_text_reading())


@router.post("/jobs/tune", status_code=202, response_model=JobOut, tags=["jobs"])
def start_tuning_job(jobs: JobsDep) -> JobOut:
    """Tune the search to the library's own words (its descriptions and corrected captions), in the background:
    measured on held-out pairs and applied only when it finds them better. The job's message says what it did."""
    return JobOut.of(jobs.start_tuning())


@router.get("/tuning", response_model=TuningOut | None, tags=["tuning"])
def get_tuning(library: LibraryDep) -> TuningOut | None:
    """The search tuning in use for the library's model, or null."""
    return tuning_out(library)


@router.post("/tuning/undo", response_model=TuningOut | None, tags=["tuning"])
def undo_tuning(library: LibraryDep) -> TuningOut | None:
    """Go back to the tuning before the current one (or to none); 422 when nothing is tuned. Answers what is
    in use now."""
    library.tuning.undo()
    return tuning_out(library)


def tuning_out(library: Library) -> TuningOut | None:
    state = library.tuning.state()
    if state.current is None:
        return None
    current = state.current
    return TuningOut(
        version=current.version,
        tuned_at=current.tuned_at,
        pairs=current.pairs,
        held_out=current.held_out,
        before=current.before,
        after=current.after,
        learned=library.tuning.learned_words(state),
        earlier=len(state.earlier),
    )


@router.get("/jobs", response_model=list[JobOut], tags=["jobs"])
def list_jobs(jobs: JobsDep) -> list[JobOut]:
    return [JobOut.of(j) for j in jobs.recent()]


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
def get_job(jobs: JobsDep, job_id: str) -> JobOut:
    return JobOut.of(jobs.get(job_id))


@router.post("/reset", response_model=ResetOut, tags=["admin"])
def reset(library: LibraryDep, body: ResetIn) -> ResetOut:
    return ResetOut(deleted=library.catalog.reset(body.confirm))


@router.post("/images/{image_id}/caption/retry", response_model=RetryOut, tags=["captions"])
def retry_caption(library: LibraryDep, image_id: str) -> RetryOut:
    """Caption this image again (also after a user's correction, which the new caption replaces)."""
    return RetryOut(queued=library.captions.retry(image_id))


@router.post("/captions/retry", response_model=RetryOut, tags=["captions"])
def retry_failed_captions(library: LibraryDep) -> RetryOut:
    """Queue every failed caption again."""
    return RetryOut(queued=library.captions.retry())


@router.get("/health", response_model=HealthOut | PublicHealthOut, tags=["admin"])
def health(library: LibraryDep, request: Request) -> HealthOut | PublicHealthOut:
    """Open to load balancers even with authentication on; without credentials it says only that it is up."""
    if request.app.state.authenticator is not None and getattr(request.state, "auth", None) is None:
        return PublicHealthOut(status="ok")
    info = library.info()
    captions = request.app.state.captions.status()
    warnings = list(info.warnings)
    if captions.state == "error":
        warnings.append(f"captions are paused: {captions.message}")
    return HealthOut(
        status="ok",
        version=__version__,
        model=info.model_id,
        model_loaded=info.model_loaded,
        dimensions=info.dimensions,
        context_length=info.context_length,
        store=info.store,
        images=info.images,
        background_removal=info.background_removal,
        ocr=info.ocr,
        tuning=tuning_out(library),
        captioner=CaptionerOut(**dataclasses.asdict(captions)),
        warnings=warnings,
    )
