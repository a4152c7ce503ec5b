"""Tests for medusa_v2.passwords."""

import base64
import hashlib
import time

import pytest

from medusa_v2.passwords import hash_password, is_hashed, verify_password


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def scrypt_hash(password: str, n: int = 2, r: int = 1, p: int = 1, salt: bytes = b"salt" * 4, dklen: int = 32) -> str:
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=2**28)
    return f"scrypt${n}${r}${p}${b64url(salt)}${b64url(digest)}"


def django_pbkdf2(password: str, salt: str = "seasalt", iterations: int = 1000) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def test_hash_round_trip():
    stored = hash_password("correct horse")
    assert verify_password(stored, "correct horse")
    assert is_hashed(stored)


def test_hash_format_and_parameters():
    stored = hash_password("pw")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert "=" not in salt + digest
    salt_bytes = base64.urlsafe_b64decode(salt + "=" * (-len(salt) % 4))
    digest_bytes = base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4))
    assert len(salt_bytes) == 32 and len(digest_bytes) == 32
    assert hashlib.scrypt(b"pw", salt=salt_bytes, n=16384, r=8, p=1, dklen=32) == digest_bytes


def test_hashes_are_salted():
    assert hash_password("same") != hash_password("same")


def test_wrong_password_is_refused():
    stored = hash_password("right")
    assert not verify_password(stored, "wrong")
    assert not verify_password(stored, "")
    assert not verify_password(stored, stored)


def test_plain_text_medusa_password():
    assert verify_password("hunter2", "hunter2")
    assert not verify_password("hunter2", "hunter3")
    assert not verify_password("hunter2", "hunter2 ")
    assert not is_hashed("hunter2")


def test_unicode_password():
    stored = hash_password("pässwörd🔑")
    assert verify_password(stored, "pässwörd🔑")
    assert not verify_password(stored, "passwörd🔑")
    assert verify_password("mötley", "mötley")
    assert not verify_password("mötley", "motley")


def test_lone_surrogate_candidate_does_not_raise():
    assert not verify_password(hash_password("x"), "\udcff")
    assert not verify_password("x", "\udcff")


def test_externally_made_scrypt_hash_is_accepted():
    assert verify_password(scrypt_hash("pw", n=16, r=2, p=2, dklen=16), "pw")
    assert not verify_password(scrypt_hash("pw", n=16), "pW")


def test_django_pbkdf2_hash_is_accepted():
    stored = django_pbkdf2("pw")
    assert is_hashed(stored)
    assert verify_password(stored, "pw")
    assert not verify_password(stored, "px")
    # Padding is optional.
    assert verify_password(stored.rstrip("="), "pw")


@pytest.mark.parametrize(
    "stored",
    [
        "scrypt$",
        "scrypt$16384$8$1$c2FsdA",
        "scrypt$16384$8$1$c2FsdA$$",
        "scrypt$abc$8$1$c2FsdHNhbHQ$" + "A" * 43,
        "scrypt$16385$8$1$c2FsdHNhbHQ$" + "A" * 43,  # n not a power of two
        "scrypt$1$8$1$c2FsdHNhbHQ$" + "A" * 43,  # n below 2
        "scrypt$+16$8$1$c2FsdHNhbHQ$" + "A" * 43,
        "scrypt$16$0$1$c2FsdHNhbHQ$" + "A" * 43,
        "scrypt$16$8$1$$" + "A" * 43,  # empty salt
        "scrypt$16$8$1$c2Fs!HQ$" + "A" * 43,  # not base64url
        "scrypt$16$8$1$c2FsdHNhbHQ$QUJD",  # 3-byte hash: too short to mean anything
        "pbkdf2_sha256$",
        "pbkdf2_sha256$1000$salt",
        "pbkdf2_sha256$0$salt$" + "A" * 44,
        "pbkdf2_sha256$1e3$salt$" + "A" * 44,
        "pbkdf2_sha256$1000$$" + "A" * 44,
        "pbkdf2_sha256$1000$salt$not base64!",
    ],
)
def test_malformed_hashes_are_false_not_errors(stored):
    assert is_hashed(stored)
    assert verify_password(stored, "anything") is False
    # A damaged hash never degrades into a plain-text password equal to itself.
    assert verify_password(stored, stored) is False


@pytest.mark.parametrize(
    "stored",
    [
        scrypt_hash("pw").replace("scrypt$2$", f"scrypt${2**21}$"),
        scrypt_hash("pw").replace("$1$1$", "$1$64$"),
        scrypt_hash("pw").replace("$1$1$", "$64$1$"),
        "scrypt$1048576$32$16$c2FsdHNhbHQ$" + "A" * 43,
        django_pbkdf2("pw").replace("$1000$", "$10000001$"),
        "pbkdf2_sha256$99999999999$salt$" + "A" * 44,
    ],
)
def test_oversized_parameters_are_refused_quickly(stored):
    started = time.monotonic()
    assert verify_password(stored, "pw") is False
    assert time.monotonic() - started < 0.5


def test_hash_above_openssl_default_memory_limit_still_verifies():
    # 128 * n * r = 64 MiB: OpenSSL refuses it unless maxmem is raised to match.
    assert verify_password(scrypt_hash("pw", n=2**16, r=8), "pw")


def test_non_string_arguments_are_false():
    assert verify_password(None, "x") is False  # type: ignore[arg-type]
    assert verify_password("x", None) is False  # type: ignore[arg-type]
