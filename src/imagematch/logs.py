"""One logging set-up for the server and the CLI: our logger at the configured level, libraries quieter."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_NOISY = ("httpx", "huggingface_hub", "urllib3", "PIL", "numba", "multipart", "lancedb", "filelock")


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_imagematch", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        handler._imagematch = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # Third-party code (open_clip logs to the root logger) speaks only when something is wrong.
    root.setLevel(logging.WARNING)
    logging.getLogger("imagematch").setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
