"""The fakes' models of the platforms' limits, and the fakes in a process of their own."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.fakes.graph_api import PAIR_BURST, PAIR_INTERVAL_S, FakeGraphServer, _Rates
from tests.fakes.serve import RemoteGraphServer, RemoteTelegramServer

WA_ID = "6281230000001"


def test_pair_limit_allows_a_burst_of_45_and_refuses_the_46th() -> None:
    rates = _Rates(per_second=80, pair_interval_s=PAIR_INTERVAL_S, pair_burst=PAIR_BURST)
    now = 1_000.0
    assert [rates.pair_refuses(WA_ID, now) for _ in range(PAIR_BURST)] == [False] * PAIR_BURST
    assert rates.pair_refuses(WA_ID, now) is True
    # Another recipient has its own quota.
    assert rates.pair_refuses("6281230000002", now) is False


def test_pair_limit_refuses_after_a_borrowed_burst_until_the_time_is_paid_back() -> None:
    rates = _Rates(per_second=80, pair_interval_s=PAIR_INTERVAL_S, pair_burst=PAIR_BURST)
    start = 1_000.0
    for _ in range(PAIR_BURST):
        assert not rates.pair_refuses(WA_ID, start)
    # Nothing more until one interval of the borrowed quota is paid back ...
    assert rates.pair_refuses(WA_ID, start + PAIR_INTERVAL_S - 0.1)
    # ... then one message per interval paid back, no second one in it.
    assert not rates.pair_refuses(WA_ID, start + PAIR_INTERVAL_S)
    assert rates.pair_refuses(WA_ID, start + PAIR_INTERVAL_S + 1)
    assert not rates.pair_refuses(WA_ID, start + 2 * PAIR_INTERVAL_S)
    # A burst of 20 after a pause of 20 intervals has the whole allowance back; the
    # 2 minutes after it (20 x 6 s) pay it back entirely.
    later = start + 200 * PAIR_INTERVAL_S
    for _ in range(20):
        assert not rates.pair_refuses(WA_ID, later)
    paid_back = later + 20 * PAIR_INTERVAL_S
    assert [rates.pair_refuses(WA_ID, paid_back) for _ in range(PAIR_BURST + 1)] == [
        False
    ] * PAIR_BURST + [True]


def test_strict_pair_limit_is_one_per_interval() -> None:
    rates = _Rates(per_second=80, pair_interval_s=PAIR_INTERVAL_S)
    assert not rates.pair_refuses(WA_ID, 0.0)
    assert rates.pair_refuses(WA_ID, PAIR_INTERVAL_S - 0.01)
    assert not rates.pair_refuses(WA_ID, PAIR_INTERVAL_S)


async def _send_text(http: aiohttp.ClientSession, graph: FakeGraphServer, to: str) -> int:
    url = f"{graph.base_url}/v{graph.api_version}/{graph.phone_number_id}/messages"
    body = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": "x"}}
    headers = {"Authorization": f"Bearer {graph.token}"}
    async with http.post(url, json=body, headers=headers) as response:
        payload = await response.json()
        return int(payload["error"]["code"]) if "error" in payload else 0


async def test_graph_in_its_own_process_judges_the_pair_burst_and_mirrors_what_it_took() -> None:
    async with RemoteGraphServer() as graph, aiohttp.ClientSession() as http:
        with pytest.raises(TypeError):
            graph.open_window(WA_ID)  # the mirror holds no limits of its own
        await graph.control("enforce_rates", per_second=80, pair_burst=3)
        assert await _send_text(http, graph, WA_ID) == 131047  # no window opened yet
        await graph.control("open_window", WA_ID)
        codes = [await _send_text(http, graph, WA_ID) for _ in range(4)]
        assert codes == [0, 0, 0, 131056]
        await graph.wait_until(lambda: graph.errors[131056] == 1, timeout=10)
        assert [m.text for m in graph.messages_to(WA_ID)] == ["x", "x", "x"]
        assert graph.errors[131047] == 1
        # The child stamps with the same monotonic clock as this process.
        assert all(abs(m.at - time.monotonic()) < 10 for m in graph.sent)


async def test_telegram_in_its_own_process_refuses_over_the_sliding_second() -> None:
    async with RemoteTelegramServer() as telegram, aiohttp.ClientSession() as http:
        await telegram.control("enforce_rates", per_second=2, chat_interval_s=0.0)
        url = f"{telegram.base_url}/bot{telegram.token}/sendMessage"
        statuses = []
        for chat in (1, 2, 3):
            async with http.post(url, json={"chat_id": chat, "text": "halo"}) as response:
                statuses.append(response.status)
        assert statuses == [200, 200, 429]
        await telegram.synced()
        assert [m.chat_id for m in telegram.sent] == [1, 2]
        assert telegram.refused_by == {"global": 1}
        assert len(telegram.calls_of("sendMessage")) == 3
