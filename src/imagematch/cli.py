"""The `imagematch` command. Thin: parse arguments, call the Library, print results."""

from __future__ import annotations

import gc
import json
import os
import socket
import sys
import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.table import Table
from typer._click import Context, Parameter
from typer.core import TyperArgument, TyperCommand, TyperOption

from imagematch.addresses import ip_address
from imagematch.files import FolderScan, scan
from imagematch.filters import parse_where
from imagematch.library import RESET_PHRASE, Library, SimpleSearch, Upload
from imagematch.logs import configure_logging
from imagematch.query_syntax import TypedTerm, parse_region, parse_terms, read_image_file
from imagematch.records import (
    ImageMatchError,
    ImageRecord,
    ImageTerm,
    IngestResult,
    Query,
    QueryTerm,
    Region,
    StoredImageTerm,
    TextTerm,
)
from imagematch.services.tuning import describe as describe_tuning
from imagematch.settings import Settings, SettingsError, load_settings
from imagematch.shapes import image_fields, search_fields, why_summary
from imagematch.store.names import STORE_NAMES

if TYPE_CHECKING:
    from rich.progress import Progress


class _NamedArgument(TyperArgument):
    """An argument whose metavar (PATH, TERM) says what it takes: no Python type beside it."""

    def display_type_rich(self, ctx: Context) -> str | None:
        return None


class _Command(TyperCommand):
    """Help that says what a value is where typer would print Python types (`<bool>`, `<list[Path]>`): flags
    show none, arguments and options with a metavar show only that."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag:
                param.metavar = ""
            elif isinstance(param, TyperArgument) and param.metavar:
                param.__class__ = _NamedArgument
        return params


app = typer.Typer(
    name="imagematch",
    help="Find images by an example image, a sentence, or both.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Every expected failure is one line on stderr and a non-zero exit code, never a traceback."""

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (ImageMatchError, SettingsError) as error:
            err.print(f"[red]error:[/red] {error}", highlight=False)
            raise typer.Exit(1) from None

    return run


def _settings(*, server: bool = False, **overrides: Any) -> Settings:
    """Settings, and logging set up: through the console for commands (above progress bars), plain lines with
    times for the server."""
    settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    configure_logging(settings.log_level, console=None if server else err)
    return settings


def _started() -> None:
    """Start-up is over: what it made (modules, the store, the model's description) lives until the process
    exits. main() kept the cycle collector off while it loaded; it is set aside from the collector here
    (gc.freeze), and the collector resumes for what the command itself makes.

    Start-up makes some 250,000 objects, most of them in LanceDB's import. Collecting while they load, and
    again at exit, scans them each time over: a quarter of the CPU time of `imagematch search`.
    """
    if not gc.isenabled():  # only where main() turned it off: an embedding program keeps its own collector
        gc.freeze()
        gc.enable()


def _library(settings: Settings, check_model: bool = True, *, short_lived: bool = False) -> Library:
    from imagematch.factory import build_library

    library = build_library(settings, short_lived=short_lived)  # its warnings (the demo model) are in the log already
    _started()
    if check_model:
        library.verify_model()
    return library


# How `serve` runs uvicorn (the tests' live servers too): X-Forwarded-For and -Proto are for the app to believe
# from IMAGEMATCH_TRUSTED_PROXIES only (web/proxies.py), never uvicorn's FORWARDED_ALLOW_IPS.
UVICORN_OPTIONS: dict[str, Any] = {"access_log": False, "log_config": None, "proxy_headers": False}


