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
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
    """The library's words and the shift each adds to a text vector."""

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
        """`vector` (the model's for `text`) moved by the shifts of the library's words in `text`, re-normalised;
        the very same array when `text` holds none of them."""
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


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's threads set to `count` for the block, as they were after it."""
    import torch

    before = torch.get_num_threads()
    # The setting is process-wide: searches in a server share it, and their count must come back after training.
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(
    texts: Sequence[str],
    text_vectors: Matrix,
    images: Matrix,
    image_ids: Sequence[str],
    held_still: Sequence[str],
    held_still_vectors: Matrix,
    *,
    epochs: int = EPOCHS,
    seed: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> TextAdapter:
    """Fit shifts on pairs (texts[i], the image image_ids[i] with the vector images[i]): each image of the batch
    with the same text, or the same image under another of its texts, is a right answer. `held_still`
    sentences (with their vectors) should stay where the model put them. A set `cancel` stops training at the
    next step; what it returns then is unfinished, and the caller checks `cancel` before using it."""
    import torch

    words = vocabulary(texts)
    index = {word: n for n, word in enumerate(words)}
    dim = text_vectors.shape[1]
    if not words:
        return TextAdapter((), np.zeros((0, dim), dtype=np.float32))

    def bags(sentences: Sequence[str]) -> list[list[int]]:
        """The learned words of each sentence, as rows of `shifts`."""
        return [sorted({index[word] for word in tokens(sentence) if word in index}) for sentence in sentences]

    generator = torch.Generator().manual_seed(seed)
    shifts = torch.nn.Parameter(torch.zeros(len(words), dim))
    optimiser = torch.optim.Adam([shifts], lr=LEARNING_RATE)
    t_all = torch.from_numpy(np.ascontiguousarray(text_vectors, dtype=np.float32))
    i_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    text_bags = bags(texts)
    by_text = {text: n for n, text in enumerate(dict.fromkeys(texts))}
    by_image = {image_id: n for n, image_id in enumerate(dict.fromkeys(image_ids))}
    text_codes = torch.as_tensor([by_text[text] for text in texts])
    image_codes = torch.as_tensor([by_image[image_id] for image_id in image_ids])
    keep = torch.from_numpy(np.ascontiguousarray(held_still_vectors, dtype=np.float32))
    keep_bags = bags(held_still)

    def adapted(vectors: torch.Tensor, rows: Sequence[list[int]]) -> torch.Tensor:
        """The vectors plus the sum of their words' shifts (a bag of a few rows each: no dense word matrix)."""
        flat = torch.as_tensor([row for bag in rows for row in bag], dtype=torch.long)
        offsets = torch.as_tensor([0, *np.cumsum([len(bag) for bag in rows])[:-1]], dtype=torch.long)
        added = torch.nn.functional.embedding_bag(flat, shifts, offsets, mode="sum")
        return torch.nn.functional.normalize(vectors + added, dim=-1)

    for epoch in range(epochs):
        order = torch.randperm(len(texts), generator=generator)
        for start in range(0, len(texts), BATCH):
            if cancel is not None and cancel.is_set():
                break
            batch = order[start : start + BATCH]
            t = adapted(t_all[batch], [text_bags[n] for n in batch.tolist()])
            same_text = text_codes[batch][:, None] == text_codes[batch][None, :]
            same_image = image_codes[batch][:, None] == image_codes[batch][None, :]
            positive = (same_text | same_image).float()
            logits = t @ i_all[batch].T / TEMPERATURE
            to_images = -(torch.log_softmax(logits, dim=1) * positive).sum(1) / positive.sum(1)
            to_texts = -(torch.log_softmax(logits.T, dim=1) * positive).sum(1) / positive.sum(1)
            held = ((adapted(keep, keep_bags) - keep) ** 2).sum(1).mean() if len(keep) else torch.zeros(())
            shrink = (shifts**2).sum(1).mean()
            loss = (to_images.mean() + to_texts.mean()) / 2 + KEEP_WEIGHT * held + SHRINK * shrink
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
        if cancel is not None and cancel.is_set():
            break
        if on_epoch:
            on_epoch(epoch + 1, epochs)
    learned = shifts.detach().numpy().astype(np.float32)
    kept = [n for n in range(len(words)) if float(np.linalg.norm(learned[n])) >= LEAST_SHIFT]
    return TextAdapter(tuple(words[n] for n in kept), learned[kept])
