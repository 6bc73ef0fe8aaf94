"""Replies and the send budget (issue 14, the province proof): a reply's messages take
their places in the channel's budget, and the outbox's next notice to the same person keeps
one recipient interval per message of the reply, so the two paths never meet in one burst over the
platform's per-chat limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.delivery import ReplyDelivery
from domain.vocabulary import Channel, Language
from handlers.types import Reply
from scheduler.sending import SendResult, Sent
from storage.send_budget import ChannelRate, Granted, LocalSendBudget, RecipientBusy
from tests.fakes.clock import FrozenClock

RATES = {Channel.TELEGRAM: ChannelRate(per_second=1000.0, recipient_interval_s=10.0)}


class Sink:
    channel = Channel.TELEGRAM
    channel_wide_rate_limit = False

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def render(self, replies: Sequence[Reply], language: Language) -> list[str]:
        return [reply.text for reply in replies]

    async def send(self, chat_id: str, part: Any) -> SendResult:
        self.sent.append((chat_id, part))
        return Sent()


async def test_a_notice_to_someone_just_replied_to_waits_an_interval_per_reply_message() -> None:
    budget = LocalSendBudget(RATES)
    sink = Sink()
    replies = ReplyDelivery(sink, database=None, cipher=None, clock=FrozenClock(), budget=budget)
    try:
        await replies.send_now("42", [Reply("Satu"), Reply("Dua")], Language.INDONESIAN, "u1")
        await replies.idle()
    finally:
        await replies.close()

    assert sink.sent == [("42", "Satu"), ("42", "Dua")]
    busy = await budget.take(Channel.TELEGRAM, recipient="42")
    assert isinstance(busy, RecipientBusy)
    assert 19.0 < busy.free_in_s <= 20.0  # two messages: two intervals, as two notices
    # Someone else is not held by it.
    assert isinstance(await budget.take(Channel.TELEGRAM, recipient="43"), Granted)
