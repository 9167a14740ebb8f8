"""Filters as users write them, turned into a `Filter`.

JSON (API, UI), in the style of Pinecone and MongoDB, so the seed's users already know it:

    {"album": "holiday"}                       custom metadata equals
    {"rating": {"$gte": 4}}                    range ($gt, $gte, $lt, $lte), also $ne and $in
    {"image.format": {"$in": ["JPEG", "PNG"]}} built-in fields carry the prefix "image."
    {"image.taken_at": {"$gte": "2024-01-01"}} dates as ISO 8601

The CLI writes the same as `--where album=holiday --where "rating>=4" --where image.format=JPEG,PNG`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from imagematch.records import FILTER_FIELDS, Condition, Filter, FilterOp, FilterScalar, InvalidQuery
from imagematch.validation import load_json

BUILTIN_PREFIX = "image."
METADATA_PREFIX = "metadata."
_OPERATORS: dict[str, FilterOp] = {
    "$eq": "eq",
    "$ne": "ne",
    "$in": "in",
    "$gt": "gt",
    "$gte": "gte",
    "$lt": "lt",
    "$lte": "lte",
}
_DATE_FIELDS = {"created_at", "taken_at"}
_NUMBER_FIELDS = {"width", "height", "size"}
_BOOL_FIELDS = {"cutout"}
_MAX_CONDITIONS = 50
_MAX_IN_VALUES = 200


def _date(value: object, key: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise InvalidQuery(f"filter {key!r}: dates are ISO 8601 text such as 2024-05-31")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidQuery(f"filter {key!r}: {value!r} is not an ISO 8601 date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _scalar(value: object, key: str, field: str | None) -> FilterScalar:
    if field in _DATE_FIELDS:
        return _date(value, key)
    if isinstance(value, bool):
        if field is not None and field not in _BOOL_FIELDS:
            raise InvalidQuery(f"filter {key!r}: expected {'a number' if field in _NUMBER_FIELDS else 'text'}")
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidQuery(f"filter {key!r}: numbers must be finite")
        if field is not None and field not in _NUMBER_FIELDS:
            raise InvalidQuery(f"filter {key!r}: expected text")
        return value
    if isinstance(value, str):
        if field in _NUMBER_FIELDS or field in _BOOL_FIELDS:
            raise InvalidQuery(f"filter {key!r}: expected {'a number' if field in _NUMBER_FIELDS else 'true or false'}")
        return value
    raise InvalidQuery(f"filter {key!r}: values must be text, numbers, true/false or lists of them")


def _target(key: object) -> tuple[str, bool]:
    if not isinstance(key, str) or not key.strip():
        raise InvalidQuery("filter keys must be non-empty strings")
    key = key.strip()
    if key.startswith(BUILTIN_PREFIX):
        field = key[len(BUILTIN_PREFIX) :]
        if field not in FILTER_FIELDS:
            raise InvalidQuery(
                f"unknown field {key!r}; built-in fields are {', '.join(BUILTIN_PREFIX + f for f in FILTER_FIELDS)}"
            )
        return field, True
    if key.startswith(METADATA_PREFIX):
        key = key[len(METADATA_PREFIX) :]
    return key, False


def _condition(key: str, builtin: bool, op: FilterOp, value: object, label: str) -> Condition:
    field = key if builtin else None
    if op == "in":
        if not isinstance(value, list) or not value:
            raise InvalidQuery(f"filter {label!r}: $in takes a non-empty list")
        if len(value) > _MAX_IN_VALUES:
            raise InvalidQuery(f"filter {label!r}: $in takes at most {_MAX_IN_VALUES} values")
        values = tuple(_scalar(v, label, field) for v in value)
        if len({type(v) for v in values}) > 1 and not all(isinstance(v, int | float) for v in values):
            raise InvalidQuery(f"filter {label!r}: $in values must all be of one type")
        return Condition(key, op, values, builtin)
    scalar = _scalar(value, label, field)
    if op in ("gt", "gte", "lt", "lte") and isinstance(scalar, str | bool):
        raise InvalidQuery(f"filter {label!r}: ranges need numbers or dates")
    return Condition(key, op, scalar, builtin)


def parse_filter(value: Any) -> Filter | None:
    """Parse the JSON filter object (already decoded, or as text)."""
    if value is None or value in ("", {}):
        return None
    if isinstance(value, str):
        value = load_json(value, "filter", InvalidQuery)
    if not isinstance(value, dict):
        raise InvalidQuery('filter must be a JSON object such as {"album": "holiday"}')
    conditions: list[Condition] = []
    for raw_key, spec in value.items():
        key, builtin = _target(raw_key)
        if isinstance(spec, dict):
            if not spec:
                raise InvalidQuery(f"filter {raw_key!r}: empty operator object")
            for op_name, operand in spec.items():
                op = _OPERATORS.get(op_name)
                if op is None:
                    raise InvalidQuery(f"filter {raw_key!r}: unknown operator {op_name!r}; use {', '.join(_OPERATORS)}")
                conditions.append(_condition(key, builtin, op, operand, raw_key))
        else:
            conditions.append(_condition(key, builtin, "eq", spec, raw_key))
    if len(conditions) > _MAX_CONDITIONS:
        raise InvalidQuery(f"a filter may have at most {_MAX_CONDITIONS} conditions")
    return Filter(tuple(conditions))


_WHERE = re.compile(r"^\s*(?P<key>[^=<>!]+?)\s*(?P<op>>=|<=|!=|=|>|<)\s*(?P<value>.*?)\s*$")
_CLI_OPS: dict[str, str] = {"=": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}


def _cli_value(text: str) -> Any:
    """Numbers and true/false are typed; "quoted" text stays text."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and re.fullmatch(r"-?\d+", text) else number


def parse_where(clauses: list[str]) -> Filter | None:
    """The CLI form: `key=value`, `key>=3`, `key=a,b` (any of), built-ins as `image.format=PNG`."""
    spec: dict[str, dict[str, Any]] = {}
    for clause in clauses:
        match = _WHERE.match(clause)
        if match is None:
            raise InvalidQuery(f"cannot read filter {clause!r}; write key=value, key>=number or key=a,b")
        key, op, value = match["key"], _CLI_OPS[match["op"]], match["value"]
        if op == "$eq" and "," in value:
            spec.setdefault(key, {})["$in"] = [_cli_value(v.strip()) for v in value.split(",")]
        else:
            spec.setdefault(key, {})[op] = _cli_value(value)
    return parse_filter(spec) if spec else None
