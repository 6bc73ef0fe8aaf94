"""Scrubbing an erased worker's traces: whole words, any case, JSON-escaped, since they exist."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain.vocabulary import Channel, OutboxStatus
from storage.models import Outbox
from storage.worker_side import ERASED_TEXT, Traces, scrub_traces

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
NAME = "Ärni Öztürk"


def sent(key: str, body: str, params: dict[str, object], *, at: datetime = NOW) -> Outbox:
    return Outbox(
        dedupe_key=key,
        channel=Channel.TELEGRAM,
        recipient="1001",
        kind="card_ready",
        body=body,
        params=params,
        status=OutboxStatus.SENT,
        not_before=at,
        created_at=at,
        sent_at=at,
    )


async def test_a_non_ascii_name_is_redacted_as_a_whole_word_in_bodies_and_params(
    db_engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    async with sessionmaker() as session, session.begin():
        session.add_all(
            [
                sent("a", f"Kartu {NAME} siap.", {"name": NAME}),
                sent("b", f"KARTU {NAME.upper()} SIAP", {}),
                sent("c", "Ringkasan: Budi", {"lines": [f"{NAME} (3201********0001)", "Budi"]}),
                # Another person whose name only starts the same way keeps it.
                sent("d", f"Kartu {NAME}han siap.", {"name": f"{NAME}han"}),
                # Written before the worker existed: about somebody else of that name.
                sent("e", f"Kartu {NAME} siap.", {}, at=NOW - timedelta(days=30)),
            ]
        )
        await session.flush()
        await scrub_traces(
            await session.connection(),
            Traces(
                name=NAME,
                nik_masked="3201********0001",
                phone_e164="+6281298765432",
                since=NOW - timedelta(days=1),
            ),
            sponsorship_ids=[],
        )
    async with db_engine.connect() as connection:
        rows = {
            row.dedupe_key: (row.body, row.params)
            for row in await connection.execute(
                select(Outbox.dedupe_key, Outbox.body, Outbox.params)
            )
        }
    assert rows["a"] == (f"Kartu {ERASED_TEXT} siap.", {"name": ERASED_TEXT})
    assert rows["b"] == (f"KARTU {ERASED_TEXT} SIAP", {})
    assert rows["c"] == ("Ringkasan: Budi", {"lines": [f"{ERASED_TEXT} ({ERASED_TEXT})", "Budi"]})
    assert rows["d"] == (f"Kartu {NAME}han siap.", {"name": f"{NAME}han"})
    assert rows["e"] == (f"Kartu {NAME} siap.", {})
