"""REST API under /api/v1. Thin: parse input, call the Library, shape the output."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from imagematch import __version__
from imagematch.filters import parse_filter
from imagematch.jobs import JobRunner
from imagematch.library import Library, SimpleSearch
from imagematch.records import InvalidInput, RecordPatch, TooLarge
from imagematch.web.schemas import (
    API,
    CaptionerOut,
    DuplicateOut,
    HealthOut,
    HitOut,
    ImageOut,
    ImagePage,
    ImagePatch,
    JobOut,
    ResetIn,
    ResetOut,
    RetryOut,
    SearchOut,
)

router = APIRouter(prefix=API, tags=["images"])

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


def read_upload(upload: UploadFile, limit: int) -> bytes:
    """Read at most limit bytes; a larger file is refused without reading it all."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the file is larger than the limit of {limit:,} bytes")
    return data


def parse_metadata(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(f"metadata is not valid JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object of key/value pairs")
    return value


@router.post(
    "/images",
    status_code=201,
    response_model=ImageOut,
    responses={409: {"model": DuplicateOut, "description": "A duplicate of a stored image; nothing was stored."}},
)
def upload_image(
    library: LibraryDep,
    file: Annotated[UploadFile, File(description="JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC/HEIF or AVIF")],
    description: Annotated[str, Form()] = "",
    metadata: Annotated[str, Form(description='A JSON object, e.g. {"album": "holiday"}')] = "",
) -> Any:
    data = read_upload(file, library.settings.max_upload_bytes)
    result = library.add(data, filename=file.filename or "", description=description, metadata=parse_metadata(metadata))
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
) -> ImagePage:
    flt = parse_filter(filter)
    records = library.page(offset=offset, limit=limit, newest_first=sort == "newest", flt=flt)
    return ImagePage(items=[ImageOut.of(r) for r in records], total=library.count(flt), offset=offset, limit=limit)


@router.get("/images/{image_id}", response_model=ImageOut)
def get_image(library: LibraryDep, image_id: str) -> ImageOut:
    return ImageOut.of(library.get(image_id))


@router.patch("/images/{image_id}", response_model=ImageOut)
def edit_image(library: LibraryDep, image_id: str, patch: ImagePatch) -> ImageOut:
    record = library.update(
        image_id, RecordPatch(description=patch.description, metadata=patch.metadata, caption=patch.caption)
    )
    return ImageOut.of(record)


@router.delete("/images/{image_id}", status_code=204)
def delete_image(library: LibraryDep, image_id: str) -> Response:
    library.delete(image_id)
    return Response(status_code=204)


def _file_response(found: Path | bytes, media_type: str, filename: str | None = None) -> Response:
    headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=31536000, immutable"}
    if isinstance(found, bytes):
        if filename:
            headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(filename)}"
        return Response(found, media_type=media_type, headers=headers)
    return FileResponse(
        found, media_type=media_type, headers=headers, filename=filename, content_disposition_type="inline"
    )


@router.get("/images/{image_id}/file", response_class=FileResponse)
def image_file(library: LibraryDep, image_id: str) -> Response:
    record, found = library.original_file(image_id)
    return _file_response(found, MEDIA_TYPES.get(record.format, "application/octet-stream"), record.filename)


@router.get("/images/{image_id}/thumbnail", response_class=FileResponse)
def image_thumbnail(library: LibraryDep, image_id: str) -> Response:
    return _file_response(library.thumbnail_file(image_id), "image/jpeg")


@router.get("/images/{image_id}/cutout", response_class=FileResponse)
def image_cutout(library: LibraryDep, image_id: str) -> Response:
    """The background-removed image the embedding was made from (404 when the whole image was used)."""
    return _file_response(library.cutout_file(image_id), "image/jpeg")


@router.post("/search", response_model=SearchOut, tags=["search"])
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
) -> SearchOut:
    data = read_upload(image, library.settings.max_upload_bytes) if image is not None and image.filename else None
    result = library.simple_search(
        SimpleSearch(
            text=text,
            image=data,
            image_id=image_id.strip(),
            image_weight=image_weight,
            k=k,
            filter=parse_filter(filter),
        )
    )
    return SearchOut(
        hits=[HitOut.of(h) for h in result.hits], truncated=result.truncated, took_ms=round(result.took_ms, 1)
    )


@router.post("/jobs/samples", status_code=202, response_model=JobOut, tags=["jobs"])
def start_samples_job(library: LibraryDep, jobs: JobsDep) -> JobOut:
    """Index every image in the configured samples folder, in the background. Poll the job for progress."""
    return JobOut.of(jobs.start_folder(library.settings.samples_dir))


@router.get("/jobs", response_model=list[JobOut], tags=["jobs"])
def list_jobs(jobs: JobsDep) -> list[JobOut]:
    return [JobOut.of(j) for j in jobs.recent()]


@router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
def get_job(jobs: JobsDep, job_id: str) -> JobOut:
    return JobOut.of(jobs.get(job_id))


@router.post("/reset", response_model=ResetOut, tags=["admin"])
def reset(library: LibraryDep, body: ResetIn) -> ResetOut:
    return ResetOut(deleted=library.reset(body.confirm))


@router.post("/images/{image_id}/caption/retry", response_model=RetryOut, tags=["captions"])
def retry_caption(library: LibraryDep, image_id: str) -> RetryOut:
    """Caption this image again (also after a user's correction, which the new caption replaces)."""
    return RetryOut(queued=library.retry_captions(image_id))


@router.post("/captions/retry", response_model=RetryOut, tags=["captions"])
def retry_failed_captions(library: LibraryDep) -> RetryOut:
    """Queue every failed caption again."""
    return RetryOut(queued=library.retry_captions())


@router.get("/health", response_model=HealthOut, tags=["admin"])
def health(library: LibraryDep, request: Request) -> HealthOut:
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
        captioner=CaptionerOut(**dataclasses.asdict(captions)),
        warnings=warnings,
    )
