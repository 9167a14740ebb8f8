"""Finding image files in folders (CLI `index`, the samples folder), without leaving the folder."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)


@dataclass(slots=True)
class FolderScan:
    """The image files found, and what was passed over, so the user can be told instead of left guessing."""

    files: list[Path] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)  # files in the folders with another suffix
    nested_folders: list[Path] = field(default_factory=list)  # sub-folders not entered (without recursive)

    @property
    def unsupported_suffixes(self) -> list[str]:
        return sorted({path.suffix.lower() or "(none)" for path in self.unsupported})


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def scan(paths: list[Path], *, recursive: bool, confine: bool = False) -> FolderScan:
    """Image files named directly, or found in folders by suffix (hidden files skipped), in sorted order.

    Without recursive, a folder is listed and nothing below it is: its own files are taken, and its sub-folders
    are named in `nested_folders` (the ones recursive would enter: not hidden, not links), so that the user
    can be told to use -r. What those sub-folders hold is not counted, since that would take the very walk of
    the whole tree that leaving recursive off avoids (pointed at a home folder, a scan lists one folder).

    With confine=True, files reached through links that point outside their folder are skipped, so an
    imported folder cannot be used to read files elsewhere on the machine.
    """
    found = FolderScan()
    for path in paths:
        if not path.is_dir():
            found.files.append(path)
            continue
        root = path.resolve()
        for child in sorted(path.rglob("*") if recursive else path.iterdir()):
            if any(part.startswith(".") for part in child.relative_to(path).parts):
                continue
            if not recursive and child.is_dir() and not child.is_symlink():
                found.nested_folders.append(child)
                continue
            if not child.is_file() or (confine and not _inside(child, root)):
                continue
            if child.suffix.lower() in IMAGE_SUFFIXES:
                found.files.append(child)
            else:
                found.unsupported.append(child)
    return found


def image_files(paths: list[Path], *, recursive: bool, confine: bool = False) -> Iterator[Path]:
    """The image files of `scan`, for callers that need nothing else."""
    return iter(scan(paths, recursive=recursive, confine=confine).files)
