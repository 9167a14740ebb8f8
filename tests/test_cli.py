from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import imagematch
from imagematch.cli import app
from imagematch.factory import build_library
from imagematch.query_syntax import TypedTerm, parse_region, parse_terms
from imagematch.records import InvalidQuery, RecordPatch
from imagematch.settings import load_settings
from testkit.images import PHOTOS, encode, jpeg, photo


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_model_dir: Path) -> dict[str, str]:
    values = {
        "IMAGEMATCH_DATA_DIR": str(tmp_path / "data"),
        "IMAGEMATCH_MODEL": f"local-dir:{tiny_model_dir}",
        "IMAGEMATCH_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "IMAGEMATCH_LOG_LEVEL": "WARNING",
        "IMAGEMATCH_BACKGROUND_REMOVAL": "off",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for name in PHOTOS[:6]:
        (folder / f"{name}.jpg").write_bytes(jpeg(name))
    (folder / "nested" / "retina.png").write_bytes(encode(photo("retina"), "PNG"))
    return folder


runner = CliRunner()


def test_index_search_show_delete(env: dict[str, str], photos: Path) -> None:
    result = runner.invoke(app, ["index", str(photos)])
    assert result.exit_code == 0, result.output
    assert "added 6, duplicates 0, failed 0" in result.output

    again = runner.invoke(app, ["index", str(photos), "--recursive"])
    assert again.exit_code == 0
    assert "added 1, duplicates 6, failed 0" in again.output

    found = runner.invoke(app, ["search", "", "--image", str(photos / "coffee.jpg"), "-k", "2", "--json"])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)["hits"]
    assert len(hits) == 2 and hits[0]["image"]["filename"] == "coffee.jpg" and hits[0]["score"] >= 0.99

    table = runner.invoke(
        app, ["search", "a cup of coffee", "--image", str(photos / "coffee.jpg"), "--image-weight", "1"]
    )
    assert table.exit_code == 0 and "coffee.jpg" in table.output.splitlines()[1]

    image_id = hits[0]["id"]
    shown = runner.invoke(app, ["show", image_id])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["id"] == image_id

    deleted = runner.invoke(app, ["delete", image_id])
    assert deleted.exit_code == 0 and "deleted" in deleted.output
    missing = runner.invoke(app, ["show", image_id])
    assert missing.exit_code == 1 and "no image with id" in missing.output


def test_index_reports_failures_and_exits_non_zero(env: dict[str, str], photos: Path) -> None:
    (photos / "broken.jpg").write_bytes(jpeg("moon")[:1500])
    (photos / "empty.png").write_bytes(b"")
    result = runner.invoke(app, ["index", str(photos)])
    assert result.exit_code == 1
    assert "failed 2" in result.output
    assert "broken.jpg" in result.output and "empty.png: the file is empty" in result.output


def test_index_missing_path_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["index", str(tmp_path / "nope")])
    assert result.exit_code != 0 and "no such file" in result.output


def test_reset_asks_unless_yes(env: dict[str, str], photos: Path) -> None:
    runner.invoke(app, ["index", str(photos)])
    refused = runner.invoke(app, ["reset"], input="n\n")
    assert refused.exit_code != 0
    info = runner.invoke(app, ["info"])
    assert "6" in info.output
    done = runner.invoke(app, ["reset", "--yes"])
    assert done.exit_code == 0 and "deleted 6 images" in done.output


