"""CLIP's byte-level BPE tokeniser, without PyTorch.

It gives the same token ids as open_clip's SimpleTokenizer (checked in tests/ai/test_light.py) but returns
numpy arrays, so a server on ONNX Runtime never imports PyTorch (about 0.5 GB of memory). It reads the merge
table that ships inside the open_clip package, found without importing that package.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import itertools
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import regex

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGE_COUNT = 49152 - 256 - 2
START, END = "<start_of_text>", "<end_of_text>"


def merges_path() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / MERGES_FILE


@lru_cache(maxsize=1)
def _byte_symbols() -> dict[int, str]:
    """Each byte as a printable character: printable Latin-1 stays itself, the rest move past 255.

    The order (printable bytes first) is the order of the vocabulary's first 256 entries.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    return symbols


def repaired(text: str) -> str:
    """ftfy's repairs (mojibake, HTML entities, control characters, ligatures, curly quotes, ...).

    Printable ASCII without an entity has nothing for them to repair, and that is most of what people type:
    ftfy, 30 ms to import, is imported for other text only.
    """
    if text.isascii() and text.isprintable() and "&" not in text:
        return text
    import ftfy

    return ftfy.fix_text(text)


def clean(text: str) -> str:
    """Repair mojibake, unescape HTML (twice, as CLIP did), collapse white space, lower case."""
    fixed = html.unescape(html.unescape(repaired(text))).strip()
    return " ".join(fixed.split()).lower()


def read_merges(path: Path) -> list[str]:
    """The merges CLIP uses, best first, each as its two symbols with a space between ("i n").

    The file holds more than four times as many; only the part before the last one used is decompressed.
    """
    chunks: list[bytes] = []
    newlines = 0
    with gzip.open(path) as handle:
        while newlines <= MERGE_COUNT:  # a header line, then one merge a line
            chunk = handle.read(1 << 18)
            if not chunk:
                break
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(chunks)
    whole_lines = data[: data.rfind(b"\n")] if newlines > MERGE_COUNT else data  # never half a character
    return whole_lines.decode("utf-8").split("\n")[1 : MERGE_COUNT + 1]


class ClipTokenizer:
    def __init__(self, context_length: int = 77, merges: Path | None = None) -> None:
        self.context_length = context_length
        lines = read_merges(merges or merges_path())
        symbols = list(_byte_symbols().values())
        merged = [line.replace(" ", "") for line in lines]
        vocabulary = [*symbols, *(s + "</w>" for s in symbols), *merged, START, END]
        self.ids = dict(zip(vocabulary, range(len(vocabulary)), strict=True))
        self.rank = dict(zip(lines, range(len(lines)), strict=True))  # "a b" -> its merge's rank
        self.start_id, self.end_id = self.ids[START], self.ids[END]
        self._words: dict[str, list[str]] = {START: [START], END: [END]}
        self._pattern = regex.compile(
            rf"{START}|{END}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE
        )

    def _merge(self, word: str) -> list[str]:
        """Split a word into BPE pieces: merge the best-ranked adjacent pair until no known pair is left."""
        cached = self._words.get(word)
        if cached is not None:
            return cached
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            ranked = [
                (self.rank.get(f"{a} {b}", MERGE_COUNT), i) for i, (a, b) in enumerate(itertools.pairwise(pieces))
            ]
            best, _ = min(ranked)
            if best == MERGE_COUNT:
                break
            pair = next((pieces[i], pieces[i + 1]) for rank, i in ranked if rank == best)
            merged: list[str] = []
            i = 0
            while i < len(pieces):
                if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
                    merged.append(pieces[i] + pieces[i + 1])
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces = merged
        if len(self._words) < 100_000:
            self._words[word] = pieces
        return pieces

    def encode(self, text: str) -> list[int]:
        """Token ids of the text, without start and end markers."""
        symbols = _byte_symbols()
        out: list[int] = []
        for match in self._pattern.findall(clean(text)):
            word = "".join(symbols[b] for b in match.encode("utf-8"))
            out.extend(self.ids[piece] for piece in self._merge(word))
        return out

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        """(len(texts), context_length) ids: start, text, end, zero padding; cut texts end with the end id."""
        result = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.end_id
            result[row, : len(ids)] = ids
        return result
