"""The payment channels file (issue 12 item 10): a province's list of where dues are paid."""

from __future__ import annotations

import pytest

from domain.payment_channels import (
    PaymentChannelsFileError,
    load_payment_channels,
    parse_payment_channels,
)
from domain.vocabulary import Language
from sertakan_data import PAYMENT_CHANNELS, shipped


def test_the_shipped_file_names_the_branch_office_and_has_english_texts() -> None:
    channels = load_payment_channels(shipped(PAYMENT_CHANNELS))
    assert channels[0].name == "Kantor cabang BPJS Ketenagakerjaan"
    assert channels[0].name_in(Language.ENGLISH) == "BPJS Ketenagakerjaan branch office"
    assert all(channel.how_in(Language.ENGLISH) for channel in channels)


def test_english_falls_back_to_indonesian_and_comments_are_skipped() -> None:
    (channel,) = parse_payment_channels(
        "# edited by the province\nHow_ID,Name\nbayar di loket,Bank Bengkulu\n"
    )
    assert channel.name_in(Language.ENGLISH) == "Bank Bengkulu"
    assert channel.how_in(Language.ENGLISH) == "bayar di loket"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("name,how\nKantor Pos,di loket\n", 1, "lacks the column(s) how_id"),
        ("name,how_id\nKantor Pos,\n", 2, "the how_id cell is empty"),
        ("name,how_id\nKantor Pos," + "x" * 301 + "\n", 2, "301 characters"),
    ],
)
def test_a_broken_file_is_refused_with_its_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(PaymentChannelsFileError) as refused:
        parse_payment_channels(text)
    assert refused.value.line == line and reason in str(refused.value)
