"""Operator passwords: hashed with scrypt at rest, compared in constant time.

The config holds only ``scrypt:<n>:<r>:<p>$<salt>$<hash>`` (base64, no padding), made by
``connector console-password``; the password or token itself is never stored or logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

# 2**15 rounds, r=8: about 32 MiB and 50-100 ms per check on a small server; a guessing
# attacker pays the same for every try.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
MIN_PASSWORD_LENGTH = 10
_MAXMEM = 128 * 1024 * 1024
_FORMAT = re.compile(r"scrypt:(\d+):(\d+):(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)")
HASH_FORMAT_HINT = "scrypt:<n>:<r>:<p>$<salt>$<hash> (run `connector console-password`)"


class HashFormatError(ValueError):
    """The text is not a password hash this module makes."""


@dataclass(frozen=True)
class PasswordHash:
    """A parsed ``scrypt:…`` hash."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        return f"scrypt:{self.n}:{self.r}:{self.p}${_b64(self.salt)}${_b64(self.digest)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def parse_hash(text: str) -> PasswordHash:
    """Read a stored hash; raises ``HashFormatError`` saying what is expected."""
    match = _FORMAT.fullmatch(text.strip())
    if match is None:
        raise HashFormatError(f"expected a password hash {HASH_FORMAT_HINT}")
    n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if n < 2**14 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise HashFormatError(
            "the hash's scrypt parameters are too weak or invalid; make a new one with"
            " `connector console-password`"
        )
    salt, digest = _unb64(match.group(4)), _unb64(match.group(5))
    if len(salt) < SALT_BYTES or len(digest) != HASH_BYTES:
        raise HashFormatError(f"the hash's salt or digest has the wrong length; {HASH_FORMAT_HINT}")
    return PasswordHash(n, r, p, salt, digest)


def _scrypt(password: str, n: int, r: int, p: int, salt: bytes) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=HASH_BYTES
    )


def hash_password(password: str) -> str:
    """The text to put in ``[console] password_hash`` for ``password``."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, SCRYPT_N, SCRYPT_R, SCRYPT_P, salt)
    return str(PasswordHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, digest))


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (CPU-bound: run off the loop)."""
    given = _scrypt(password, stored.n, stored.r, stored.p, stored.salt)
    return hmac.compare_digest(given, stored.digest)


def new_token() -> str:
    """A random login token, for operators who would rather paste than type."""
    return secrets.token_urlsafe(24)
