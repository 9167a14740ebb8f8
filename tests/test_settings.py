from __future__ import annotations

from pathlib import Path

import pytest

from imagematch.settings import DEFAULT_MODEL, Settings, SettingsError, known_env_names, load_settings
from testkit.cli_env import env_for
from testkit.tinymodel import tiny_settings


def test_defaults() -> None:
    settings = load_settings()
    assert settings.store == "lancedb"
    assert settings.model == DEFAULT_MODEL
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir == Path("data") and settings.samples_dir == Path("images")


def test_seed_names_and_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PINECONE_API_KEY", "pc-key")
    monkeypatch.setenv("INDEX_NAME", "my-index")
    monkeypatch.setenv("MOONDREAM_API_KEY", "md-key")
    monkeypatch.setenv("IMAGEMATCH_PORT", "9001")
    monkeypatch.setenv("IMAGEMATCH_DATA_DIR", "/tmp/somewhere")
    settings = load_settings()
    assert (settings.pinecone_api_key, settings.index_name, settings.moondream_api_key) == (
        "pc-key",
        "my-index",
        "md-key",
    )
    assert settings.port == 9001 and settings.data_dir == Path("/tmp/somewhere")


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PINECONE_REGION=eu-west-1\nIMAGEMATCH_STORE=lancedb\nIMAGEMATCH_MAX_K=50\n")
    settings = load_settings()
    assert settings.pinecone_region == "eu-west-1" and settings.max_k == 50


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("IMAGEMATCH_STORE", "mongo", "IMAGEMATCH_STORE"),
        ("IMAGEMATCH_PORT", "eighty", "IMAGEMATCH_PORT"),
        ("IMAGEMATCH_PORT", "70000", "IMAGEMATCH_PORT"),
        ("IMAGEMATCH_BACKGROUND_REMOVAL", "maybe", "IMAGEMATCH_BACKGROUND_REMOVAL"),
        ("IMAGEMATCH_CAPTIONER", "gpt", "IMAGEMATCH_CAPTIONER"),
        ("IMAGEMATCH_MODEL", "  ", "IMAGEMATCH_MODEL"),
        ("IMAGEMATCH_MAX_UPLOAD_BYTES", "-5", "IMAGEMATCH_MAX_UPLOAD_BYTES"),
    ],
)
def test_bad_values_are_one_clear_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


def test_unknown_names_are_refused_with_a_suggestion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IMAGEMATCH_STOER", "lancedb")
    with pytest.raises(SettingsError, match="did you mean IMAGEMATCH_STORE"):
        load_settings()
    monkeypatch.delenv("IMAGEMATCH_STOER")
    (tmp_path / ".env").write_text("IMAGEMATCH_MODLE=fast\n")
    with pytest.raises(SettingsError, match="IMAGEMATCH_MODLE"):
        load_settings()


def test_env_example_documents_every_setting() -> None:
    example = (Path(__file__).parent.parent / ".env.example").read_text()
    documented = {line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line}
    prefixed = {n for n in known_env_names() if n.startswith("IMAGEMATCH_")}
    seed = {"PINECONE_API_KEY", "PINECONE_CLOUD", "PINECONE_REGION", "INDEX_NAME", "MOONDREAM_API_KEY"}
    missing = {n for n in prefixed if n not in documented and n.removeprefix("IMAGEMATCH_") not in seed}
    assert not missing
    assert seed <= documented
    assert Settings.model_fields  # every field is reachable by name


def test_no_secret_appears_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "IMAGEMATCH_API_KEY": "api-key-0123456789abcdef",
        "IMAGEMATCH_SESSION_SECRET": "session-secret-0123456789abcdef0123456789",
        "IMAGEMATCH_MILVUS_TOKEN": "root:milvus-password-123",
        "MOONDREAM_API_KEY": "moondream-key-123",
        "PINECONE_API_KEY": "pinecone-key-123",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    shown = repr(settings) + str(settings)
    assert settings.pinecone_api_key == "pinecone-key-123"
    for value in secrets.values():
        assert value not in shown


def test_the_cli_environment_of_settings_builds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """testkit.cli_env.env_for: what tests hand the CLI in a subprocess is the library they built."""
    given = tiny_settings(Path("/srv/library"), Path("/srv/model"), store="milvus", strip_gps=True, words_weight=0.6)
    given = given.model_copy(update={"trusted_proxies": ("10.0.0.0/8", "::1")})
    for name, value in env_for(given, log_level="WARNING").items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings(_env_file=None)  # type: ignore[call-arg]
    assert rebuilt == given.model_copy(update={"log_level": "WARNING"})
    with pytest.raises(ValueError, match="no such settings"):
        env_for(given, colour="red")
