"""An OPD with a registered ASN and an appointed PIC, driven through the real engine."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import Channel, ConsentMethod, SponsorshipStatus, WorkerConsent
from handlers.context import EngineConfig
from handlers.engine import Engine
from storage.audit import Actor
from storage.models import Opd, Outbox, Sponsorship
from storage.roles import appoint
from tests.fakes.chat import OTHER_NIK, WORKER_NIK, Chat, build_engine, seed_opds
from tests.fakes.clock import FrozenClock

PIC_ID = "2001"
OTHER_PIC_ID = "3001"


@dataclasses.dataclass
class Office:
    """Dinas Kesehatan with its ASN ("1001") and PIC ("2001"), plus the PIC of another OPD."""

    engine: Engine
    clock: FrozenClock
    sessionmaker: async_sessionmaker[AsyncSession]
    asn: Chat
    pic: Chat
    other_pic: Chat

    async def opd_id(self, code: str = "BKL-DINKES") -> int:
        async with self.sessionmaker() as session:
            return int((await session.execute(select(Opd.id).where(Opd.code == code))).scalar_one())

    async def sponsorships(self) -> list[Sponsorship]:
        async with self.sessionmaker() as session:
            result = await session.execute(select(Sponsorship).order_by(Sponsorship.id))
            return list(result.scalars().all())

    async def outbox(self, kind: str | None = None) -> list[Outbox]:
        async with self.sessionmaker() as session:
            query = select(Outbox).order_by(Outbox.id)
            if kind is not None:
                query = query.where(Outbox.kind == kind)
            return list((await session.execute(query)).scalars().all())

    async def enroll(
        self, nik: str = WORKER_NIK, name: str = "Siti Aminah", *, consent: bool | None = None
    ) -> None:
        """The ASN enrolls a worker; with `consent`, the worker then consents (PRODUCT 4.6),
        so the PIC may accept it. By default (None) the worker consents unless a
        consent request went out on WhatsApp (the test answers it there)."""
        await self.asn.enroll_until_summary(nik=nik, name=name)
        await self.asn.press("Kirim ke PIC")
        if consent is None:
            newest = (await self.sponsorships())[-1]
            consent = newest.consent_requested_via is not ConsentMethod.WHATSAPP
        if consent:
            await self.worker_consents()

    async def worker_consents(self, *, every_waiting: bool = False) -> None:
        """The newest enrollment's worker (or, with `every_waiting`, the worker of every
        enrollment waiting for the PIC) consents, unless they answered already."""
        async with self.sessionmaker() as session, session.begin():
            query = select(Sponsorship).where(
                Sponsorship.worker_consent.in_([WorkerConsent.NOT_REQUESTED, WorkerConsent.PENDING])
            )
            if every_waiting:
                query = query.where(Sponsorship.status == SponsorshipStatus.WAITING_FOR_PIC)
            else:
                newest = select(func.max(Sponsorship.id)).scalar_subquery()
                query = query.where(Sponsorship.id == newest)
            for sponsorship in (await session.execute(query)).scalars():
                sponsorship.worker_consent = WorkerConsent.GIVEN

    async def record_payment(self, months: int = 1) -> None:
        """The ASN records `months` at the tariff amount, without a receipt."""
        await self.asn.say("bayar")
        await self.asn.press(f"{months} bulan")
        await self.asn.press("sesuai tarif")
        await self.asn.press("Lewati")
        await self.asn.press("Catat pembayaran")

    async def plan_reminders(self) -> None:
        """The daily reminder planner's run at the clock's time, as `sertakan run` builds it."""
        from zoneinfo import ZoneInfo

        from domain.tariff import DEFAULT_TARIFF
        from domain.workdays import WorkCalendar
        from handlers.i18n import Catalogs
        from scheduler.reminders import ReminderPlanner

        await ReminderPlanner(
            self.sessionmaker.kw["bind"],
            Catalogs(),
            self.clock,
            timezone=ZoneInfo("Asia/Jakarta"),
            calendar=WorkCalendar(()),
            tariff=DEFAULT_TARIFF,
            payment_channels=self.engine.config.payment_channels,
        ).plan()

    async def enroll_two(self) -> None:
        await self.enroll()
        await self.enroll(nik=OTHER_NIK, name="Joko Susilo")


async def appoint_pic(
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    *,
    telegram_id: str,
    opd_code: str,
) -> int:
    engine = sessionmaker.kw["bind"]
    async with engine.begin() as connection:
        opd_id = (await connection.execute(select(Opd.id).where(Opd.code == opd_code))).scalar_one()
        return await appoint(
            connection,
            opd_id=opd_id,
            channel=Channel.TELEGRAM,
            external_id=telegram_id,
            phone_e164=None,
            actor=Actor.admin("test-admin"),
            now=clock(),
        )


async def build_office(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    worker_channel: Channel | None = None,
    config: EngineConfig | None = None,
) -> Office:
    """`worker_channel=Channel.WHATSAPP`: workers get consent requests and notices."""
    clock = FrozenClock()
    await seed_opds(sessionmaker, clock)
    engine = build_engine(sessionmaker, clock, config, worker_channel=worker_channel)
    asn = Chat(engine, clock, sender="1001")
    await asn.register()
    await appoint_pic(sessionmaker, clock, telegram_id=PIC_ID, opd_code="BKL-DINKES")
    await appoint_pic(sessionmaker, clock, telegram_id=OTHER_PIC_ID, opd_code="BKL-DIKBUD")
    return Office(
        engine=engine,
        clock=clock,
        sessionmaker=sessionmaker,
        asn=asn,
        pic=Chat(engine, clock, sender=PIC_ID),
        other_pic=Chat(engine, clock, sender=OTHER_PIC_ID),
    )


async def activate(office: Office, *pairs: tuple[str, str]) -> None:
    """Enrollments (NIK, name) through the PIC to active with KPJs, over the chat."""
    for nik, name in pairs:
        await office.enroll(nik=nik, name=name)
    await issue_cards(office, *(nik for nik, _ in pairs))


async def issue_cards(office: Office, *niks: str) -> None:
    """The workers consent, the PIC accepts what waits, exports, and applies a BPJS file
    with a KPJ per NIK."""
    await office.worker_consents(every_waiting=True)
    await office.pic.say("pic")
    await office.pic.press("Periksa pendaftaran")
    while any("Terima" in label for label in office.pic.labels()):
        await office.pic.press("Terima")
    await office.pic.say("pic")
    await office.pic.press("Ekspor")
    await office.pic.press("Sudah dikirim ke BPJS")
    lines = ["NIK,KPJ"] + [f"{nik},{90000000000 + i:011d}" for i, nik in enumerate(niks)]
    await office.pic.send_document("kpj.csv", ("\n".join(lines) + "\n").encode())
    await office.pic.press("Terapkan")
