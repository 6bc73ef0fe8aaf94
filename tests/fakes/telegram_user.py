"""One Telegram user talking to the bot through `FakeTelegramServer`, like a person would.

Each action queues a real update on the fake Bot API and waits (bounded) until
the bot has handled it: in polling mode an update is done when the bot's
getUpdates offset passes it, which the adapter does only after the engine
committed (and stored the replies), and when the replies went out: the bot
under test registers how to wait for those with `watching` (its
`replies.drain`). The driver checks nothing itself; tests assert on the
messages and on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from tests.fakes.telegram_api import FakeTelegramServer, SentMessage

#: How long one step may take before the test fails (a stuck bot, not a slow one).
STEP_TIMEOUT_S = 10.0


#: How the bots under test wait until their replies went out (see `watching`).
_SETTLERS: list[Callable[[], Awaitable[None]]] = []


@contextlib.contextmanager
def watching(settle: Callable[[], Awaitable[None]]) -> Iterator[None]:
    """While inside, every action also waits for `settle()` (a bot's `replies.drain`)."""
    _SETTLERS.append(settle)
    try:
        yield
    finally:
        _SETTLERS.remove(settle)


def _bare(label: str) -> str:
    """A label without its leading emoji and spaces, case-folded."""
    return re.sub(r"^\W+", "", label.casefold())


def inline_buttons(message: SentMessage) -> list[dict[str, Any]]:
    """The inline buttons of a sent message, top to bottom."""
    markup = message.reply_markup or {}
    return [button for row in markup.get("inline_keyboard", []) for button in row]


class TelegramUser:
    """A person in a private chat with the bot (polling mode)."""

    def __init__(self, server: FakeTelegramServer, user_id: int) -> None:
        self.server = server
        self.user_id = user_id
        #: The bot's messages in answer to the latest action.
        self.replies: list[SentMessage] = []
        #: The update of the latest action, as queued on the server.
        self.last_update: dict[str, Any] = {}

    @property
    def messages(self) -> list[SentMessage]:
        """Every message the bot sent this person so far."""
        return self.server.messages_to(self.user_id)

    @property
    def text(self) -> str:
        """The texts of the latest replies, joined."""
        return "\n".join(message.text for message in self.replies)

    async def say(self, text: str) -> list[SentMessage]:
        return await self.send(self.server.text_update(self.user_id, text))

    async def share_contact(self, phone: str, *, own: bool = True) -> list[SentMessage]:
        return await self.send(self.server.contact_update(self.user_id, phone, own=own))

    async def press(self, label_part: str) -> list[SentMessage]:
        """Press the button containing `label_part` on the latest message that has buttons.

        When several labels contain it ("Setuju" / "Tidak setuju"), the one that
        starts with it wins.
        """
        return await self.send(self.press_update(label_part))

    def press_update(
        self, label_part: str, among: list[SentMessage] | None = None
    ) -> dict[str, Any]:
        """The callback_query update pressing `label_part`, without sending it (on the
        latest message with buttons, or the latest of `among`)."""
        keyboards = [message for message in among or self.messages if inline_buttons(message)]
        if not keyboards:
            raise AssertionError("the bot has not shown any buttons")
        message = keyboards[-1]
        buttons = inline_buttons(message)
        wanted = label_part.casefold()
        matches = [button for button in buttons if wanted in button["text"].casefold()]
        if len(matches) > 1:
            matches = [button for button in matches if _bare(button["text"]).startswith(wanted)]
        if len(matches) != 1:
            labels = [button["text"] for button in buttons]
            raise AssertionError(f"{label_part!r} matches {len(matches)} of {labels}")
        return self.server.callback_update(
            self.user_id, matches[0]["callback_data"], message.message_id
        )

    async def send(self, update: dict[str, Any]) -> list[SentMessage]:
        """Queue `update`, wait until the bot confirmed it and every registered settler
        (`watching`) returned; the replies it caused.

        With the inbound journal (`storage.telegram_inbound`) a confirmed offset means
        "recorded", not "handled": a bot under test must be registered with `watching`,
        its settler waiting for the journal's rows to be handled and the replies sent
        (`open_bot` registers `channel.settled`), or this returns before the replies.
        """
        before = len(self.messages)
        self.last_update = self.server.push_update(update)
        update_id = int(self.last_update["update_id"])
        await self.server.wait_until(
            lambda: self.server.confirmed_offset > update_id, timeout=STEP_TIMEOUT_S
        )
        for settle in list(_SETTLERS):
            await asyncio.wait_for(settle(), STEP_TIMEOUT_S)
        self.replies = self.messages[before:]
        return self.replies
