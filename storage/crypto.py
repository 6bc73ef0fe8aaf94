"""NIK protection at rest (PRODUCT 7): AES-GCM ciphertext plus a keyed hash for lookups.

A 32-byte master key (settings) is split with HKDF into an encryption key and
a hashing key, so the hash column cannot be used to test guesses without the key.
Keys form a ring (issue 14): ciphertexts name the key id that made them, the
highest id encrypts, older ids still decrypt until `sertakan key retire`; the
hashing (blind-index) key stays across rotations (see `KeyRing`).
The key is known to a database by its id and check value (`key_id`,
`check_value`, stored by `storage.key_check`): HMACs of constants, which
identify the key without revealing it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

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


class KeyRingError(NikKeyError):
    """A key ring's text is malformed or lacks a key it needs."""


#: The first bytes of a ciphertext that names its key: a marker, then the key id.
_TAG = b"\xa7\x4e"
#: Key ids are 1..255: the id is one byte of every ciphertext.
MAX_KEY_ID = 255
#: The ring entry naming the blind-index key (the NIK lookup hash's key).
INDEX_ENTRY = "index"
#: How often (seconds, at most) a cipher with a ring file looks whether it changed.
RING_RECHECK_S = 2.0
#: The ring entry naming the current key when a newer one is staged.
CURRENT_ENTRY = "current"


def _derive(master_key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master_key)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


@dataclasses.dataclass(slots=True, frozen=True)
class KeyRing:
    """NIK master keys by id (the highest is current) and the blind-index key.

    The blind-index key makes the lookup hashes that find a worker by NIK (and
    back the database's uniqueness of a NIK): it stays across rotations, since
    new hashes for old rows would let the same NIK in twice while both exist.
    Unset, it is derived from key 1 as before key rings existed, so a single
    old key is key 1 of a ring with nothing else to do; `with_key` writes the
    derived key out so that key 1 can be retired.
    """

    keys: Mapping[int, bytes]
    index_key: bytes | None = None
    #: The key new ciphertexts use when it is not the highest id: a higher key
    #: is staged (read, not yet written; see `with_key`).
    current_id: int | None = None

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyRingError("the NIK key ring holds no key")
        for key_id, key in self.keys.items():
            if not 1 <= key_id <= MAX_KEY_ID:
                raise KeyRingError(f"NIK key ids are 1 to {MAX_KEY_ID}, got {key_id}")
            if len(key) != 32:
                raise KeyRingError(f"NIK key {key_id} must be 32 bytes, got {len(key)}")
        if self.index_key is None and 1 not in self.keys:
            raise KeyRingError(
                f"the NIK key ring needs key 1 or an '{INDEX_ENTRY}' entry (the lookup hash key)"
            )
        if self.index_key is not None and len(self.index_key) != 32:
            raise KeyRingError("the ring's index key must be 32 bytes")
        if self.current_id is not None and self.current_id not in self.keys:
            raise KeyRingError(f"the NIK key ring's current key {self.current_id} is not in it")

    @classmethod
    def single(cls, master_key: bytes) -> KeyRing:
        """The ring of a one-key installation: the key is key 1."""
        return cls({1: master_key})

    @property
    def current(self) -> int:
        """The id of the key new ciphertexts use."""
        return max(self.keys) if self.current_id is None else self.current_id

    @property
    def staged(self) -> int | None:
        """A key newer than the current one, read but not yet written (or None)."""
        newest = max(self.keys)
        return None if newest == self.current else newest

    @property
    def lookup_key(self) -> bytes:
        """The blind-index (lookup hash) key."""
        if self.index_key is not None:
            return self.index_key
        return _derive(self.keys[1], b"nik-lookup-hash")

    @classmethod
    def parse(cls, text: str) -> KeyRing:
        """A bare key (key 1) or `id=key` entries and `index=key`, one per line or comma.

        `#` starts a comment. Keys are urlsafe base64 of 32 bytes.
        """
        entries = [
            part.strip()
            for line in text.splitlines()
            for part in line.split("#", 1)[0].split(",")
            if part.strip()
        ]
        if len(entries) == 1 and "=" not in entries[0].rstrip("="):
            return cls.single(decode_key(entries[0]))
        keys: dict[int, bytes] = {}
        index_key = None
        current_id = None
        for entry in entries:
            name, sep, value = entry.partition("=")
            name = name.strip()
            if not sep:
                raise KeyRingError(f"a key ring entry must be id=key, got {name[:4]}...")
            if name == INDEX_ENTRY:
                index_key = decode_key(value)
                continue
            if name == CURRENT_ENTRY and value.strip().isdigit():
                current_id = int(value)
                continue
            if not name.isdigit():
                raise KeyRingError(f"a key ring entry's id must be a number, got {name!r}")
            key_id = int(name)
            if key_id in keys:
                raise KeyRingError(f"key id {key_id} appears twice in the NIK key ring")
            keys[key_id] = decode_key(value)
        return cls(keys, index_key, current_id)

    def render(self) -> str:
        """The ring in `parse`'s format (the index key always written out)."""
        lines = [
            "# SERTAKAN NIK key ring: the highest id is current; keep every line secret.",
            f"{INDEX_ENTRY}={_encode(self.lookup_key)}",
            *(f"{key_id}={_encode(self.keys[key_id])}" for key_id in sorted(self.keys)),
        ]
        if self.staged is not None:
            lines.append(f"{CURRENT_ENTRY}={self.current}")
        return "\n".join(lines) + "\n"

    def with_key(self, key: bytes, *, stage: bool = False) -> KeyRing:
        """This ring plus `key` as the new current key (`stage`: read only, not yet current).

        The index key is kept (and written out).
        """
        if self.staged is not None:
            raise KeyRingError(f"key {self.staged} is already staged: make it current first")
        key_id = max(self.keys) + 1
        if key_id > MAX_KEY_ID:
            raise KeyRingError(f"the NIK key ring is full (key id {MAX_KEY_ID} reached)")
        if key in self.keys.values():
            raise KeyRingError("that key is already in the NIK key ring")
        return KeyRing({**self.keys, key_id: key}, self.lookup_key, self.current if stage else None)

    def promoted(self) -> KeyRing:
        """The staged key made current."""
        return KeyRing(self.keys, self.lookup_key)

    def without(self, key_id: int) -> KeyRing:
        """This ring without key `key_id` (never the current key)."""
        if key_id not in self.keys:
            raise KeyRingError(f"the NIK key ring has no key {key_id}")
        if key_id == self.current:
            raise KeyRingError(f"key {key_id} is the current key and cannot be retired")
        return KeyRing(
            {other: key for other, key in self.keys.items() if other != key_id},
            self.lookup_key,
            self.current_id,
        )


