"""Words for keyword search: what text of a record is searchable, how it is cut into terms, and BM25.

LanceDB and Milvus index `search_text(record)` with their own full-text engines. Pinecone has none in our
setup, so its store keeps `terms(...)` of each record as a list in the metadata (the index finds records that
share a term with the query) and ranks those candidates here with `bm25`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

from imagematch.records import ImageRecord

# The usual English stop words: they match nearly everything, so they only add noise to a keyword ranking.
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "their",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "were",
        "which",
        "will",
        "with",
    ]
)
_WORD = re.compile(r"\w+")
_FILENAME_SEPARATORS = re.compile(r"[_.\-]+")
MAX_TERM_LENGTH = 40
BM25_K1 = 1.2
BM25_B = 0.75


def search_text(record: ImageRecord) -> str:
    """Everything a keyword may match: the filename's words, description, caption, camera, lens, the values
    (not the keys) of custom metadata, each tag of a list among them, and the text in the picture."""
    values = [
        str(item)
        for value in record.metadata.values()
        if not isinstance(value, bool)
        for item in (value if isinstance(value, list) else [value])
    ]
    parts = [
        _FILENAME_SEPARATORS.sub(" ", record.filename),
        record.description,
        record.caption,
        record.camera,
        record.lens,
        *values,
        read_words(record.ocr.text),
    ]
    return "\n".join(part for part in parts if part.strip())


_GLUED = re.compile(r"(?<=[a-z])(?=[A-Z])")


def read_words(text: str) -> str:
    """The text read in a picture, as keywords: the recogniser often drops the space between words set in small
    print ("GrandOpeningSale"), so a run of capitalised words also counts as its words."""
    apart = _GLUED.sub(" ", text)
    return text if apart == text else f"{text}\n{apart}"


def _fold(word: str) -> str:
    """Lower case without accents, so "Café" matches "cafe"."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    """The terms of a text, in order, repeats kept: folded words without stop words or overlong tokens."""
    found = (_fold(match) for match in _WORD.findall(text))
    return [word for word in found if word not in STOP_WORDS and len(word) <= MAX_TERM_LENGTH]


def terms(text: str, limit: int) -> list[str]:
    """The distinct terms of a text, at most `limit` (the first ones), for a store's term list."""
    return list(dict.fromkeys(tokens(text)))[:limit]


def bm25(query: Sequence[str], documents: Sequence[Sequence[str]], total: int, average_length: float) -> list[float]:
    """Okapi BM25 of each document for the query terms.

    `documents` must include every document that holds any query term (so document frequencies are exact);
    `total` and `average_length` describe the whole collection.
    """
    wanted = list(dict.fromkeys(query))
    frequency = Counter(term for document in documents for term in set(document) if term in wanted)
    average = max(average_length, 1.0)
    scores = []
    for document in documents:
        counts = Counter(document)
        score = 0.0
        for term in wanted:
            tf = counts.get(term, 0)
            if not tf:
                continue
            idf = math.log(1 + (total - frequency[term] + 0.5) / (frequency[term] + 0.5))
            score += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * len(document) / average))
        scores.append(score)
    return scores
