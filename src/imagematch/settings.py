"""All configuration in one place: environment variables and `.env`, validated once at start-up.

Our own settings use the `IMAGEMATCH_` prefix. The seed's names (`PINECONE_API_KEY`, `INDEX_NAME`,
`MOONDREAM_API_KEY`, ...) are accepted as they are, so an existing `.env` keeps working.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from imagematch.passwords import is_password_hash
from imagematch.store.names import StoreName

DEFAULT_MODEL = "ViT-B-32-256/datacomp_s34b_b86k"
ENV_PREFIX = "IMAGEMATCH_"
# Settings whose values never appear in error messages.
SECRET_FIELDS = frozenset(
    {"api_key", "ui_password_hash", "session_secret", "milvus_token", "moondream_api_key", "pinecone_api_key"}
)
_API_KEY_SHAPE = re.compile(r"[\x21-\x7e]{16,}")
# A DNS name (optionally *.name), an IPv4 address or a bracketed IPv6 address, as IMAGEMATCH_ALLOWED_HOSTS lists.
_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")


class SettingsError(ValueError):
    """Raised when a setting is missing, unknown or has a value we cannot use."""


def _seed_alias(name: str) -> AliasChoices:
    """Accept both IMAGEMATCH_<NAME> and the seed's bare <NAME>."""
    return AliasChoices(f"{ENV_PREFIX}{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # Where things live
    data_dir: Path = Field(Path("data"), description="Embedded store, originals and thumbnails.")
    samples_dir: Path = Field(Path("images"), description="Folder indexed by /upload-samples.")
    model_cache_dir: Path = Field(
        Path.home() / ".cache" / "imagematch",
        description="Downloaded model weights (Hugging Face cache layout).",
    )

    # Backends
    store: StoreName = "lancedb"
    model: str = Field(DEFAULT_MODEL, min_length=1)
    captioner: Literal["auto", "moondream", "none"] = "auto"
    background_removal: Literal["off", "on", "auto"] = "auto"
    # Reading the text in pictures (docs/ocr.md): auto reads it where the engine is installed, on requires it.
    ocr: Literal["auto", "on", "off"] = "auto"

    # Scale-out stores and shared originals (docs/scaling.md)
    milvus_uri: str = Field("", description="Milvus Lite file or server URI; empty: <data_dir>/milvus.db.")
    milvus_token: str = Field(
        "", repr=False, description="user:password or API key of a Milvus server; empty for none."
    )
    milvus_collection: str = Field("imagematch", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
    pinecone_namespace: str = Field("", description="Prefix of this library's namespaces in the index.")
    blobs_uri: str = Field("", pattern=r"^(s3://[^/]+(/.*)?)?$", description="s3://bucket/prefix; empty: data_dir.")
    s3_endpoint_url: str = Field("", description="S3-compatible endpoint (MinIO, R2, ...); empty: AWS.")

    # Captions (Moondream)
    moondream_endpoint: str = Field("", description="A local Moondream Station, e.g. http://127.0.0.1:2020/v1.")
    caption_length: Literal["short", "normal", "long"] = "normal"
    caption_rate: float = Field(2.0, gt=0, le=100, description="Requests per second (the free tier allows 2).")
    caption_timeout: float = Field(30.0, gt=0, le=600)
    caption_retries: int = Field(4, ge=0, le=20)
    caption_backoff: float = Field(2.0, gt=0, le=60, description="First retry delay in seconds; doubles.")
    caption_backoff_cap: float = Field(60.0, gt=0, le=3600)
    query_caption: bool = Field(True, description="Append a stored query image's caption to the query text.")

    # Words in search: how much an image's own words (description, caption) count in text search.
    words_weight: float = Field(0.3, ge=0, le=1)
    # The relevance cut-off of a search that does not choose one (imagematch.relevance, docs/search.md).
    cutoff: Literal["off", "auto"] = "off"

    # Background removal (rembg)
    rembg_model: Literal["u2netp", "u2net", "isnet-general-use", "birefnet-general"] = "u2netp"
    rembg_model_path: Path | None = None
    cutout_min_coverage: float = Field(0.10, ge=0, le=1)
    cutout_max_coverage: float = Field(0.85, ge=0, le=1)

    # Web server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Comma-separated in the environment. Host names answered besides loopback and IMAGEMATCH_HOST (web/hosts.py).
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field((), description="More names; * = any.")
    # Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (web/proxies.py); none by default.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field((), description="Addresses or networks.")

    # Access (SECURITY.md): authentication is on when a key or a password is set, and required off loopback.
    api_key: str = Field("", repr=False, description="The REST API's key, sent as X-API-Key or Bearer.")
    ui_password_hash: str = Field("", repr=False, description="The web UI's password, from hash-password.")
    session_secret: str = Field("", repr=False, description="Signs login cookies; empty: kept in data_dir.")
    rate_limit: int = Field(600, ge=0, le=1_000_000, description="Requests per minute per client; 0 = off.")

    # Limits
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1024)
    max_pixels: int = Field(100_000_000, ge=64)
    max_k: int = Field(1000, ge=1)

    # Deduplication: Hamming distance on the 64-bit pHash (bench/dedup_threshold.py measures it).
    duplicate_distance: int = Field(10, ge=0, le=32)
    duplicate_colour_distance: float = Field(
        30.0, ge=0, le=1000, description="ΔE the colour layouts of a pHash match may differ by (duplicates.md)."
    )
    duplicate_variants: bool = Field(True, description="Also look uploads up as mirrored and rotated images.")
    duplicate_variant_similarity: float = Field(0.75, ge=0, le=1, description="Vector cosine a turned copy needs.")
    duplicate_crop_distance: int = Field(14, ge=0, le=32, description="pHash bits for a crop; 0 = no CLIP check.")
    duplicate_similarity: float = Field(0.97, ge=0, le=1, description="Image-vector cosine a crop must reach.")

    # Privacy: remove GPS positions from stored originals (and records) at upload.
    strip_gps: bool = False

    # Search at scale (embedded store): past this many images an ANN index is built (IVF-PQ, re-ranked): where
    # it becomes faster than scanning every vector (docs/benchmarks.md).
    ann_threshold: int = Field(10_000, ge=1)
    ann_nprobes: int = Field(30, ge=1, le=10_000)
    ann_rerank: int = Field(500, ge=1, le=100_000, description="Index candidates re-ranked with exact vectors.")
    maintain_every: int = Field(1000, ge=1, description="Writes between compactions and index updates.")

    # Throughput
    runtime: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto", description="auto: ONNX Runtime where it measured faster than PyTorch on this machine."
    )
    embed_batch_size: int = Field(16, ge=1, le=512)
    decode_workers: int = Field(2, ge=1, le=64)
    torch_threads: int = Field(0, ge=0, le=256, description="0 = one per CPU core.")
    shared_model_calls: bool = Field(
        True, description="Searches and uploads that wait for the model meanwhile share its next call."
    )

    # Seed names (accepted with or without the prefix)
    moondream_api_key: str = Field("", repr=False, validation_alias=_seed_alias("MOONDREAM_API_KEY"))
    pinecone_api_key: str = Field("", repr=False, validation_alias=_seed_alias("PINECONE_API_KEY"))
    pinecone_cloud: str = Field("aws", validation_alias=_seed_alias("PINECONE_CLOUD"))
    pinecone_region: str = Field("us-east-1", validation_alias=_seed_alias("PINECONE_REGION"))
    index_name: str = Field("image-match", validation_alias=_seed_alias("INDEX_NAME"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("model")
    @classmethod
    def _strip_model(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must name a model")
        return value

    @field_validator("allowed_hosts", "trusted_proxies", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _check_allowed_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(name.lower().rstrip(".") for name in value)
        for name in names:
            if name != "*" and not _HOST_PATTERN.fullmatch(name):
                raise ValueError(f"{name!r} is not a host name, an address, *.domain or *")
        return names

    @field_validator("trusted_proxies")
    @classmethod
    def _check_trusted_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (such as 10.0.0.0/8)") from None
        return value

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: str) -> str:
        if value and not _API_KEY_SHAPE.fullmatch(value):
            raise ValueError("must be at least 16 printable ASCII characters without spaces")
        return value

    @field_validator("ui_password_hash")
    @classmethod
    def _check_password_hash(cls, value: str) -> str:
        if value and not is_password_hash(value):
            raise ValueError("is not a hash made by `imagematch hash-password`")
        return value

    @field_validator("session_secret")
    @classmethod
    def _check_session_secret(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @property
    def torch_thread_count(self) -> int:
        """IMAGEMATCH_TORCH_THREADS as a count: 0 means one thread per CPU core."""
        return self.torch_threads or os.cpu_count() or 1

    @property
    def auth_enabled(self) -> bool:
        """Whether requests must carry the API key or a login session."""
        return bool(self.api_key or self.ui_password_hash)

    @property
    def captions_wanted(self) -> bool:
        """Whether new images should wait for a caption: explicitly on, or auto with a key or endpoint."""
        if self.captioner == "auto":
            return bool(self.moondream_api_key or self.moondream_endpoint)
        return self.captioner == "moondream"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def milvus_target(self) -> str:
        """The Milvus URI to connect to: the configured one, or Milvus Lite in the data directory."""
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @property
    def model_is_default(self) -> bool:
        return self.model == DEFAULT_MODEL


def known_env_names() -> set[str]:
    """Every environment variable name that configures us."""
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        else:
            names.add(f"{ENV_PREFIX}{field_name.upper()}")
    return names


def _check_unknown_names(environ: dict[str, str]) -> None:
    known = known_env_names()
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(f"unknown setting {name}{hint}")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = str(item["loc"][0]) if item["loc"] else "?"
        name = loc if loc.isupper() else f"{ENV_PREFIX}{loc.upper()}"
        got = "the value is not shown" if loc in SECRET_FIELDS else f"got {item.get('input')!r}"
        parts.append(f"{name}: {item['msg']} ({got})")
    return "invalid setting " + "; ".join(parts)


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; every problem becomes one readable SettingsError."""
    from_file = {key: value or "" for key, value in dotenv_values(".env").items()}
    _check_unknown_names({**from_file, **os.environ})
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None
