"""Issue 14 item 7: deploy/nginx is a valid site that serves the webhooks and keeps /metrics in.

Debian's nginx (installed by .ci/run when missing) checks the shipped site with
`nginx -t`, then serves it for real on free ports, with a self-signed
certificate made here, in front of the bot's health routes and a stand-in
webhook on 127.0.0.1. Skipped only where no nginx binary exists.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bot.app import Runtime
from bot.health import add_health_routes
from tests.bot.test_health import runtime  # noqa: F401  (the fixture)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs it)"
)


def self_signed(folder: Path) -> None:
    """fullchain.pem and privkey.pem for localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (folder / "fullchain.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def site_config(folder: Path, *, http: int, https: int, bot: int) -> Path:
    """The shipped site and local upstream, with this test's paths and ports, in an nginx.conf."""
    self_signed(folder)
    upstream = (DEPLOY / "nginx" / "upstream-local.conf").read_text()
    (folder / "upstream.conf").write_text(upstream.replace("127.0.0.1:8080", f"127.0.0.1:{bot}"))
    site = (DEPLOY / "nginx" / "sertakan.conf").read_text()
    for shipped, local in {
        "/etc/nginx/sertakan/upstream.conf": str(folder / "upstream.conf"),
        "/etc/ssl/sertakan/": f"{folder}/",
        "/var/log/nginx/": f"{folder}/",
        "listen 80;": f"listen 127.0.0.1:{http};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
    }.items():
        assert shipped in site, shipped
        site = site.replace(shipped, local)
    site = "\n".join(line for line in site.splitlines() if "[::]" not in line)
    (folder / "sertakan.conf").write_text(site)
    config = folder / "nginx.conf"
    config.write_text(
        f"daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log;\n"
        "events {}\n"
        f"http {{\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  include {folder}/sertakan.conf;\n}}\n"
    )
    return config


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
