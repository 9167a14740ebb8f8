"""Rules for user-supplied text: filenames, descriptions, captions and custom metadata.

Bad input is refused with an InvalidInput that says what to change; nothing is silently rewritten except
filenames, which are only labels (their path parts and invisible characters are dropped).
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

from imagematch.records import (
    MAX_DESCRIPTION_LENGTH,
    MAX_FILENAME_LENGTH,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_LIST_ITEMS,
    MAX_METADATA_VALUE_LENGTH,
    InvalidInput,
    Metadata,
    MetadataValue,
)

_ALLOWED_CONTROLS = {"\n", "\r", "\t"}
_MAX_INT = 2**63 - 1
# Key beginnings a filter reads as something else: a built-in field (`image.format`), the optional prefix of
# custom keys (`metadata.album` is `album`) and operators (`$or`). A key stored with one could never be filtered.
RESERVED_KEY_PREFIXES = {
    "image.": "a built-in field (image.format is the file's format)",
    "metadata.": "the optional prefix of custom keys (metadata.album is album)",
    "$": "an operator such as $or",
}


def load_json(text: str, what: str, error: type[InvalidInput] = InvalidInput) -> Any:
    """Decode JSON a user sent; nesting too deep to decode or numbers too long to read are refused like any
    other invalid JSON (Python raises RecursionError and ValueError for them, not JSONDecodeError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as problem:
        raise error(f"{what} is not valid JSON: {problem.msg}") from None
    except (RecursionError, ValueError):
        raise error(f"{what} is not usable JSON: it is nested too deeply or holds a number too long") from None


def _has_controls(text: str, allow_newlines: bool) -> bool:
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs") and not (allow_newlines and ch in _ALLOWED_CONTROLS):
            return True
    return False


def clean_filename(name: str | None) -> str:
    """Keep only the last path component, without control characters; never empty."""
    text = (name or "").replace("\\", "/").split("/")[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs")).strip()
    if text in ("", ".", ".."):
        return "upload"
    return text[:MAX_FILENAME_LENGTH]


def clean_text(value: Any, what: str, limit: int = MAX_DESCRIPTION_LENGTH) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text")
    if len(value) > limit:
        raise InvalidInput(f"{what} is {len(value):,} characters long; the limit is {limit:,}")
    if _has_controls(value, allow_newlines=True):
        raise InvalidInput(f"{what} contains control characters")
    return value.strip()


def clean_description(value: Any) -> str:
    return clean_text(value, "the description")


def _clean_list(key: str, items: list[Any]) -> list[str]:
    """Tags: distinct non-empty strings, as many and as long in all as one text value may be."""
    if not items:
        raise InvalidInput(f"metadata {key!r}: the list is empty; leave the key out instead")
    if len(items) > MAX_METADATA_LIST_ITEMS:
        raise InvalidInput(f"metadata {key!r}: the list has {len(items)} items; the limit is {MAX_METADATA_LIST_ITEMS}")
    cleaned: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(f"metadata {key!r}: a list may hold only strings (tags), not {type(item).__name__}")
        text = clean_text(item, f"metadata {key!r}", MAX_METADATA_VALUE_LENGTH)
        if not text:
            raise InvalidInput(f"metadata {key!r}: the list holds an empty string")
        if text in cleaned:
            raise InvalidInput(f"metadata {key!r}: {text!r} appears twice in the list; keep one of them")
        cleaned.append(text)
    total = sum(map(len, cleaned))
    if total > MAX_METADATA_VALUE_LENGTH:
        raise InvalidInput(
            f"metadata {key!r}: the list's strings are {total:,} characters long in all; the limit is "
            f"{MAX_METADATA_VALUE_LENGTH:,}"
        )
    return cleaned


def _clean_value(key: str, value: Any) -> MetadataValue:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_INT:
            raise InvalidInput(f"metadata {key!r}: the number is too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"metadata {key!r}: numbers must be finite")
        return value
    if isinstance(value, str):
        return clean_text(value, f"metadata {key!r}", MAX_METADATA_VALUE_LENGTH)
    if isinstance(value, list):
        return _clean_list(key, value)
    raise InvalidInput(
        f"metadata {key!r}: values must be a string, a number, true/false or a list of strings, "
        f"not {type(value).__name__}"
    )


def clean_metadata(value: Any) -> Metadata:
    """A flat mapping of string keys to string, number, boolean or list-of-string values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput("metadata must be a JSON object of key/value pairs")
    if len(value) > MAX_METADATA_KEYS:
        raise InvalidInput(f"metadata has {len(value)} keys; the limit is {MAX_METADATA_KEYS}")
    cleaned: Metadata = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidInput("metadata keys must be strings")
        name = key.strip()
        if not name:
            raise InvalidInput("metadata keys must not be empty")
        if len(name) > MAX_METADATA_KEY_LENGTH:
            raise InvalidInput(f"metadata key {name[:40]!r}… is longer than {MAX_METADATA_KEY_LENGTH} characters")
        if _has_controls(name, allow_newlines=False):
            raise InvalidInput(f"metadata key {name!r} contains control characters")
        reserved = next((prefix for prefix in RESERVED_KEY_PREFIXES if name.startswith(prefix)), None)
        if reserved is not None:
            raise InvalidInput(
                f"metadata key {name!r} starts with {reserved!r}, which filters read as "
                f"{RESERVED_KEY_PREFIXES[reserved]}; choose another name"
            )
        if name in cleaned:  # `"a"` and `" a "` are one key: keeping either would drop the other's value unseen
            raise InvalidInput(f"the metadata key {name!r} appears twice; keep one of them")
        cleaned[name] = _clean_value(name, item)
    return cleaned
