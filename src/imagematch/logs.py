"""One logging set-up for the server and the CLI: our logger at the configured level, libraries quieter."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_NOISY = ("httpx", "huggingface_hub", "urllib3", "PIL", "numba", "multipart", "lancedb", "filelock")


def _handler(console: Console | None) -> logging.Handler:
    if console is None:
        plain = logging.StreamHandler(sys.stderr)
        plain.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
        return plain
    from rich.logging import RichHandler

    rich = RichHandler(console=console, show_path=False, markup=False, rich_tracebacks=False)
    rich.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    return rich


def configure_logging(level: str = "INFO", console: Console | None = None) -> None:
    """With a console (the CLI), log lines go through it, so they print above a live progress bar instead of
    over it."""
    root = logging.getLogger()
    if not any(getattr(h, "_imagematch", False) for h in root.handlers):
        handler = _handler(console)
        handler._imagematch = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    # Third-party code (open_clip logs to the root logger) speaks only when something is wrong.
    root.setLevel(logging.WARNING)
    logging.getLogger("imagematch").setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
