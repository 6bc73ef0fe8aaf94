"""What a Graph API refusal means: one table for outbox notices (sender.py) and the
conversation's replies (render.py), so both treat 130429, 131056 or 131026 alike.

- 130429 (our number's throughput), 4 (the app's call limit):
  `RetryAfter(rate_limit_pause_s)`, the whole channel pauses;
- 131056 (the pair rate limit, this recipient): `Deferred(pair_retry_s)`;
- 131026 (undeliverable): `Permanent`, nothing more can reach the number;
- HTTP 401, codes 0 and 190 (token rejected): `Transient`, a configuration
  error that a fixed token heals;
- 5xx, `is_transient`, network errors, timeouts: `Transient` (back-off);
- any other 4xx: `Permanent("<code>: <message> (<details>)")`.
"""

from __future__ import annotations

from typing import Final

import httpx
from pywa_async.errors import WhatsAppError

from bot.retry_policy import is_transient
from scheduler.sending import Deferred, Permanent, RetryAfter, SendResult, Transient

#: Our number's throughput (130429) and the app's call limit (4): pause the channel.
CHANNEL_RATE_LIMITS: Final = frozenset({130429, 4})
#: Too many messages to this one person (the pair rate limit).
PAIR_RATE_LIMIT: Final = 131056
UNDELIVERABLE: Final = 131026
#: The access token was rejected (expired, revoked).
AUTH_ERRORS: Final = frozenset({0, 190})


def is_transient_update(exc: BaseException) -> bool:
    """`bot.retry_policy.is_transient`, plus the Graph API's and the network's failures that heal:
    5xx, 429, pywa's `is_transient`, and httpx's transport errors."""
    if is_transient(exc) or isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, WhatsAppError):
        status = exc.status_code
        return status is None or status >= 500 or status == 429 or bool(exc.is_transient)
    return False


def classify_error(
    exc: BaseException, *, rate_limit_pause_s: float, pair_retry_s: float
) -> SendResult:
    """What an exception from a Graph API call means for an outbox row (see the module table)."""
    if isinstance(exc, WhatsAppError):
        reason = describe(exc)
        status = exc.status_code
        if exc.code in CHANNEL_RATE_LIMITS:
            return RetryAfter(rate_limit_pause_s, error=reason)
        if exc.code == PAIR_RATE_LIMIT:
            return Deferred(pair_retry_s, error=reason)
        if exc.code == UNDELIVERABLE:
            return Permanent(reason, recipient_gone=True)
        if status == 401 or exc.code in AUTH_ERRORS:
            return Transient(reason)
        if status is None or status >= 500 or exc.is_transient:
            return Transient(reason)
        return Permanent(reason)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return Transient("timeout")
    # Network errors (httpx.HTTPError) and anything unforeseen: by type only, as
    # their text may quote a URL.
    return Transient(type(exc).__name__)


def describe(exc: WhatsAppError) -> str:
    """`<code>: <message> (<details>)`: what `sertakan outbox failed` shows."""
    reason = f"{exc.code}: {exc.message}"
    if exc.details and exc.details != exc.message:
        reason += f" ({exc.details})"
    return reason
