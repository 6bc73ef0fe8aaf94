"""Issue 12 item 20: the PIC's card list pages, searches by name, and confirms a batch's count."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.vocabulary import SponsorshipStatus
from tests.fakes.chat import Chat, engine_config
from tests.fakes.ways_on import assert_way_on
from tests.fakes.workbench import Office, activate, appoint_pic, build_office

#: Eight women born 7 August 1990 (NIK day 47), enrolled by one ASN.
WORKERS = [
    (f"32010147089000{serial:02d}", name)
    for serial, name in enumerate(
        (
            "Siti Aminah",
            "Sri Wahyuni",
            "Dewi Lestari",
            "Rina Marlina",
            "Ani Suryani",
            "Tuti Handayani",
            "Yuni Astuti",
            "Lina Sari",
        ),
        start=1,
    )
]
BATCH = "BKL-DINKES-2026-001"


@pytest.fixture
async def office(sessionmaker: async_sessionmaker[AsyncSession]) -> Office:
    office = await build_office(sessionmaker, config=engine_config(max_workers_per_asn=10))
    await activate(office, *WORKERS)
    return office


def card_labels(chat: Chat) -> list[str]:
    return [label for label in chat.labels() if "KPJ" in label]


async def open_cards(chat: Chat) -> None:
    await chat.say("pic")
    await chat.press("Kartu diserahkan (8)")


async def test_the_card_list_pages_through_every_card(office: Office) -> None:
    pic = office.pic
    await open_cards(pic)
    assert "Kartu yang belum diserahkan: 8" in pic.text
    assert "Menampilkan 1–6 dari 8" in pic.text
    first_page = card_labels(pic)
    assert len(first_page) == 6 and first_page[0].startswith("Siti Aminah")
    assert not any("Sebelumnya" in label for label in pic.labels())
    await pic.press("Berikutnya")
    assert "Menampilkan 7–8 dari 8" in pic.text
    assert [label.split(" – ")[0] for label in card_labels(pic)] == ["Yuni Astuti", "Lina Sari"]
    assert not any("Berikutnya" in label for label in pic.labels())
    # Handing over from the second page stays there.
    await pic.press("Lina Sari")
    assert "Kartu Lina Sari tercatat sudah diserahkan" in pic.text
    assert "Menampilkan 7–7 dari 7" in pic.text
    await pic.press("Yuni Astuti")
    # That page emptied: the last page there is (the first) shows.
    assert "Kartu Yuni Astuti tercatat sudah diserahkan" in pic.text
    assert len(card_labels(pic)) == 6
    assert_way_on(pic.replies)
    rows = await office.sponsorships()
    assert sum(row.status is SponsorshipStatus.CARD_HANDED_OVER for row in rows) == 2


async def test_a_typed_name_finds_the_card(office: Office) -> None:
    pic = office.pic
    await open_cards(pic)
    await pic.say("zzz")
    assert "Tidak ada kartu yang belum diserahkan atas nama berisi “zzz”" in pic.text
    assert len(card_labels(pic)) == 6  # the list as it was
    await pic.say("x")
    assert "ketik 2 sampai 60 huruf" in pic.text
    await pic.say("Sri")  # the first word of one card's label: a search, not a hand-over
    assert "Nama berisi “Sri”: 1 kartu" in pic.text
    assert all(row.status is SponsorshipStatus.ACTIVE for row in await office.sponsorships())
    await pic.say("wahyu")
    assert "Nama berisi “wahyu”: 1 kartu" in pic.text
    assert [label.split(" – ")[0] for label in card_labels(pic)] == ["Sri Wahyuni"]
    assert not any("Semua kartu batch" in label for label in pic.labels())
    await pic.say("TI")  # any case: Siti, Tuti, Yuni Astuti
    assert "Nama berisi “TI”: 3 kartu" in pic.text
    await pic.press("Semua kartu")
    assert len(card_labels(pic)) == 6 and "Nama berisi" not in pic.text
    await pic.say("wahyu")
    await pic.press("Sri Wahyuni")
    # Every card the search found is handed over: the whole list again.
    assert "Kartu Sri Wahyuni tercatat sudah diserahkan" in pic.text
    assert "Kartu yang belum diserahkan: 7" in pic.text and "Nama berisi" not in pic.text
    assert_way_on(pic.replies)


async def test_a_whole_batch_is_handed_over_only_after_confirming_its_count(
    office: Office,
) -> None:
    pic = office.pic
    await open_cards(pic)
    await pic.press(f"Semua kartu batch {BATCH} (8)")
    assert f"Tandai 8 kartu batch {BATCH} sudah diserahkan?" in pic.text
    assert "Siti Aminah, Sri Wahyuni, Dewi Lestari, Rina Marlina, Ani Suryani, dan 3 lainnya" in (
        pic.text
    )
    assert_way_on(pic.replies)
    rows = await office.sponsorships()
    assert all(row.status is SponsorshipStatus.ACTIVE for row in rows)  # nothing yet
    await pic.press("Kembali ke daftar kartu")
    assert "Kartu yang belum diserahkan: 8" in pic.text
    await pic.press(f"Semua kartu batch {BATCH} (8)")

    # Meanwhile a colleague hands over one card of the batch: the count shown is stale.
    await appoint_pic(office.sessionmaker, office.clock, telegram_id="2002", opd_code="BKL-DINKES")
    colleague = Chat(office.engine, office.clock, sender="2002")
    await open_cards(colleague)
    await colleague.press("Siti Aminah")
    await pic.press("Ya, 8 kartu diserahkan")
    assert "kini 7" in pic.text
    rows = await office.sponsorships()
    assert sum(row.status is SponsorshipStatus.ACTIVE for row in rows) == 7
    await pic.press("Ya, 7 kartu diserahkan")
    assert f"7 kartu batch {BATCH} tercatat sudah diserahkan" in pic.text
    assert "PIC Dinas Kesehatan" in pic.text  # no card left: the PIC menu
    assert_way_on(pic.replies)
    rows = await office.sponsorships()
    assert all(row.status is SponsorshipStatus.CARD_HANDED_OVER for row in rows)
