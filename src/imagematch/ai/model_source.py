"""Where model weights come from: names, presets, the hub download and the on-disk cache.

Every model ends up as a folder in open_clip's local-directory layout (`open_clip_config.json` + weights,
plus the tokenizer files when the model uses a Hugging Face tokenizer). Hub models are downloaded once, with
a progress bar, into `model_cache_dir`; after that loading never touches the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from imagematch.ai.download_host import unreachable
from imagematch.records import ModelUnavailable

log = logging.getLogger(__name__)

CONFIG_NAME = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"

# Friendly names. Figures from open_clip's published retrieval table (docs/openclip_retrieval_results.csv):
# zero-shot Flickr30k text->image Recall@1, and GFLOPs per image+text pair.
PRESETS: dict[str, str] = {
    # R@1 64.9 at 17.5 GFLOPs (OpenAI's ViT-B/32: 58.8 at 14.8). rclip's choice.
    "fast": "ViT-B-32-256/datacomp_s34b_b86k",
    # R@1 75.0 at 57.8 GFLOPs (~3.3x fast).
    "balanced": "ViT-B-16-SigLIP-256/webli",
    # R@1 79.0 at 201.6 GFLOPs (~11.5x fast); for a GPU or a patient CPU.
    "best": "ViT-L-16-SigLIP-256/webli",
}

# LongCLIP (Zhang et al., 2024): CLIP with a 248-token text context. The published checkpoints are in
# OpenAI's CLIP layout; on first use they are converted into open_clip's local-directory layout.
LONGCLIP: dict[str, tuple[str, str, str]] = {
    "longclip-B": ("BeichenZhang/LongCLIP-B", "longclip-B.pt", "ViT-B-16"),  # 512-d
    "longclip-L": ("BeichenZhang/LongCLIP-L", "longclip-L.pt", "ViT-L-14"),  # 768-d, as the seed's index
}
LONGCLIP_CONTEXT = 248
LONGCLIP_KEPT_POSITIONS = 20  # positions taken from the original embedding; the rest from the stretched one
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# The built-in demo model: a tiny CLIP trained by bench/quality/train_tiny.py on synthetic coloured shapes.
# It ships with the package so the product runs on a machine that cannot download a real model.
DEMO = "demo"
DEMO_DIR = Path(__file__).resolve().parent.parent / "models" / "demo"

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model named by the user, resolved to something open_clip can load."""

    spec: str  # as the user wrote it
    model_id: str  # stable identity, remembered by the store
    kind: str  # "builtin" (name/tag), "hf-hub" or "local-dir"
    name: str  # builtin name, hub repo, or absolute directory
    tag: str = ""  # pretrained tag for builtin models


def parse_model_spec(spec: str, cache_dir: Path | None = None) -> ModelSource:
    """Turn `IMAGEMATCH_MODEL` into a ModelSource, without touching the network or loading weights.

    Only a name/tag typed by the user that is not in `cache_dir` yet is checked against open_clip's registry:
    importing open_clip imports PyTorch (seconds), which a preset or a cached model must not cost each command.
    """
    spec = spec.strip()
    if spec == DEMO:
        return ModelSource(spec, f"demo@{_folder_fingerprint(DEMO_DIR)}", "local-dir", str(DEMO_DIR))
    resolved = PRESETS.get(spec, spec)
    if resolved.startswith(LOCAL_DIR):
        folder = Path(resolved[len(LOCAL_DIR) :]).expanduser().resolve()
        return ModelSource(spec, f"local-dir:{folder.name}@{_folder_fingerprint(folder)}", "local-dir", str(folder))
    if resolved in LONGCLIP:
        return ModelSource(spec, resolved, "longclip", resolved)
    if resolved.startswith(HF_HUB):
        repo = resolved[len(HF_HUB) :].strip("/")
        if repo.count("/") != 1:
            raise ModelUnavailable(f"{spec!r}: a hub model is written hf-hub:org/repo")
        return ModelSource(spec, f"hf-hub:{repo}", "hf-hub", repo)
    name, _, tag = resolved.partition("/")
    known = resolved in PRESETS.values() or (
        cache_dir is not None and (_cache_folder(resolved, cache_dir) / CONFIG_NAME).is_file()
    )
    if known:
        return ModelSource(spec, resolved, "builtin", name, tag)
    import open_clip

    if name not in open_clip.list_models():
        raise ModelUnavailable(
            f"unknown model {spec!r}: use a preset ({', '.join(PRESETS)}), an open_clip name/tag such as "
            f"ViT-B-32/openai (see `imagematch models`), {' or '.join(LONGCLIP)}, hf-hub:org/repo or "
            "local-dir:/path"
        )
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        choices = ", ".join(f"{name}/{t}" for t in tags) or "none published"
        raise ModelUnavailable(f"model {spec!r} needs a pretrained tag: {choices}")
    return ModelSource(spec, f"{name}/{tag}", "builtin", name, tag)


