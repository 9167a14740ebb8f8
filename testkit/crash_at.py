"""`python -m testkit.crash_at TARGET N WHEN -- imagematch arguments`: run the CLI and kill -9 it at one step.

TARGET is `module:Qualified.name` of a function or method; the process kills itself (SIGKILL: no cleanup, as
in a power cut) just before (WHEN=before) or just after (WHEN=after) the Nth call of it.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any


def _crash_at(target: str, nth: int, when: str) -> None:
    module_name, _, qualified = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *path, name = qualified.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = 0

    def step(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, step)


if __name__ == "__main__":
    target, nth, when, separator, *arguments = sys.argv[1:]
    assert separator == "--" and when in ("before", "after")
    _crash_at(target, int(nth), when)
    from imagematch.cli import main

    sys.argv = ["imagematch", *arguments]
    main()
