"""Background removal with the real u2netp model on real photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagematch.ai.background import RembgRemover
from imagematch.factory import build_library
from imagematch.library import SimpleSearch
from imagematch.records import ModelUnavailable
from imagematch.settings import Settings
from testkit.images import encode, jpeg, photo

U2NET_HOME = Path(__file__).resolve().parents[2] / ".cache" / "u2net"


@pytest.fixture(autouse=True)
def u2netp(monkeypatch: pytest.MonkeyPatch) -> Path:
    model = U2NET_HOME / "u2netp.onnx"
    if not model.is_file():
        pytest.fail(f"{model} is missing: `make test` fetches it (scripts/fetch_u2netp.py)")
    monkeypatch.setenv("U2NET_HOME", str(U2NET_HOME))
    return model


@pytest.fixture(scope="module")
def auto() -> RembgRemover:
    return RembgRemover("auto")


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_a_subject_gets_a_cutout_in_auto_mode(auto: RembgRemover, name: str) -> None:
    result = auto.cutout(photo(name))
    assert result.image is not None and result.image.size == photo(name).size
    assert 0.10 <= result.coverage <= 0.85
    corner = np.asarray(result.image)[:5, :5].reshape(-1, 3)
    assert (corner > 240).all()  # the background became plain white


@pytest.mark.parametrize("name", ["grass", "brick", "moon", "text"])
def test_landscapes_textures_and_documents_keep_the_whole_image(auto: RembgRemover, name: str) -> None:
    assert auto.cutout(photo(name)).image is None


def test_a_flat_image_is_never_cut_out() -> None:
    flat = Image.new("RGB", (300, 200), (120, 130, 140))
    assert RembgRemover("auto").cutout(flat).image is None
    assert RembgRemover("on").cutout(flat).image is None  # nothing found: embed the image itself


def test_on_mode_cuts_out_whatever_it_finds() -> None:
    result = RembgRemover("on").cutout(photo("page"))  # auto refuses this uncertain mask
    assert RembgRemover("auto").cutout(photo("page")).image is None
    assert result.image is not None


def test_a_local_model_file_is_used(u2netp: Path) -> None:
    remover = RembgRemover("auto", model_path=u2netp)
    assert remover.cutout(photo("astronaut")).image is not None
    assert "u2netp.onnx" in remover.name


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="IMAGEMATCH_REMBG_MODEL_PATH"):
        RembgRemover("on", model_path=tmp_path / "nope.onnx").load()


def test_library_records_and_keeps_the_cutout(settings: Settings) -> None:
    library = build_library(settings.model_copy(update={"background_removal": "auto"}))
    portrait = library.ingest.add(jpeg("astronaut"), filename="astronaut.jpg").record
    texture = library.ingest.add(encode(photo("grass"), "PNG"), filename="grass.png").record
    assert portrait is not None and texture is not None
    assert portrait.cutout and not texture.cutout
    assert library.blobs.cutout_path(portrait.id) is not None
    assert library.blobs.cutout_path(texture.id) is None
    hit = library.search.simple(SimpleSearch(image=jpeg("astronaut"), k=1)).hits[0]
    assert hit.record.id == portrait.id and hit.score >= 0.99  # the query image gets the same cut-out


def test_auto_without_a_model_carries_on_without_cutouts(settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnx"
    library = build_library(settings.model_copy(update={"background_removal": "auto", "rembg_model_path": missing}))
    record = library.ingest.add(jpeg("astronaut"), filename="a.jpg").record
    assert record is not None and not record.cutout
    assert any("background removal is off" in w for w in library.warnings)
    strict = build_library(settings.model_copy(update={"background_removal": "on", "rembg_model_path": missing}))
    strict.open()  # a text search needs no cut-outs: the model is looked for at the first image
    with pytest.raises(ModelUnavailable, match="no model file"):
        strict.ingest.add(jpeg("coffee"), filename="b.jpg")
    assert strict.catalog.count() == 1  # only the first library's image


def test_api_serves_the_cutout(settings: Settings) -> None:
    from fastapi.testclient import TestClient

    from imagematch.web.app import create_app

    auto_settings = settings.model_copy(update={"background_removal": "auto"})
    with TestClient(create_app(auto_settings, build_library(auto_settings))) as client:
        portrait = client.post("/api/v1/images", files={"file": ("a.jpg", jpeg("astronaut"), "image/jpeg")}).json()
        texture = client.post("/api/v1/images", files={"file": ("g.png", encode(photo("grass"), "PNG"))}).json()
        assert portrait["cutout"] is True and portrait["links"]["cutout"]
        response = client.get(portrait["links"]["cutout"])
        assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
        assert texture["links"]["cutout"] is None
        assert client.get(f"/api/v1/images/{texture['id']}/cutout").status_code == 404
        assert client.get("/api/v1/health").json()["background_removal"] == "rembg:u2netp"


def test_a_model_file_in_any_folder_is_used_where_it_is(u2netp: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "my models" / "portrait-u2netp.onnx"  # outside rembg's home and its legacy home
    elsewhere.parent.mkdir()
    shutil.copyfile(u2netp, elsewhere)
    remover = RembgRemover("on", model_path=elsewhere)
    assert remover.cutout(photo("astronaut")).image is not None
    homes = [U2NET_HOME, Path.home() / ".rembg"]
    assert not [copy for home in homes for copy in home.rglob("portrait-u2netp.onnx")]  # used in place, not copied


def test_a_missing_model_behind_a_proxy_is_left_to_the_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The fast offline check connects directly, which a proxy-only network refuses though the download works."""
    import rembg

    from imagematch.ai import background

    monkeypatch.setenv("U2NET_HOME", str(tmp_path))  # nothing downloaded there
    downloads: list[str] = []

    def new_session(model: str) -> object:
        downloads.append(model)
        return object()

    monkeypatch.setattr(rembg, "new_session", new_session)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    background._named_session("u2netp")
    assert downloads == ["u2netp"]
    monkeypatch.delenv("HTTPS_PROXY")
    with pytest.raises(ModelUnavailable, match="cannot be reached"):  # no network here, and no proxy to try
        background._named_session("u2netp")
    assert downloads == ["u2netp"]