def is_loopback(host: str) -> bool:
    """Whether an address to bind is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    address = ip_address(host)
    return address is not None and address.is_loopback


def _require_free_port(host: str, port: int) -> None:
    """Refuse an address this machine cannot listen on, or a port another program listens on, before anything
    is loaded or announced (uvicorn would only say `[Errno 98]` after the banner)."""
    bind_host = host.strip().removeprefix("[").removesuffix("]") or "0.0.0.0"  # "" is every interface
    try:
        family, kind, proto, _, address = socket.getaddrinfo(bind_host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        err.print(
            f"[red]error:[/red] cannot listen on {host!r} ({error.strerror or error}): set --host or "
            "IMAGEMATCH_HOST to an address of this machine",
            highlight=False,
        )
        raise typer.Exit(2) from None
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as error:
        err.print(
            f"[red]error:[/red] cannot listen on {host}:{port} ({error.strerror or error}): choose another port "
            "with --port or IMAGEMATCH_PORT",
            highlight=False,
        )
        raise typer.Exit(2) from None


@app.command(cls=_Command)
@friendly_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Listen beyond this machine without authentication (not advised).")
    ] = False,
) -> None:
    """Start the web app and REST API."""
    import uvicorn

    from imagematch.web.app import create_app

    settings = _settings(server=True, host=host, port=port)
    _require_free_port(settings.host, settings.port)
    if not settings.auth_enabled and not is_loopback(settings.host):
        if not insecure:
            err.print(
                f"[red]error:[/red] refusing to listen on {settings.host} without authentication: anyone who can "
                "reach it could read and delete the library. Set IMAGEMATCH_API_KEY and/or "
                "IMAGEMATCH_UI_PASSWORD_HASH (`imagematch hash-password`), or pass --insecure (see SECURITY.md).",
                highlight=False,
            )
            raise typer.Exit(2)
        err.print(f"[yellow]warning:[/yellow] serving on {settings.host} without authentication", highlight=False)
    library = _library(settings)
    err.print(f"loading model {library.embedder.model_id} ...", highlight=False)
    library.open()
    if "FORWARDED_ALLOW_IPS" in os.environ:
        err.print(
            "[yellow]warning:[/yellow] FORWARDED_ALLOW_IPS is ignored: list the proxies whose X-Forwarded-For "
            "to believe in IMAGEMATCH_TRUSTED_PROXIES (see SECURITY.md)",
            highlight=False,
        )
    out.print(f"ImageMatch on http://{settings.host}:{settings.port}  (API docs at /docs)", highlight=False)
    uvicorn.run(
        create_app(settings, library),
        host=settings.host,
        port=settings.port,
        **UVICORN_OPTIONS,
    )


def _progress(console: Console) -> Progress:
    """The progress bar of the long commands (imported here: a search shows none)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


SHOWN_FOLDERS = 5  # sub-folders named in the summary of an index without -r; the rest are counted


def _summary(results: list[IngestResult], found: FolderScan) -> None:
    counts = {status: sum(r.status == status for r in results) for status in ("added", "duplicate", "failed")}
    out.print(f"added {counts['added']}, duplicates {counts['duplicate']}, failed {counts['failed']}")
    if found.nested_folders:
        count = len(found.nested_folders)
        names = [folder.name for folder in found.nested_folders[:SHOWN_FOLDERS]]
        more = f" and {count - len(names)} more" if count > len(names) else ""
        out.print(
            f"skipped {count} sub-folder{'s' * (count != 1)} (use -r to include them): {', '.join(names)}{more}",
            highlight=False,
            markup=False,  # folder names are the user's, brackets included
        )
    if found.unsupported:
        out.print(
            f"skipped {len(found.unsupported)} files of unsupported types: {', '.join(found.unsupported_suffixes)}",
            highlight=False,
        )


@app.command(cls=_Command)
@friendly_errors
def index(
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.", metavar="PATH")],
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.")] = False,
    description: Annotated[str, typer.Option(help="Description given to every image.", metavar="TEXT")] = "",
) -> None:
    """Add images to the library. Safe to re-run and to interrupt: stored images are reported as duplicates."""
    settings = _settings()
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise typer.BadParameter(f"no such file or folder: {missing[0]}")
    found = scan(paths, recursive=recursive)
    library = _library(settings)
    if found.files:
        with err.status(f"loading model {library.embedder.model_id} ...", spinner="dots"):
            library.embedder.load()  # before the bar: a first-time export takes a while and says so in the log
    results: list[IngestResult] = []
    cancel = threading.Event()
    with _progress(err) as progress:
        task = progress.add_task("indexing", total=len(found.files))

        def advance(result: IngestResult) -> None:
            if result.status == "failed":
                progress.console.print(f"[red]failed[/red] {result.filename}: {result.reason}", highlight=False)
            progress.advance(task)

        try:
            results = library.ingest.add_many(
                (Upload.from_path(f, description) for f in found.files), on_result=advance, cancel=cancel
            )
        except KeyboardInterrupt:
            cancel.set()
            err.print("interrupted: what was indexed is kept; run the same command again to finish")
            raise typer.Exit(130) from None
    _summary(results, found)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


def _print_json(fields: dict[str, Any]) -> None:
    """The API's JSON for the same thing, serialised by the same encoder (pydantic's) as the API's."""
    out.print_json(json.dumps(to_jsonable_python(fields)))


def _record_row(record: ImageRecord) -> str:
    words = record.description or record.caption or record.ocr.text
    return f"{record.filename}  {words[:60]}" if words else record.filename


