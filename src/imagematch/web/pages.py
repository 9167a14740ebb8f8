"""The HTML pages. Thin: read the form, call the Library or the JobRunner, render a template.

Every page works without JavaScript; the script in static/app.js only adds comfort (drag and drop, uploads one
by one with live status, live job progress, an image dropped or pasted into the search box, the search slider
and region picker appearing as the query takes shape). A POST that changes something answers with a redirect
to a page that shows the result, so reloading never repeats it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import FormData, UploadFile

from imagematch.duplicates import DuplicateRule
from imagematch.files import image_files
from imagematch.filters import parse_filter
from imagematch.jobs import MODEL_JOBS, JobRunner, JobStatus
from imagematch.library import RESET_PHRASE, Library, SimpleSearch, to_query
from imagematch.query_syntax import parse_region
from imagematch.records import (
    Conflict,
    Filter,
    Hit,
    ImageMatchError,
    IngestResult,
    InvalidInput,
    InvalidQuery,
    Metadata,
    NotFound,
    PageCursor,
    QueryTerm,
    RecordPatch,
    Region,
    StoredImageTerm,
    TextTerm,
)
from imagematch.records import Query as SearchQuery
from imagematch.services.tuning import describe as describe_tuning
from imagematch.validation import clean_filename
from imagematch.web.api import JobsDep, LibraryDep, read_upload
from imagematch.web.csrf import require_token
from imagematch.web.errors import status_for
from imagematch.web.forms import (
    FILTER_OPERATORS,
    editable_rows,
    metadata_from_rows,
    one_key_filter,
    posted_rows,
    typed_value,
)
from imagematch.web.head import AnswersHead
from imagematch.web.query_images import QueryImageStore
from imagematch.web.templating import STATIC_DIR, render

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)
CsrfChecked = Depends(require_token)

BROWSE_PAGE_SIZE = 24
RECENT_ON_HOME = 8
DEFAULT_K = 12
RESULTS_PAGE = DEFAULT_K  # how many more results "More results" asks for
K_LABEL = "How many results"  # the k field's label, which its messages name
# The orders of the search page: the most relevant results, as ranked or re-sorted by a date, newest first.
SORTS = {"relevance": "relevance", "taken": "date taken", "added": "date added"}
DEFAULT_IMAGE_WEIGHT = "0.5"
QUERY_IMAGE_BUDGET = 64 * 1024 * 1024
DUPLICATE_NOTICES = {"resolved": "Done: the other images of the group were deleted."}
NOTICES = {
    "saved": "Changes saved.",
    "caption-queued": "Captioning again; reload in a moment to see the new caption.",
    "deleted": "The image was deleted.",
}


def install(app: FastAPI) -> None:
    """Add the pages, their static files and the store of uploaded query images to the app."""
    settings = app.state.settings
    app.state.query_images = QueryImageStore(max(QUERY_IMAGE_BUDGET, settings.max_upload_bytes * 2))
    app.mount("/static", AnswersHead(StaticFiles(directory=STATIC_DIR)), name="static")
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


async def posted_form(request: Request) -> FormData:
    """The whole posted form, for a plain `def` route: reading it is the one part of a form post that belongs on
    the event loop (Starlette writes large uploaded files to disk in worker threads), and the route that uses it
    runs in a worker thread itself."""
    return await request.form()


# Home: upload and search


def _home(library: Library, **context: object) -> dict[str, object]:
    return {
        "section": "home",
        "recent": library.catalog.page(limit=RECENT_ON_HOME),
        "recent_count": RECENT_ON_HOME,
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
        data = read_upload(upload, library.settings.max_upload_bytes)
        return library.ingest.add(data, filename=name, description=description, metadata=metadata)
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
    meta_type: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """The form upload without JavaScript: every file through library.ingest.add, then the same report."""
    kept = {"description": description, "metadata_rows": posted_rows(meta_key or [], meta_value or [], meta_type or [])}
    if not files:
        context = _home(library, error="Choose at least one image to upload.", **kept)
        return render(request, "home.html", context, status=422)
    try:
        metadata = metadata_from_rows(meta_key or [], meta_value or [], meta_type)
    except InvalidInput as error:
        return render(request, "home.html", _home(library, error=str(error), **kept), status=422)
    report = [_ingest(library, f, description, metadata) for f in files]
    return render(request, "home.html", _home(library, report=report, **kept))


# Search

TERM_KINDS = ("text", "id")


def _date_bound(text: str, label: str, end_of_day: bool) -> str:
    """A date typed in a date field, as the ISO text filters take; the 'to' day counts whole."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidQuery(f"{label} must be a date such as 2024-05-31") from None
    return f"{day.isoformat()}T23:59:59.999999" if end_of_day else day.isoformat()


