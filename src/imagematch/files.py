"""Finding image files in folders (CLI `index`, the samples folder), without leaving the folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def image_files(paths: list[Path], *, recursive: bool, confine: bool = False) -> Iterator[Path]:
    """Image files named directly, or found in folders by suffix (hidden files skipped), in sorted order.

    With confine=True, files reached through links that point outside their folder are skipped, so an
    imported folder cannot be used to read files elsewhere on the machine.
    """
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        root = path.resolve()
        found = path.rglob("*") if recursive else path.glob("*")
        for child in sorted(found):
            if any(part.startswith(".") for part in child.relative_to(path).parts):
                continue
            if child.suffix.lower() not in IMAGE_SUFFIXES or not child.is_file():
                continue
            if confine and not _inside(child, root):
                continue
            yield child
