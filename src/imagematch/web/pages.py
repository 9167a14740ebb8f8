"""The HTML pages. Thin: read the form, call the Library or the JobRunner, render a template.

Every page works without JavaScript; the script in static/app.js only adds comfort (drag and drop, uploads one
by one with live status, live job progress, the search slider appearing as the query takes shape). A POST that
changes something answers with a redirect to a page that shows the result, so reloading never repeats it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile

from imagematch import media
from imagematch.files import image_files
from imagematch.jobs import JobRunner, JobStatus
from imagematch.library import RESET_PHRASE, Library, SimpleSearch
from imagematch.records import (
    Conflict,
    ImageMatchError,
    IngestResult,
    InvalidInput,
    InvalidQuery,
    Metadata,
    NotFound,
    RecordPatch,
    TooLarge,
)
from imagematch.validation import clean_filename
from imagematch.web.api import JobsDep, LibraryDep
from imagematch.web.csrf import require_token
from imagematch.web.errors import status_for
from imagematch.web.forms import editable_value, metadata_from_rows, one_key_filter
from imagematch.web.query_images import QueryImageStore
from imagematch.web.templating import STATIC_DIR, human_bytes, render

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(require_token)

BROWSE_PAGE_SIZE = 24
RECENT_ON_HOME = 8
DEFAULT_K = 12
DEFAULT_IMAGE_WEIGHT = "0.5"
QUERY_IMAGE_BUDGET = 64 * 1024 * 1024
NOTICES = {
    "saved": "Changes saved.",
    "caption-queued": "Captioning again; reload in a moment to see the new caption.",
    "deleted": "The image was deleted.",
}


def install(app: FastAPI) -> None:
    """Add the pages, their static files and the store of uploaded query images to the app."""
    settings = app.state.settings
    app.state.query_images = QueryImageStore(max(QUERY_IMAGE_BUDGET, settings.max_upload_bytes * 2))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(router)


def _query_images(request: Request) -> QueryImageStore:
    store: QueryImageStore = request.app.state.query_images
    return store


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def chosen_files(field: str) -> Callable[[Request], Awaitable[list[UploadFile]]]:
    """A dependency giving the files chosen in a form's file input.

    Read from the form itself because a file input left empty arrives as an empty string, which a
    File() parameter would refuse as invalid input.
    """

    async def files(request: Request) -> list[UploadFile]:
        form = await request.form()
        return [item for item in form.getlist(field) if isinstance(item, UploadFile) and item.filename]

    return files


def _read_limited(upload: UploadFile, limit: int) -> bytes:
    """At most limit bytes; a larger file is refused without reading it all."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"the file is larger than the limit of {human_bytes(limit)}")
    return data


# Home: upload and search


def _home(library: Library, **context: object) -> dict[str, object]:
    return {
        "section": "home",
        "recent": library.page(limit=RECENT_ON_HOME),
        "search": SearchForm(),
        "description": "",
        "metadata_rows": [],
        "report": None,
        "error": "",
        **context,
    }


@router.get("/", response_class=HTMLResponse)
def home(request: Request, library: LibraryDep) -> Response:
    return render(request, "home.html", _home(library))


def _ingest(library: Library, upload: UploadFile, description: str, metadata: Metadata) -> IngestResult:
    """One file of a form upload; a file we cannot take is a failed line of the report, not an error page."""
    name = upload.filename or ""
    try:
        data = _read_limited(upload, library.settings.max_upload_bytes)
        return library.add(data, filename=name, description=description, metadata=metadata)
    except ImageMatchError as error:
        return IngestResult("failed", clean_filename(name), reason=str(error))


