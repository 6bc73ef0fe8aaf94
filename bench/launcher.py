"""A province on one machine: `sertakan run --workers N` behind Debian's nginx (tests, benches).

What DEPLOY.md tells a provincial IT office to run, started as real processes
with no root: the shipped nginx site (deploy/nginx, templated to free local
ports, a self-signed certificate and a temporary folder: `nginx -p <tmp> -c
<conf>`) in front of one supervisor, `python -m bot run --workers N`, whose N
children share WEB_PORT (SO_REUSEPORT). The bot talks to the fakes of the Bot
API (webhook mode) and of the Graph API over real HTTP, and to the given
PostgreSQL database.

Used by tests/deploy/test_province_cluster.py (the proof) and
bench/bench_cluster.py (1-3 processes, throughput and p99), and for the nginx
site alone by tests/deploy/test_nginx.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from storage.crypto import generate_key

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
WEBHOOK_SECRET = "province-webhook-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


def site_config(folder: Path, *, http: int, https: int, bot: int) -> Path:
    """The shipped site and local upstream, with this run's paths and ports, in an nginx.conf."""
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
        if shipped not in site:
            raise AssertionError(f"the shipped site no longer has {shipped!r}")
        site = site.replace(shipped, local)
    site = "\n".join(line for line in site.splitlines() if "[::]" not in line)
    (folder / "sertakan.conf").write_text(site)
    config = folder / "nginx.conf"
    config.write_text(
        f"daemon off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  client_body_temp_path {folder}/body;\n  proxy_temp_path {folder}/proxy;\n"
        f"  include {folder}/sertakan.conf;\n}}\n"
    )
    return config


def tls_for(folder: Path) -> ssl.SSLContext:
    """A client context trusting the site's self-signed certificate."""
    context = ssl.create_default_context(cafile=str(folder / "fullchain.pem"))
    context.check_hostname = False
    return context


def bot_environment(
    folder: Path,
    database_url: str,
    *,
    port: int,
    webhook_url: str,
    telegram: tuple[str, str] | None = None,
    whatsapp: dict[str, str] | None = None,
    **extra: str,
) -> dict[str, str]:
    """The bot's settings, environment only, as the systemd unit gives them.

    `telegram`: (token, api_base) of a (fake) Bot API, in webhook mode at
    `webhook_url`; `whatsapp`: WHATSAPP_* settings. No quiet hours (the proof
    runs at any hour), every planning run due from midnight.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("SERTAKAN_", "DATABASE_", "TELEGRAM_", "PROGRAM_", "WEB_", "WHATSAPP_", "DISPATCH_")
        )
    }
    env.update(
        SERTAKAN_ENV="production",
        SERTAKAN_NIK_KEY=generate_key(),
        SERTAKAN_DATA_DIR=str(folder),
        SERTAKAN_LOG_FORMAT="json",
        SERTAKAN_LOG_LEVEL="WARNING",
        DATABASE_URL=database_url,
        WEB_HOST="127.0.0.1",
        WEB_PORT=str(port),
        DISPATCH_QUIET_START="00:00",
        DISPATCH_QUIET_END="00:00",
        PROGRAM_REMINDER_TIME="00:00",
        PROGRAM_DIGEST_TIME="00:00",
    )
    if telegram is not None:
        token, api_base = telegram
        env.update(
            TELEGRAM_TOKEN=token,
            TELEGRAM_API_BASE=api_base,
            TELEGRAM_MODE="webhook",
            TELEGRAM_WEBHOOK_URL=webhook_url,
            TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
        )
    env.update(whatsapp or {})
    env.update(extra)
    return env


class Output:
    """A process's output (JSON log lines and others), read line by line as it comes."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.records: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(process))

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            text = line.decode(errors="replace").strip()
            if not text:
                continue
            self.raw.append(text)
            with contextlib.suppress(ValueError):
                self.records.append(json.loads(text))
            self._changed.set()

    async def wait_for(self, pattern: str, count: int = 1, within_s: float = 120) -> list[str]:
        """The first `count` messages matching `pattern`, waiting for them."""

        async def enough() -> list[str]:
            while True:
                found = [r["message"] for r in self.records if re.search(pattern, r["message"])]
                if len(found) >= count:
                    return found
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(enough(), within_s)

    async def close(self) -> None:
        await asyncio.wait_for(self._task, 30)


