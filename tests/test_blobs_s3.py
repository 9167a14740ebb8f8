"""S3BlobStore against moto's S3 server on 127.0.0.1, and a Library whose originals live there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from imagematch.blobs_s3 import S3BlobStore
from imagematch.factory import build_library
from imagematch.records import ImageMatchError, NotFound
from imagematch.settings import Settings, SettingsError, load_settings
from testkit.images import jpeg, solid


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A new bucket; credentials from the standard AWS variables, never the developer's ~/.aws."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    name = f"images-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


ID_A = "c2924c5532bddfc8-945df306"
ID_B = "0f0f0f0f0f0f0f0f-12345678"


def test_round_trip_of_originals_thumbnails_and_cutouts(s3_server: str, bucket: str) -> None:
    blobs = S3BlobStore(f"s3://{bucket}/library", endpoint_url=s3_server)
    original, thumbnail = jpeg("coffee"), solid((200, 10, 10))
    blobs.put_original(ID_A, "jpg", original)
    blobs.put_thumbnail(ID_A, thumbnail)
    blobs.put_cutout(ID_A, b"cutout bytes")
    blobs.put_original(ID_B, "png", b"png bytes")
    assert blobs.read_original(ID_A) == original and blobs.read_thumbnail(ID_A) == thumbnail
    assert blobs.read_cutout(ID_A) == b"cutout bytes" and blobs.read_original(ID_B) == b"png bytes"
    assert blobs.has_original(ID_A) and blobs.has_thumbnail(ID_A) and not blobs.has_thumbnail(ID_B)
    assert blobs.original_path(ID_A) is None and blobs.thumbnail_path(ID_A) is None  # no local file to stream
    assert sorted(blobs.original_ids()) == sorted([ID_A, ID_B]) and list(blobs.thumbnail_ids()) == [ID_A]
    keys = {o["Key"] for o in boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=bucket)["Contents"]}
    assert f"library/originals/c2/{ID_A}.jpg" in keys and f"library/thumbnails/c2/{ID_A}.jpg" in keys
    assert list(blobs.cutout_ids()) == [ID_A]
    blobs.delete_derived(ID_A)
    assert blobs.read_thumbnail(ID_A) is None and blobs.read_cutout(ID_A) is None and blobs.has_original(ID_A)
    blobs.delete(ID_A)
    assert blobs.read_original(ID_A) is None and blobs.has_original(ID_B) and blobs.temporary_files() == []
    moved = blobs.quarantine_original(ID_B)
    assert moved == f"s3://{bucket}/library/lost+found/{ID_B}.png" and not blobs.has_original(ID_B)
    assert list(blobs.original_ids()) == [] and blobs.quarantine_original(ID_B) == ""


def test_clear_empties_only_its_own_prefix(s3_server: str, bucket: str) -> None:
    mine = S3BlobStore(f"s3://{bucket}/mine", endpoint_url=s3_server)
    theirs = S3BlobStore(f"s3://{bucket}/theirs", endpoint_url=s3_server)
    for image_id in (ID_A, ID_B):
        mine.put_original(image_id, "jpg", b"x")
        mine.put_thumbnail(image_id, b"t")
        theirs.put_original(image_id, "jpg", b"y")
    mine.clear()
    assert list(mine.original_ids()) == [] and list(mine.thumbnail_ids()) == []
    assert sorted(theirs.original_ids()) == sorted([ID_A, ID_B])


def test_bad_uris_ids_and_extensions_are_refused(s3_server: str, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ImageMatchError, match="s3://bucket"):
        S3BlobStore("https://example.com/x", endpoint_url=s3_server)
    blobs = S3BlobStore(f"s3://{bucket}", endpoint_url=s3_server)
    with pytest.raises(ValueError, match="not an image id"):
        blobs.put_thumbnail("../../etc/passwd", b"x")
    with pytest.raises(ValueError, match="extension"):
        blobs.put_original(ID_A, "exe", b"x")
    monkeypatch.setenv("IMAGEMATCH_BLOBS_URI", "/var/lib/images")
    with pytest.raises(SettingsError, match="IMAGEMATCH_BLOBS_URI"):
        load_settings()


def test_a_library_keeps_its_originals_in_the_bucket(settings: Settings, s3_server: str, bucket: str) -> None:
    shared = settings.model_copy(update={"blobs_uri": f"s3://{bucket}/lib", "s3_endpoint_url": s3_server})
    library = build_library(shared)
    added = library.ingest.add(jpeg("rocket"), filename="rocket.jpg")
    assert added.record is not None
    image_id = added.record.id
    assert library.catalog.original_file(image_id)[1] == jpeg("rocket")
    thumbnail = library.catalog.thumbnail_file(image_id)
    assert isinstance(thumbnail, bytes) and thumbnail[:2] == b"\xff\xd8"
    assert not list(shared.data_dir.rglob("*.jpg"))  # nothing of the image was written locally
    other_server = build_library(shared)  # a second process behind the same load balancer
    assert other_server.catalog.original_file(image_id)[1] == jpeg("rocket")
    library.catalog.delete(image_id)
    with pytest.raises(NotFound):
        other_server.catalog.original_file(image_id)
    assert S3BlobStore(f"s3://{bucket}/lib", endpoint_url=s3_server).read_original(image_id) is None
