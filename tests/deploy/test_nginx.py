"""Issue 14 item 7: deploy/nginx is a valid site that serves the webhooks and keeps /metrics in.

Debian's nginx (installed by .ci/run when missing) checks the shipped site with
`nginx -t`, then serves it for real on free ports, with a self-signed
certificate made here, in front of the bot's health routes and a stand-in
webhook on 127.0.0.1. Skipped only where no nginx binary exists.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.launcher import NGINX, free_port, site_config
from bot.app import Runtime
from bot.health import add_health_routes
from tests.bot.test_health import runtime  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs it)"
)


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    assert NGINX is not None
    config = site_config(tmp_path, http=free_port(), https=free_port(), bot=free_port())
    checked = subprocess.run(
        [NGINX, "-t", "-c", str(config), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


#: X-Request-Id of each request the stand-in webhook received.
SEEN: list[str] = []


@pytest.fixture
async def bot_behind(runtime: Runtime) -> AsyncIterator[int]:  # noqa: F811
    """The health routes and a stand-in Telegram webhook on 127.0.0.1; yields the port."""
    seen = SEEN
    seen.clear()

    async def webhook(request: web.Request) -> web.Response:
        seen.append(request.headers.get("X-Request-Id", ""))
        return web.Response(text="committed")

    app = web.Application()
    add_health_routes(app, runtime)
    app.router.add_post("/telegram/webhook", webhook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def test_nginx_proxies_the_webhook_over_tls_and_keeps_metrics_inside(
    tmp_path: Path, bot_behind: int
) -> None:
    assert NGINX is not None
    http, https = free_port(), free_port()
    config = site_config(tmp_path, http=http, https=https, bot=bot_behind)
    nginx = await asyncio.create_subprocess_exec(
        NGINX, "-c", str(config), "-p", str(tmp_path), stderr=asyncio.subprocess.PIPE
    )
    tls = ssl.create_default_context(cafile=str(tmp_path / "fullchain.pem"))
    tls.check_hostname = False
    base = f"https://127.0.0.1:{https}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as client:
            for _ in range(100):  # nginx starting
                try:
                    async with client.get(f"{base}/healthz") as probe:
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            assert probe.status == 404
            async with client.post(f"{base}/telegram/webhook", json={}) as hook:
                assert (hook.status, await hook.text()) == (200, "committed")
                assert [hook.headers["X-Request-Id"]] == SEEN  # one id, given by nginx
            async with client.get(f"{base}/telegram/webhook") as wrong_method:
                assert wrong_method.status == 403
            for inside in ("/metrics", "/readyz", "/healthz", "/other"):
                async with client.get(f"{base}{inside}") as page:
                    assert page.status == 404, inside
            async with client.get(
                f"http://127.0.0.1:{http}/telegram/webhook", allow_redirects=False
            ) as plain:
                assert plain.status == 301
                assert plain.headers["Location"].startswith("https://")
        # The bot's own port still answers them (for Prometheus and the checks).
        async with (
            aiohttp.ClientSession() as direct,
            direct.get(f"http://127.0.0.1:{bot_behind}/metrics") as metrics,
        ):
            assert metrics.status == 200
            assert "sertakan_outbox_backlog" in await metrics.text()
    finally:
        nginx.terminate()
        await nginx.wait()
