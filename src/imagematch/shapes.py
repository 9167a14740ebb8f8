"""The JSON shapes of an image and of search results, as plain data: the REST API (web/schemas.py validates
and documents them) and the CLI's `--json` build them here, so a script sees the same fields from either."""

from __future__ import annotations

from typing import Any

from imagematch.records import Hit, ImageRecord, Match, SearchResult

API = "/api/v1"


def image_fields(record: ImageRecord) -> dict[str, Any]:
    """An image as the API's `ImageOut`: the record, its EXIF grouped, and the URLs of its files."""
    base = f"{API}/images/{record.id}"
    return {
        "id": record.id,
        "phash": record.phash,
        "file_hash": record.file_hash,
        "filename": record.filename,
        "size": record.size,
        "width": record.width,
        "height": record.height,
        "format": record.format,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "description": record.description,
        "caption": record.caption,
        "caption_status": str(record.caption_status),
        "caption_error": record.caption_error,
        "caption_edited": record.caption_edited,
        "metadata": record.metadata,
        "model_id": record.model_id,
        "cutout": record.cutout,
        "exif": {
            "taken_at": record.taken_at,
            "camera": record.camera,
            "lens": record.lens,
            "gps_lat": record.gps_lat,
            "gps_lon": record.gps_lon,
        },
        "links": {
            "self": base,
            "file": f"{base}/file",
            "thumbnail": f"{base}/thumbnail",
            "page": f"/images/{record.id}",
            "cutout": f"{base}/cutout" if record.cutout else None,
        },
    }


def hit_fields(hit: Hit) -> dict[str, Any]:
    """One search hit as the API's `HitOut`."""
    image = image_fields(hit.record)
    why = hit.why or Match(hit.score)
    return {
        "id": hit.record.id,
        "score": round(hit.score, 6),
        "why": {
            "image": round(why.image, 6),
            "words": None if why.words is None else round(why.words, 6),
            "words_added": round(why.words_added, 6),
            "keywords": list(why.keywords),
            "rank_fusion": None if why.rank_fusion is None else round(why.rank_fusion, 6),
        },
        "thumbnail_url": image["links"]["thumbnail"],
        "url": image["links"]["page"],
        "image": image,
    }


def why_summary(hit: Hit) -> str:
    """Why a hit matched, in a few words for a table row or a result card: "image 0.312 · words 0.73 (+0.047) ·
    keywords: invoice"."""
    why = hit.why or Match(hit.score)
    parts = [f"image {why.image:.3f}"]
    if why.words is not None:
        parts.append(f"words {why.words:.2f} (+{why.words_added:.3f})")
    if why.rank_fusion is not None:
        parts.append(f"keywords: {', '.join(why.keywords)}" if why.keywords else "no keywords")
    return " · ".join(parts)


def search_fields(result: SearchResult) -> dict[str, Any]:
    """A search's answer as the API's `SearchOut`."""
    return {
        "hits": [hit_fields(hit) for hit in result.hits],
        "truncated": result.truncated,
        "took_ms": round(result.took_ms, 1),
        "encode_ms": round(result.encode_ms, 1),
    }