def _folder_fingerprint(folder: Path) -> str:
    """A cheap identity for local weights: the config, each weight file's size and its first and last MiB.

    Two different local models never share it, and it does not change when the folder is moved or copied.
    """
    digest = hashlib.sha256()
    config = folder / CONFIG_NAME
    if not config.is_file():
        return "missing"
    digest.update(config.read_bytes())
    for name in WEIGHT_NAMES:
        path = folder / name
        if path.is_file():
            size = path.stat().st_size
            digest.update(f"{name}:{size}".encode())
            with path.open("rb") as handle:
                digest.update(handle.read(1 << 20))
                handle.seek(max(0, size - (1 << 20)))
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


def _cache_folder(model_id: str, cache_dir: Path) -> Path:
    return cache_dir / "open_clip" / _SAFE.sub("_", model_id)


def local_model_dir(source: ModelSource, cache_dir: Path) -> Path:
    """The folder in local-directory layout for this model, downloading it first when needed."""
    if source.kind == "local-dir":
        folder = Path(source.name)
        if not (folder / CONFIG_NAME).is_file() or not any((folder / n).is_file() for n in WEIGHT_NAMES):
            raise ModelUnavailable(
                f"{source.spec!r}: {folder} must hold {CONFIG_NAME} and "
                f"{' or '.join(WEIGHT_NAMES)} (open_clip's local-directory layout)"
            )
        return folder
    folder = _cache_folder(source.model_id, cache_dir)
    if (folder / CONFIG_NAME).is_file():
        return folder
    _require_hub(source, cache_dir)
    log.info("downloading %s into %s (first use only)", source.model_id, folder)
    if source.kind == "hf-hub":
        _fetch_hf_hub(source.name, folder, cache_dir)
    elif source.kind == "longclip":
        repo, filename, architecture = LONGCLIP[source.name]
        import open_clip

        install_longclip(_download(repo, (filename,), cache_dir), folder, open_clip.get_model_config(architecture))
    else:
        _fetch_builtin(source.name, source.tag, folder, cache_dir)
    return folder


def is_cached(source: ModelSource, cache_dir: Path) -> bool:
    """Whether the model loads without a download: a local folder, or one in the cache already."""
    return source.kind == "local-dir" or (_cache_folder(source.model_id, cache_dir) / CONFIG_NAME).is_file()


def unavailable_reason(source: ModelSource, cache_dir: Path) -> str | None:
    """Why this model cannot be loaded here (not cached and no hub), or None when it can be (or may be)."""
    if source.kind == "local-dir":
        folder = Path(source.name)
        return (
            None if (folder / CONFIG_NAME).is_file() else f"cannot load a model from {folder}: no {CONFIG_NAME} there"
        )
    if is_cached(source, cache_dir):
        return None
    try:
        _require_hub(source, cache_dir)
    except ModelUnavailable as error:
        return str(error)
    return None


def _hub_host() -> tuple[str, int]:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    return parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)


def _require_hub(source: ModelSource, cache_dir: Path) -> None:
    """Fail fast and clearly when the hub cannot be reached, instead of after a minute of retries."""
    host, port = _hub_host()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    reason = "HF_HUB_OFFLINE is set" if offline else ""
    if not offline:
        problem = unreachable(host, port)
        if problem is not None:
            reason = f"{host} cannot be reached ({problem})"
    if reason:
        raise ModelUnavailable(
            f"model {source.model_id} is not in the cache ({cache_dir}) and {reason}. Connect to the internet "
            "once so it can be downloaded, or point IMAGEMATCH_MODEL=local-dir:/path/to/folder at a folder "
            f"holding {CONFIG_NAME} and the weights"
        )


