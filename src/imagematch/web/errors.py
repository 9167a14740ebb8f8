"""Which HTTP status each library error gets, for the API's JSON errors and the pages' error messages alike."""

from __future__ import annotations

from imagematch.records import (
    Conflict,
    ImageMatchError,
    InvalidImage,
    InvalidInput,
    ModelUnavailable,
    NotFound,
    StoreMismatch,
    TooLarge,
    UnsupportedFormat,
)

# Most specific first.
ERROR_STATUS: list[tuple[type[ImageMatchError], int]] = [
    (NotFound, 404),
    (TooLarge, 413),
    (UnsupportedFormat, 415),
    (InvalidImage, 422),
    (InvalidInput, 422),
    (StoreMismatch, 409),
    (Conflict, 409),
    (ModelUnavailable, 503),
]


def status_for(error: ImageMatchError) -> int:
    for kind, status in ERROR_STATUS:
        if isinstance(error, kind):
            return status
    return 400
