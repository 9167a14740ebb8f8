"""ImageMatch: self-hostable image similarity search."""

import os
from importlib.metadata import PackageNotFoundError, version

# PyTorch's OpenMP threads wait for work by spinning unless told otherwise. Where another program keeps one core
# busy, spinning threads take the model to a third of its speed; waiting passively keeps half, at the same speed
# on an idle machine (bench/embed.py, docs/benchmarks.md). Read once, when PyTorch loads, so it is set here,
# before anything of ours imports it; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("imagematch")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
