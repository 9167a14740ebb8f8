"""One logging set-up for the server and the CLI: our logger at the configured level, libraries quieter."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_NOISY = ("httpx", "huggingface_hub", "urllib3", "PIL", "numba", "multipart", "lancedb", "filelock")


class _ConsoleHandler(logging.Handler):
    """Log lines printed by a Rich console: above a live progress bar instead of over it, and to whatever
    stream the console writes to at that moment."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


def _handler(console: Console | None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr) if console is None else _ConsoleHandler(console)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


def configure_logging(level: str = "INFO", console: Console | None = None) -> None:
    """With a console (the CLI's commands), log lines go through it; without, plain lines on stderr."""
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