@router.post("/upload", response_class=HTMLResponse, dependencies=[CsrfChecked])
def upload(
    request: Request,
    library: LibraryDep,
    files: Annotated[list[UploadFile], Depends(chosen_files("files"))],
    description: Annotated[str, Form()] = "",
    meta_key: Annotated[list[str] | None, Form()] = None,
    meta_value: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """The form upload without JavaScript: every file through library.add, then the same report."""
    rows = list(zip(meta_key or [], meta_value or [], strict=False))
    kept = {"description": description, "metadata_rows": rows}
    if not files:
        context = _home(library, error="Choose at least one image to upload.", **kept)
        return render(request, "home.html", context, status=422)
    try:
        metadata = metadata_from_rows(meta_key or [], meta_value or [])
    except InvalidInput as error:
        return render(request, "home.html", _home(library, error=str(error), **kept), status=422)
    report = [_ingest(library, f, description, metadata) for f in files]
    return render(request, "home.html", _home(library, report=report, **kept))


# Search


@dataclass(frozen=True, slots=True)
class SearchForm:
    """The search form as the user left it; it is shown again, editable, above the results."""

    text: str = ""
    image_id: str = ""
    query_image: str = ""  # a token of QueryImageStore
    image_weight: str = DEFAULT_IMAGE_WEIGHT
    k: str = str(DEFAULT_K)
    key: str = ""
    value: str = ""

    @property
    def has_image(self) -> bool:
        return bool(self.image_id or self.query_image)

    @property
    def has_query(self) -> bool:
        return bool(self.text.strip()) or self.has_image

    @property
    def has_both(self) -> bool:
        return bool(self.text.strip()) and self.has_image

    @property
    def weight_percent(self) -> int:
        """The image's share, for the label beside the slider."""
        try:
            weight = float(self.image_weight)
        except ValueError:
            weight = float(DEFAULT_IMAGE_WEIGHT)
        return round(min(1.0, max(0.0, weight)) * 100) if math.isfinite(weight) else 50

    def url(self, **changes: str) -> str:
        """The linkable address of this search, leaving out fields at their defaults."""
        form = replace(self, **changes)
        defaults = SearchForm()
        params = {
            f.name: getattr(form, f.name)
            for f in fields(form)
            if getattr(form, f.name) != getattr(defaults, f.name) and (f.name != "image_weight" or form.has_both)
        }
        return "/search?" + urlencode(params) if params else "/search"

    def request(self, image: bytes | None) -> SimpleSearch:
        try:
            k = int(self.k.strip())
        except ValueError:
            raise InvalidQuery("the number of results must be a whole number") from None
        try:
            weight = float(self.image_weight.strip()) if self.has_both else float(DEFAULT_IMAGE_WEIGHT)
        except ValueError:
            raise InvalidQuery("the image weight must be a number between 0 and 1") from None
        return SimpleSearch(
            text=self.text,
            image=image,
            image_id=self.image_id.strip(),
            image_weight=weight,
            k=k,
            filter=one_key_filter(self.key, self.value),
        )


def _search_page(form: SearchForm, error: str = "") -> dict[str, object]:
    """The search page's context before any search ran."""
    return {
        "section": "search",
        "search": form,
        "query_record": None,
        "query_upload": None,
        "result": None,
        "error": error,
    }


def _search_context(request: Request, library: Library, form: SearchForm) -> tuple[dict[str, object], int]:
    """Run the search the form describes (if it describes one); errors become a message beside the form."""
    context = _search_page(form)
    if not form.has_query:
        return context, 200
    try:
        image: bytes | None = None
        if form.query_image:
            kept = _query_images(request).get(form.query_image)
            if kept is None:
                context["search"] = replace(form, query_image="")
                raise InvalidQuery("the uploaded query image is no longer kept on the server; choose it again")
            context["query_upload"] = kept
            image = kept.data
        if form.image_id:
            context["query_record"] = library.get(form.image_id.strip())
        context["result"] = library.simple_search(form.request(image))
    except ImageMatchError as error:
        context["error"] = str(error)
        return context, status_for(error)
    return context, 200


@router.get("/search", response_class=HTMLResponse)
def search_page(
    request: Request,
    library: LibraryDep,
    text: str = "",
    image_id: str = "",
    query_image: str = "",
    image_weight: str = DEFAULT_IMAGE_WEIGHT,
    k: str = str(DEFAULT_K),
    key: str = "",
    value: str = "",
) -> Response:
    form = SearchForm(text, image_id, query_image, image_weight, k, key, value)
    context, status = _search_context(request, library, form)
    return render(request, "search.html", context, status=status)


@router.post("/search", response_class=HTMLResponse, dependencies=[CsrfChecked])
def search_submit(
    request: Request,
    library: LibraryDep,
    images: Annotated[list[UploadFile], Depends(chosen_files("image"))],
    text: Annotated[str, Form()] = "",
    image_id: Annotated[str, Form()] = "",
    query_image: Annotated[str, Form()] = "",
    image_weight: Annotated[str, Form()] = DEFAULT_IMAGE_WEIGHT,
    k: Annotated[str, Form()] = str(DEFAULT_K),
    key: Annotated[str, Form()] = "",
    value: Annotated[str, Form()] = "",
) -> Response:
    """Keep an uploaded query image server-side, then redirect to the linkable GET page of the search."""
    form = SearchForm(text, image_id, query_image, image_weight, k, key, value)
    if images:
        image = images[0]
        try:
            data = _read_limited(image, library.settings.max_upload_bytes)
            decoded = media.decode(data, max_pixels=library.settings.max_pixels)
        except ImageMatchError as error:
            context = _search_page(form, error=f"the query image cannot be used: {error}")
            return render(request, "search.html", context, status=status_for(error))
        token = _query_images(request).keep(data, media.make_thumbnail(decoded.image), clean_filename(image.filename))
        form = replace(form, query_image=token, image_id="")
    return _see_other(form.url())


@router.get("/search/query-image/{token}")
def query_image_preview(request: Request, token: str) -> Response:
    kept = _query_images(request).get(token)
    if kept is None:
        raise HTTPException(404, "this query image is no longer kept on the server")
    return Response(kept.preview, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


# Browse


@router.get("/images", response_class=HTMLResponse)
def browse(
    request: Request,
    library: LibraryDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    sort: Literal["newest", "oldest"] = "newest",
    key: str = "",
    value: str = "",
    notice: str = "",
) -> Response:
    context: dict[str, object] = {
        "section": "browse",
        "sort": sort,
        "key": key,
        "value": value,
        "page": page,
        "notice": NOTICES.get(notice, ""),
        "error": "",
        "records": [],
        "total": 0,
        "pages": 0,
        "page_url": {},
    }
    try:
        flt = one_key_filter(key, value)
    except InvalidQuery as error:
        context["error"] = str(error)
        return render(request, "browse.html", context, status=422)
    total = library.count(flt)
    offset = (page - 1) * BROWSE_PAGE_SIZE
    records = library.page(offset=offset, limit=BROWSE_PAGE_SIZE, newest_first=sort == "newest", flt=flt)
    base = {"sort": sort, "key": key, "value": value} if key.strip() else {"sort": sort}
    context.update(
        records=records,
        total=total,
        pages=max(1, math.ceil(total / BROWSE_PAGE_SIZE)),
        page_url={n: "/images?" + urlencode({**base, "page": n}) for n in (page - 1, page + 1, 1)},
    )
    return render(request, "browse.html", context)


# One image: view, edit, delete


@router.get("/images/{image_id}", response_class=HTMLResponse)
def image_page(request: Request, library: LibraryDep, image_id: str, notice: str = "") -> Response:
    record = library.get(image_id)
    context = {
        "section": "browse",
        "record": record,
        "notice": NOTICES.get(notice, ""),
        "error": "",
        "description": record.description,
        "caption": record.caption,
        "metadata_rows": [(key, editable_value(value)) for key, value in record.metadata.items()],
    }
    return render(request, "image.html", context)


@router.post("/images/{image_id}/edit", response_class=HTMLResponse, dependencies=[CsrfChecked])
def edit_image(
    request: Request,
    library: LibraryDep,
    image_id: str,
    description: Annotated[str, Form()] = "",
    caption: Annotated[str | None, Form()] = None,
    meta_key: Annotated[list[str] | None, Form()] = None,
    meta_value: Annotated[list[str] | None, Form()] = None,
) -> Response:
    record = library.get(image_id)
    # A caption counts as corrected only when the user changed the text.
    corrected = caption if caption is not None and caption.strip() != record.caption.strip() else None
    try:
        metadata = metadata_from_rows(meta_key or [], meta_value or [])
        library.update(image_id, RecordPatch(description=description, metadata=metadata, caption=corrected))
    except InvalidInput as error:
        context = {
            "section": "browse",
            "record": record,
            "notice": "",
            "error": str(error),
            "description": description,
            "caption": caption if caption is not None else record.caption,
            "metadata_rows": list(zip(meta_key or [], meta_value or [], strict=False)),
        }
        return render(request, "image.html", context, status=422)
    return _see_other(f"/images/{image_id}?notice=saved")


@router.post("/images/{image_id}/caption/retry", dependencies=[CsrfChecked])
def retry_caption(library: LibraryDep, image_id: str) -> Response:
    library.retry_captions(image_id)
    return _see_other(f"/images/{image_id}?notice=caption-queued")


@router.get("/images/{image_id}/delete", response_class=HTMLResponse)
def delete_confirmation(request: Request, library: LibraryDep, image_id: str) -> Response:
    return render(request, "delete.html", {"section": "browse", "record": library.get(image_id)})


@router.post("/images/{image_id}/delete", dependencies=[CsrfChecked])
def delete_image(library: LibraryDep, image_id: str) -> Response:
    library.delete(image_id)
    return _see_other("/images?notice=deleted")


# Batch upload of the samples folder


def _samples_context(library: Library, jobs: JobRunner, job: JobStatus | None) -> dict[str, object]:
    folder = library.settings.samples_dir
    recent = jobs.recent()
    running = next((j for j in recent if j.state == "running"), None)
    shown = job or running
    exists = folder.is_dir()
    return {
        "section": "samples",
        "folder": folder,
        "folder_exists": exists,
        "files_in_folder": sum(1 for _ in image_files([folder], recursive=True, confine=True)) if exists else 0,
        "job": shown,
        "running": running,
        "recent": recent,
        "error": "",
    }


@router.get("/upload-samples", response_class=HTMLResponse)
def samples_page(request: Request, library: LibraryDep, jobs: JobsDep, job: str = "") -> Response:
    shown: JobStatus | None = None
    if job:
        try:
            shown = jobs.get(job)
        except NotFound:
            raise HTTPException(404, f"there is no batch upload with id {job!r}; it may have been pruned") from None
    return render(request, "upload_samples.html", _samples_context(library, jobs, shown))


@router.post("/upload-samples", response_class=HTMLResponse, dependencies=[CsrfChecked])
def start_samples(request: Request, library: LibraryDep, jobs: JobsDep) -> Response:
    try:
        job = jobs.start_folder(library.settings.samples_dir)
    except (Conflict, InvalidInput) as error:
        context = _samples_context(library, jobs, None)
        context["error"] = str(error)
        return render(request, "upload_samples.html", context, status=status_for(error))
    return _see_other(f"/upload-samples?job={job.id}")


# Reset


@router.get("/reset", response_class=HTMLResponse)
def reset_page(request: Request, library: LibraryDep, deleted: Annotated[int | None, Query(ge=0)] = None) -> Response:
    context = {"section": "reset", "count": library.count(), "deleted": deleted, "error": ""}
    return render(request, "reset.html", context)


@router.post("/reset", response_class=HTMLResponse, dependencies=[CsrfChecked])
def reset(request: Request, library: LibraryDep, confirm: Annotated[str, Form()] = "") -> Response:
    try:
        deleted = library.reset(confirm)
    except InvalidInput:
        context = {
            "section": "reset",
            "count": library.count(),
            "deleted": None,
            "error": f"Nothing was deleted: type {RESET_PHRASE} exactly, in capitals, to confirm.",
        }
        return render(request, "reset.html", context, status=422)
    return _see_other(f"/reset?deleted={deleted}")
