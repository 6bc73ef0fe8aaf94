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


async def test_the_child_keeps_what_it_judged_out_of_full_collections() -> None:
    """A full collection over the child's records stalled it 155-308 ms in the province
    proof and stamped the sends that came meanwhile as one burst (tests/fakes/serve.py)."""
    async with RemoteTelegramServer() as telegram, aiohttp.ClientSession() as http:
        await telegram.synced()
        at_start = telegram.child_frozen
        assert at_start > 0  # the modules and the fake, once serving
        url = f"{telegram.base_url}/bot{telegram.token}/sendMessage"
        for chat_id in range(1, 51):
            async with http.post(url, json={"chat_id": chat_id, "text": "halo"}) as response:
                assert response.status == 200
        # The records of those sends are frozen at the child's next round.
        await telegram.wait_until(
            lambda: telegram.child_frozen > at_start and len(telegram.sent) == 50, timeout=10
        )
