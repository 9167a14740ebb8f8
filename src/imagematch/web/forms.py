"""Reading the HTML forms: metadata typed as key/value rows, and the one key/value filter of browse and search.

A value typed in a form is text, but users mean `2024` as a number and `true` as a yes/no; the API takes
JSON, so the forms apply one rule (the same as the CLI's `--where` and the browser script's): integers,
decimals and true/false are typed, anything else is text, and "quoted" text always stays text.

A row of the kind "list" holds tags, written as comma-separated text (the page's script shows them as chips):
`beach, "Biarritz, France"`, a tag with a comma or a quote in "quotes", its quotes doubled, as in CSV.
"""

from __future__ import annotations

import csv
import math
import re

from imagematch.filters import parse_filter
from imagematch.records import Filter, InvalidInput, InvalidQuery, Metadata, MetadataValue

# The search form's filter rows: each test as typed, the filter operator it means, and how it reads.
FILTER_OPERATORS = {
    "=": "$eq",
    "!=": "$ne",
    "<": "$lt",
    "<=": "$lte",
    ">": "$gt",
    ">=": "$gte",
    "in": "$in",
    "not in": "$nin",
}
FILTER_OPERATOR_LABELS = {
    "=": "equals",
    "!=": "is not",
    "<": "less than",
    "<=": "at most",
    ">": "more than",
    ">=": "at least",
    "in": "is one of (a, b, …)",
    "not in": "is none of (a, b, …)",
}
# The kinds of a metadata row: a typed value, or a list of tags.
METADATA_KINDS = {"value": "value", "list": "tags"}
MetadataRow = tuple[str, str, str]  # key, text as in the form, kind
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


def list_items(text: str) -> list[str]:
    """The tags of a list row: comma-separated, "quoted" where a tag holds a comma; empty ones are gaps."""
    return [item.strip() for item in next(csv.reader([text], skipinitialspace=True), []) if item.strip()]


def _list_item(item: str) -> str:
    return '"' + item.replace('"', '""') + '"' if "," in item or '"' in item else item


def list_text(items: list[str]) -> str:
    """Tags as a list row's text: `list_items` reads them back unchanged."""
    return ", ".join(map(_list_item, items))


def editable_value(value: MetadataValue) -> str:
    """The text to put in a form field so that saving it unchanged keeps both the value and its type."""
    if isinstance(value, list):
        return list_text(value)
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
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def editable_rows(metadata: Metadata) -> list[MetadataRow]:
    return [
        (key, editable_value(value), "list" if isinstance(value, list) else "value") for key, value in metadata.items()
    ]


def posted_rows(keys: list[str], values: list[str], kinds: list[str]) -> list[MetadataRow]:
    """The rows as the form sent them, to show again after a refusal; forms without kinds sent values."""
    kinds = kinds or ["value"] * len(keys)
    return list(zip(keys, values, kinds, strict=False))


def metadata_from_rows(keys: list[str], values: list[str], kinds: list[str] | None = None) -> Metadata:
    """Key/value rows as posted by the form; a row with neither key nor value is a removed (or unused) row."""
    kinds = kinds or ["value"] * len(keys)
    if not len(keys) == len(values) == len(kinds):
        raise InvalidInput("every metadata row needs a key field, a kind and a value field")
    metadata: Metadata = {}
    for raw_key, raw_value, kind in zip(keys, values, kinds, strict=True):
        key = raw_key.strip()
        if kind not in METADATA_KINDS:
            raise InvalidInput(f"unknown kind of metadata value {kind!r}; use {' or '.join(METADATA_KINDS)}")
        if not key:
            if raw_value.strip():
                raise InvalidInput(
                    f"a metadata row has the value {raw_value.strip()[:40]!r} but no key; give it a key, or clear "
                    "the value to remove the row"
                )
            continue
        if key in metadata:
            raise InvalidInput(f"the metadata key {key!r} appears twice; keep one of them")
        if kind == "list":
            items = list_items(raw_value)
            if not items:
                raise InvalidInput(f"metadata {key!r}: add at least one tag, or clear the key to remove the row")
            metadata[key] = items
        else:
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
