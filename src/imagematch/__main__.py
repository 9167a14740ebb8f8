"""`python -m imagematch`: the cycle collector is off from the first import on (see cli._started)."""

import gc

gc.disable()

from imagematch.cli import main  # noqa: E402

main()
