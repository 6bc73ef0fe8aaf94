"""The durable outbox (SPEC 5): every proactive message is a row written in the
transaction of the change that caused it, then sent by the dispatcher
(scheduler/dispatcher.py).

`enqueue` is the only way in. Its `dedupe_key` is unique: planning the same
notice twice (a replayed import, two processes planning one digest) leaves one
row, so the person gets it once.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from domain.vocabulary import Channel, OutboxStatus
from storage.db import insert_for
from storage.models import Outbox


@dataclasses.dataclass(slots=True, frozen=True)
class Notice:
    """One proactive message to plan.

    `body` is the text in the recipient's language; `template` and `params` name
    the approved template a channel with a service window (WhatsApp) must use
    outside it.
    """

    dedupe_key: str
    channel: Channel
    recipient: str
    kind: str
    body: str
    template: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


async def enqueue(
    connection: AsyncConnection,
    notice: Notice,
    *,
    now: datetime,
    not_before: datetime | None = None,
) -> bool:
    """Add `notice` to the outbox in the caller's transaction.

    Returns False when a row with the same dedupe key already exists (nothing
    is written then).
    """
    statement = (
        insert_for(connection.dialect.name)(Outbox)
        .values(
            dedupe_key=notice.dedupe_key,
            channel=notice.channel,
            recipient=notice.recipient,
            kind=notice.kind,
            body=notice.body,
            template=notice.template,
            params=notice.params,
            status=OutboxStatus.PENDING,
            not_before=not_before or now,
            attempts=0,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
    result = await connection.execute(statement)
    return bool(result.rowcount)