@dataclass(frozen=True, slots=True)
class SearchForm:
    """The search form as the user left it; it is shown again, editable, above the results.

    Beyond the seed's text, image and slider: more terms with their own weights (`term` is `text:words` or
    `id:<image id>`, `weight` beside it), filter rows (`key` `op` `value`, all of them or with `match=any` one
    of them), built-in filters, keyword fusion, a relevance cut-off and a region of the query image; `sort`
    orders the k most relevant results.
    """

    text: str = ""
    image_id: str = ""
    query_image: str = ""  # a token of QueryImageStore
    image_weight: str = DEFAULT_IMAGE_WEIGHT
    k: str = str(DEFAULT_K)
    key: tuple[str, ...] = ()
    op: tuple[str, ...] = ()
    value: tuple[str, ...] = ()
    match: str = ""  # "any": one of the filter rows is enough
    term: tuple[str, ...] = ()
    weight: tuple[str, ...] = ()
    hybrid: str = ""
    min_score: str = ""
    cutoff: str = ""  # "auto" or "off"; empty: the library's setting
    region: str = ""
    format: str = ""
    camera: str = ""
    taken_from: str = ""
    taken_to: str = ""
    sort: str = "relevance"

    @property
    def has_image(self) -> bool:
        return bool(self.image_id or self.query_image)

    @property
    def has_main_query(self) -> bool:
        return bool(self.text.strip()) or self.has_image

    @property
    def has_query(self) -> bool:
        return self.has_main_query or any(t.partition(":")[2].strip() for t in self.term)

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

    @property
    def terms(self) -> list[tuple[str, str, str]]:
        """The extra terms as (kind, value, weight) rows."""
        rows = []
        for raw, weight in zip(self.term, self.weight + ("1",) * len(self.term), strict=False):
            kind, _, value = raw.partition(":")
            if value.strip():
                rows.append((kind if kind in TERM_KINDS else "text", value.strip(), weight))
        return rows

    @property
    def filter_rows(self) -> list[tuple[str, str, str]]:
        ops = self.op + ("=",) * len(self.key)
        values = self.value + ("",) * len(self.key)
        return [(k, o, v) for k, o, v in zip(self.key, ops, values, strict=False) if k.strip() or v.strip()]

    @property
    def region_box(self) -> Region | None:
        return parse_region(self.region)

    @property
    def region_values(self) -> list[str]:
        """The four region fields as they are shown, empty when the whole image is used."""
        try:
            box = self.region_box
        except InvalidQuery:
            return ["", "", "", ""]
        return ["", "", "", ""] if box is None else [f"{v:g}" for v in box]

    @property
    def has_filter(self) -> bool:
        return bool(self.filter_rows or self.format or self.camera.strip() or self.taken_from or self.taken_to)

    @property
    def options_in_use(self) -> list[str]:
        """The folded options this search uses: their panel is shown open, and the page moves to the results."""
        used = {
            "image or words": self.has_both and self.image_weight != DEFAULT_IMAGE_WEIGHT,
            "part of the image": self.has_image and bool(self.region.strip()),
            "more terms": bool(self.terms),
            "filters": self.has_filter,
            "how many": self.k.strip() != str(DEFAULT_K),
            "minimum score": bool(self.min_score.strip()),
            "relevance cut-off": bool(self.cutoff),
            "exact words": bool(self.hybrid),
        }
        return [name for name, on in used.items() if on]

    def link(self, **changes: str | tuple[str, ...]) -> str:
        """The address of this search with changes, opened at its results when its open options push them down."""
        changed = replace(self, **changes)  # type: ignore[arg-type]
        return changed.url() + ("#results" if changed.options_in_use else "")

    def more_url(self, max_k: int) -> str:
        """The same search asking for one page more, opened at the first new result (by relevance; sorted by a
        date, the new ones mix in, so at the top of the results)."""
        count = self.count(max_k)
        more = self.url(k=str(min(max_k, count + RESULTS_PAGE)))
        return more + (f"#result-{count + 1}" if self.sort == "relevance" else "#results")

    def count(self, max_k: int) -> int:
        """k as a number, with the field's own label in its messages."""
        try:
            k = int(self.k.strip())
        except ValueError:
            raise InvalidQuery(f"{K_LABEL} must be a whole number, such as {DEFAULT_K}") from None
        if not 1 <= k <= max_k:
            raise InvalidQuery(f"{K_LABEL} must be between 1 and {max_k}")
        return k

    def url(self, **changes: str | tuple[str, ...]) -> str:
        """The linkable address of this search, leaving out fields at their defaults."""
        form = replace(self, **changes)  # type: ignore[arg-type]
        defaults = SearchForm()
        params = {
            f.name: getattr(form, f.name)
            for f in fields(form)
            if getattr(form, f.name) != getattr(defaults, f.name) and (f.name != "image_weight" or form.has_both)
        }
        return "/search?" + urlencode(params, doseq=True) if params else "/search"

    def with_term(self, term: str, weight: str) -> str:
        """This search with one more term: "more like this" (weight 1) and "less like this" (-1)."""
        return self.link(term=(*self.term, term), weight=(*self.weight[: len(self.term)], weight))

    def without_term(self, index: int) -> str:
        return self.url(
            term=self.term[:index] + self.term[index + 1 :], weight=self.weight[:index] + self.weight[index + 1 :]
        )

    def filter(self) -> Filter | None:
        spec: dict[str, dict[str, object]] = {}

        def add(key: str, operator: str, operand: object) -> None:
            tests = spec.setdefault(key, {})
            if operator in tests:
                raise InvalidQuery(f"the filter on {key!r} has the same test twice; keep one of them")
            tests[operator] = operand

        rows: list[tuple[str, str, object]] = []
        for key, op, value in self.filter_rows:
            if not key.strip():
                raise InvalidQuery("a filter row has a value but no key; give the metadata key to filter on")
            operator = FILTER_OPERATORS.get(op)
            if operator is None:
                raise InvalidQuery(f"unknown filter test {op!r}")
            operand: object = typed_value(value)
            if operator in ("$in", "$nin"):
                operand = [typed_value(part) for part in value.split(",") if part.strip()]
            rows.append((key.strip(), operator, operand))
        alternatives = []
        if self.match == "any" and len(rows) > 1:
            alternatives = [{key: {operator: operand}} for key, operator, operand in rows]
        else:
            for row in rows:
                add(*row)
        if self.format:
            add("image.format", "$eq", self.format)
        if self.camera.strip():
            add("image.camera", "$eq", self.camera.strip())
        if self.taken_from:
            add("image.taken_at", "$gte", _date_bound(self.taken_from, "'taken from'", end_of_day=False))
        if self.taken_to:
            add("image.taken_at", "$lte", _date_bound(self.taken_to, "'taken to'", end_of_day=True))
        combined: dict[str, object] = {**spec, **({"$or": alternatives} if alternatives else {})}
        return parse_filter(combined) if combined else None

    def _number(self, text: str, label: str) -> float:
        try:
            number = float(text.strip())
        except ValueError:
            raise InvalidQuery(f"{label} must be a number") from None
        if not math.isfinite(number):
            raise InvalidQuery(f"{label} must be a finite number")
        return number

    def request(self, image: bytes | None, max_k: int) -> SimpleSearch:
        k = self.count(max_k)
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
            filter=self.filter(),
            region=self.region_box if self.has_image else None,
            hybrid=bool(self.hybrid),
            min_score=self._number(self.min_score, "the minimum score") if self.min_score.strip() else None,
            cutoff=self.cutoff or None,
        )

    def query(self, image: bytes | None, max_k: int) -> SimpleSearch | SearchQuery:
        """The seed's form alone is a SimpleSearch; with more terms, one query of all of them."""
        simple = self.request(image, max_k)
        if not self.terms:
            return simple
        base = to_query(simple).terms if self.has_main_query else ()
        extra: list[QueryTerm] = []
        for kind, value, weight in self.terms:
            number = self._number(weight, f"the weight of {value!r}")
            extra.append(StoredImageTerm(value, number) if kind == "id" else TextTerm(value, number))
        return SearchQuery(
            (*base, *extra),
            simple.k,
            simple.filter,
            hybrid=simple.hybrid,
            min_score=simple.min_score,
            cutoff=simple.cutoff,
        )


