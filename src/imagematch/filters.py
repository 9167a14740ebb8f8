"""Filters as users write them, turned into a `Filter`.

JSON (API, UI), in the style of Pinecone and MongoDB, so the seed's users already know it:

    {"album": "holiday"}                       custom metadata equals (a list of tags: has it as a member)
    {"rating": {"$gte": 4}}                    range ($gt, $gte, $lt, $lte), also $ne, $in and $nin
    {"image.format": {"$in": ["JPEG", "PNG"]}} built-in fields carry the prefix "image."
    {"image.taken_at": {"$gte": "2024-01-01"}} dates as ISO 8601
    {"image.camera": "canon"}                  camera and lens match a part of the name, ignoring case
    {"$or": [{"album": "a"}, {"tags": "b"}]}   one of the filters holds; {"$and": [...]} all of them

The keys of one object must all hold. The CLI writes the same as `--where album=holiday --where "rating>=4"
--where image.format=JPEG,PNG`, with `--any` for one of them, or a JSON object as a `--where`.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from imagematch.records import (
    FILTER_FIELDS,
    PARTIAL_FIELDS,
    Condition,
    Filter,
    FilterOp,
    FilterScalar,
    InvalidQuery,
    name_words,
)
from imagematch.validation import load_json

BUILTIN_PREFIX = "image."
METADATA_PREFIX = "metadata."
_OPERATORS: dict[str, FilterOp] = {
    "$eq": "eq",
    "$ne": "ne",
    "$in": "in",
    "$nin": "nin",
    "$gt": "gt",
    "$gte": "gte",
    "$lt": "lt",
    "$lte": "lte",
}
_DATE_FIELDS = {"created_at", "taken_at"}
# The integer fields with the largest value every store can hold in them (LanceDB keeps width and height as
# Int32, every store keeps size in 64 bits). A comparison with any other number becomes the same test with an
# integer inside that range, so `image.width > 3000000000` matches nothing instead of failing in the store.
_INTEGER_FIELDS = {"width": 2**31 - 1, "height": 2**31 - 1, "size": 2**63 - 1}
_NUMBER_FIELDS = set(_INTEGER_FIELDS)
_BOOL_FIELDS = {"cutout"}
_LOGICAL = ("$and", "$or")
_MAX_CONDITIONS = 50
_MAX_IN_VALUES = 200
_MAX_DEPTH = 10  # $and and $or inside each other


def _text(value: str, what: str) -> str:
    """Text the stores can be sent: JSON's `\\ud800` escapes (and undecodable command-line bytes) give lone
    surrogates, which no UTF-8 encoder takes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQuery(f"{what}: the text is not valid Unicode (it holds a lone surrogate)") from None
    return value


