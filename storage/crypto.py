"""NIK protection at rest (PRODUCT 7): AES-GCM ciphertext plus a keyed hash for lookups.

One 32-byte master key (settings) is split with HKDF into an encryption key and
a hashing key, so the hash column cannot be used to test guesses without the key.
The key is known to a database by its id and check value (`key_id`,
`check_value`, stored by `storage.key_check`): HMACs of constants, which
identify the key without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12
_AAD = b"sertakan:nik:v1"
_PAYLOAD_AAD = b"sertakan:payload:v1"
_KEY_ID_LABEL = b"sertakan:key-id"
_KEY_CHECK_LABEL = b"sertakan:key-check:v1"


class NikKeyError(ValueError):
    """The configured NIK key is missing or malformed."""


def decode_key(encoded: str) -> bytes:
    """Decode an urlsafe-base64 32-byte key; raise NikKeyError with a clear reason."""
    try:
        raw = base64.urlsafe_b64decode(encoded.strip().encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise NikKeyError("SERTAKAN_NIK_KEY is not valid urlsafe base64") from exc
    if len(raw) != 32:
        raise NikKeyError(f"SERTAKAN_NIK_KEY must decode to 32 bytes, got {len(raw)}")
    return raw


def generate_key() -> str:
    """A new random key in the settings' encoding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


def read_key_file(path: Path) -> bytes | None:
    """Development only: the key in `path`, or None when there is no such file."""
    try:
        encoded = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    return decode_key(encoded)


def create_key_file(path: Path) -> bytes:
    """Development only: write a new random key to `path` (mode 0600, never overwriting).

    The caller decides whether a new key may exist at all (`bot.app`: only
    for a database holding nothing encrypted).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(key + "\n")
    return decode_key(key)


class NikCipher:
    """Encrypts, decrypts and hashes NIKs with keys derived from one master key."""

    __slots__ = ("_aead", "_hash_key", "check_value", "key_id")

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise NikKeyError("the NIK master key must be 32 bytes")
        self._aead = AESGCM(self._derive(master_key, b"nik-encryption"))
        self._hash_key = self._derive(master_key, b"nik-lookup-hash")
        #: Names the key in messages and in `key_check` (8 hex digits; not secret).
        self.key_id: str = hmac.new(master_key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:8]
        #: The key check value: equal for the same key, and says nothing about it.
        self.check_value: bytes = hmac.new(master_key, _KEY_CHECK_LABEL, hashlib.sha256).digest()

    @staticmethod
    def _derive(master_key: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master_key)

    def encrypt(self, nik: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, nik.encode("ascii"), _AAD)

    def decrypt(self, blob: bytes) -> str:
        nonce, ciphertext = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, _AAD).decode("ascii")

    def encrypt_payload(self, text: str) -> bytes:
        """Encrypt any text that may contain a NIK (e.g. a parked inbound update)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, text.encode("utf-8"), _PAYLOAD_AAD)

    def decrypt_payload(self, blob: bytes) -> str:
        nonce, ciphertext = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, _PAYLOAD_AAD).decode("utf-8")

    def lookup_hash(self, nik: str) -> bytes:
        return hmac.new(self._hash_key, nik.encode("ascii"), hashlib.sha256).digest()
