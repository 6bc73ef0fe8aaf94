"""The batch's rows for the collective file, and the KPJ import preview, on the real database."""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from datetime import UTC, date, datetime

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.nik import mask_nik
from domain.vocabulary import (
    BatchStatus,
    Channel,
    EmploymentType,
    Language,
    Occupation,
    PaymentPlan,
    Sex,
    SponsorshipStatus,
    WorkerConsent,
)
from storage import collective
from storage.collective import (
    ImportPreview,
    RejectedRow,
    RejectReason,
    collective_rows,
    export_batch,
    preview_import,
)
from storage.collective_file import (
    HEADER_ROW,
    CollectiveRow,
    KpjRow,
    NikCellProblem,
    read_kpj_file,
    write_collective_xlsx,
)
from storage.crypto import NikCipher
from storage.models import (
    Asn,
    AuditLog,
    ChannelAccount,
    KpjImport,
    Opd,
    Sponsorship,
    SubmissionBatch,
    Worker,
)
from tests.fakes.chat import TEST_KEY

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
CIPHER = NikCipher(TEST_KEY)
#: Distinct channel accounts and NIPs across every Seeder of a test.
_ACCOUNT_NUMBERS = itertools.count(1)


def nik_for(index: int) -> str:
    """A distinct, well-formed NIK per index (a woman born 7 Aug 1990)."""
    return f"32{index // 10_000 % 100:02d}01470890{index % 10_000:04d}"


def kpj_for(index: int) -> str:
    return f"2{index:010d}"


