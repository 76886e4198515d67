"""API key format: PREFIX + 32 random base62 characters + 6-character checksum.

32 base62 characters carry 190 bits of randomness. The checksum is CRC32 of prefix+body in base62
(zero-padded to 6), so a mistyped or truncated key is refused without a database query, and
secret scanners can recognise our keys by shape. Only the SHA-256 of the whole key is stored,
plus its last four characters for display (`pplx-…743S`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib
from functools import cache

from django.conf import settings

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BODY_LENGTH = 32
CHECKSUM_LENGTH = 6


def _base62(number: int, width: int) -> str:
    out = []
    while number:
        number, rest = divmod(number, 62)
        out.append(ALPHABET[rest])
    return "".join(reversed(out)).rjust(width, "0")


def checksum(prefix: str, body: str) -> str:
    return _base62(zlib.crc32(f"{prefix}{body}".encode()), CHECKSUM_LENGTH)


def generate(prefix: str | None = None) -> str:
    """Return a new random API key."""
    prefix = settings.API_KEY_PREFIX if prefix is None else prefix
    body = "".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH))
    return f"{prefix}{body}{checksum(prefix, body)}"


@cache
def _pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(
        rf"^{re.escape(prefix)}([0-9A-Za-z]{{{BODY_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
    )


def is_well_formed(key: str, prefix: str | None = None) -> bool:
    """Return True if `key` has our shape and a valid checksum (no database involved)."""
    prefix = settings.API_KEY_PREFIX if prefix is None else prefix
    match = _pattern(prefix).match(key)
    return match is not None and checksum(prefix, match.group(1)) == match.group(2)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def last_four(key: str) -> str:
    return key[-4:]
