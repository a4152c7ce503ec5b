"""Hash and verify `[General] web_password` values.

New hashes are `scrypt$N$r$p$<salt>$<hash>` (base64url, no padding). Django-style
`pbkdf2_sha256$<iterations>$<salt>$<base64 hash>` hashes are verified too, and any
other value is a plain-text password, as Medusa stores it. A value that starts with
a known scheme prefix is always treated as a hash, never as plain text, so a
damaged hash cannot turn into a password equal to its own text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets

__all__ = ["hash_password", "verify_password", "is_hashed"]

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 32
HASH_BYTES = 32

# Bounds on parameters read from config.ini: a hostile or mistyped hash must not make
# one login take minutes or gigabytes. scrypt's running time follows n * r * p and
# its memory 128 * n * r bytes.
_MAX_SCRYPT_N = 2**20
_MAX_SCRYPT_R = 32
_MAX_SCRYPT_P = 16
_MAX_SCRYPT_WORK = _MAX_SCRYPT_N * 8
_MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
_MAX_PBKDF2_ITERATIONS = 10_000_000
_MIN_HASH_BYTES, _MAX_HASH_BYTES = 16, 64
_MAX_SALT_BYTES = 1024

_SCRYPT_PREFIX = "scrypt$"
_PBKDF2_PREFIX = "pbkdf2_sha256$"
# Only plain decimal digits: int() would also accept "+5", " 5" and "5_000".
_DECIMAL = re.compile(r"[1-9][0-9]{0,9}")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def _encode(text: str) -> bytes:
    # surrogatepass: a lone surrogate from a badly decoded request must not raise.
    return text.encode("utf-8", "surrogatepass")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _from_b64url(text: str) -> bytes | None:
    if not _B64URL.fullmatch(text):
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _from_b64(text: str) -> bytes | None:
    if not _B64.fullmatch(text):
        return None
    unpadded = text.rstrip("=")
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _decimal(text: str) -> int | None:
    return int(text) if _DECIMAL.fullmatch(text) else None


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL refuses more than 32 MiB by default; allow what these parameters need.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def hash_password(password: str) -> str:
    """Return a salted scrypt hash of `password` for storing in config.ini."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(_encode(password), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64url(salt)}${_b64url(digest)}"


def _verify_scrypt(stored: str, candidate: bytes) -> bool:
    fields = stored.split("$")
    if len(fields) != 6:
        return False
    n, r, p = (_decimal(field) for field in fields[1:4])
    salt, expected = _from_b64url(fields[4]), _from_b64url(fields[5])
    if n is None or r is None or p is None or not salt or expected is None:
        return False
    if n < 2 or n & (n - 1) or n > _MAX_SCRYPT_N or r > _MAX_SCRYPT_R or p > _MAX_SCRYPT_P:
        return False
    if n * r * p > _MAX_SCRYPT_WORK or 128 * n * r > _MAX_SCRYPT_MEMORY:
        return False
    if len(salt) > _MAX_SALT_BYTES:
        return False
    if not _MIN_HASH_BYTES <= len(expected) <= _MAX_HASH_BYTES:
        return False
    try:
        actual = _scrypt(candidate, salt, n, r, p, len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def _verify_pbkdf2(stored: str, candidate: bytes) -> bool:
    # Django's layout: the salt is used as text, the hash is standard base64.
    fields = stored.split("$")
    if len(fields) != 4:
        return False
    iterations, salt, expected = _decimal(fields[1]), fields[2], _from_b64(fields[3])
    if iterations is None or iterations > _MAX_PBKDF2_ITERATIONS or not salt:
        return False
    if expected is None or not _MIN_HASH_BYTES <= len(expected) <= _MAX_HASH_BYTES:
        return False
    if len(salt) > _MAX_SALT_BYTES:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", candidate, _encode(salt), iterations, len(expected))
    return hmac.compare_digest(actual, expected)


def verify_password(stored: str, candidate: str) -> bool:
    """Return True when `candidate` matches `stored` (a hash or plain text); never raise."""
    if not isinstance(stored, str) or not isinstance(candidate, str):
        return False
    secret = _encode(candidate)
    if stored.startswith(_SCRYPT_PREFIX):
        return _verify_scrypt(stored, secret)
    if stored.startswith(_PBKDF2_PREFIX):
        return _verify_pbkdf2(stored, secret)
    return hmac.compare_digest(_encode(stored), secret)


def is_hashed(stored: str) -> bool:
    """Return True when `stored` is treated as a hash, not as a plain-text password."""
    return stored.startswith((_SCRYPT_PREFIX, _PBKDF2_PREFIX))