class Seeder:
    """Writes OPDs, ASNs, workers, enrollments and batches with plain inserts."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def _insert(self, model: type[object], **values: object) -> int:
        result = await self.connection.execute(insert(model).values(**values))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    async def opd(self, code: str, name: str | None = None) -> int:
        return await self._insert(
            Opd,
            code=code,
            name=name or f"Dinas {code}",
            search_name=(name or f"dinas {code}").lower(),
            active=True,
            created_at=NOW,
        )

    async def asn(self, opd_id: int, *, nip: str | None = None, name: str = "Budi Santoso") -> int:
        number = next(_ACCOUNT_NUMBERS)
        account = await self._insert(
            ChannelAccount,
            channel=Channel.TELEGRAM,
            external_id=str(1000 + number),
            language=Language.INDONESIAN,
            display_name=None,
            created_at=NOW,
        )
        return await self._insert(
            Asn,
            nip=nip or f"19850312201001{number:04d}",
            employment_type=EmploymentType.PNS,
            full_name=name,
            birth_date=date(1985, 3, 12),
            sex=Sex.MALE,
            opd_id=opd_id,
            phone_e164=f"+62812{number:08d}",
            channel_account_id=account,
            registered_at=NOW,
        )

    async def worker(self, nik: str, *, name: str = "Siti Aminah") -> int:
        return await self._insert(
            Worker,
            nik_hash=CIPHER.lookup_hash(nik),
            nik_ciphertext=CIPHER.encrypt(nik),
            nik_masked=mask_nik(nik),
            full_name=name,
            birth_date=date(1990, 8, 7),
            sex=Sex.FEMALE,
            phone_e164="+6281298765432",
            village="Sukamaju",
            district="Ciawi",
            created_at=NOW,
            updated_at=NOW,
        )

    async def batch(
        self, opd_id: int, number: str, status: BatchStatus = BatchStatus.SUBMITTED
    ) -> int:
        return await self._insert(
            SubmissionBatch,
            opd_id=opd_id,
            number=number,
            status=status,
            row_count=0,
            created_at=NOW,
            created_by="admin:test",
            submitted_at=NOW if status is BatchStatus.SUBMITTED else None,
        )

    async def sponsorship(
        self,
        *,
        worker_id: int,
        asn_id: int,
        opd_id: int,
        status: SponsorshipStatus,
        batch_id: int | None = None,
        kpj: str | None = None,
        plan: PaymentPlan = PaymentPlan.MONTHLY,
    ) -> int:
        return await self._insert(
            Sponsorship,
            worker_id=worker_id,
            asn_id=asn_id,
            opd_id=opd_id,
            occupation=Occupation.HOUSEHOLD_ASSISTANT,
            plan=plan,
            first_month=date(2026, 12, 1),
            status=status,
            worker_consent=WorkerConsent.NOT_REQUESTED,
            birth_date_differs_from_nik=False,
            correction_count=0,
            batch_id=batch_id,
            kpj=kpj,
            created_at=NOW,
            status_changed_at=NOW,
        )

    async def enrollment(
        self,
        nik: str,
        *,
        asn_id: int,
        opd_id: int,
        status: SponsorshipStatus = SponsorshipStatus.SUBMITTED,
        batch_id: int | None = None,
        kpj: str | None = None,
        name: str = "Siti Aminah",
    ) -> int:
        """A worker with one sponsorship; returns the sponsorship id."""
        worker_id = await self.worker(nik, name=name)
        return await self.sponsorship(
            worker_id=worker_id,
            asn_id=asn_id,
            opd_id=opd_id,
            status=status,
            batch_id=batch_id,
            kpj=kpj,
        )


def kpj_row(
    row_number: int,
    nik: str | None,
    kpj: str,
    problem: NikCellProblem | None = None,
    shown: str | None = None,
) -> KpjRow:
    return KpjRow(
        row_number=row_number,
        nik=nik,
        nik_problem=problem,
        nik_shown=shown if shown is not None else mask_nik(nik or ""),
        kpj_raw=kpj,
    )


async def preview(
    connection: AsyncConnection, opd_id: int, rows: Sequence[KpjRow], empty_rows: int = 0
) -> ImportPreview:
    result = await preview_import(
        connection, CIPHER, opd_id=opd_id, rows=rows, empty_rows=empty_rows
    )
    assert result.total_rows == len(result.matched) + result.unchanged + len(result.rejected)
    return result


# --- the batch's rows ---------------------------------------------------------------------


async def test_the_rows_of_a_batch_are_decrypted_and_ordered(db_engine: AsyncEngine) -> None:
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        opd = await seed.opd("DINKES")
        asn = await seed.asn(opd, nip="198503122010011002", name="Budi Santoso")
        batch = await seed.batch(opd, "DINKES-2026-001")
        other_batch = await seed.batch(opd, "DINKES-2026-002")
        ids = []
        for index in range(5):
            ids.append(
                await seed.enrollment(
                    nik_for(index), asn_id=asn, opd_id=opd, batch_id=batch, name=f"Pekerja {index}"
                )
            )
            # Interleaved rows that are not in the batch.
            await seed.enrollment(
                nik_for(100 + index), asn_id=asn, opd_id=opd, batch_id=other_batch
            )
            await seed.enrollment(
                nik_for(200 + index), asn_id=asn, opd_id=opd, status=SponsorshipStatus.ACCEPTED
            )

        rows = [row async for row in collective_rows(connection, CIPHER, batch_id=batch)]

    assert [row.nik for row in rows] == [nik_for(index) for index in range(5)]
    assert rows[0] == CollectiveRow(
        nik=nik_for(0),
        full_name="Pekerja 0",
        birth_date=date(1990, 8, 7),
        sex=Sex.FEMALE,
        phone_e164="+6281298765432",
        village="Sukamaju",
        district="Ciawi",
        occupation=Occupation.HOUSEHOLD_ASSISTANT,
        sponsor_nip="198503122010011002",
        sponsor_name="Budi Santoso",
        plan=PaymentPlan.MONTHLY,
        first_month=date(2026, 12, 1),
    )


@pytest.mark.parametrize(("count", "chunk_size"), [(7, 3), (6, 3), (2, 3), (0, 3), (5, 1)])
async def test_rows_are_read_in_chunks_without_losing_or_repeating_any(
    db_engine: AsyncEngine, count: int, chunk_size: int
) -> None:
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        opd = await seed.opd("DINKES")
        asn = await seed.asn(opd)
        batch = await seed.batch(opd, "DINKES-2026-001")
        for index in range(count):
            await seed.enrollment(nik_for(index), asn_id=asn, opd_id=opd, batch_id=batch)
        rows = [
            row.nik
            async for row in collective_rows(
                connection, CIPHER, batch_id=batch, chunk_size=chunk_size
            )
        ]
    assert rows == [nik_for(index) for index in range(count)]


async def test_database_to_file_and_back(db_engine: AsyncEngine) -> None:
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        opd = await seed.opd("DINKES")
        asn = await seed.asn(opd)
        batch = await seed.batch(opd, "DINKES-2026-001")
        for index in range(30):
            await seed.enrollment(nik_for(index), asn_id=asn, opd_id=opd, batch_id=batch)
        target = io.BytesIO()
        written = write_collective_xlsx(
            [row async for row in collective_rows(connection, CIPHER, batch_id=batch)],
            target,
            batch_number="DINKES-2026-001",
            opd_name="Dinas Kesehatan",
            created_at=NOW,
        )
    assert written == 30
    sheet = load_workbook(io.BytesIO(target.getvalue()), read_only=True).active
    assert sheet is not None
    niks = [row[1] for row in sheet.iter_rows(min_row=HEADER_ROW + 1, values_only=True)]
    assert niks == [nik_for(index) for index in range(30)]


# --- the import preview -------------------------------------------------------------------


@pytest.fixture
async def opds(db_engine: AsyncEngine) -> tuple[int, int, int]:
    """(our OPD, another OPD, an ASN of ours)."""
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        ours = await seed.opd("DINKES")
        other = await seed.opd("DISDIK")
        asn = await seed.asn(ours)
    return ours, other, asn


async def test_submitted_and_accepted_enrollments_are_matched_in_file_order(
    db_engine: AsyncEngine, opds: tuple[int, int, int]
) -> None:
    ours, _, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        batch = await seed.batch(ours, "DINKES-2026-001")
        submitted = await seed.enrollment(nik_for(1), asn_id=asn, opd_id=ours, batch_id=batch)
        accepted = await seed.enrollment(
            nik_for(2), asn_id=asn, opd_id=ours, status=SponsorshipStatus.ACCEPTED
        )
        rows = [kpj_row(2, nik_for(2), kpj_for(2)), kpj_row(3, nik_for(1), "2-0000000001")]
        result = await preview(connection, ours, rows, empty_rows=4)
    assert result == ImportPreview(
        total_rows=2,
        empty_rows=4,
        matched=[(accepted, kpj_for(2)), (submitted, kpj_for(1))],
        unchanged=0,
        rejected=[],
    )
    assert result.counts() == {}


async def test_every_reason_a_row_is_rejected(
    db_engine: AsyncEngine, opds: tuple[int, int, int]
) -> None:
    ours, other, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        other_asn = await seed.asn(other)
        batch = await seed.batch(ours, "DINKES-2026-001")
        good = await seed.enrollment(nik_for(1), asn_id=asn, opd_id=ours, batch_id=batch)
        await seed.enrollment(nik_for(2), asn_id=other_asn, opd_id=other)  # other OPD
        await seed.enrollment(
            nik_for(3), asn_id=asn, opd_id=ours, status=SponsorshipStatus.WAITING_FOR_PIC
        )
        await seed.enrollment(
            nik_for(4), asn_id=asn, opd_id=ours, status=SponsorshipStatus.RETURNED
        )
        await seed.enrollment(
            nik_for(5), asn_id=asn, opd_id=ours, status=SponsorshipStatus.ACTIVE, kpj=kpj_for(5)
        )
        await seed.enrollment(
            nik_for(6), asn_id=asn, opd_id=ours, status=SponsorshipStatus.ACTIVE, kpj=kpj_for(6)
        )
        await seed.enrollment(nik_for(7), asn_id=asn, opd_id=ours, status=SponsorshipStatus.ENDED)
        # A KPJ the database already gives to another worker (in another OPD).
        await seed.enrollment(
            nik_for(8),
            asn_id=other_asn,
            opd_id=other,
            status=SponsorshipStatus.ACTIVE,
            kpj="29999999999",
        )
        await seed.enrollment(nik_for(9), asn_id=asn, opd_id=ours, batch_id=batch)

        rows = [
            kpj_row(2, nik_for(1), kpj_for(1)),
            kpj_row(3, nik_for(2), kpj_for(2)),
            kpj_row(4, nik_for(3), kpj_for(3)),
            kpj_row(5, nik_for(4), kpj_for(4)),
            kpj_row(6, nik_for(5), kpj_for(5)),  # the same KPJ again: unchanged
            kpj_row(7, nik_for(6), "21111111111"),  # a different KPJ: conflict
            kpj_row(8, nik_for(7), kpj_for(7)),  # only an ended sponsorship
            kpj_row(9, nik_for(99), kpj_for(99)),  # nobody
            kpj_row(10, nik_for(9), "29999999999"),
            kpj_row(11, None, kpj_for(10), NikCellProblem.SCIENTIFIC, "3.20101E+15"),
            kpj_row(12, None, kpj_for(11), NikCellProblem.LENGTH, "3201*******0001"),
            kpj_row(13, None, kpj_for(12), NikCellProblem.EMPTY, ""),
            kpj_row(14, nik_for(9), "2101234567"),
            kpj_row(15, nik_for(9), ""),
        ]
        result = await preview(connection, ours, rows)

    assert result.matched == [(good, kpj_for(1))]
    assert result.unchanged == 1
    assert [(r.row_number, r.reason) for r in result.rejected] == [
        (3, RejectReason.OTHER_OPD),
        (4, RejectReason.NOT_SUBMITTED),
        (5, RejectReason.NOT_SUBMITTED),
        (7, RejectReason.KPJ_CONFLICT),
        (8, RejectReason.UNKNOWN_NIK),
        (9, RejectReason.UNKNOWN_NIK),
        (10, RejectReason.DUPLICATE_KPJ),
        (11, RejectReason.NIK_AS_NUMBER),
        (12, RejectReason.MALFORMED_NIK),
        (13, RejectReason.MALFORMED_NIK),
        (14, RejectReason.MALFORMED_KPJ),
        (15, RejectReason.MALFORMED_KPJ),
    ]
    assert result.rejected[0] == RejectedRow(3, mask_nik(nik_for(2)), RejectReason.OTHER_OPD)
    assert result.rejected[7] == RejectedRow(11, "3.20101E+15", RejectReason.NIK_AS_NUMBER)
    assert result.counts() == {
        RejectReason.MALFORMED_NIK: 2,
        RejectReason.NIK_AS_NUMBER: 1,
        RejectReason.UNKNOWN_NIK: 2,
        RejectReason.MALFORMED_KPJ: 2,
        RejectReason.DUPLICATE_KPJ: 1,
        RejectReason.OTHER_OPD: 1,
        RejectReason.NOT_SUBMITTED: 2,
        RejectReason.KPJ_CONFLICT: 1,
    }
    assert list(result.counts()) == sorted(result.counts(), key=list(RejectReason).index)


async def test_a_nik_repeated_with_the_same_kpj_counts_once(
    db_engine: AsyncEngine, opds: tuple[int, int, int]
) -> None:
    ours, _, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        sid = await seed.enrollment(nik_for(1), asn_id=asn, opd_id=ours)
        rows = [
            kpj_row(2, nik_for(1), kpj_for(1)),
            kpj_row(3, nik_for(1), "2 0000 000 001"),  # the same KPJ, written differently
            kpj_row(4, nik_for(1), kpj_for(1)),
        ]
        result = await preview(connection, ours, rows)
    assert result.matched == [(sid, kpj_for(1))]
    assert [(r.row_number, r.reason) for r in result.rejected] == [
        (3, RejectReason.DUPLICATE_NIK),
        (4, RejectReason.DUPLICATE_NIK),
    ]


async def test_a_nik_repeated_with_different_kpjs_is_not_applied_at_all(
    db_engine: AsyncEngine, opds: tuple[int, int, int]
) -> None:
    ours, _, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        await seed.enrollment(nik_for(1), asn_id=asn, opd_id=ours)
        rows = [kpj_row(2, nik_for(1), kpj_for(1)), kpj_row(3, nik_for(1), kpj_for(2))]
        result = await preview(connection, ours, rows)
    assert result.matched == []
    assert [(r.row_number, r.reason) for r in result.rejected] == [
        (2, RejectReason.DUPLICATE_NIK),
        (3, RejectReason.DUPLICATE_NIK),
    ]


async def test_one_kpj_for_two_niks_is_not_applied_to_either(
    db_engine: AsyncEngine, opds: tuple[int, int, int]
) -> None:
    ours, _, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        await seed.enrollment(nik_for(1), asn_id=asn, opd_id=ours)
        await seed.enrollment(nik_for(2), asn_id=asn, opd_id=ours)
        third = await seed.enrollment(nik_for(3), asn_id=asn, opd_id=ours)
        rows = [
            kpj_row(2, nik_for(1), kpj_for(1)),
            kpj_row(3, nik_for(2), kpj_for(1)),
            kpj_row(4, nik_for(3), kpj_for(3)),
        ]
        result = await preview(connection, ours, rows)
    assert result.matched == [(third, kpj_for(3))]
    assert [(r.row_number, r.reason) for r in result.rejected] == [
        (2, RejectReason.DUPLICATE_KPJ),
        (3, RejectReason.DUPLICATE_KPJ),
    ]


async def test_a_kpj_from_the_same_workers_ended_sponsorship_is_no_duplicate(
    db_engine: AsyncEngine, opds: tuple[int, int, int]
) -> None:
    # A worker who lapsed and was enrolled again keeps their BPJS membership number.
    ours, _, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        worker = await seed.worker(nik_for(1))
        await seed.sponsorship(
            worker_id=worker,
            asn_id=asn,
            opd_id=ours,
            status=SponsorshipStatus.LAPSED,
            kpj=kpj_for(1),
        )
        again = await seed.sponsorship(
            worker_id=worker, asn_id=asn, opd_id=ours, status=SponsorshipStatus.SUBMITTED
        )
        result = await preview(connection, ours, [kpj_row(2, nik_for(1), kpj_for(1))])
    assert result.matched == [(again, kpj_for(1))]


async def test_the_preview_writes_nothing(
    db_engine: AsyncEngine, opds: tuple[int, int, int]
) -> None:
    ours, _, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        await seed.enrollment(nik_for(1), asn_id=asn, opd_id=ours)
    async with db_engine.begin() as connection:
        result = await preview(connection, ours, [kpj_row(2, nik_for(1), kpj_for(1))])
        assert len(result.matched) == 1
    async with db_engine.connect() as connection:
        assert await connection.scalar(select(Sponsorship.kpj)) is None
        assert await connection.scalar(select(Sponsorship.status)) == SponsorshipStatus.SUBMITTED
        for table in (KpjImport, AuditLog):
            assert await connection.scalar(select(func.count()).select_from(table)) == 0


async def test_lookups_cross_chunk_boundaries(
    db_engine: AsyncEngine, opds: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collective, "LOOKUP_CHUNK", 7)
    ours, other, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        other_asn = await seed.asn(other)
        expected = []
        for index in range(40):
            if index % 5 == 0:
                await seed.enrollment(nik_for(index), asn_id=other_asn, opd_id=other)
            else:
                sid = await seed.enrollment(nik_for(index), asn_id=asn, opd_id=ours)
                expected.append((sid, kpj_for(index)))
        # One KPJ already held elsewhere, late in the list (another chunk).
        await seed.enrollment(
            nik_for(500), asn_id=asn, opd_id=ours, status=SponsorshipStatus.ACTIVE, kpj=kpj_for(38)
        )
        rows = [kpj_row(index + 2, nik_for(index), kpj_for(index)) for index in range(40)]
        result = await preview(connection, ours, rows)
    assert result.matched == [pair for pair in expected if pair[1] != kpj_for(38)]
    assert result.counts() == {RejectReason.OTHER_OPD: 8, RejectReason.DUPLICATE_KPJ: 1}


async def test_a_real_file_through_reader_and_preview(
    db_engine: AsyncEngine, opds: tuple[int, int, int]
) -> None:
    ours, _, asn = opds
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        first = await seed.enrollment(nik_for(1), asn_id=asn, opd_id=ours)
        second = await seed.enrollment(nik_for(2), asn_id=asn, opd_id=ours)
        content = (
            "Daftar KPJ;;\n"
            "No;NIK;No. KPJ\n"
            f"1;{nik_for(1)};{kpj_for(1)}\n"
            ";;\n"
            f"2;3,20101E+15;{kpj_for(3)}\n"
            f"3;{nik_for(2)};{kpj_for(2)}\n"
            f"4;{nik_for(2)};{kpj_for(2)}\n"
        ).encode("cp1252")
        rows, empty = read_kpj_file("kpj.csv", content)
        result = await preview(connection, ours, rows, empty_rows=empty)
    assert result.total_rows == 4
    assert result.empty_rows == 1
    assert result.matched == [(first, kpj_for(1)), (second, kpj_for(2))]
    assert result.rejected == [
        RejectedRow(5, "3,20101E+15", RejectReason.NIK_AS_NUMBER),
        RejectedRow(7, mask_nik(nik_for(2)), RejectReason.DUPLICATE_NIK),
    ]


@pytest.mark.parametrize(("count", "chunk_size"), [(7, 3), (6, 3), (0, 3)])
async def test_export_batch_writes_the_same_file_in_short_transactions(
    db_engine: AsyncEngine, count: int, chunk_size: int
) -> None:
    async with db_engine.begin() as connection:
        seed = Seeder(connection)
        opd = await seed.opd("DINKES")
        asn = await seed.asn(opd)
        batch = await seed.batch(opd, "DINKES-2026-001")
        for index in range(count):
            await seed.enrollment(nik_for(index), asn_id=asn, opd_id=opd, batch_id=batch)
        direct = io.BytesIO()
        write_collective_xlsx(
            [row async for row in collective_rows(connection, CIPHER, batch_id=batch)],
            direct,
            batch_number="DINKES-2026-001",
            opd_name="Dinas Kesehatan",
            created_at=NOW,
        )

    progress: list[int] = []
    target = io.BytesIO()
    written = await export_batch(
        db_engine,
        CIPHER,
        target,
        batch_id=batch,
        batch_number="DINKES-2026-001",
        opd_name="Dinas Kesehatan",
        created_at=NOW,
        chunk_size=chunk_size,
        progress=progress.append,
    )
    assert written == count
    assert sum(progress) == count
    assert all(step <= chunk_size for step in progress)
    assert target.getvalue() == direct.getvalue()
