"""Password hashes for the web UI's login: scrypt from the standard library, salted, in one string.

The string is `scrypt:<n>:<r>:<p>:<salt>:<hash>` (salt and hash in unpadded base64url). It holds no `$`, so it
can be pasted as is into `.env`, a shell or docker-compose, which would expand `$` signs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

SCHEME = "scrypt"
# 2**15 × 8 × 128 bytes = 32 MiB and about 0.1 s per check: slow for guessing, fine for one login.
_COST = 2**15
_BLOCK_SIZE = 8
_PARALLELISM = 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAX_MEMORY = 256 * 1024 * 1024
_FORMAT = re.compile(r"scrypt:(\d{1,8}):(\d{1,3}):(\d{1,3}):([A-Za-z0-9_-]{16,128}):([A-Za-z0-9_-]{32,128})")


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, cost: int, block_size: int, parallelism: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=cost, r=block_size, p=parallelism, maxmem=_MAX_MEMORY, dklen=_KEY_BYTES
    )


def hash_password(password: str) -> str:
    """A new salted hash of the password, for IMAGEMATCH_UI_PASSWORD_HASH."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = secrets.token_bytes(_SALT_BYTES)
    key = _derive(password, salt, _COST, _BLOCK_SIZE, _PARALLELISM)
    return f"{SCHEME}:{_COST}:{_BLOCK_SIZE}:{_PARALLELISM}:{_encode(salt)}:{_encode(key)}"


def is_password_hash(text: str) -> bool:
    """Whether text has the shape `hash_password` writes (checked at start-up, so typos stop the server)."""
    match = _FORMAT.fullmatch(text)
    if match is None:
        return False
    cost, block_size, parallelism = (int(match.group(i)) for i in (1, 2, 3))
    is_power_of_two = cost > 1 and cost & (cost - 1) == 0
    return is_power_of_two and 128 * cost * block_size <= _MAX_MEMORY and 1 <= parallelism <= 16 and block_size >= 1


def verify_password(password: str, encoded: str) -> bool:
    """Whether password matches the hash, compared in constant time; a malformed hash matches nothing."""
    if not is_password_hash(encoded):
        return False
    _, cost, block_size, parallelism, salt, expected = encoded.split(":")
    try:
        key = _derive(password, _decode(salt), int(cost), int(block_size), int(parallelism))
        wanted = _decode(expected)
    except (ValueError, binascii.Error, MemoryError):
        return False
    return hmac.compare_digest(key, wanted)