def _date(value: object, key: str) -> datetime:
    """A date in UTC, as every store compares them; without a zone, UTC is meant."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(_text(value, f"filter {key!r}").strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidQuery(f"filter {key!r}: {value!r} is not an ISO 8601 date") from None
    else:
        raise InvalidQuery(f"filter {key!r}: dates are ISO 8601 text such as 2024-05-31")
    try:
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except OverflowError:
        raise InvalidQuery(
            f"filter {key!r}: {value!s} is outside the dates that can be compared (0001-01-01 to 9999-12-31 in UTC)"
        ) from None


def _number(value: int | float, key: str) -> int | float:
    """A number a store can compare: floats must be finite, integers must fit a float (custom metadata numbers
    are compared as floats)."""
    try:
        finite = math.isfinite(value)
    except OverflowError:
        raise InvalidQuery(f"filter {key!r}: the number is too large to compare") from None
    if not finite:
        raise InvalidQuery(f"filter {key!r}: numbers must be finite")
    return value


def _scalar(value: object, key: str, field: str | None) -> FilterScalar:
    if field in _DATE_FIELDS:
        return _date(value, key)
    if isinstance(value, bool):
        if field is not None and field not in _BOOL_FIELDS:
            raise InvalidQuery(f"filter {key!r}: expected {'a number' if field in _NUMBER_FIELDS else 'text'}")
        return value
    if isinstance(value, int | float):
        if field is not None and field not in _NUMBER_FIELDS:
            raise InvalidQuery(f"filter {key!r}: expected text")
        # Integers of any size are fine on built-in fields: _integer_test brings them into the stores' range.
        return value if field is not None and isinstance(value, int) else _number(value, key)
    if isinstance(value, str):
        if field in _NUMBER_FIELDS or field in _BOOL_FIELDS:
            raise InvalidQuery(f"filter {key!r}: expected {'a number' if field in _NUMBER_FIELDS else 'true or false'}")
        text = _text(value, f"filter {key!r}")
        if field in PARTIAL_FIELDS and text.strip() and not name_words(text):
            raise InvalidQuery(
                f"filter {key!r}: {text!r} has no letters or digits; give a part of the name, such as canon"
            )
        return text.strip() if field in PARTIAL_FIELDS else text
    if isinstance(value, list):
        raise InvalidQuery(f'filter {key!r}: a list of values goes in $in or $nin, as {{"{key}": {{"$in": [...]}}}}')
    raise InvalidQuery(f"filter {key!r}: values must be text, numbers or true/false")


def _target(key: object) -> tuple[str, bool]:
    if not isinstance(key, str) or not key.strip():
        raise InvalidQuery("filter keys must be non-empty strings")
    key = _text(key, f"filter key {key!r}").strip()
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


def _integer_test(key: str, op: FilterOp, value: FilterScalar | tuple[FilterScalar, ...]) -> Condition:
    """The same test on a built-in integer field, with integers the stores can hold: a number between two
    integers moves to the one it means (`width > 1.5` is `width > 1`), and one beyond the field's range makes
    a test that matches nothing or every image."""
    top = _INTEGER_FIELDS[key]
    bottom = -top - 1
    nothing = Condition(key, "gt", top, True)
    everything = Condition(key, "lte", top, True)
    if isinstance(value, tuple):
        kept = tuple(dict.fromkeys(int(v) for v in value if isinstance(v, int | float) and v == int(v)))
        kept = tuple(v for v in kept if bottom <= v <= top)
        if not kept:  # no value the field can hold: $in matches nothing, $nin every image
            return nothing if op == "in" else everything
        return Condition(key, op, kept, True)
    assert isinstance(value, int | float)
    if op in ("eq", "ne"):
        if value != int(value) or not bottom <= value <= top:
            return nothing if op == "eq" else everything
        return Condition(key, op, int(value), True)
    whole = math.floor(value) if op in ("gt", "lte") else math.ceil(value)
    if whole > top:
        return nothing if op in ("gt", "gte") else everything
    if whole < bottom:
        return everything if op in ("gt", "gte") else nothing
    return Condition(key, op, whole, True)


def _condition(key: str, builtin: bool, op: FilterOp, value: object, label: str) -> Condition:
    field = key if builtin else None
    operand: FilterScalar | tuple[FilterScalar, ...]
    if op in ("in", "nin"):
        if not isinstance(value, list) or not value:
            raise InvalidQuery(f"filter {label!r}: ${op} takes a non-empty list")
        if len(value) > _MAX_IN_VALUES:
            raise InvalidQuery(f"filter {label!r}: ${op} takes at most {_MAX_IN_VALUES} values")
        if any(isinstance(v, list) for v in value):
            raise InvalidQuery(f"filter {label!r}: ${op} takes a list of values, not of lists")
        operand = tuple(_scalar(v, label, field) for v in value)
        if len({type(v) for v in operand}) > 1 and not all(isinstance(v, int | float) for v in operand):
            raise InvalidQuery(f"filter {label!r}: ${op} values must all be of one type")
    else:
        operand = _scalar(value, label, field)
        if op in ("gt", "gte", "lt", "lte") and isinstance(operand, str | bool):
            raise InvalidQuery(f"filter {label!r}: ranges need numbers or dates")
    if field in _INTEGER_FIELDS:
        return _integer_test(key, op, operand)
    return Condition(key, op, operand, builtin)


def _operator_help() -> str:
    return (
        f"at the top of a filter object use {' or '.join(_LOGICAL)} (each takes a list of filter objects); "
        f'inside a key use {", ".join(_OPERATORS)}, as {{"album": {{"$ne": "holiday"}}}}'
    )


class _Budget:
    """Conditions left for the whole filter, however deep."""

    def __init__(self) -> None:
        self.left = _MAX_CONDITIONS

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise InvalidQuery(f"a filter may have at most {_MAX_CONDITIONS} conditions")


def _logical(name: str, spec: object, depth: int, budget: _Budget) -> Filter:
    if not isinstance(spec, list) or not spec:
        raise InvalidQuery(f'{name} takes a non-empty list of filter objects, as {{"{name}": [{{"album": "a"}}, ...]}}')
    if depth >= _MAX_DEPTH:
        raise InvalidQuery(f"$and and $or may be nested at most {_MAX_DEPTH} deep")
    parts: list[Condition | Filter] = []
    for item in spec:
        if not isinstance(item, dict) or not item:
            raise InvalidQuery(
                f'each item of {name} must be a filter object with at least one key, such as {{"album": "a"}}'
            )
        part = _object(item, depth + 1, budget)
        parts.append(part.all_of[0] if len(part.all_of) == 1 and not part.any_of else part)
    return Filter(all_of=tuple(parts)) if name == "$and" else Filter(any_of=tuple(parts))


def _object(value: dict[Any, Any], depth: int, budget: _Budget) -> Filter:
    """One filter object: every key in it holds."""
    items: list[Condition | Filter] = []
    written: dict[tuple[str, bool], object] = {}
    for raw_key, spec in value.items():
        if isinstance(raw_key, str) and raw_key.strip().startswith("$"):
            name = _text(raw_key, f"filter key {raw_key!r}").strip()
            if name not in _LOGICAL:
                raise InvalidQuery(f"{name!r} is not an operator here: {_operator_help()}")
            joined = _logical(name, spec, depth, budget)
            items.extend(joined.all_of if not joined.any_of else (joined,))  # an $and is just more keys
            continue
        key, builtin = _target(raw_key)
        if (key, builtin) in written:  # the forms' rule: keys the same but for spaces are one key, given twice
            raise InvalidQuery(
                f"the filter key {key!r} appears twice (as {written[key, builtin]!r} and {raw_key!r}); keep one of them"
            )
        written[key, builtin] = raw_key
        if isinstance(spec, dict):
            if not spec:
                raise InvalidQuery(f"filter {raw_key!r}: empty operator object")
            for op_name, operand in spec.items():
                op = _OPERATORS.get(op_name)
                if op is None:
                    raise InvalidQuery(f"filter {raw_key!r}: unknown operator {op_name!r}; use {', '.join(_OPERATORS)}")
                budget.spend()
                items.append(_condition(key, builtin, op, operand, raw_key))
        else:
            budget.spend()
            items.append(_condition(key, builtin, "eq", spec, raw_key))
    return Filter(all_of=tuple(items))


def parse_filter(value: Any) -> Filter | None:
    """Parse the JSON filter object (already decoded, or as text)."""
    if value is None or value in ("", {}):
        return None
    if isinstance(value, str):
        value = load_json(value, "filter", InvalidQuery)
    if not isinstance(value, dict):
        raise InvalidQuery('filter must be a JSON object such as {"album": "holiday"}')
    return _object(value, 0, _Budget())


_WHERE = re.compile(r"^\s*(?P<key>[^=<>!]+?)\s*(?P<op>>=|<=|!=|=|>|<)\s*(?P<value>.*?)\s*$")
_CLI_OPS: dict[str, str] = {"=": "$eq", "!=": "$ne", ">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
_CLI_LISTS = {"$eq": "$in", "$ne": "$nin"}


def _cli_value(text: str) -> Any:
    """Numbers and true/false are typed; "quoted" text stays text."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d{1,4000}", text):  # exact, where a float would round 2**63 + 1 and overflow 400 digits
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _clause(clause: str) -> tuple[str, str, Any] | dict[str, Any]:
    """One `--where`: (key, operator, value), or a JSON filter object."""
    if clause.lstrip().startswith("{"):
        written: dict[str, Any] = load_json(clause, f"the filter {clause[:40]!r}", InvalidQuery)
        return written
    match = _WHERE.match(clause)
    if match is None:
        raise InvalidQuery(
            f"cannot read filter {clause!r}; write key=value, key!=value, key>=number, key=a,b (one of) "
            "or key!=a,b (none of), or a JSON filter object"
        )
    key, op, value = match["key"], _CLI_OPS[match["op"]], match["value"]
    if op in _CLI_LISTS and "," in value:
        return key, _CLI_LISTS[op], [_cli_value(v.strip()) for v in value.split(",")]
    return key, op, _cli_value(value)


def parse_where(clauses: list[str], any_of: bool = False) -> Filter | None:
    """The CLI form: `key=value`, `key>=3`, `key=a,b` (any of), `key!=a,b` (none of), built-ins as
    `image.format=PNG`, or a JSON filter object. All of them must hold, or with `any_of` one of them."""
    objects: list[dict[str, Any]] = []
    merged: dict[str, dict[str, Any]] = {}  # the tests on one key, as one object: `rating>=3 rating<5`
    for clause in clauses:
        parsed = _clause(clause)
        if isinstance(parsed, dict):
            objects.append(parsed)
            continue
        key, op, value = parsed
        if any_of:
            objects.append({key: {op: value}})
        else:
            merged.setdefault(key, {})[op] = value
    if merged:
        objects.insert(0, merged)
    if not objects:
        return None
    return parse_filter(objects[0] if len(objects) == 1 else {"$or" if any_of else "$and": objects})
