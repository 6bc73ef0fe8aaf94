"""The NIK key ring (issue 14): key ids in ciphertexts, old ciphertexts, the ring file."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage.crypto import (
    KeyRing,
    KeyRingError,
    NikCipher,
    decode_key,
    generate_key,
    read_key_ring,
    write_key_ring,
)

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(1, 33))
NIK = "3201014708900001"


def encrypted_before_key_rings(master_key: bytes, text: str, aad: bytes) -> bytes:
    """A ciphertext as versions before key rings wrote it: nonce, then AES-GCM, no key id."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"nik-encryption").derive(
        master_key
    )
    nonce = secrets.token_bytes(12)
    return nonce + AESGCM(key).encrypt(nonce, text.encode(), aad)


def test_ciphertexts_from_before_key_rings_read_as_key_1() -> None:
    cipher = NikCipher(KeyRing({1: KEY_1, 2: KEY_2}))
    old_nik = encrypted_before_key_rings(KEY_1, NIK, b"sertakan:nik:v1")
    old_payload = encrypted_before_key_rings(KEY_1, '{"text": "x"}', b"sertakan:payload:v1")
    assert cipher.decrypt(old_nik) == NIK
    assert cipher.nik_key(old_nik) == 1
    assert cipher.decrypt_payload(old_payload) == '{"text": "x"}'
    assert cipher.payload_key(old_payload) == 1


def test_an_old_ciphertext_whose_nonce_looks_like_a_key_id_still_reads() -> None:
    cipher = NikCipher(KeyRing({1: KEY_1, 2: KEY_2}))
    blob = encrypted_before_key_rings(KEY_1, NIK, b"sertakan:nik:v1")
    # The first three bytes of the nonce are what a ciphertext of key 2 starts with.
    colliding = cipher.encrypt(NIK)[:3] + blob[3:]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"nik-encryption").derive(
        KEY_1
    )
    colliding = colliding[:12] + AESGCM(key).encrypt(
        colliding[:12], NIK.encode(), b"sertakan:nik:v1"
    )
    assert cipher.decrypt(colliding) == NIK
    assert cipher.nik_key(colliding) == 1


def test_the_current_key_writes_and_every_ring_key_reads() -> None:
    old = NikCipher(KEY_1)
    ring = old.ring.with_key(KEY_2)
    new = NikCipher(ring)
    written_by_old = old.encrypt(NIK)
    written_by_new = new.encrypt(NIK)
    assert (new.nik_key(written_by_old), new.nik_key(written_by_new)) == (1, 2)
    assert new.decrypt(written_by_old) == new.decrypt(written_by_new) == NIK
    with pytest.raises(InvalidTag):
        old.decrypt(written_by_new)
    # Re-encrypting moves a ciphertext to the current key, once.
    moved = new.reencrypt(written_by_old)
    assert moved is not None and new.nik_key(moved) == 2 and new.decrypt(moved) == NIK
    assert new.reencrypt(moved) is None
    # The key id is authenticated: another id on the same body does not read.
    relabelled = moved[:2] + bytes([1]) + moved[3:]
    with pytest.raises(InvalidTag):
        new.decrypt(relabelled)


def test_the_lookup_hash_survives_rotation_and_retirement() -> None:
    old = NikCipher(KEY_1)
    rotated = old.ring.with_key(KEY_2)
    retired = rotated.without(1)
    assert 1 not in retired.keys
    hashes_ = {NikCipher(ring).lookup_hash(NIK) for ring in (old.ring, rotated, retired)}
    assert hashes_ == {old.lookup_hash(NIK)}
    # Key 2 alone (without the index entry) would hash differently: refused.
    with pytest.raises(KeyRingError, match="index"):
        KeyRing({2: KEY_2})
    # Without key 1 nothing from before the rotation reads.
    with pytest.raises(InvalidTag):
        NikCipher(retired).decrypt(old.encrypt(NIK))


def test_a_bare_key_is_key_1_and_the_ring_file_round_trips(tmp_path: Path) -> None:
    bare = generate_key()
    assert KeyRing.parse(bare + "\n") == KeyRing.single(decode_key(bare))
    staged = KeyRing.single(KEY_1).with_key(KEY_2, stage=True)
    assert (staged.current, staged.staged) == (1, 2)
    path = tmp_path / "ring"
    write_key_ring(path, staged)
    assert path.stat().st_mode & 0o777 == 0o600
    assert "current=1" in path.read_text()
    assert read_key_ring(path) == KeyRing(staged.keys, staged.lookup_key, 1)
    promoted = staged.promoted()
    assert (promoted.current, promoted.staged) == (2, None)
    # The same text in SERTAKAN_NIK_KEY: entries separated by commas.
    encoded = base64.urlsafe_b64encode(KEY_2).decode()
    index = base64.urlsafe_b64encode(promoted.lookup_key).decode()
    assert KeyRing.parse(f"index={index},2={encoded}") == KeyRing({2: KEY_2}, promoted.lookup_key)
    assert read_key_ring(tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1=" + generate_key() + "\n1=" + generate_key(), "appears twice"),
        ("x=" + generate_key(), "must be a number"),
        ("0=" + generate_key(), "ids are 1 to 255"),
        ("1=c2hvcnQ=", "32 bytes"),
    ],
)
def test_a_malformed_ring_is_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(KeyRingError if "32" not in reason else ValueError, match=reason):
        KeyRing.parse(text)


def test_the_current_key_cannot_be_retired_and_a_key_not_added_twice() -> None:
    ring = KeyRing.single(KEY_1).with_key(KEY_2)
    with pytest.raises(KeyRingError, match="current key"):
        ring.without(2)
    with pytest.raises(KeyRingError, match="already"):
        ring.with_key(KEY_1)


def test_a_running_cipher_follows_its_ring_file(tmp_path: Path) -> None:
    path = tmp_path / "ring"
    write_key_ring(path, KeyRing.single(KEY_1))
    cipher = NikCipher(KeyRing.single(KEY_1), source=path, recheck_s=0)
    other_process = NikCipher(KeyRing.single(KEY_1), source=path, recheck_s=3600)
    write_key_ring(path, cipher.ring.with_key(KEY_2))
    # Encrypting looks at the file (every time here), and writes with the new key.
    assert cipher.nik_key(cipher.encrypt(NIK)) == 2
    # A process that would look only later still reads a ciphertext naming an unknown key.
    assert other_process.decrypt(cipher.encrypt(NIK)) == NIK
    # A broken file is logged and the ring in use kept.
    path.write_text("garbage=")
    os.utime(path, ns=(1, 1))
    assert cipher.reload(force=True) is False
    assert cipher.current_id == 2
