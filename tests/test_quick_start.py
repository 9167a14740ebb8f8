"""The Quick start's offline try-out, as README.md tells it: `imagematch demo-images`, index them, search for
the example words. The words are read from README.md, so the two cannot drift apart again ("a red circle"
matched nothing: the demo set holds no red circle)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from imagematch.cli import app
from imagematch.demo_data import COLOURS, SHAPES
from imagematch.factory import build_library
from imagematch.library import SimpleSearch
from imagematch.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_query() -> str:
    quick_start = README.read_text(encoding="utf-8").split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r'search for "([^"]+)"', quick_start)
    assert found is not None, "the Quick start no longer suggests a search"
    return found.group(1)


def test_the_quick_start_search_finds_what_the_demo_images_hold(tmp_path: Path) -> None:
    words = quick_start_query()
    _, colour, shape = words.split()  # "a <colour> <shape>", what the demo images are made of
    assert colour in COLOURS and shape in SHAPES

    folder = tmp_path / "images"
    wrote = CliRunner().invoke(app, ["demo-images", str(folder)])
    assert wrote.exit_code == 0, wrote.output
    assert f"try searching for '{words}'" in wrote.output  # the CLI suggests the same words

    library = build_library(
        Settings(_env_file=None, data_dir=tmp_path / "data", model="demo", background_removal="off", captioner="none")  # type: ignore[call-arg]
    )
    for path in sorted(folder.glob("*.png")):
        assert library.ingest.add(path.read_bytes(), filename=path.name).status == "added"
    [top] = library.search.simple(SimpleSearch(text=words, k=1)).hits
    assert f"-{colour}-{shape}-" in top.record.filename, f"{words!r} found {top.record.filename} first"
