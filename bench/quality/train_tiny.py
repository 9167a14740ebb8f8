"""Train the built-in demo model: a tiny CLIP that really understands coloured shapes, on the CPU.

It learns from synthetic image–caption pairs (src/imagematch/demo_data.py): "a small red circle on a striped
green background". The image tower is a small ResNet (open_clip's ModifiedResNet; a tiny ViT learns colour
and background quickly but not shape), the text tower a 2-layer transformer with a 32-token context. Parts of
the captions are left out at random so short queries ("a red circle") work. Fixed seeds: the same command
gives the same model. The result is saved in open_clip's local-directory layout, weights in fp16.

    .venv/bin/python bench/quality/train_tiny.py --out src/imagematch/models/demo   # ~10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file
from torch.nn import functional

from imagematch.demo_data import Scene, render, scenes

SIDE = 64
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
MODEL_CFG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": SIDE, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def _pixels(scene: Scene, seed: int) -> np.ndarray:
    """Rendered the way the product sees a demo image: drawn larger, then reduced to the model's size."""
    image = render(scene, side=128, seed=seed).resize((SIDE, SIDE))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return ((array - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def _partial_caption(scene: Scene, rng: random.Random) -> str:
    """Leave out parts at random so short queries match: never both the colour and the shape."""
    size = f"{scene.size} " if rng.random() > 0.4 else ""
    colour = f"{scene.colour} " if rng.random() > 0.15 else ""
    shape = scene.shape if (colour == "" or rng.random() > 0.15) else "shape"
    background = f" on a {scene.pattern} {scene.background} background" if rng.random() > 0.4 else ""
    if rng.random() < 0.15 and background:
        background = f" on a {scene.background} background"
    return f"a {size}{colour}{shape}{background}"


def _evaluate(
    model: open_clip.CLIP, tokenizer: open_clip.SimpleTokenizer, held_out: list[Scene], images: torch.Tensor
) -> dict[str, float]:
    model.eval()
    with torch.inference_mode():
        image_features = functional.normalize(model.encode_image(images), dim=-1)
        text_features = functional.normalize(model.encode_text(tokenizer([s.caption for s in held_out])), dim=-1)
        short = functional.normalize(model.encode_text(tokenizer([s.short_caption for s in held_out])), dim=-1)
    model.train()
    similarity = text_features @ image_features.T
    # Several held-out images share a caption, so a hit is any image with the query's caption.
    captions = [s.caption for s in held_out]
    shorts = [s.short_caption for s in held_out]
    top5 = similarity.topk(5, dim=1).indices
    full_p5 = np.mean([np.mean([captions[j] == captions[i] for j in row.tolist()]) for i, row in enumerate(top5)])
    short_top5 = (short @ image_features.T).topk(5, dim=1).indices
    short_p5 = np.mean([np.mean([shorts[j] == shorts[i] for j in row.tolist()]) for i, row in enumerate(short_top5)])
    return {"caption_p@5": float(full_p5), "short_p@5": float(short_p5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("src/imagematch/models/demo"))
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=24_000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rng = random.Random(0)
    started = time.perf_counter()
    train_scenes = list(scenes(seed=1, count=args.train_size))
    train_images = torch.from_numpy(np.stack([_pixels(s, i) for i, s in enumerate(train_scenes)]))
    held_out = list(scenes(seed=99, count=400))
    held_images = torch.from_numpy(np.stack([_pixels(s, 10**6 + i) for i, s in enumerate(held_out)]))
    seconds = time.perf_counter() - started
    print(f"rendered {len(train_scenes)} training and {len(held_out)} held-out images in {seconds:.0f}s")

    model = open_clip.CLIP(**json.loads(json.dumps(MODEL_CFG)))
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])  # type: ignore[index]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    total: int = args.steps
    warmup = max(1, total // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    for step in range(args.steps):
        index = torch.randint(0, len(train_scenes), (args.batch,))
        captions = [_partial_caption(train_scenes[i], rng) for i in index.tolist()]
        image_features = functional.normalize(model.encode_image(train_images[index]), dim=-1)
        text_features = functional.normalize(model.encode_text(tokenizer(captions)), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T
        # Identical captions in a batch are not negatives of each other.
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
        targets = same / same.sum(dim=1, keepdim=True)
        loss = (functional.cross_entropy(logits, targets) + functional.cross_entropy(logits.T, targets.T)) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        scheduler.step()
        if step % 50 == 0 or step == args.steps - 1:
            metrics = (
                _evaluate(model, tokenizer, held_out, held_images) if step % 150 == 0 or step == args.steps - 1 else {}
            )
            shown = " ".join(f"{k}={v:.3f}" for k, v in metrics.items())
            print(f"step {step:4d} loss {loss.item():.3f} {shown} ({time.perf_counter() - started:.0f}s)", flush=True)

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "open_clip_model.safetensors"))
    preprocess = {"size": SIDE, "mean": MEAN, "std": STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    (args.out / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": MODEL_CFG, "preprocess_cfg": preprocess}, indent=2)
    )
    final = _evaluate(model, tokenizer, held_out, held_images)
    record = {"steps": args.steps, "batch": args.batch, "train_size": args.train_size, **final}
    record["seconds"] = round(time.perf_counter() - started)
    (args.out / "TRAINING.json").write_text(json.dumps(record, indent=2))
    print(f"saved {args.out} ({sum(p.stat().st_size for p in args.out.iterdir()) / 1e6:.1f} MB): {final}")


if __name__ == "__main__":
    main()
