"""The web server's access log without query strings, and the runner that uses it.

aiohttp's default access log prints the request line, query included, and
Meta's verification GET carries `hub.verify_token` in its query: the token
would sit in every log. `PathAccessLogger` logs the path alone; the referer
(another URL that may carry a query) is left out for the same reason.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from bot.log_context import REQUEST_ID_HEADER


class PathAccessLogger(AbstractAccessLogger):
    """One INFO line per request: peer, method, path (no query), status, size, seconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%s.%s" %s %s %.3fs "%s"',
            request.remote,
            request.method,
            request.path,
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time,
            request.headers.get("User-Agent", "-"),
            # Written after the request's own context ended: its id comes from the response.
            extra={"request_id": response.headers.get(REQUEST_ID_HEADER)},
        )


def app_runner(app: web.Application) -> web.AppRunner:
    """The runner for our web server: `app` with the query-free access log."""
    return web.AppRunner(app, access_log_class=PathAccessLogger)
