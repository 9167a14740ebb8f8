"""Originals, thumbnails and cut-outs in an S3-compatible bucket, so several servers share one copy.

`IMAGEMATCH_BLOBS_URI=s3://bucket/prefix` selects it; `IMAGEMATCH_S3_ENDPOINT_URL` points it at MinIO, Ceph,
R2 and the like. Credentials and region come from the standard AWS variables and files (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_PROFILE, ...). The layout mirrors the local one:
`<prefix>/originals/ab/<id>.<ext>`, `<prefix>/thumbnails/ab/<id>.jpg`, `<prefix>/cutouts/ab/<id>.jpg`.

An S3 PUT is atomic (the object appears whole or not at all), so there are no temporary files to clean up.
There is no local file either: `*_path` return None and the bytes are served from `read_*`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import ClientError

from imagematch.blobs import CUTOUTS, LOST_AND_FOUND, ORIGINALS, THUMBNAILS
from imagematch.media import ACCEPTED_FORMATS
from imagematch.records import ImageMatchError

_EXTENSIONS = frozenset(ACCEPTED_FORMATS.values())
_CONTENT_TYPES = {"jpg": "image/jpeg", "tiff": "image/tiff", "heic": "image/heic", "avif": "image/avif"}
_MISSING = {"404", "NoSuchKey", "NotFound"}


def _valid_id(image_id: str) -> str:
    """Ids are content hashes; refusing anything else keeps keys predictable."""
    if not image_id or len(image_id) > 64 or not all(ch in "0123456789abcdef-" for ch in image_id):
        raise ValueError(f"not an image id: {image_id!r}")
    return image_id


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix")."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ImageMatchError(f"IMAGEMATCH_BLOBS_URI={uri!r}: expected s3://bucket or s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


class S3BlobStore:
    """BlobStore on one bucket and key prefix, with boto3."""

    def __init__(self, uri: str, *, endpoint_url: str = "", client: Any = None) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self._s3 = client or boto3.client("s3", endpoint_url=endpoint_url or None)

    def _key(self, kind: str, image_id: str, extension: str) -> str:
        name = f"{kind}/{_valid_id(image_id)[:2]}/{image_id}.{extension}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _folder(self, kind: str) -> str:
        return f"{self.prefix}/{kind}/" if self.prefix else f"{kind}/"

    def _put(self, key: str, data: bytes, extension: str) -> None:
        content_type = _CONTENT_TYPES.get(extension, f"image/{extension}")
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def _get(self, key: str) -> bytes | None:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        data: bytes = response["Body"].read()
        return data

    def _exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise
        return True

    def _keys(self, prefix: str) -> Iterator[str]:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def _original_key(self, image_id: str) -> str | None:
        """Originals keep their format's extension; one listing finds it."""
        stem = self._key(ORIGINALS, image_id, "")
        return next((key for key in self._keys(stem) if key[len(stem) :] in _EXTENSIONS), None)

    def put_original(self, image_id: str, extension: str, data: bytes) -> None:
        if extension not in _EXTENSIONS:
            raise ValueError(f"unexpected extension {extension!r}")
        self._put(self._key(ORIGINALS, image_id, extension), data, extension)

    def put_thumbnail(self, image_id: str, data: bytes) -> None:
        self._put(self._key(THUMBNAILS, image_id, "jpg"), data, "jpg")

    def put_cutout(self, image_id: str, data: bytes) -> None:
        self._put(self._key(CUTOUTS, image_id, "jpg"), data, "jpg")

    def has_original(self, image_id: str) -> bool:
        return self._original_key(image_id) is not None

    def has_thumbnail(self, image_id: str) -> bool:
        return self._exists(self._key(THUMBNAILS, image_id, "jpg"))

    def original_path(self, image_id: str) -> Path | None:
        return None

    def thumbnail_path(self, image_id: str) -> Path | None:
        return None

    def cutout_path(self, image_id: str) -> Path | None:
        return None

    def read_original(self, image_id: str) -> bytes | None:
        key = self._original_key(image_id)
        return self._get(key) if key else None

    def read_thumbnail(self, image_id: str) -> bytes | None:
        return self._get(self._key(THUMBNAILS, image_id, "jpg"))

    def read_cutout(self, image_id: str) -> bytes | None:
        return self._get(self._key(CUTOUTS, image_id, "jpg"))

    def delete(self, image_id: str) -> None:
        self.delete_derived(image_id)
        original = self._original_key(image_id)
        if original:
            self._delete_keys([original])

    def delete_derived(self, image_id: str) -> None:
        self._delete_keys([self._key(THUMBNAILS, image_id, "jpg"), self._key(CUTOUTS, image_id, "jpg")])

    def quarantine_original(self, image_id: str) -> str:
        """Copy the original under `<prefix>/lost+found/`, then remove it; returns its new s3:// address."""
        original = self._original_key(image_id)
        if original is None:
            return ""
        target = f"{self._folder(LOST_AND_FOUND)}{original.rsplit('/', 1)[-1]}"
        self._s3.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": original})
        self._delete_keys([original])
        return f"s3://{self.bucket}/{target}"

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # S3 deletes at most 1000 keys per request
            objects = [{"Key": key} for key in keys[start : start + 1000]]
            self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})

    def _ids(self, kind: str) -> Iterator[str]:
        for key in self._keys(self._folder(kind)):
            yield key.rsplit("/", 1)[-1].split(".", 1)[0]

    def original_ids(self) -> Iterator[str]:
        return self._ids(ORIGINALS)

    def thumbnail_ids(self) -> Iterator[str]:
        return self._ids(THUMBNAILS)

    def cutout_ids(self) -> Iterator[str]:
        return self._ids(CUTOUTS)

    def temporary_files(self) -> list[Path]:
        return []

    def clear(self) -> None:
        for kind in (ORIGINALS, THUMBNAILS, CUTOUTS):
            self._delete_keys(list(self._keys(self._folder(kind))))
