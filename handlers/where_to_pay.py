"""The "where to pay" text: the province's payment channels, in the reader's
language, for the info menu, /bayar and the dues reminders."""

from __future__ import annotations

from collections.abc import Sequence

from domain.payment_channels import PaymentChannel
from handlers.i18n import Translator


def where_to_pay(t: Translator, channels: Sequence[PaymentChannel]) -> str:
    """Where BPJS dues are paid and that the payment is then recorded here; without
    channels (no file), to ask the PIC or the BPJS branch."""
    if not channels:
        return t("pay.where.unknown")
    lines = [
        t("pay.where.line", name=channel.name_in(t.language), how=channel.how_in(t.language))
        for channel in channels
    ]
    return t("pay.where", channels="\n".join(lines))
