"""The administrators' daily digest (issue 12 item 2): OPDs with work waiting and no PIC.

Planned by `scheduler.digest.DigestPlanner.plan` in the same run as the PICs'
digests (working days, at the digest time), to every administrator chat account
(`storage.admins`), only when some active OPD without a reachable PIC has
enrollments waiting or questions open. It comes every working day while that
lasts: nobody is checking those enrollments. The dedupe key is per
administrator per local date.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo

from sqlalchemy.ext.asyncio import AsyncConnection

from handlers.i18n import Catalogs
from storage import admins
from storage.outbox import Notice, enqueue

#: OPDs named in one digest (`sertakan admin unstaffed` lists them all).
OPDS_LISTED = 20


async def plan_admin_digests(
    connection: AsyncConnection,
    catalogs: Catalogs,
    *,
    today: date,
    now: datetime,
    timezone: tzinfo,
) -> int:
    """Plan today's administrator digests in the caller's transaction; how many were written."""
    staff = await admins.administrators(connection)
    if not staff:
        return 0
    unstaffed = await admins.unstaffed_opds(connection)
    if not unstaffed:
        return 0
    waiting = sum(opd.waiting for opd in unstaffed)
    questions = sum(opd.open_questions for opd in unstaffed)
    planned = 0
    for admin in staff:
        t = catalogs.translator(admin.language)
        lines = [t("digest.admin.title", date=t.date(today), count=len(unstaffed))]
        for opd in unstaffed[:OPDS_LISTED]:
            since = (
                t.date(opd.waiting_since.astimezone(timezone).date())
                if opd.waiting_since is not None
                else "-"
            )
            lines.append(
                t(
                    "digest.admin.opd",
                    opd=opd.name,
                    code=opd.code,
                    waiting=opd.waiting,
                    since=since,
                    questions=opd.open_questions,
                )
            )
        if len(unstaffed) > OPDS_LISTED:
            lines.append(t("digest.admin.more", count=len(unstaffed) - OPDS_LISTED))
        lines.append(t("digest.admin.how"))
        written = await enqueue(
            connection,
            Notice(
                dedupe_key=f"admin_digest:{admin.key}:{today.isoformat()}",
                channel=admin.channel,
                recipient=admin.external_id,
                kind="admin_digest",
                body="\n".join(lines),
                template="admin_digest",
                params={"count": len(unstaffed), "waiting": waiting, "questions": questions},
            ),
            now=now,
        )
        planned += int(written)
    return planned