def _query_terms(typed: list[TypedTerm], region: Region | None) -> list[QueryTerm]:
    terms: list[QueryTerm] = []
    for term in typed:
        if term.kind == "file":
            data = read_image_file(term.value)
            terms.append(ImageTerm(data, term.weight, Path(term.value).name, region=region))
        elif term.kind == "id":
            terms.append(StoredImageTerm(term.value, term.weight, region=region))
        else:
            terms.append(TextTerm(term.value, term.weight))
    return terms


@app.command(cls=_Command)
@friendly_errors
def search(
    query: Annotated[
        list[str] | None,
        typer.Argument(
            help="Words, or weighted terms joined by + and -: '2:golden retriever' + ./pool.jpg - people. A term "
            "that is a file is an image, a stored image id is that image, 'N:' sets a term's weight.",
            metavar="TERM",
        ),
    ] = None,
    image: Annotated[Path | None, typer.Option(help="An example image file.")] = None,
    image_id: Annotated[str, typer.Option("--id", help="A stored image id to use as the example.")] = "",
    image_weight: Annotated[float, typer.Option(help="With text and an image: 1 = image only, 0 = text only.")] = 0.5,
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    where: Annotated[
        list[str] | None,
        typer.Option(help="Filter, e.g. album=holiday or 'rating>=4'; repeat it for more.", metavar="FILTER"),
    ] = None,
    hybrid: Annotated[bool, typer.Option("--hybrid", help="Fuse a keyword (BM25) ranking of the words.")] = False,
    any_where: Annotated[
        bool, typer.Option("--any", help="One of the --where filters is enough, instead of all of them.")
    ] = False,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Leave out matches whose score is below this.")
    ] = None,
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="auto: leave out what this query's own cut-off finds irrelevant; off: none. Default: the "
            "IMAGEMATCH_CUTOFF setting.",
            metavar="off|auto",
        ),
    ] = None,
    region: Annotated[
        str, typer.Option(help="Search with part of the image only: left,top,right,bottom as fractions.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Search by text, by an image, by both, or by a weighted sum of terms."""
    settings = _settings()
    data = read_image_file(str(image)) if image is not None else None
    library = _library(settings, short_lived=True)
    flt = parse_where(where or [], any_of=any_where)
    box = parse_region(region)
    typed = parse_terms([word for word in query or [] if word.strip()], lambda v: library.store.get(v) is not None)
    if len(typed) <= 1 and all(t.kind == "text" and t.weight == 1.0 for t in typed):
        result = library.search.simple(
            SimpleSearch(
                text=typed[0].value if typed else "",
                image=data,
                image_id=image_id,
                image_weight=image_weight,
                k=k,
                filter=flt,
                region=box,
                hybrid=hybrid,
                min_score=min_score,
                cutoff=cutoff,
            )
        )
    else:
        terms = _query_terms(typed, box)
        if data is not None and image is not None:
            terms.append(ImageTerm(data, 1.0, image.name, region=box))
        if image_id:
            terms.append(StoredImageTerm(image_id, 1.0, region=box))
        result = library.search.run(Query(tuple(terms), k, flt, hybrid=hybrid, min_score=min_score, cutoff=cutoff))
    if as_json:
        _print_json(search_fields(result))
        return
    if result.truncated:
        err.print("note: the text was longer than the model's context and was truncated")
    if not result.hits:
        out.print("no matches")
        return
    table = Table("#", "score", "id", "image", "why", box=None)
    for rank, hit in enumerate(result.hits, 1):
        table.add_row(str(rank), f"{hit.score:.4f}", hit.record.id, _record_row(hit.record), why_summary(hit))
    out.print(table)


@app.command(cls=_Command)
@friendly_errors
def show(image_id: Annotated[str, typer.Argument(help="The image id.")]) -> None:
    """Show everything stored about one image."""
    library = _library(_settings(), check_model=False)
    _print_json(image_fields(library.catalog.get(image_id)))


@app.command(cls=_Command)
@friendly_errors
def delete(image_id: Annotated[str, typer.Argument(help="The image id.")]) -> None:
    """Delete one image, its file and thumbnail."""
    library = _library(_settings(), check_model=False)
    record = library.catalog.delete(image_id)
    out.print(f"deleted {record.id} ({record.filename})", highlight=False)


@app.command(cls=_Command)
@friendly_errors
def reset(yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False) -> None:
    """Delete every image and file in the library."""
    library = _library(_settings(), check_model=False)
    count = library.catalog.count()
    if not yes:
        typer.confirm(f"Delete all {count} images and their files? This cannot be undone", abort=True)
    deleted = library.catalog.reset(RESET_PHRASE)
    out.print(f"deleted {deleted} images; the library is empty")


@app.command(cls=_Command)
@friendly_errors
def reindex() -> None:
    """Re-embed every stored image with the configured model (after changing IMAGEMATCH_MODEL)."""
    library = _library(_settings(), check_model=False)
    with _progress(err) as progress:
        task = progress.add_task("re-embedding", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        total = library.maintenance.reindex(on_progress=update)
    out.print(f"re-embedded {total} images with {library.embedder.model_id}", highlight=False)


@app.command(cls=_Command)
@friendly_errors
def ocr() -> None:
    """Read the text in every picture not read yet (a library from before text was read, or after
    IMAGEMATCH_OCR=off). Safe to interrupt: a second run goes on where the first stopped."""
    library = _library(_settings())
    with _progress(err) as progress:
        task = progress.add_task("reading text", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = library.maintenance.read_texts(on_progress=update)
    out.print(
        f"read {report.done - report.failed} pictures: {report.with_text} hold text; {report.failed} could not be read",
        highlight=False,
    )
    if report.failed:
        raise typer.Exit(1)


@app.command(cls=_Command)
@friendly_errors
def tune(
    undo: Annotated[bool, typer.Option("--undo", help="Go back to the tuning before the current one.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Measure what tuning would do; change nothing.")] = False,
) -> None:
    """Tune the search to this library's own words, learned from its descriptions and corrected captions.
    Part of them is held out to measure it; it is applied only when it finds those better. Every query of
    every process uses it at once; `--undo` reverts it."""
    if undo and dry_run:
        raise typer.BadParameter("--undo changes the tuning at once: it has no --dry-run")
    library = _library(_settings())
    if undo:
        state = library.tuning.undo()
        out.print(f"search tuning is now: {describe_tuning(state.current)}", highlight=False)
        return
    with _progress(err) as progress:
        task = progress.add_task("reading the library", total=None)

        def update(step: str, done: int, total: int) -> None:
            progress.update(task, description=step, completed=done, total=total)

        report = library.tuning.tune(on_progress=update, dry_run=dry_run)
    table = Table(title=f"held out: {report.held_out} of {report.pairs} pairs", box=None)
    table.add_column("measure")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for measure in report.before:
        table.add_row(measure, f"{report.before[measure]:.3f}", f"{report.after[measure]:.3f}")
    out.print(table)
    if report.words:
        out.print(f"learned most: {', '.join(report.words)}", highlight=False)
    verdict = f"applied (version {report.version})" if report.applied else "not applied"
    out.print(f"{verdict}: {report.reason}", highlight=False)


@app.command(cls=_Command)
@friendly_errors
def caption(
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Queue failed captions again first.")] = False,
) -> None:
    """Caption every image waiting for one, here and now (a running server also does this in the background)."""
    from imagematch.factory import build_caption_worker

    settings = _settings()
    library = _library(settings)
    worker = build_caption_worker(settings, library)
    if retry_failed:
        out.print(f"queued {library.captions.retry()} failed captions again")
    status = worker.status()
    if status.state == "off":
        raise typer.BadParameter("captions are off: set MOONDREAM_API_KEY or IMAGEMATCH_MOONDREAM_ENDPOINT")
    if status.state == "error":
        err.print(f"[red]error:[/red] {status.message}", highlight=False)
        raise typer.Exit(1)
    with _progress(err) as progress:
        task = progress.add_task("captioning", total=status.pending)
        library.captions.on_pending = None
        captioned, failed = worker.run_until_empty(on_caption=lambda: progress.advance(task))
    after = worker.status()
    out.print(f"captioned {captioned}, failed {failed}; {after.pending} still pending")
    if after.state == "error":
        err.print(f"[red]error:[/red] {after.message}", highlight=False)
    if failed or after.state == "error":
        raise typer.Exit(1)


@app.command(cls=_Command)
@friendly_errors
def migrate(
    to: Annotated[str, typer.Option("--to", help=f"The store to copy the library into: {', '.join(STORE_NAMES)}.")],
    batch: Annotated[int, typer.Option(help="Records per write.", min=1, max=1000)] = 500,
) -> None:
    """Copy the library (records, both vectors, metadata, captions) to another store, without re-embedding.

    Resumable: run it again after an interruption. Originals and thumbnails stay where they are.
    """
    from imagematch.factory import build_store
    from imagematch.migrate import migrate as copy_library

    settings = _settings()
    if to not in STORE_NAMES:
        raise typer.BadParameter(f"unknown store {to!r}; choose {', '.join(STORE_NAMES)}")
    if to == settings.store:
        raise typer.BadParameter(f"the library is already in {to} (IMAGEMATCH_STORE={settings.store})")
    source = build_store(settings)
    target = build_store(settings.model_copy(update={"store": to}))
    _started()
    with _progress(err) as progress:
        task = progress.add_task(f"copying to {to}", total=None)
        report = copy_library(
            source,
            target,
            batch=batch,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    removed = (
        f"; removed {report.removed} record{'s' * (report.removed != 1)} the {source.name} store no longer holds"
        if report.removed
        else ""
    )
    out.print(
        f"copied {report.copied} records to {to} ({report.skipped} were already there; {report.total} in all, "
        f"counts verified{removed}) in {report.seconds:.0f}s. Set IMAGEMATCH_STORE={to} to serve from it.",
        highlight=False,
    )


@app.command(cls=_Command)
@friendly_errors
def check(
    repair: Annotated[bool, typer.Option("--repair", help="Fix what can be fixed without losing user data.")] = False,
) -> None:
    """Verify that records, files and vectors agree (after a crash, a disk problem or a manual edit)."""
    from imagematch.integrity import check as check_library

    library = _library(_settings(), check_model=False)
    report = check_library(library, repair=repair)
    out.print(f"{report.records} records, {report.originals} originals, {len(report.problems)} problems")
    for problem in report.problems:
        state = "[green]fixed[/green]" if problem.fixed else "[red]problem[/red]"
        out.print(f"  {state} {problem.kind} {problem.subject}: {problem.detail}", highlight=False)
    if not report.healthy:
        if not repair:
            out.print("run `imagematch check --repair` to fix what can be fixed")
        raise typer.Exit(1)


@app.command(cls=_Command)
@friendly_errors
def info() -> None:
    """Show the configuration, the model and the size of the library."""
    settings = _settings()
    library = _library(settings, check_model=False)
    details = library.info()
    table = Table(box=None, show_header=False)
    table.add_row("model", details.model_id)
    table.add_row("stored model", details.stored_model or "(empty library)")
    table.add_row("store", f"{details.store} in {settings.store_dir}")
    table.add_row("images", str(details.images))
    table.add_row("text in pictures", details.ocr)
    table.add_row("search tuning", describe_tuning(details.tuning, details.tuned_words))
    table.add_row("data dir", details.data_dir)
    table.add_row("model cache", str(settings.model_cache_dir))
    out.print(table)
    if details.stored_model and details.stored_model != details.model_id:
        err.print("[yellow]the library was built with another model: run `imagematch reindex`[/yellow]")


@app.command("demo-images", cls=_Command)
@friendly_errors
def demo_images(
    folder: Annotated[Path | None, typer.Argument(help="Where to write them (default: the samples folder).")] = None,
    count: Annotated[int, typer.Option(help="How many images.", min=1, max=1000)] = 48,
) -> None:
    """Write synthetic demo images (coloured shapes) to try ImageMatch offline, e.g. with /upload-samples."""
    from imagematch.demo_data import EXAMPLE_QUERY, write_demo_images

    target = folder or _settings().samples_dir
    _started()
    written = write_demo_images(target, count)
    out.print(f"wrote {len(written)} demo images to {target}; try searching for '{EXAMPLE_QUERY}'", highlight=False)


@app.command("hash-password", cls=_Command)
def hash_password_command(
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input (for scripts).")
    ] = False,
) -> None:
    """Print a salted hash of a password for IMAGEMATCH_UI_PASSWORD_HASH (the web UI's login)."""
    from imagematch.passwords import hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        err.print("[red]error:[/red] use a password of at least 8 characters", highlight=False)
        raise typer.Exit(1)
    out.print(hash_password(password), highlight=False, soft_wrap=True)
    err.print("set it as IMAGEMATCH_UI_PASSWORD_HASH in the environment or .env, then restart the server")


@app.command(cls=_Command)
def models() -> None:
    """List model presets."""
    from imagematch.ai.model_source import LONGCLIP, PRESETS

    for name, spec in PRESETS.items():
        out.print(f"{name:<12} {spec}", highlight=False)
    for name, (repo, _, architecture) in LONGCLIP.items():
        out.print(f"{name:<12} LongCLIP {architecture}, 248-token text ({repo})", highlight=False)


def main() -> None:
    """The `imagematch` program: the collector is off for start-up (see _started) and set aside at exit."""
    gc.disable()
    try:
        app()
    except SettingsError as error:
        err.print(f"[red]error:[/red] {error}", highlight=False)
        sys.exit(1)
    finally:
        gc.freeze()  # the process ends: its memory goes back whole; collecting it first would only take time
