"""A send keeps its place in the send budget only if its request is written in time.

The send budget (storage/send_budget.py) hands out places in time, and
`start_on_time` gives up a place when the sender woke too late for it. Between
that check and the request's first byte there can be more waiting: when
aiohttp's pool holds no idle keep-alive connection, a new one is opened, which
takes several turns of the event loop. On a busy loop that was 75-134 ms in the
province proof (measured with a probe around the check and aiohttp's
"headers sent" trace: nearly every send written more than 20 ms after its check
had opened a connection first; a process opens them in its first second of
sending, after a restart, and when its keep-alive connections expired). Several
such sends of one process reach the platform together, in the seconds the other
processes' places already fill: over the platform's limit, although every place
was taken correctly.

`OnTimeConnector` checks again once the connection is in hand, before anything
is written: a send whose deadline (`scheduler.sending.write_by`) has passed
raises `PlaceMissed`,
its connection goes back to the pool (the next attempt finds it ready, so it
cannot miss for the same reason), and the sender takes a new place. A send
without a deadline (no budget, the console, a retry already made) is never
stopped.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import aiohttp

from scheduler.sending import PlaceMissed, claim_deadline

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace


class OnTimeConnector(aiohttp.TCPConnector):
    """aiohttp's connector that refuses to start a request after its write deadline."""

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        deadline = claim_deadline()
        if deadline is not None:
            late = time.monotonic() - deadline
            if late > 0:
                connection.release()  # unused: back to the pool for the next attempt
                raise PlaceMissed(late)
        return connection