async def run_command(env: dict[str, str], *args: str) -> str:
    """`python -m bot <args>` with `env`, checked; its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        env=env,
        cwd=env["SERTAKAN_DATA_DIR"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"sertakan {' '.join(args)}: {output.decode(errors='replace')}")
    return output.decode(errors="replace")


async def wait_until_answers(url: str, within_s: float = 120, **options: Any) -> None:
    """GET `url` until it answers 200."""

    async def answered() -> None:
        async with aiohttp.ClientSession() as http:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url, **options) as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.2)

    await asyncio.wait_for(answered(), within_s)


class Nginx:
    """Debian's nginx serving the shipped site in `folder` (`nginx -p folder -c ...`)."""

    def __init__(self, folder: Path, bot_port: int) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed")
        self.folder = folder
        self.http = free_port()
        self.https = free_port()
        self.config = site_config(folder, http=self.http, https=self.https, bot=bot_port)
        self.base = f"https://127.0.0.1:{self.https}"
        self.tls = tls_for(folder)
        self._process: asyncio.subprocess.Process | None = None

    def check(self) -> subprocess.CompletedProcess[str]:
        assert NGINX is not None
        return subprocess.run(
            [NGINX, "-t", "-c", str(self.config), "-p", str(self.folder)],
            capture_output=True,
            text=True,
        )

    async def start(self) -> None:
        assert NGINX is not None
        self._process = await asyncio.create_subprocess_exec(
            NGINX, "-c", str(self.config), "-p", str(self.folder), stderr=asyncio.subprocess.PIPE
        )

        async def listening() -> None:
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", self.https)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                return

        await asyncio.wait_for(listening(), 30)

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            await asyncio.wait_for(self._process.wait(), 30)


class Province:
    """`sertakan run --workers N` (a supervisor and its N children) with `env`, on its port."""

    def __init__(self, env: dict[str, str], workers: int, *, wrapper: tuple[str, ...] = ()) -> None:
        """`wrapper`: module and arguments that run `bot` (`python -m <wrapper...> bot run ...`),
        e.g. ("bench.profiled", folder) to profile a one-process province."""
        self.env = env
        self.workers = workers
        self.wrapper = wrapper
        self.port = int(env["WEB_PORT"])
        self.direct = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.output: Output | None = None

    async def start(self, within_s: float = 120) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            *self.wrapper,
            "bot",
            "run",
            "--workers",
            str(self.workers),
            env=self.env,
            cwd=self.env["SERTAKAN_DATA_DIR"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.output = Output(self.process)
        await self.wait_children(within_s)

    def children(self) -> list[int]:
        """The supervisor's bot processes now (Linux: /proc/<pid>/task/<pid>/children)."""
        assert self.process is not None
        pid = self.process.pid
        with contextlib.suppress(FileNotFoundError):
            listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            return sorted(int(child) for child in listed)
        return []

    async def wait_children(self, within_s: float = 120) -> None:
        """Until N children run and the port answers /readyz."""

        async def started() -> None:
            while len(self.children()) < self.workers:
                if self.process is not None and self.process.returncode is not None:
                    raise RuntimeError("the supervisor ended:\n" + self.log_tail())
                await asyncio.sleep(0.1)

        await asyncio.wait_for(started(), within_s)
        await wait_until_answers(f"{self.direct}/readyz", within_s)

    def kill(self, pid: int) -> None:
        """SIGKILL one child (the supervisor starts another, as systemd's unit would)."""
        os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.raw[-lines:]) if self.output is not None else ""

    async def stop(self) -> int | None:
        """SIGTERM to the supervisor (it stops every child); its exit code."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 90)
        if self.output is not None:
            await self.output.close()
        return self.process.returncode