def _search_page(form: SearchForm, error: str = "") -> dict[str, object]:
    """The search page's context before any search ran."""
    return {
        "section": "search",
        "search": form,
        "query_record": None,
        "query_upload": None,
        "term_records": {},
        "result": None,
        "ranked": [],
        "sorts": SORTS,
        "error": error,
    }


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _by_sort(hits: list[Hit], sort: str) -> list[tuple[int, Hit]]:
    """The hits with their relevance rank, in the order asked for: by a date, newest first, the ones without
    that date last; equal dates keep their relevance order."""
    ranked = list(enumerate(hits, start=1))
    if sort == "relevance":
        return ranked

    def newest_first(pair: tuple[int, Hit]) -> tuple[bool, datetime]:
        record = pair[1].record
        moment = record.taken_at if sort == "taken" else record.created_at
        if moment is None:
            return False, _EPOCH
        return True, moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # naive means UTC, as pages show it

    return sorted(ranked, key=newest_first, reverse=True)


def _search_context(request: Request, library: Library, form: SearchForm) -> tuple[dict[str, object], int]:
    """Run the search the form describes (if it describes one); errors become a message beside the form."""
    context = _search_page(form)
    if not form.has_query:
        return context, 200
    try:
        if form.sort not in SORTS:
            raise InvalidQuery(f"the results can be sorted by {', '.join(SORTS)}, not {form.sort!r}")
        image: bytes | None = None
        if form.query_image:
            kept = _query_images(request).get(form.query_image)
            if kept is None:
                context["search"] = replace(form, query_image="")
                raise InvalidQuery("the uploaded query image is no longer kept on the server; choose it again")
            context["query_upload"] = kept
            image = kept.data
        if form.image_id:
            context["query_record"] = library.catalog.get(form.image_id.strip())
        context["term_records"] = library.store.get_many([v for kind, v, _ in form.terms if kind == "id"])
        query = form.query(image, library.settings.max_k)
        result = library.search.simple(query) if isinstance(query, SimpleSearch) else library.search.run(query)
        context.update(result=result, ranked=_by_sort(result.hits, form.sort))
    except ImageMatchError as error:
        context["error"] = str(error)
        return context, status_for(error)
    return context, 200


