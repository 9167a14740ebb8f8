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
    nested: list[Path] = field(default_factory=list)  # image files in sub-folders that were not descended into
    nested_folders: set[Path] = field(default_factory=set)  # those sub-folders (the ones below a scanned folder)

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

    With confine=True, files reached through links that point outside their folder are skipped, so an
    imported folder cannot be used to read files elsewhere on the machine.
    """
    found = FolderScan()
    for path in paths:
        if not path.is_dir():
            found.files.append(path)
            continue
        root = path.resolve()
        for child in sorted(path.rglob("*")):
            parts = child.relative_to(path).parts
            if any(part.startswith(".") for part in parts) or not child.is_file():
                continue
            if confine and not _inside(child, root):
                continue
            supported = child.suffix.lower() in IMAGE_SUFFIXES
            if len(parts) > 1 and not recursive:
                if supported:
                    found.nested.append(child)
                    found.nested_folders.add(path / parts[0])
            elif supported:
                found.files.append(child)
            else:
                found.unsupported.append(child)
    return found


def image_files(paths: list[Path], *, recursive: bool, confine: bool = False) -> Iterator[Path]:
    """The image files of `scan`, for callers that need nothing else."""
    return iter(scan(paths, recursive=recursive, confine=confine).files)
