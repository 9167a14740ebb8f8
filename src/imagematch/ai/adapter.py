"""A text-side adapter that teaches the model a library's own words, trained on vectors the store already holds
(imagematch.services.tuning).

Each word of the library's descriptions (a made-up name, a family's "Biscuit") gets a shift, learned so that
a description's text vector plus the shifts of its words points at its images:

    adapted(text) = normalise(vector(text) + Σ shift[word] for the words of text)

Images are never re-encoded and their stored vectors never change, so tuning costs seconds once the texts are
encoded, reaches every query at once, and is undone by forgetting it. A query with none of the learned words
is left exactly as the model made it, which is what keeps the model's own words working: a low-rank linear
update of every text vector, tried first, moved "a red circle" along with "a blorf circle" (docs/tuning.md).
Training is contrastive (InfoNCE over the batch's images, every image sharing a text counting as a positive),
with a pull toward zero on every shift and on general sentences, so a word moves only as far as it helps.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from imagematch.keywords import tokens
from imagematch.records import Vector

Matrix = npt.NDArray[np.float32]

TEMPERATURE = 0.05  # of the contrastive loss: sharp, as CLIP's learned one ends up
SHRINK = 0.1  # pull of every shift toward zero
KEEP_WEIGHT = 4.0  # how hard general sentences are held where the model put them
EPOCHS = 60
BATCH = 256
LEARNING_RATE = 3e-3
MIN_PAIRS_PER_WORD = 2  # a word seen once says nothing about its images beyond that one
MAX_WORDS = 4000  # the most frequent words of the descriptions, at most
LEAST_SHIFT = 0.02  # a shorter shift changes no ranking: the word is not kept


@dataclass(frozen=True, slots=True)
class TextAdapter:
    words: tuple[str, ...]
    shifts: Matrix  # one row per word
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {word: n for n, word in enumerate(self.words)})

    @property
    def dim(self) -> int:
        return int(self.shifts.shape[1])

    def shift(self, text: str) -> Vector | None:
        """What the library's words in `text` add to its vector; None when it holds none of them."""
        rows = sorted({self._index[word] for word in tokens(text) if word in self._index})
        return self.shifts[rows].sum(axis=0) if rows else None

    def apply(self, text: str, vector: Vector) -> Vector:
        shift = self.shift(text)
        if shift is None:
            return vector
        moved = vector + shift
        return (moved / max(float(np.linalg.norm(moved)), 1e-12)).astype(np.float32)

    def strongest(self, count: int) -> list[str]:
        """The words tuning moved furthest: what it learned, for `imagematch info`."""
        lengths = np.linalg.norm(self.shifts, axis=1)
        return [self.words[n] for n in np.argsort(-lengths)[:count]]

    def to_json(self) -> str:
        data = np.ascontiguousarray(self.shifts, dtype="<f2").tobytes()
        return json.dumps({"words": list(self.words), "dim": self.dim, "shifts": base64.b64encode(data).decode()})

    @classmethod
    def from_json(cls, text: str) -> TextAdapter:
        value = json.loads(text)
        shifts = np.frombuffer(base64.b64decode(value["shifts"]), dtype="<f2").reshape(-1, int(value["dim"]))
        return cls(tuple(value["words"]), shifts.astype(np.float32))


def vocabulary(texts: Sequence[str]) -> list[str]:
    """The words worth a shift: seen in at least MIN_PAIRS_PER_WORD texts, the MAX_WORDS most frequent."""
    seen = Counter(word for text in texts for word in set(tokens(text)))
    return [word for word, n in seen.most_common(MAX_WORDS) if n >= MIN_PAIRS_PER_WORD]


def train(
    texts: Sequence[str],
    text_vectors: Matrix,
    images: Matrix,
    general: Sequence[str],
    general_vectors: Matrix,
    *,
    epochs: int = EPOCHS,
    seed: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
) -> TextAdapter:
    """Fit shifts on pairs (texts[i], images[i]); `general` sentences (and their vectors) should stay put."""
    import torch

    words = vocabulary(texts)
    index = {word: n for n, word in enumerate(words)}
    dim = text_vectors.shape[1]
    if not words:
        return TextAdapter((), np.zeros((0, dim), dtype=np.float32))

    def word_matrix(sentences: Sequence[str]) -> torch.Tensor:
        matrix = torch.zeros(len(sentences), len(words))
        for row, sentence in enumerate(sentences):
            for word in set(tokens(sentence)):
                if word in index:
                    matrix[row, index[word]] = 1.0
        return matrix

    generator = torch.Generator().manual_seed(seed)
    shifts = torch.nn.Parameter(torch.zeros(len(words), dim))
    optimiser = torch.optim.Adam([shifts], lr=LEARNING_RATE)
    t_all = torch.from_numpy(np.ascontiguousarray(text_vectors, dtype=np.float32))
    i_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    w_all = word_matrix(texts)
    groups = {text: n for n, text in enumerate(dict.fromkeys(texts))}
    g_all = torch.as_tensor([groups[text] for text in texts])
    keep = torch.from_numpy(np.ascontiguousarray(general_vectors, dtype=np.float32))
    keep_words = word_matrix(general)

    def adapted(vectors: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(vectors + present @ shifts, dim=-1)

    for epoch in range(epochs):
        order = torch.randperm(len(texts), generator=generator)
        for start in range(0, len(texts), BATCH):
            batch = order[start : start + BATCH]
            t, i, g = adapted(t_all[batch], w_all[batch]), i_all[batch], g_all[batch]
            positive = (g[:, None] == g[None, :]).float()
            logits = t @ i.T / TEMPERATURE
            to_images = -(torch.log_softmax(logits, dim=1) * positive).sum(1) / positive.sum(1)
            to_texts = -(torch.log_softmax(logits.T, dim=1) * positive).sum(1) / positive.sum(1)
            held = ((adapted(keep, keep_words) - keep) ** 2).sum(1).mean() if len(keep) else torch.zeros(())
            shrink = (shifts**2).sum(1).mean()
            loss = (to_images.mean() + to_texts.mean()) / 2 + KEEP_WEIGHT * held + SHRINK * shrink
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        if on_epoch:
            on_epoch(epoch + 1, epochs)
    learned = shifts.detach().numpy().astype(np.float32)
    kept = [n for n in range(len(words)) if float(np.linalg.norm(learned[n])) >= LEAST_SHIFT]
    return TextAdapter(tuple(words[n] for n in kept), learned[kept])