def _form_of(params: Mapping[str, str | list[str]]) -> SearchForm:
    """A SearchForm from query parameters or form fields (lists for the repeated ones)."""
    values: dict[str, str | tuple[str, ...]] = {}
    for f in fields(SearchForm):
        given = params.get(f.name)
        if given is None:
            continue
        if isinstance(f.default, tuple):
            values[f.name] = tuple(given) if isinstance(given, list) else (given,)
        else:
            values[f.name] = given[-1] if isinstance(given, list) else given
    return SearchForm(**values)  # type: ignore[arg-type]


def _params(pairs: Iterable[tuple[str, object]]) -> dict[str, str | list[str]]:
    collected: dict[str, list[str]] = {}
    for name, value in pairs:
        if isinstance(value, str):
            collected.setdefault(name, []).append(value)
    return {
        name: values if len(values) > 1 or _is_list_field(name) else values[0] for name, values in collected.items()
    }


def _is_list_field(name: str) -> bool:
    return any(f.name == name and isinstance(f.default, tuple) for f in fields(SearchForm))


@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request, library: LibraryDep) -> Response:
    form = _form_of(_params(request.query_params.multi_items()))
    context, status = _search_context(request, library, form)
    return render(request, "search.html", context, status=status)


@router.post("/search", response_class=HTMLResponse, dependencies=[CsrfChecked])
def search_submit(
    request: Request,
    library: LibraryDep,
    posted: Annotated[FormData, Depends(posted_form)],
    images: Annotated[list[UploadFile], Depends(chosen_files("image"))],
) -> Response:
    """Keep an uploaded query image server-side, then redirect to the linkable GET page of the search.

    A plain `def` route, so all of it runs in a worker thread: reading and decoding the query image, and also the
    page that refuses it, which asks the store for the library's facts.
    """
    params = _params(posted.multi_items())
    corners = [str(posted.get(f"region_{side}", "")).strip() for side in ("left", "top", "right", "bottom")]
    if any(corners):
        params["region"] = ",".join(corners)
    elif "region" not in params:
        params["region"] = ""
    kinds, words = posted.getlist("term_kind"), posted.getlist("term_value")
    weights = posted.getlist("weight")
    rows = [
        (f"{kind}:{str(word).strip()}", str(weights[i]) if i < len(weights) else "1")
        for i, (kind, word) in enumerate(zip(kinds, words, strict=False))
        if str(word).strip()
    ]
    params["term"], params["weight"] = [t for t, _ in rows], [w for _, w in rows]
    form = _form_of(params)
    kept_rows = form.filter_rows
    form = replace(
        form,
        key=tuple(k for k, _, _ in kept_rows),
        op=tuple(o for _, o, _ in kept_rows),
        value=tuple(v for _, _, v in kept_rows),
    )
    if images:
        image = images[0]
        try:
            data = read_upload(image, library.settings.max_upload_bytes)
            preview = library.search.query_preview(data)
        except ImageMatchError as error:
            context = _search_page(form, error=f"the query image cannot be used: {error}")
            return render(request, "search.html", context, status=status_for(error))
        token = _query_images(request).keep(data, preview, clean_filename(image.filename))
        form = replace(form, query_image=token, image_id="")  # the region, if any, was drawn on this image
    return _see_other(form.link())


