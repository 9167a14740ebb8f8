from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from imagematch.ai.download_host import unreachable
from imagematch.ai.model_source import PRESETS, local_model_dir, parse_model_spec
from imagematch.records import ModelUnavailable
from testkit.tinymodel import build_tiny_model


def test_presets_and_names_resolve_without_network() -> None:
    assert parse_model_spec("fast").model_id == PRESETS["fast"]
    source = parse_model_spec("ViT-B-32/openai")
    assert (source.kind, source.name, source.tag) == ("builtin", "ViT-B-32", "openai")
    assert parse_model_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K").kind == "hf-hub"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ViT-Q-99/none", "unknown model"),
        ("ViT-B-32", "needs a pretrained tag"),
        ("hf-hub:justone", "org/repo"),
    ],
)
def test_bad_names_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(ModelUnavailable, match=message):
        parse_model_spec(spec)


def test_uncached_model_without_network_fails_fast_and_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    started = time.monotonic()
    with pytest.raises(ModelUnavailable, match="local-dir:") as raised:
        local_model_dir(parse_model_spec("fast"), tmp_path / "cache")
    assert time.monotonic() - started < 10
    assert "not in the cache" in str(raised.value)


def test_the_hub_probe_does_not_wait_for_a_name_server_that_never_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose name server is cut off: the lookup alone would wait out the resolver's retries."""
    released = threading.Event()

    def silent_lookup(*args: object, **kwargs: object) -> list[object]:
        released.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", silent_lookup)
    started = time.monotonic()
    try:
        assert unreachable("huggingface.co", 443, timeout=0.5) == "no answer within 0.5 s"
        assert time.monotonic() - started < 3
    finally:
        released.set()


def test_local_dir_must_hold_config_and_weights(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match=r"open_clip_config\.json"):
        local_model_dir(parse_model_spec(f"local-dir:{tmp_path / 'empty'}"), tmp_path)


def test_local_model_identity_follows_the_weights_not_the_path(tmp_path: Path) -> None:
    first = build_tiny_model(tmp_path / "a", seed=0)
    moved = tmp_path / "elsewhere" / "a"
    shutil.copytree(first, moved)
    other = build_tiny_model(tmp_path / "b", seed=1)
    assert parse_model_spec(f"local-dir:{first}").model_id == parse_model_spec(f"local-dir:{moved}").model_id
    assert parse_model_spec(f"local-dir:{first}").model_id != parse_model_spec(f"local-dir:{other}").model_id


def test_presets_are_published_open_clip_models() -> None:
    import open_clip

    for preset in PRESETS.values():
        name, _, tag = preset.partition("/")
        assert name in open_clip.list_models() and tag in open_clip.list_pretrained_tags_by_model(name)


def test_a_preset_or_a_cached_model_is_read_without_importing_pytorch(tmp_path: Path) -> None:
    cached = tmp_path / "open_clip" / "ViT-B-32_openai"
    cached.mkdir(parents=True)
    (cached / "open_clip_config.json").write_text("{}")
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from imagematch.ai.model_source import parse_model_spec\n"
        "assert parse_model_spec('fast').model_id == 'ViT-B-32-256/datacomp_s34b_b86k'\n"
        f"assert parse_model_spec('ViT-B-32/openai', Path({str(tmp_path)!r})).tag == 'openai'\n"
        "print(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))\n"
    )
    source = str(Path(parse_model_spec.__code__.co_filename).resolve().parents[2])  # this checkout's package
    environment = {**os.environ, "PYTHONPATH": source}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
