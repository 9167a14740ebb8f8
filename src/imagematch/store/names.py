"""The store backends, named once: settings validate IMAGEMATCH_STORE against this, the factory builds each one
(factory.STORE_BUILDERS) and the CLI offers them as `migrate --to` choices."""

from __future__ import annotations

from typing import Literal, get_args

StoreName = Literal["lancedb", "milvus", "pinecone"]
STORE_NAMES: tuple[StoreName, ...] = get_args(StoreName)
