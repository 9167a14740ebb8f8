"""Reading the HTML forms: metadata typed as key/value rows, and the one key/value filter of browse and search.

A value typed in a form is text, but users mean `2024` as a number and `true` as a yes/no; the API takes
JSON, so the forms apply one rule (the same as the CLI's `--where` and the browser script's): integers,
decimals and true/false are typed, anything else is text, and "quoted" text always stays text.
"""

from __future__ import annotations

import math
import re

from imagematch.filters import parse_filter
from imagematch.records import Filter, InvalidInput, InvalidQuery, Metadata, MetadataValue

# The search form's filter rows: each test as typed, the filter operator it means, and how it reads.
FILTER_OPERATORS = {"=": "$eq", "!=": "$ne", "<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "in": "$in"}
FILTER_OPERATOR_LABELS = {
    "=": "equals",
    "!=": "is not",
    "<": "less than",
    "<=": "at most",
    ">": "more than",
    ">=": "at least",
    "in": "is one of (a, b, …)",
}
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def typed_value(text: str) -> MetadataValue:
    """What a value typed in a form means: a number, true/false, or text."""
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if value in ("true", "false"):
        return value == "true"
    if _INTEGER.fullmatch(value):
        return int(value)
    if _DECIMAL.fullmatch(value):
        number = float(value)
        if math.isfinite(number):
            return number
    return value


def editable_value(value: MetadataValue) -> str:
    """The text to put in a form field so that saving it unchanged keeps both the value and its type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if typed_value(value) != value:
        return f'"{value}"'
    return value


def shown_value(value: MetadataValue) -> str:
    """A stored value as read on a page (booleans as true/false, like they are typed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def metadata_from_rows(keys: list[str], values: list[str]) -> Metadata:
    """Key/value rows as posted by the form; a row with an empty key is a removed row."""
    if len(keys) != len(values):
        raise InvalidInput("every metadata row needs a key field and a value field")
    metadata: Metadata = {}
    for raw_key, raw_value in zip(keys, values, strict=True):
        key = raw_key.strip()
        if not key:
            continue
        if key in metadata:
            raise InvalidInput(f"the metadata key {key!r} appears twice; keep one of them")
        metadata[key] = typed_value(raw_value)
    return metadata


def one_key_filter(key: str, value: str) -> Filter | None:
    """The forms' filter: one metadata key (or built-in `image.` field) equal to a typed value."""
    name = key.strip()
    if not name:
        if value.strip():
            raise InvalidQuery("the filter has a value but no key; give the metadata key to filter on")
        return None
    return parse_filter({name: typed_value(value)})