def _download(repo: str, filenames: tuple[str, ...], cache_dir: Path) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    last: Exception | None = None
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id=repo, filename=filename, cache_dir=cache_dir / "hub"))
        except EntryNotFoundError as error:
            last = error
        except Exception as error:
            raise ModelUnavailable(f"downloading {repo}/{filename} failed: {error}") from error
    raise ModelUnavailable(f"{repo} has none of {', '.join(filenames)}: {last}")


def _link(target: Path, link: Path) -> None:
    link.unlink(missing_ok=True)
    try:
        link.symlink_to(target.resolve())
    except OSError:
        link.write_bytes(target.read_bytes())


def _save_tokenizer(model_cfg: dict[str, Any], folder: Path, cache_dir: Path) -> None:
    """Models with a Hugging Face tokenizer get its files saved beside the weights, so loading is offline."""
    text_cfg = model_cfg.get("text_cfg", {})
    name = text_cfg.get("hf_tokenizer_name")
    if not name:
        return
    try:
        from transformers import AutoTokenizer
    except ImportError as error:
        raise ModelUnavailable(f"this model's tokenizer needs the transformers package: {error}") from error
    target = folder / "tokenizer"
    AutoTokenizer.from_pretrained(name, cache_dir=cache_dir / "hub").save_pretrained(target)
    text_cfg["hf_tokenizer_name"] = str(target)


def _write_config(folder: Path, config: dict[str, Any]) -> None:
    """Written last: its presence marks a complete download."""
    temp = folder / f".{CONFIG_NAME}.tmp"
    temp.write_text(json.dumps(config, indent=2))
    os.replace(temp, folder / CONFIG_NAME)


def _fetch_builtin(name: str, tag: str, folder: Path, cache_dir: Path) -> None:
    import open_clip

    pretrained = open_clip.get_pretrained_cfg(name, tag)
    hub = pretrained.get("hf_hub", "")
    if not hub:
        raise ModelUnavailable(f"{name}/{tag} is not published on the Hugging Face hub")
    repo, filename = os.path.split(hub)  # "org/repo/" names the default file, "org/repo/file" a given one
    names = (filename,) if filename else WEIGHT_NAMES
    weights = _download(repo, names, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _link(weights, folder / (WEIGHT_NAMES[0] if weights.suffix == ".safetensors" else WEIGHT_NAMES[1]))
    model_cfg = open_clip.get_model_config(name)
    if pretrained.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    _save_tokenizer(model_cfg, folder, cache_dir)
    preprocess = {key: pretrained[key] for key in ("mean", "std", "interpolation", "resize_mode") if key in pretrained}
    _write_config(folder, {"model_cfg": model_cfg, "preprocess_cfg": preprocess})


def _fetch_hf_hub(repo: str, folder: Path, cache_dir: Path) -> None:
    config_path = _download(repo, (CONFIG_NAME,), cache_dir)
    weights = _download(repo, WEIGHT_NAMES, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    _link(weights, folder / weights.name)
    config = json.loads(config_path.read_text())
    model_cfg = config.get("model_cfg", config)
    _save_tokenizer(model_cfg, folder, cache_dir)
    _write_config(folder, {"model_cfg": model_cfg, "preprocess_cfg": config.get("preprocess_cfg", {})})


def convert_longclip_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """LongCLIP keeps two text position tables and uses the first 20 rows of one and the rest of the other;
    open_clip has one table, so we write the positions LongCLIP actually uses into it."""
    import torch

    converted = dict(state)
    stretched = converted.pop("positional_embedding_res", None)
    if stretched is not None:
        kept = LONGCLIP_KEPT_POSITIONS
        converted["positional_embedding"] = torch.cat([converted["positional_embedding"][:kept], stretched[kept:]])
    for key in ("input_resolution", "context_length", "vocab_size"):
        converted.pop(key, None)
    return converted


def install_longclip(checkpoint: Path, folder: Path, model_cfg: dict[str, Any]) -> None:
    """Convert a LongCLIP checkpoint into open_clip's local-directory layout in `folder`."""
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelUnavailable(f"{checkpoint} is not a LongCLIP state dict: {error}") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    config = json.loads(json.dumps(model_cfg))
    config["quick_gelu"] = True  # OpenAI's activation, which LongCLIP keeps
    config.setdefault("text_cfg", {})["context_length"] = LONGCLIP_CONTEXT
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(convert_longclip_state_dict(state), folder / WEIGHT_NAMES[1])
    preprocess = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    _write_config(folder, {"model_cfg": config, "preprocess_cfg": preprocess})
