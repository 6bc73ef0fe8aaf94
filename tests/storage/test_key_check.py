"""Which NIK key a database belongs to (issue 11): storage.key_check on the test database."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.vocabulary import Channel, Language
from storage import key_check
from storage.crypto import NikCipher, decode_key, generate_key
from storage.key_check import KeyMismatch, Verdict
from storage.models import (
    ChannelAccount,
    Conversation,
    FailedUpdate,
    KeyCheck,
    WhatsappInbound,
    Worker,
)
from tests.storage.test_collective import CIPHER, Seeder

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
NIK = "3201014708900001"
OTHER = NikCipher(decode_key(generate_key()))


async def stored(db_engine: AsyncEngine) -> list[tuple[str, bytes]]:
    async with db_engine.connect() as connection:
        rows = await connection.execute(select(KeyCheck.key_id, KeyCheck.kcv))
        return [(str(key_id), bytes(kcv)) for key_id, kcv in rows]


async def confirm(db_engine: AsyncEngine, cipher: NikCipher) -> Verdict:
    async with db_engine.begin() as connection:
        return await key_check.confirm(connection, cipher, now=NOW)


def test_key_id_and_check_value_name_the_key_without_revealing_it() -> None:
    again = NikCipher(bytes(range(32)))
    assert (CIPHER.key_id, CIPHER.check_value) == (again.key_id, again.check_value)
    assert len(CIPHER.key_id) == 8 and int(CIPHER.key_id, 16) >= 0
    assert CIPHER.key_id != OTHER.key_id and CIPHER.check_value != OTHER.check_value
    assert bytes(range(32)) not in CIPHER.check_value


async def test_a_new_database_records_the_key_then_knows_it(db_engine: AsyncEngine) -> None:
    assert await confirm(db_engine, CIPHER) is Verdict.EMPTY
    assert await stored(db_engine) == [(CIPHER.key_id, CIPHER.check_value)]
    assert await confirm(db_engine, CIPHER) is Verdict.KNOWN
    assert len(await stored(db_engine)) == 1


async def test_a_recorded_key_refuses_another_naming_both_ids(db_engine: AsyncEngine) -> None:
    await confirm(db_engine, CIPHER)
    with pytest.raises(KeyMismatch) as refused:
        await confirm(db_engine, OTHER)
    assert refused.value.expected == (CIPHER.key_id,)
    assert refused.value.given == OTHER.key_id
    assert CIPHER.key_id in str(refused.value) and OTHER.key_id in str(refused.value)
    assert await stored(db_engine) == [(CIPHER.key_id, CIPHER.check_value)]


async def test_same_key_id_with_another_check_value_is_refused(db_engine: AsyncEngine) -> None:
    async with db_engine.begin() as connection:
        await connection.execute(
            insert(KeyCheck).values(key_id=CIPHER.key_id, kcv=b"\0" * 32, created_at=NOW)
        )
    with pytest.raises(KeyMismatch):
        await confirm(db_engine, CIPHER)


async def seed_worker(db_engine: AsyncEngine) -> int:
    async with db_engine.begin() as connection:
        return await Seeder(connection).worker(NIK)


async def test_data_without_a_check_value_is_verified_by_decrypting_then_recorded(
    db_engine: AsyncEngine,
) -> None:
    # The upgrade path: a database from before key_check, NIKs encrypted with CIPHER.
    await seed_worker(db_engine)
    async with db_engine.connect() as connection:
        assert await key_check.keyed_data_present(connection)

    with pytest.raises(KeyMismatch) as refused:
        await confirm(db_engine, OTHER)
    assert refused.value.expected == ()
    assert "cannot decrypt" in str(refused.value)
    assert await stored(db_engine) == []

    assert await confirm(db_engine, CIPHER) is Verdict.DECRYPTS
    assert await stored(db_engine) == [(CIPHER.key_id, CIPHER.check_value)]


async def test_erased_workers_hold_nothing_encrypted(db_engine: AsyncEngine) -> None:
    worker_id = await seed_worker(db_engine)
    async with db_engine.begin() as connection:
        await connection.execute(
            update(Worker).where(Worker.id == worker_id).values(nik_ciphertext=b"", erased_at=NOW)
        )
        assert not await key_check.keyed_data_present(connection)
    assert await confirm(db_engine, OTHER) is Verdict.EMPTY


PAYLOAD = CIPHER.encrypt_payload('{"text": "3201014708900001"}')
#: The encrypted journals, each alone in the database.
JOURNAL_ROWS = {
    "failed_update": (
        FailedUpdate,
        {
            "channel": Channel.TELEGRAM,
            "update_id": "7",
            "sender_id": "42",
            "payload_ciphertext": PAYLOAD,
            "error_type": "OperationalError",
            "attempts": 5,
            "failed_at": NOW,
        },
    ),
    "whatsapp_inbound": (
        WhatsappInbound,
        {
            "message_id": "wamid.1",
            "sender_id": "6281234567890",
            "payload_ciphertext": PAYLOAD,
            "received_at": NOW,
        },
    ),
}


@pytest.mark.parametrize("journal", sorted(JOURNAL_ROWS))
async def test_an_encrypted_journal_alone_is_checked(db_engine: AsyncEngine, journal: str) -> None:
    table, values = JOURNAL_ROWS[journal]
    async with db_engine.begin() as connection:
        await connection.execute(insert(table).values(**values))
    with pytest.raises(KeyMismatch):
        await confirm(db_engine, OTHER)
    assert await stored(db_engine) == []
    assert await confirm(db_engine, CIPHER) is Verdict.DECRYPTS


async def test_a_nik_in_a_parked_draft_is_checked(db_engine: AsyncEngine) -> None:
    nik_enc = base64.b64encode(CIPHER.encrypt(NIK)).decode("ascii")
    async with db_engine.begin() as connection:
        account = (
            await connection.execute(
                insert(ChannelAccount).values(
                    channel=Channel.TELEGRAM,
                    external_id="42",
                    language=Language.INDONESIAN,
                    created_at=NOW,
                )
            )
        ).inserted_primary_key
        assert account is not None
        await connection.execute(
            insert(Conversation).values(
                channel_account_id=account[0],
                flow=None,
                step=None,
                data={},
                history=[],
                draft={"flow": "enroll", "data": {"nik_masked": "3201", "nik_enc": nik_enc}},
                version=1,
                updated_at=NOW,
            )
        )
        assert await key_check.keyed_data_present(connection)
    with pytest.raises(KeyMismatch):
        await confirm(db_engine, OTHER)
    assert await confirm(db_engine, CIPHER) is Verdict.DECRYPTS
