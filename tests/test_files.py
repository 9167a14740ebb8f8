"""Which files of a folder are images to index: the folder alone without -r, the whole tree with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from imagematch.files import scan


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Photos, a text file, two sub-folders (one of them deep), a hidden folder, and links in and out."""
    root = tmp_path / "photos"
    for name in ("b.jpg", "a.PNG", "notes.txt", "deeper/still/moon.png", "nested/retina.webp", ".cache/c.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    outside = tmp_path / "elsewhere"
    (outside / "secret.jpg").parent.mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(b"x")
    (root / "linked.jpg").symlink_to(outside / "secret.jpg")
    (root / "linked-folder").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every folder whose entries are read, by os.scandir or os.listdir (what pathlib lists folders with)."""
    seen: list[Path] = []
    for name in ("scandir", "listdir"):
        real = getattr(os, name)

        def recording(path: Any = ".", *, _real: Any = real) -> Any:
            seen.append(Path(path))
            return _real(path)

        monkeypatch.setattr(os, name, recording)
    return seen


def test_without_recursive_only_the_folder_itself_is_listed(folder: Path, listed: list[Path]) -> None:
    """Pointed at a big tree (a home folder), a scan without -r reads one folder, not everything below it."""
    found = scan([folder], recursive=False)
    assert set(listed) == {folder}
    assert found.files and found.nested_folders
    listed.clear()
    scan([folder], recursive=True)
    assert folder / "deeper" / "still" in listed  # the recorder sees the walk this scan does not take


def test_without_recursive_the_folders_own_files_are_taken_and_its_sub_folders_named(folder: Path) -> None:
    found = scan([folder], recursive=False)
    assert found.files == [folder / "a.PNG", folder / "b.jpg", folder / "linked.jpg"]
    assert found.unsupported == [folder / "notes.txt"]
    # the ones -r would enter: not the hidden folder, not the link to a folder
    assert found.nested_folders == [folder / "deeper", folder / "nested"]


def test_recursive_takes_the_whole_tree_but_hidden_folders(folder: Path) -> None:
    found = scan([folder], recursive=True)
    assert found.files == [
        folder / "a.PNG",
        folder / "b.jpg",
        folder / "deeper" / "still" / "moon.png",
        folder / "linked.jpg",
        folder / "nested" / "retina.webp",
    ]
    assert found.unsupported == [folder / "notes.txt"] and found.nested_folders == []


@pytest.mark.parametrize("recursive", [False, True])
def test_confined_scans_skip_links_out_of_the_folder(folder: Path, recursive: bool) -> None:
    found = scan([folder], recursive=recursive, confine=True)
    assert folder / "linked.jpg" not in found.files and folder / "b.jpg" in found.files


def test_files_named_directly_are_taken_as_they_are(folder: Path) -> None:
    named = [folder / "notes.txt", folder / "nested" / "retina.webp"]
    assert scan(named, recursive=False).files == named
