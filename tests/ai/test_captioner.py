"""Our Moondream client code against a local server speaking Moondream's caption API."""

from __future__ import annotations

import io
import os
import time

import pytest
from PIL import Image

from imagematch.ai.captioner import CaptionError, MoondreamCaptioner
from testkit.fake_moondream import FakeMoondream, running
from testkit.images import photo


def test_caption_request_follows_the_documented_api() -> None:
    with running(FakeMoondream(caption_for=lambda jpeg: f"{Image.open(io.BytesIO(jpeg)).size}")) as fake:
        captioner = MoondreamCaptioner(endpoint=fake.endpoint, timeout=5)
        text = captioner.caption(photo("retina"), "short")
    request = fake.requests[0]
    assert request["path"] == "/v1/caption"
    assert request["length"] == "short" and request["stream"] is False
    assert str(request["image_url"]).startswith("data:image/jpeg;base64,")
    assert text == "(1024, 1024)"  # sent downscaled to at most 1024 px


def test_cloud_sends_the_key_and_a_bad_key_is_fatal() -> None:
    with running(FakeMoondream(api_key="good")) as fake:
        assert MoondreamCaptioner(api_key="good", endpoint=fake.endpoint).caption(photo("coffee"), "normal")
        assert fake.requests[-1]["auth"] == "good"
        with pytest.raises(CaptionError, match="refused the API key") as raised:
            MoondreamCaptioner(api_key="bad", endpoint=fake.endpoint).caption(photo("coffee"), "normal")
    assert raised.value.fatal and not raised.value.retry


def test_cloud_without_key_is_a_clear_setup_error() -> None:
    with pytest.raises(CaptionError, match="MOONDREAM_API_KEY") as raised:
        MoondreamCaptioner(api_key="")
    assert raised.value.fatal


@pytest.mark.parametrize(
    ("behaviour", "message", "retry"),
    [
        ("429", "rate limit", True),
        ("500", "server error", True),
        ("503", "server error", True),
        ("malformed", "malformed", True),
        ("empty", "malformed", True),
    ],
)
def test_failures_are_classified(behaviour: str, message: str, retry: bool) -> None:
    with running(FakeMoondream(script=[behaviour])) as fake, pytest.raises(CaptionError, match=message) as raised:
        MoondreamCaptioner(endpoint=fake.endpoint).caption(photo("coffee"), "normal")
    assert raised.value.retry is retry and not raised.value.fatal


def test_a_slow_server_times_out_instead_of_hanging() -> None:
    with running(FakeMoondream(script=["slow"], slow_seconds=5)) as fake:
        captioner = MoondreamCaptioner(endpoint=fake.endpoint, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(CaptionError, match="in time") as raised:
            captioner.caption(photo("coffee"), "normal")
    assert time.monotonic() - started < 3
    assert raised.value.retry


def test_unreachable_endpoint_is_retryable() -> None:
    with pytest.raises(CaptionError, match="cannot reach") as raised:
        MoondreamCaptioner(endpoint="http://127.0.0.1:9/v1", timeout=2).caption(photo("coffee"), "normal")
    assert raised.value.retry


# Read at import: the autouse fixture hides the developer's variables from the tests themselves.
REAL_KEY = os.environ.get("MOONDREAM_API_KEY", "")


@pytest.mark.skipif(not REAL_KEY, reason="MOONDREAM_API_KEY not set: the real-service run needs a key")
def test_real_moondream_cloud_captions_a_photo() -> None:
    captioner = MoondreamCaptioner(api_key=REAL_KEY, timeout=60)
    text = captioner.caption(photo("astronaut"), "short")
    assert len(text.split()) >= 3