def test_search_errors_are_one_line(env: dict[str, str], photos: Path) -> None:
    runner.invoke(app, ["index", str(photos)])
    for args in (
        ["search", "x", "-k", "0"],
        ["search", "x", "--image-weight", "2", "--id", "abc"],
        ["search"],
        ["search", "x", "--cutoff", "sometimes"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_reindex_after_model_change(
    env: dict[str, str], photos: Path, other_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner.invoke(app, ["index", str(photos)])
    monkeypatch.setenv("IMAGEMATCH_MODEL", f"local-dir:{other_model_dir}")
    refused = runner.invoke(app, ["search", "a rocket"])
    assert refused.exit_code == 1 and "imagematch reindex" in refused.output
    assert runner.invoke(app, ["reindex"]).exit_code == 0
    assert runner.invoke(app, ["search", "a rocket"]).exit_code == 0


def test_real_process_exit_codes(tmp_path: Path, tiny_model_dir: Path) -> None:
    environment = {**os.environ, "IMAGEMATCH_DATA_DIR": str(tmp_path / "d"), "IMAGEMATCH_STORE": "nosql"}
    command = [sys.executable, "-m", "imagematch", "info"]
    bad = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error: invalid setting IMAGEMATCH_STORE")
    assert "Traceback" not in bad.stderr
    environment["IMAGEMATCH_STORE"] = "lancedb"
    environment["IMAGEMATCH_MODEL"] = f"local-dir:{tiny_model_dir}"
    good = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert good.returncode == 0, good.stderr
    assert "local-dir:tiny-clip@" in good.stdout


def test_terms_are_read_with_signs_weights_files_and_ids(tmp_path: Path) -> None:
    pool = tmp_path / "pool.jpg"
    pool.write_bytes(b"x")
    stored = "c2924c5532bddfc8-945df306"
    terms = parse_terms(
        [
            "2:golden retriever",
            "+",
            str(pool),
            "-",
            "people",
            "+",
            f"0.5:{stored}",
            "-",
            "-1.5:ffffffffffffffff-00000000",
        ],
        lambda value: value == stored,
    )
    assert terms == [
        TypedTerm("text", "golden retriever", 2.0),
        TypedTerm("file", str(pool), 1.0),
        TypedTerm("text", "people", -1.0),
        TypedTerm("id", stored, 0.5),
        TypedTerm("text", "ffffffffffffffff-00000000", 1.5),  # id-shaped but not stored: words
    ]
    assert parse_terms(["-", "cats"], lambda _: False) == [TypedTerm("text", "cats", -1.0)]
    assert parse_terms(["a dog"], lambda _: False) == [TypedTerm("text", "a dog", 1.0)]


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["a", "b"], "between terms"),
        (["a", "+"], "ends with an operator"),
        (["a", "+", "-", "b"], "two operators"),
        (["2:"], "is empty"),
    ],
)
def test_malformed_queries_say_what_is_wrong(words: list[str], message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        parse_terms(words, lambda _: False)


def test_regions_are_four_fractions() -> None:
    assert parse_region("0.1, 0.2,0.6,0.9") == (0.1, 0.2, 0.6, 0.9)
    assert parse_region(" ") is None
    for bad in ("0.1,0.2,0.6", "a,b,c,d", "0.6,0.2,0.1,0.9", "0,0,1,1.5"):
        with pytest.raises(InvalidQuery):
            parse_region(bad)


def _hits(arguments: list[str]) -> list[dict[str, Any]]:
    result = runner.invoke(app, ["search", *arguments, "--json"])
    assert result.exit_code == 0, result.output
    hits: list[dict[str, Any]] = json.loads(result.stdout)["hits"]
    return hits


def test_search_with_arithmetic_hybrid_cut_off_and_region(env: dict[str, str], photos: Path) -> None:
    assert runner.invoke(app, ["index", str(photos)]).exit_code == 0
    coffee = _hits(["", "--image", str(photos / "coffee.jpg"), "-k", "1"])[0]
    coffee_id = str(coffee["id"])

    mixed = _hits(["2:a cup", "+", str(photos / "rocket.jpg"), "-", "people", "+", f"0.5:{coffee_id}", "-k", "3"])
    assert len(mixed) == 3
    steered = _hits([str(photos / "rocket.jpg"), "-", f"0.9:{coffee_id}", "-k", str(len(PHOTOS))])
    assert steered[0]["image"]["filename"] == "rocket.jpg"

    shown = runner.invoke(app, ["search", "a rocket", "--min-score", "1"])
    assert shown.exit_code == 0 and "no matches" in shown.output
    assert [h["id"] for h in _hits(["", "--image", str(photos / "coffee.jpg"), "--min-score", "0.999"])] == [coffee_id]
    assert coffee_id not in {h["id"] for h in _hits(["--id", coffee_id, "-k", "3"])}

    region = _hits(["", "--image", str(photos / "astronaut.jpg"), "--region", "0.2,0.1,0.7,0.6", "-k", "2"])
    whole = _hits(["", "--image", str(photos / "astronaut.jpg"), "-k", "2"])
    assert region[0]["score"] != whole[0]["score"]

    assert len(_hits(["coffee", "--hybrid", "-k", "2"])) == 2  # "coffee" is in a file name: a keyword match
    assert _hits(["coffee", "--hybrid", "-k", "1"])[0]["image"]["filename"] == "coffee.jpg"
    first = _hits(["coffee", "--hybrid", "-k", "1"])[0]
    assert first["why"]["keywords"] == ["coffee"] and first["score"] == first["why"]["image"]
    table = runner.invoke(app, ["search", "coffee", "--hybrid", "-k", "1"])
    row = " ".join(table.output.split())  # the table wraps at the terminal's width
    assert "image 0." in row and "keywords: coffee" in row


def test_arithmetic_search_errors_stay_one_line(env: dict[str, str], photos: Path) -> None:
    runner.invoke(app, ["index", str(photos)])
    for arguments in (
        ["a", "b"],
        ["a", "--region", "1,2"],
        ["x", "--min-score", "3"],
        [str(photos / "coffee.jpg"), "+"],
    ):
        result = runner.invoke(app, ["search", *arguments])
        assert result.exit_code == 1, arguments
        assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1


# Not needed by a text search: PyTorch and the rest are slow to import; ftfy repairs only text that is not plain
# printable ASCII, and only the long commands show a progress bar.
HEAVY = ("torch", "open_clip", "rembg", "fastapi", "pymilvus", "pinecone", "ftfy", "rich.progress")
SOURCE = str(Path(imagematch.__file__).resolve().parents[1])  # this checkout's package in a subprocess


def test_a_search_imports_neither_pytorch_nor_rembg(env: dict[str, str], photos: Path) -> None:
    assert runner.invoke(app, ["index", str(photos)]).exit_code == 0  # exports the model to ONNX once
    probe = (
        "import sys\n"
        "from imagematch.cli import app\n"
        "try:\n"
        "    app(['search', 'a cup of coffee', '-k', '2', '--json'])\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        f"print('heavy:', [name for name in {HEAVY!r} if name in sys.modules], file=sys.stderr)\n"
    )
    environment = {**os.environ, "IMAGEMATCH_BACKGROUND_REMOVAL": "auto", "PYTHONPATH": SOURCE}  # auto: the default
    done = subprocess.run(
        [sys.executable, "-c", probe], env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["hits"]) == 2
    assert "heavy: []" in done.stderr
    assert "Downloading" not in done.stderr


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_query_image_that_is_not_a_file_is_one_line(
    env: dict[str, str], photos: Path, tmp_path: Path, kind: str
) -> None:
    assert runner.invoke(app, ["index", str(photos)]).exit_code == 0
    target = tmp_path / "nope.jpg" if kind == "missing" else photos
    for arguments in (["", "--image", str(target)], ["coffee", "+", str(target)]):
        result = runner.invoke(app, ["search", *arguments])
        assert result.exit_code == 1, arguments
        assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1, result.output
        assert str(target) in result.output and "Traceback" not in result.output


def test_a_missing_file_term_is_not_searched_as_words(env: dict[str, str], photos: Path) -> None:
    assert runner.invoke(app, ["index", str(photos)]).exit_code == 0
    result = runner.invoke(app, ["search", "cat", "+", "./nope.jpg"])
    assert result.exit_code == 1 and "no such image file: ./nope.jpg" in result.output


def test_index_says_what_it_skipped(env: dict[str, str], photos: Path) -> None:
    (photos / "portrait.ppm").write_bytes(b"P6\n1 1\n255\n\x00\x00\x00")
    (photos / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (photos / "deeper" / "still").mkdir(parents=True)
    (photos / "deeper" / "still" / "moon.png").write_bytes(encode(photo("moon"), "PNG"))
    result = runner.invoke(app, ["index", str(photos)])
    assert result.exit_code == 0, result.output
    assert "added 6, duplicates 0, failed 0" in result.output
    assert "skipped 2 sub-folders (use -r to include them): deeper, nested" in result.output
    assert "skipped 2 files of unsupported types: .ppm, .svg" in result.output
    everything = runner.invoke(app, ["index", str(photos), "-r"])
    assert "added 2, duplicates 6" in everything.output and "use -r" not in everything.output


def test_each_failed_file_is_reported_once(env: dict[str, str], photos: Path) -> None:
    (photos / "empty.png").write_bytes(b"")
    result = runner.invoke(app, ["index", str(photos)])
    assert result.exit_code == 1
    assert result.output.count("empty.png") == 1, result.output


def test_json_output_has_the_api_shape(env: dict[str, str], photos: Path) -> None:
    from imagematch.web.schemas import HitOut, ImageOut, SearchOut

    assert runner.invoke(app, ["index", str(photos)]).exit_code == 0
    found = json.loads(runner.invoke(app, ["search", "a cup", "-k", "2", "--json"]).stdout)
    assert set(found) == set(SearchOut.model_fields)
    assert [set(hit) for hit in found["hits"]] == [set(HitOut.model_fields)] * 2
    assert SearchOut.model_validate(found).hits[0].image.filename.endswith(".jpg")
    shown = json.loads(runner.invoke(app, ["show", found["hits"][0]["id"]]).stdout)
    assert shown == found["hits"][0]["image"] and set(shown) == set(ImageOut.model_fields)


@pytest.mark.parametrize("command", ["index", "search", "serve", "check", "caption", "hash-password"])
def test_help_names_values_not_python_types(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "list[" not in result.output, result.output


def test_serve_on_a_port_in_use_names_the_settings(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)])
    assert result.exit_code == 2
    assert "--port" in result.output and "IMAGEMATCH_PORT" in result.output
    assert "ImageMatch on http" not in result.output and "loading model" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_serve_on_an_address_that_is_no_address_says_so(env: dict[str, str]) -> None:
    result = runner.invoke(app, ["serve", "--host", "no-such-host.invalid", "--insecure"])
    assert result.exit_code == 2 and "IMAGEMATCH_HOST" in result.output and "port" not in result.output


def test_log_lines_print_above_a_live_progress_bar() -> None:
    from rich.console import Console
    from rich.progress import Progress

    from imagematch.logs import _handler

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    logger = logging.getLogger("imagematch.progress-test")
    logger.propagate = False
    logger.addHandler(_handler(console))
    with Progress(console=console) as progress:
        task = progress.add_task("indexing", total=2)
        logger.warning("exporting the model to ONNX Runtime")
        progress.advance(task)
    # What stays visible of each line: the text after its last erase-line code, without the other controls.
    visible = [
        re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", line.split("\x1b[2K")[-1]) for line in screen.getvalue().split("\n")
    ]
    [logged] = [line for line in visible if "exporting the model" in line]
    assert logged.endswith("WARNING imagematch.progress-test: exporting the model to ONNX Runtime")
    assert "indexing" not in logged


def test_where_clauses_can_ask_for_any_of_them_or_be_a_json_filter(env: dict[str, str], photos: Path) -> None:
    runner.invoke(app, ["index", str(photos)])
    found = json.loads(runner.invoke(app, ["search", "a photo", "-k", "10", "--json"]).stdout)["hits"]
    by_name = {hit["image"]["filename"]: hit["id"] for hit in found}
    library = build_library(load_settings())
    library.catalog.update(by_name["coffee.jpg"], RecordPatch(metadata={"tags": ["cup", "morning"]}))
    library.catalog.update(by_name["rocket.jpg"], RecordPatch(metadata={"album": "space"}))

    def names(*args: str) -> set[str]:
        result = runner.invoke(app, ["search", "a photo", "-k", "10", "--json", *args])
        assert result.exit_code == 0, result.output
        return {hit["image"]["filename"] for hit in json.loads(result.stdout)["hits"]}

    assert names("--where", "tags=cup", "--where", "album=space") == set()
    assert names("--where", "tags=cup", "--where", "album=space", "--any") == {"coffee.jpg", "rocket.jpg"}
    assert names("--where", "tags!=evening,night") == {"coffee.jpg"}
    assert names("--where", '{"$or": [{"tags": "morning"}, {"album": "space"}]}') == {"coffee.jpg", "rocket.jpg"}
    refused = runner.invoke(app, ["search", "a photo", "--where", '{"$xor": []}'])
    assert refused.exit_code == 1 and "use $and or $or" in refused.output
