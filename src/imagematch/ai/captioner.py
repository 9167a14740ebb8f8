"""Automatic captions: the `Captioner` protocol, Moondream (cloud or a local Moondream Station) and none.

Moondream is called through its official client. Errors are sorted into the ones worth retrying (timeouts,
429, 5xx) and the ones that are not (a rejected key, a malformed answer), so the caption worker can back off
or give up with a reason a user can act on.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from typing import Literal, Protocol

from PIL import Image

CaptionLength = Literal["short", "normal", "long"]
MOONDREAM_CLOUD = "https://api.moondream.ai/v1"
_MAX_SIDE = 1024  # captions do not need more pixels; smaller uploads are faster and cheaper


class CaptionError(Exception):
    """A caption attempt failed. `retry` says whether trying again later can help."""

    def __init__(self, message: str, *, retry: bool, fatal: bool = False) -> None:
        super().__init__(message)
        self.retry = retry
        self.fatal = fatal  # the service will not work until the configuration changes (e.g. a bad key)


class Captioner(Protocol):
    @property
    def name(self) -> str: ...

    def caption(self, image: Image.Image, length: CaptionLength) -> str:
        """One caption for the image, or raise CaptionError."""


class _RequestTimeout(urllib.request.BaseHandler):
    """Gives urllib requests that did not choose a timeout this one.

    The official client calls urlopen() without a timeout, which would let a stalled server hang a worker
    forever; this handler is the documented urllib hook for changing requests before they are sent.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def _apply(self, request: urllib.request.Request) -> urllib.request.Request:
        if getattr(request, "timeout", None) in (None, socket._GLOBAL_DEFAULT_TIMEOUT):  # type: ignore[attr-defined]
            request.timeout = self.seconds
        return request

    http_request = _apply
    https_request = _apply


_opener_lock = threading.Lock()


def _install_timeout(seconds: float) -> None:
    with _opener_lock:
        urllib.request.install_opener(urllib.request.build_opener(_RequestTimeout(seconds)))


class MoondreamCaptioner:
    """Moondream through the official `moondream` client (cloud with an API key, or a local endpoint)."""

    def __init__(self, *, api_key: str = "", endpoint: str = "", timeout: float = 30.0) -> None:
        import moondream

        self.endpoint = (endpoint or MOONDREAM_CLOUD).rstrip("/")
        self.is_cloud = not endpoint
        if self.is_cloud and not api_key:
            raise CaptionError(
                "Moondream cloud needs MOONDREAM_API_KEY (get one at https://console.moondream.ai), "
                "or set IMAGEMATCH_MOONDREAM_ENDPOINT to a local Moondream Station",
                retry=False,
                fatal=True,
            )
        _install_timeout(timeout)
        self._client = moondream.vl(api_key=api_key or None, endpoint=self.endpoint)

    @property
    def name(self) -> str:
        return "moondream" if self.is_cloud else f"moondream@{self.endpoint}"

    def caption(self, image: Image.Image, length: CaptionLength) -> str:
        small = image.copy()
        small.thumbnail((_MAX_SIDE, _MAX_SIDE))
        try:
            answer = self._client.caption(small, length=length)
        except urllib.error.HTTPError as error:
            raise _http_error(error) from None
        except TimeoutError as error:
            raise CaptionError(f"Moondream did not answer in time ({error})", retry=True) from None
        except urllib.error.URLError as error:
            raise CaptionError(f"cannot reach Moondream at {self.endpoint} ({error.reason})", retry=True) from None
        except (ConnectionError, http.client.HTTPException) as error:  # dropped after the request: not wrapped
            raise CaptionError(f"the connection to Moondream broke ({error!r})", retry=True) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise CaptionError(f"Moondream sent a malformed answer ({error})", retry=True) from None
        text = answer.get("caption") if isinstance(answer, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise CaptionError("Moondream sent an empty caption", retry=True)
        return text.strip()


def _http_error(error: urllib.error.HTTPError) -> CaptionError:
    code = error.code
    if code in (401, 403):
        return CaptionError(
            f"Moondream refused the API key (HTTP {code}); check MOONDREAM_API_KEY", retry=False, fatal=True
        )
    if code == 429:
        return CaptionError("Moondream rate limit reached (HTTP 429)", retry=True)
    if code >= 500:
        return CaptionError(f"Moondream server error (HTTP {code})", retry=True)
    return CaptionError(f"Moondream rejected the request (HTTP {code})", retry=False)