def read_key_ring(path: Path) -> KeyRing | None:
    """The key ring in `path`, or None when there is no such file."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    return KeyRing.parse(text)


def write_key_ring(path: Path, ring: KeyRing) -> None:
    """Replace `path` with `ring` atomically (mode 0600, fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(ring.render())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class _Key:
    """One master key's derived encryption key and its names."""

    __slots__ = ("aead", "check_value", "fingerprint", "header", "key_id")

    def __init__(self, key_id: int, master_key: bytes) -> None:
        self.key_id = key_id
        self.header = _TAG + bytes([key_id])
        self.aead = AESGCM(_derive(master_key, b"nik-encryption"))
        self.fingerprint = hmac.new(master_key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:8]
        self.check_value = hmac.new(master_key, _KEY_CHECK_LABEL, hashlib.sha256).digest()


class NikCipher:
    """Encrypts, decrypts and hashes NIKs with a key ring (or one master key: key 1).

    New ciphertexts are `marker, key id, nonce, AES-GCM(text)` with the marker
    and id authenticated; ciphertexts from before key rings (`nonce,
    AES-GCM(text)`) are read with key 1. Given `source`, the ring is read
    again from that file when it changes (checked at most every `recheck_s`
    seconds when encrypting, and at once when a ciphertext names a key not in
    the ring), so running processes follow `sertakan key rotate`.
    """

    __slots__ = ("_keys", "_last_check", "_lookup_key", "_recheck_s", "_seen", "_source", "ring")

    def __init__(
        self,
        ring: KeyRing | bytes,
        *,
        source: Path | None = None,
        recheck_s: float | None = None,
    ) -> None:
        if isinstance(ring, bytes):
            if len(ring) != 32:
                raise NikKeyError("the NIK master key must be 32 bytes")
            ring = KeyRing.single(ring)
        self._source = source
        self._recheck_s = RING_RECHECK_S if recheck_s is None else recheck_s
        self._last_check = time.monotonic()
        self._seen = self._signature()
        self._install(ring)

    def _install(self, ring: KeyRing) -> None:
        self.ring = ring
        self._keys = {key_id: _Key(key_id, key) for key_id, key in ring.keys.items()}
        self._lookup_key = ring.lookup_key

    def _signature(self) -> tuple[int, int, int] | None:
        if self._source is None:
            return None
        try:
            stat = self._source.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def reload(self, *, force: bool = False) -> bool:
        """Read the ring file again if it changed; True when the ring changed.

        A file that cannot be read as a ring, or that changes the index key, is
        logged and the ring in use kept.
        """
        if self._source is None:
            return False
        now = time.monotonic()
        if not force and now - self._last_check < self._recheck_s:
            return False
        self._last_check = now
        signature = self._signature()
        if signature is None or signature == self._seen:
            return False
        self._seen = signature
        try:
            ring = read_key_ring(self._source)
        except NikKeyError as exc:
            log.error("the NIK key ring %s was not reloaded: %s", self._source, exc)
            return False
        if ring is None or ring == self.ring:
            return False
        if ring.lookup_key != self._lookup_key:
            log.error("the NIK key ring %s changed its index key: not reloaded", self._source)
            return False
        self._install(ring)
        log.info("NIK key ring reloaded: keys %s, current %s", sorted(ring.keys), ring.current)
        return True

    def adopt(self, ring: KeyRing) -> None:
        """Use `ring` (just written to the ring file by this process)."""
        if ring.lookup_key != self._lookup_key:
            raise KeyRingError("a key ring must keep its index key")
        self._install(ring)
        self._seen = self._signature()

    @property
    def _current(self) -> _Key:
        return self._keys[self.ring.current]

    @property
    def current_id(self) -> int:
        """The ring id of the key new ciphertexts use."""
        return self.ring.current

    @property
    def key_id(self) -> str:
        """Names the current key in messages and in `key_check` (8 hex digits; not secret)."""
        return self._current.fingerprint

    @property
    def check_value(self) -> bytes:
        """The current key's check value: equal for the same key, and says nothing about it."""
        return self._current.check_value

    def fingerprints(self) -> dict[int, tuple[str, bytes]]:
        """Every ring key's (fingerprint, check value) by ring id."""
        return {key_id: (key.fingerprint, key.check_value) for key_id, key in self._keys.items()}

    def _seal(self, data: bytes, aad: bytes) -> bytes:
        self.reload()
        key = self._current
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return key.header + nonce + key.aead.encrypt(nonce, data, aad + key.header)

    def _open(self, blob: bytes, aad: bytes) -> tuple[int, bytes]:
        """The ring id of the key that made `blob`, and its plaintext."""
        header = blob[: len(_TAG) + 1]
        if header[: len(_TAG)] == _TAG and len(header) == len(_TAG) + 1:
            key_id = header[-1]
            if key_id not in self._keys:
                self.reload(force=True)
            key = self._keys.get(key_id)
            if key is not None:
                body = blob[len(header) :]
                try:
                    plain = key.aead.decrypt(
                        body[:_NONCE_BYTES], body[_NONCE_BYTES:], aad + key.header
                    )
                except InvalidTag:
                    pass  # an old ciphertext whose nonce begins like a marker
                else:
                    return key_id, plain
        legacy = self._keys.get(1)
        if legacy is None:
            raise InvalidTag("the ciphertext needs a key the NIK key ring no longer holds")
        return 1, legacy.aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)

    def encrypt(self, nik: str) -> bytes:
        return self._seal(nik.encode("ascii"), _AAD)

    def decrypt(self, blob: bytes) -> str:
        return self._open(blob, _AAD)[1].decode("ascii")

    def encrypt_payload(self, text: str) -> bytes:
        """Encrypt any text that may contain a NIK (e.g. a parked inbound update)."""
        return self._seal(text.encode("utf-8"), _PAYLOAD_AAD)

    def decrypt_payload(self, blob: bytes) -> str:
        return self._open(blob, _PAYLOAD_AAD)[1].decode("utf-8")

    def nik_key(self, blob: bytes) -> int:
        """The ring id of the key a NIK ciphertext was made with (InvalidTag: none in the ring)."""
        return self._open(blob, _AAD)[0]

    def payload_key(self, blob: bytes) -> int:
        """The ring id of the key a payload ciphertext was made with."""
        return self._open(blob, _PAYLOAD_AAD)[0]

    def reencrypt(self, blob: bytes) -> bytes | None:
        """A NIK ciphertext under the current key; None when it already is."""
        key_id, plain = self._open(blob, _AAD)
        return None if key_id == self.ring.current else self._seal(plain, _AAD)

    def reencrypt_payload(self, blob: bytes) -> bytes | None:
        """A payload ciphertext under the current key; None when it already is."""
        key_id, plain = self._open(blob, _PAYLOAD_AAD)
        return None if key_id == self.ring.current else self._seal(plain, _PAYLOAD_AAD)

    def lookup_hash(self, nik: str) -> bytes:
        return hmac.new(self._lookup_key, nik.encode("ascii"), hashlib.sha256).digest()
