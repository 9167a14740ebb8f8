"""Queries as people type them: terms joined by + and − with optional weights, and regions as four numbers.

    imagematch search "2:golden retriever" + ./pool.jpg - people
    imagematch search beach + 0.5:c2924c5532bddfc8-945df306 --region 0.1,0.1,0.6,0.8

A term that names an existing file is an image; one shaped like an image id that the library holds is a stored
image; anything else is text. `N:` before a term is its weight; `-` before a term negates it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from imagematch.files import IMAGE_SUFFIXES
from imagematch.records import InvalidQuery, Region, check_region

_WEIGHT = re.compile(r"^\s*(?P<weight>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*:(?P<rest>.*)$", re.S)
IMAGE_ID_SHAPE = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{8}$")
_OPERATORS = {"+": 1.0, "-": -1.0, "−": -1.0}


@dataclass(frozen=True, slots=True)
class TypedTerm:
    """One term as typed: what it is (text, a file, a stored id), its text and its signed weight."""

    kind: str  # "text", "file" or "id"
    value: str
    weight: float


def parse_region(text: str) -> Region | None:
    """`left,top,right,bottom` as fractions of the image; empty means the whole image."""
    if not text.strip():
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InvalidQuery(
            f"cannot read the region {text!r}; write left,top,right,bottom such as 0.1,0.2,0.6,0.9"
        ) from None
    return check_region(numbers)


def _split_weight(text: str) -> tuple[float, str]:
    match = _WEIGHT.match(text)
    if match is None:
        return 1.0, text
    weight = float(match["weight"])
    if not math.isfinite(weight):
        raise InvalidQuery(f"the weight of {text!r} is not a finite number")
    return weight, match["rest"].strip()


def looks_like_a_file(value: str) -> bool:
    """A term written as a path (`./x`, `../x`, `/x`, `~/x`) or with an image file's suffix is meant as a file:
    when there is none, that is an error, not words to search for."""
    return value.startswith(("./", "../", "/", "~/")) or Path(value).suffix.lower() in IMAGE_SUFFIXES


def _not_a_file(value: str) -> str:
    path = Path(value).expanduser()
    if path.is_dir():
        return f"{value} is a folder, not an image file"
    if path.exists():
        return f"{value} is not a regular file"
    return f"no such image file: {value}"


def read_image_file(value: str) -> bytes:
    """The bytes of a query image named on the command line, or an InvalidQuery that says what is wrong."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise InvalidQuery(_not_a_file(value))
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidQuery(f"cannot read {value}: {error.strerror or error}") from None


def parse_terms(words: Sequence[str], is_stored_id: Callable[[str], bool]) -> list[TypedTerm]:
    """Read the CLI's arguments: terms separated by `+` and `-`; a first term may have a sign too."""
    terms: list[TypedTerm] = []
    sign: float | None = None  # the operator waiting for its term
    for word in words:
        if word in _OPERATORS:
            if sign is not None:
                raise InvalidQuery(f"two operators in a row before {word!r}")
            sign = _OPERATORS[word]
            continue
        if terms and sign is None:
            raise InvalidQuery(f"put + or - between terms: {terms[-1].value!r} {word!r}")
        weight, value = _split_weight(word)
        if not value:
            raise InvalidQuery(f"the term {word!r} is empty")
        if Path(value).is_file():
            kind = "file"
        elif looks_like_a_file(value):
            raise InvalidQuery(_not_a_file(value))
        elif IMAGE_ID_SHAPE.match(value) and is_stored_id(value):
            kind = "id"
        else:
            kind = "text"
        terms.append(TypedTerm(kind, value, (sign or 1.0) * weight))
        sign = None
    if sign is not None:
        raise InvalidQuery("the query ends with an operator; add a term after it")
    return terms
