"""The automatic relevance cut-off against the best fixed min_score, offline, with the built-in demo model.

A library holds some colours of the synthetic shapes and not others. Every "a <colour> <shape>" query (text),
a new picture of that coloured shape (image) and both at image_weight 0.5 (mixed) search it through the REST
API. A query for a present colour should keep its relevant results (the images of that colour and shape); a
query for an absent colour should return nothing. For each kind of query and for all of them together:

- auto: `cutoff=auto`; AUTO_SHARE is swept on a first library and the one that does best there for text
  queries (no value separates image queries, see docs/search.md) is measured on a second library with other
  colours and other images;
- fixed: the single `min_score` that does best on the second library itself (chosen in hindsight, so an
  upper bound for any fixed threshold), per kind of query and one for all kinds.

"Best" maximises the lower of the two rates: relevant results kept (mean over present queries) and absent
queries answered with nothing.

    .venv/bin/python -m bench.quality.cutoff [--json bench/results/cutoff.json]
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from bench.quality.offline import print_report
from imagematch import relevance
from imagematch.demo_data import COLOURS, SHAPES, Scene, random_scene, render
from testkit.quality import product, quality_settings

PER_PAIR = 4  # stored images of each present (colour, shape)
DEPTH = 20  # results asked for: every relevant image fits, with room for the near misses
KINDS = ("text", "image", "mixed")
SHARES = tuple(round(0.05 * n, 2) for n in range(1, 17))


@dataclass(frozen=True, slots=True)
class Trial:
    kind: str
    colour: str
    shape: str
    present: bool
    relevant: frozenset[str]


def _png(scene: Scene, seed: int) -> bytes:
    buffer = io.BytesIO()
    render(scene, seed=seed).save(buffer, "PNG")
    return buffer.getvalue()


def _scene(rng: random.Random, colour: str, shape: str) -> Scene:
    base = random_scene(rng)
    background = base.background if base.background != colour else "gray"
    return Scene(shape, colour, base.size, base.pattern, background, base.x, base.y, base.angle)


def build(client: TestClient, present: list[str], seed: int) -> dict[tuple[str, str], set[str]]:
    rng = random.Random(seed)
    stored: dict[tuple[str, str], set[str]] = {}
    for colour in present:
        for shape in SHAPES:
            for n in range(PER_PAIR):
                data = _png(_scene(rng, colour, shape), seed * 1000 + len(stored) * 10 + n)
                response = client.post("/api/v1/images", files={"file": (f"{colour}-{shape}-{n}.png", data)})
                if response.status_code == 201:
                    stored.setdefault((colour, shape), set()).add(response.json()["id"])
    return stored


def searches(client: TestClient, stored: dict[tuple[str, str], set[str]], seed: int, **form: str) -> Iterator[
    tuple[Trial, list[tuple[str, float]]]
]:  # fmt: skip
    """Every trial with its hits (id, score)."""
    rng = random.Random(seed + 1)
    for colour in COLOURS:
        for shape in SHAPES:
            picture = _png(_scene(rng, colour, shape), rng.randrange(10**6))
            present = any(c == colour for c, _ in stored)
            relevant = frozenset(stored.get((colour, shape), set()))
            for kind in KINDS:
                fields = {"k": str(DEPTH), **form}
                files = None
                if kind != "image":
                    fields["text"] = f"a {colour} {shape}"
                if kind != "text":
                    files = {"image": ("q.png", picture, "image/png")}
                response = client.post("/api/v1/search", data=fields, files=files)
                response.raise_for_status()
                hits = [(hit["id"], hit["score"]) for hit in response.json()["hits"]]
                yield Trial(kind, colour, shape, present, relevant), hits


def rates(results: list[tuple[Trial, list[str]]]) -> dict[str, float]:
    kept = [len(t.relevant & set(ids)) / len(t.relevant) for t, ids in results if t.present and t.relevant]
    empty = [not ids for t, ids in results if not t.present]
    shown = [len(t.relevant & set(ids)) / len(ids) for t, ids in results if t.present and ids]
    return {
        "relevant_kept": round(sum(kept) / len(kept), 3),
        "absent_empty": round(sum(empty) / len(empty), 3),
        "precision_present": round(sum(shown) / len(shown), 3) if shown else 0.0,
    }


def _worst(rate: dict[str, float]) -> float:
    return min(rate["relevant_kept"], rate["absent_empty"])


def best_fixed(scored: list[tuple[Trial, list[tuple[str, float]]]]) -> dict[str, Any]:
    thresholds = sorted({round(score, 3) for _, hits in scored for _, score in hits})
    best: dict[str, Any] = {}
    for threshold in thresholds:
        rate = rates([(t, [i for i, s in hits if s >= threshold]) for t, hits in scored])
        if not best or _worst(rate) > _worst(best):
            best = {"min_score": threshold, **rate}
    return best


def by_kind(results: list[tuple[Trial, Any]], kind: str | None) -> list[tuple[Trial, Any]]:
    return [(t, hits) for t, hits in results if kind is None or t.kind == kind]


def auto(client: TestClient, stored: dict[tuple[str, str], set[str]], seed: int) -> list[tuple[Trial, list[str]]]:
    return [(t, [i for i, _ in hits]) for t, hits in searches(client, stored, seed, cutoff="auto")]


def evaluate(workdir: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"tuning": {}}
    with product(quality_settings(workdir / "tune")) as client:
        stored = build(client, ["red", "green", "blue", "yellow"], seed=11)
        for share in SHARES:
            relevance.AUTO_SHARE = share
            results = auto(client, stored, seed=11)
            report["tuning"][share] = {kind: rates(by_kind(results, kind)) for kind in KINDS}
    chosen = max(SHARES, key=lambda share: _worst(report["tuning"][share]["text"]))
    relevance.AUTO_SHARE = chosen
    report["auto_share"] = chosen
    with product(quality_settings(workdir / "measure")) as client:
        stored = build(client, ["purple", "orange", "white", "green"], seed=23)
        report["library"] = {
            "present": ["purple", "orange", "white", "green"],
            "images": sum(map(len, stored.values())),
        }
        automatic = auto(client, stored, seed=23)
        scored = list(searches(client, stored, seed=23, cutoff="off"))
    for kind in (*KINDS, None):
        name = kind or "all kinds"
        report[name] = {"auto": rates(by_kind(automatic, kind)), "fixed": best_fixed(by_kind(scored, kind))}
    report["fixed, one min_score for all kinds"] = {
        kind: rates([(t, [i for i, s in hits if s >= report["all kinds"]["fixed"]["min_score"]]) for t, hits in
                     by_kind(scored, kind)])
        for kind in KINDS
    }  # fmt: skip
    return report


def main() -> None:
    print_report(__doc__.splitlines()[0], evaluate)


if __name__ == "__main__":
    main()
