"""The fakes in processes of their own take the `answer_delay` control (tests/fakes/serve.py)."""

from __future__ import annotations

import time

import aiohttp

from tests.fakes.serve import RemoteTelegramServer


async def test_an_answer_delay_holds_every_answer_in_the_child() -> None:
    async with RemoteTelegramServer() as telegram, aiohttp.ClientSession() as http:
        url = f"{telegram.base_url}/bot{telegram.token}/sendMessage"
        await telegram.control("answer_delay", 0.4)
        started = time.monotonic()
        async with http.post(url, json={"chat_id": 1, "text": "halo"}) as response:
            assert response.status == 200
        # A lower bound only: the child sleeps that long before it answers.
        assert time.monotonic() - started >= 0.4
        await telegram.control("answer_delay", 0)
        await telegram.synced()
        assert [m.chat_id for m in telegram.sent] == [1]