@router.get("/search/query-image/{token}")
def query_image_preview(request: Request, token: str) -> Response:
    kept = _query_images(request).get(token)
    if kept is None:
        raise HTTPException(404, "this query image is no longer kept on the server")
    return Response(kept.preview, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


# Duplicates: review groups of near-duplicates, keep one, delete the rest (after a confirmation)


def _rule(library: Library, max_distance: str, min_similarity: str, crop_distance: str) -> DuplicateRule:
    default = library.duplicates.rule

    def number(text: str, fallback: float, label: str) -> float:
        if not text.strip():
            return fallback
        try:
            value = float(text)
        except ValueError:
            raise InvalidInput(f"{label} must be a number") from None
        if not math.isfinite(value):
            raise InvalidInput(f"{label} must be a finite number")
        return value

    return DuplicateRule(
        int(number(max_distance, default.max_distance, "the pHash distance")),
        int(number(crop_distance, default.crop_distance, "the crop distance")),
        number(min_similarity, default.min_similarity, "the similarity"),
        default.max_colour_distance,
    )


def _rule_fields(max_distance: str, min_similarity: str, crop_distance: str) -> dict[str, str]:
    """The thresholds the user set, to carry through resolving a group and back to the list they came from."""
    given = {"max_distance": max_distance, "min_similarity": min_similarity, "crop_distance": crop_distance}
    return {name: value.strip() for name, value in given.items() if value.strip()}


@router.get("/duplicates", response_class=HTMLResponse)
def duplicates_page(
    request: Request,
    library: LibraryDep,
    max_distance: str = "",
    min_similarity: str = "",
    crop_distance: str = "",
    notice: str = "",
) -> Response:
    context: dict[str, object] = {
        "section": "duplicates",
        "groups": [],
        "rule": library.duplicates.rule,
        "rule_fields": _rule_fields(max_distance, min_similarity, crop_distance),
        "notice": DUPLICATE_NOTICES.get(notice, ""),
        "error": "",
    }
    try:
        rule = _rule(library, max_distance, min_similarity, crop_distance)
    except InvalidInput as error:
        context["error"] = str(error)
        return render(request, "duplicates.html", context, status=422)
    context.update(rule=rule, groups=library.duplicates.groups(rule))
    return render(request, "duplicates.html", context)


@router.get("/duplicates/resolve", response_class=HTMLResponse)
def resolve_confirmation(
    request: Request,
    library: LibraryDep,
    keep: str = "",
    member: Annotated[list[str] | None, Query()] = None,
    max_distance: str = "",
    min_similarity: str = "",
    crop_distance: str = "",
) -> Response:
    """The confirmation step: what is kept and what will be deleted. Nothing changes until it is confirmed."""
    if not keep:
        raise InvalidInput("choose the image to keep")
    kept = library.catalog.get(keep)
    doomed = [library.catalog.get(i) for i in dict.fromkeys(member or []) if i != keep]
    if not doomed:
        raise InvalidInput("there is nothing else in this group to delete")
    rule_fields = _rule_fields(max_distance, min_similarity, crop_distance)
    context = {
        "section": "duplicates",
        "kept": kept,
        "doomed": doomed,
        "rule_fields": rule_fields,
        "back_url": _duplicates_url(rule_fields),
    }
    return render(request, "duplicates_confirm.html", context)


def _duplicates_url(rule_fields: dict[str, str], **extra: str) -> str:
    params = {**rule_fields, **extra}
    return "/duplicates?" + urlencode(params) if params else "/duplicates"


@router.post("/duplicates/resolve", dependencies=[CsrfChecked])
def resolve(
    library: LibraryDep,
    keep: Annotated[str, Form()] = "",
    delete: Annotated[list[str] | None, Form()] = None,
    max_distance: Annotated[str, Form()] = "",
    min_similarity: Annotated[str, Form()] = "",
    crop_distance: Annotated[str, Form()] = "",
) -> Response:
    """Delete the others, then back to the list under the same thresholds (checked first: nothing is deleted
    on the way to an error)."""
    rule_fields = _rule_fields(max_distance, min_similarity, crop_distance)
    _rule(library, max_distance, min_similarity, crop_distance)
    deleted = library.duplicates.keep_one(keep, delete or [])
    log.info("duplicates resolved: kept %s, deleted %d", keep, len(deleted))
    return _see_other(_duplicates_url(rule_fields, notice="resolved"))


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
    after: Annotated[str, Query(max_length=200)] = "",
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
        cursor = PageCursor.decode(after) if after else None
    except InvalidInput as error:  # an unknown field, or an edited cursor
        context["error"] = str(error)
        return render(request, "browse.html", context, status=422)
    total = library.catalog.count(flt)
    offset = (page - 1) * BROWSE_PAGE_SIZE
    records = library.catalog.page(
        offset=offset, limit=BROWSE_PAGE_SIZE, newest_first=sort == "newest", flt=flt, after=cursor
    )
    base = {"sort": sort, "key": key, "value": value} if key.strip() else {"sort": sort}
    pages = max(1, math.ceil(total / BROWSE_PAGE_SIZE))
    page_url = {n: "/images?" + urlencode({**base, "page": n}) for n in (page - 1, page + 1, 1, pages)}
    if len(records) == BROWSE_PAGE_SIZE:
        # Next carries where this page ends: it costs what the first page does however deep (page numbers
        # only label it), and images added meanwhile neither repeat nor get skipped.
        next_after = PageCursor.of(records[-1]).encode()
        page_url[page + 1] = "/images?" + urlencode({**base, "page": page + 1, "after": next_after})
    context.update(records=records, total=total, pages=pages, page_url=page_url)
    # A page past the end (an old link, an edited address) is not there: say how many there are instead.
    return render(request, "browse.html", context, status=404 if page > pages else 200)


# One image: view, edit, delete


@router.get("/images/{image_id}", response_class=HTMLResponse)
def image_page(request: Request, library: LibraryDep, image_id: str, notice: str = "") -> Response:
    record = library.catalog.get(image_id)
    context = {
        "section": "browse",
        "record": record,
        "notice": NOTICES.get(notice, ""),
        "error": "",
        "description": record.description,
        "caption": record.caption,
        "ocr_text": record.ocr.text,
        "metadata_rows": editable_rows(record.metadata),
    }
    return render(request, "image.html", context)


def _changed(posted: str | None, stored: str) -> str | None:
    """A posted text when the user changed it: browsers send a textarea's line breaks as CRLF, so a text of several
    lines saved untouched must not count as a correction."""
    if posted is None:
        return None
    text = posted.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.strip() != stored.strip() else None


@router.post("/images/{image_id}/edit", response_class=HTMLResponse, dependencies=[CsrfChecked])
def edit_image(
    request: Request,
    library: LibraryDep,
    image_id: str,
    description: Annotated[str, Form()] = "",
    caption: Annotated[str | None, Form()] = None,
    ocr_text: Annotated[str | None, Form()] = None,
    meta_key: Annotated[list[str] | None, Form()] = None,
    meta_value: Annotated[list[str] | None, Form()] = None,
    meta_type: Annotated[list[str] | None, Form()] = None,
) -> Response:
    record = library.catalog.get(image_id)
    # A caption counts as corrected only when the user changed the text.
    corrected = _changed(caption, record.caption)
    read = _changed(ocr_text, record.ocr.text)
    try:
        metadata = metadata_from_rows(meta_key or [], meta_value or [], meta_type)
        patch = RecordPatch(description=description, metadata=metadata, caption=corrected, ocr_text=read)
        library.catalog.update(image_id, patch)
    except InvalidInput as error:
        context = {
            "section": "browse",
            "record": record,
            "notice": "",
            "error": str(error),
            "description": description,
            "caption": caption if caption is not None else record.caption,
            "ocr_text": ocr_text if ocr_text is not None else record.ocr.text,
            "metadata_rows": posted_rows(meta_key or [], meta_value or [], meta_type or []),
        }
        return render(request, "image.html", context, status=422)
    return _see_other(f"/images/{image_id}?notice=saved")


@router.post("/images/{image_id}/caption/retry", dependencies=[CsrfChecked])
def retry_caption(library: LibraryDep, image_id: str) -> Response:
    library.captions.retry(image_id)
    return _see_other(f"/images/{image_id}?notice=caption-queued")


@router.get("/images/{image_id}/delete", response_class=HTMLResponse)
def delete_confirmation(request: Request, library: LibraryDep, image_id: str) -> Response:
    return render(request, "delete.html", {"section": "browse", "record": library.catalog.get(image_id)})


@router.post("/images/{image_id}/delete", dependencies=[CsrfChecked])
def delete_image(library: LibraryDep, image_id: str) -> Response:
    library.catalog.delete(image_id)
    return _see_other("/images?notice=deleted")


# Batch upload of the samples folder


def _samples_context(library: Library, jobs: JobRunner, job: JobStatus | None) -> dict[str, object]:
    folder = library.settings.samples_dir
    every = jobs.recent()
    running = next((j for j in every if j.state == "running" and j.kind not in MODEL_JOBS), None)
    recent = [j for j in every if j.kind not in MODEL_JOBS]
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


def _job_asked(jobs: JobRunner, job_id: str, *, model_page: bool, what: str) -> JobStatus | None:
    """The job a page's `?job=` names: a 404 when there is none of that kind (it may have been pruned)."""
    if not job_id:
        return None
    try:
        job = jobs.get(job_id)
    except NotFound:
        job = None
    if job is None or (job.kind in MODEL_JOBS) != model_page:
        raise HTTPException(404, f"there is no {what} with id {job_id!r}; it may have been pruned")
    return job


@router.get("/upload-samples", response_class=HTMLResponse)
def samples_page(request: Request, library: LibraryDep, jobs: JobsDep, job: str = "") -> Response:
    shown = _job_asked(jobs, job, model_page=False, what="batch upload")
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


# Model


def _model_context(library: Library, jobs: JobRunner, job: JobStatus | None) -> dict[str, object]:
    recent = jobs.recent()
    tuning = library.tuning.state()

    def shown(kind: str) -> JobStatus | None:
        """The job of this kind the page was asked for, else the running one, else the latest."""
        if job is not None and job.kind == kind:
            return job
        of_kind = [j for j in recent if j.kind == kind]
        return next((j for j in of_kind if j.state == "running"), of_kind[0] if of_kind else None)

    return {
        "section": "model",
        "model_id": library.embedder.model_id,
        "model_spec": library.pairing.model_spec,
        "presets": library.pairing.model_presets,
        "job": shown("reindex"),
        "text_job": shown("ocr"),
        "ocr_engine": library.embedding.text_engine,
        "tune_job": shown("tune"),
        "tuning": tuning.current,
        "tuning_line": describe_tuning(tuning.current, library.tuning.learned_words(tuning)),
        "running": next((j for j in recent if j.state == "running"), None),  # one job at a time, of any kind
        "error": "",
        "value": "",
    }


@router.get("/model", response_class=HTMLResponse)
def model_page(request: Request, library: LibraryDep, jobs: JobsDep, job: str = "") -> Response:
    shown = _job_asked(jobs, job, model_page=True, what="model job")
    return render(request, "model.html", _model_context(library, jobs, shown))


@router.post("/model", response_class=HTMLResponse, dependencies=[CsrfChecked])
def start_reindex(request: Request, library: LibraryDep, jobs: JobsDep, model: Annotated[str, Form()] = "") -> Response:
    try:
        if not model.strip():
            raise InvalidInput("name the model to switch to")
        job = jobs.start_reindex(model)
    except (Conflict, InvalidInput) as error:
        context = _model_context(library, jobs, None)
        context["error"], context["value"] = str(error), model
        return render(request, "model.html", context, status=status_for(error))
    return _see_other(f"/model?job={job.id}")


@router.post("/model/ocr", response_class=HTMLResponse, dependencies=[CsrfChecked])
def start_text_reading(request: Request, library: LibraryDep, jobs: JobsDep) -> Response:
    return _start_model_job(request, library, jobs, jobs.start_text_reading)


@router.post("/model/tune", response_class=HTMLResponse, dependencies=[CsrfChecked])
def start_tuning(request: Request, library: LibraryDep, jobs: JobsDep) -> Response:
    return _start_model_job(request, library, jobs, jobs.start_tuning)


@router.post("/model/tune/undo", response_class=HTMLResponse, dependencies=[CsrfChecked])
def undo_tuning(request: Request, library: LibraryDep, jobs: JobsDep) -> Response:
    try:
        library.tuning.undo()
    except InvalidInput as error:
        context = _model_context(library, jobs, None)
        context["error"] = str(error)
        return render(request, "model.html", context, status=status_for(error))
    return _see_other("/model")


def _start_model_job(request: Request, library: Library, jobs: JobRunner, start: Callable[[], JobStatus]) -> Response:
    try:
        job = start()
    except (Conflict, InvalidInput) as error:
        context = _model_context(library, jobs, None)
        context["error"] = str(error)
        return render(request, "model.html", context, status=status_for(error))
    return _see_other(f"/model?job={job.id}")


# Reset


@router.get("/reset", response_class=HTMLResponse)
def reset_page(request: Request, library: LibraryDep, deleted: Annotated[int | None, Query(ge=0)] = None) -> Response:
    context = {"section": "reset", "count": library.catalog.count(), "deleted": deleted, "error": ""}
    return render(request, "reset.html", context)


@router.post("/reset", response_class=HTMLResponse, dependencies=[CsrfChecked])
def reset(request: Request, library: LibraryDep, confirm: Annotated[str, Form()] = "") -> Response:
    try:
        deleted = library.catalog.reset(confirm)
    except InvalidInput:
        context = {
            "section": "reset",
            "count": library.catalog.count(),
            "deleted": None,
            "error": f"Nothing was deleted: type {RESET_PHRASE} exactly, in capitals, to confirm.",
        }
        return render(request, "reset.html", context, status=422)
    return _see_other(f"/reset?deleted={deleted}")
