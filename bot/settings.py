"""All configuration, read once from the environment (and an optional .env file).

Built in the composition root (`bot.app`) and passed down; no other module reads
`os.environ`. Each group reads its own prefix, e.g. `TELEGRAM_TOKEN`,
`DATABASE_URL`, `PROGRAM_MAX_AGE`.
"""

from __future__ import annotations

import ipaddress
from datetime import time
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.vocabulary import Language
from sertakan_data import data_file


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class TelegramMode(StrEnum):
    POLLING = "polling"
    WEBHOOK = "webhook"


def _group(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore")


class AppSettings(BaseSettings):
    model_config = _group("SERTAKAN_")

    env: Environment = Environment.DEVELOPMENT
    #: Folder for the SQLite database and the development NIK key file.
    data_dir: Path = Path("data")
    #: 32-byte key, urlsafe base64, or a key ring (`id=key` entries and
    #: `index=key`, comma-separated; see storage.crypto.KeyRing). In production
    #: this or nik_key_file is required; in development a key file is generated
    #: in data_dir on first start.
    nik_key: SecretStr | None = None
    #: A key ring file (0600) read when nik_key is unset, and read again when it
    #: changes; `sertakan key rotate` and `retire` rewrite it. Unset: data_dir/nik.key.
    nik_key_file: Path | None = None
    default_language: Language = Language.INDONESIAN
    #: The province's time zone (WIB Asia/Jakarta, WITA Asia/Makassar, WIT Asia/Jayapura).
    timezone: str = "Asia/Jakarta"
    log_level: str = "INFO"
    #: `json`: one JSON object per line (time, level, logger, message, request_id,
    #: update_id) for a log collector; `text`: one readable line.
    log_format: LogFormat = LogFormat.TEXT
    #: OPD list loaded on the console's first run when the database has none
    #: (unset: the shipped Bengkulu list, see `Settings.data_file`).
    opd_seed_file: Path | None = None
    #: A folder whose files replace the shipped reference data of the same name
    #: (tariff_bpu.csv, holidays_id.csv, opd_bengkulu.csv, whatsapp_templates.json);
    #: a file it lacks stays the shipped one. A file's own setting wins over it.
    reference_dir: Path | None = None
    #: Inbound update ids are kept this long for deduplication (Meta retries for days).
    processed_update_retention_days: int = Field(30, ge=8)
    #: Sent and failed notices, handled WhatsApp journal rows, processed update ids
    #: and parked updates are deleted after this many days (UU PDP No. 27/2022:
    #: kept no longer than needed). At least 45: a notice's dedupe key must outlive
    #: the month a reminder phase may plan it again.
    retention_days: int = Field(90, ge=45)


class DatabaseSettings(BaseSettings):
    model_config = _group("DATABASE_")

    #: Empty means SQLite in data_dir (sertakan.db).
    url: str = ""
    #: Run Alembic upgrade to head on `sertakan run` / `sertakan console`.
    auto_migrate: bool = True
    #: SQLite busy timeout in milliseconds.
    sqlite_busy_timeout_ms: int = 5000
    #: At start-up, a database that refuses connections or is locked is tried again with
    #: back-off for up to this many seconds (of waiting) before the process gives up.
    startup_retry_s: float = Field(60.0, ge=0)
    echo: bool = False


class ProgramSettings(BaseSettings):
    model_config = _group("PROGRAM_")

    min_age: int = Field(15, ge=0, le=120)
    max_age: int = Field(65, ge=0, le=120)
    max_workers_per_asn: int = Field(5, ge=1)
    #: A flow untouched this long is parked as a draft and offered for resumption.
    draft_idle_minutes: int = Field(30, ge=1)
    #: The dated tariff table (effective_from,effective_until,jkk_per_mille,jkm,...);
    #: unset: the shipped one (see `Settings.data_file`); a path that does not exist:
    #: the built-in PP 44/2015 tariff.
    tariff_file: Path | None = None
    #: Months after the current one that may be paid ahead.
    max_months_ahead: int = Field(12, ge=0, le=24)
    #: Offer the 6- and 12-month prepayment plans (PRODUCT 3: "may be allowed by configuration").
    allow_semiannual: bool = False
    allow_annual: bool = False
    #: Local time at which dues reminders are planned each day (sent from 08:00).
    reminder_time: time = time(6, 0)
    #: Local time (SERTAKAN_TIMEZONE) of the PIC's daily digest, on working days.
    digest_time: time = time(8, 0)
    #: National holidays and collective leave (date,name[,kind]); Monday to Friday
    #: minus these are working days (digest days, and due dates later). Unset: the
    #: shipped list (see `Settings.data_file`).
    holidays_file: Path | None = None
    #: Where BPJS dues are paid (name,how_id[,name_en,how_en]): shown in info, at /bayar
    #: and in reminders; a province edits it. Unset: the shipped list.
    payment_channels_file: Path | None = None
    #: The PIC may accept an enrollment whose worker has not consented (PRODUCT 4.6: no).
    accept_without_consent: bool = False
    #: Days a Telegram consent link (t.me/<bot>?start=...) the ASN forwards stays valid.
    consent_link_days: int = Field(14, ge=1, le=90)
    #: The collective file's columns (header,source,width): edit to match the BPJS
    #: branch's BPU collective template. Unset: the shipped map; missing: the built-in default.
    collective_columns_file: Path | None = None
    #: Coverage targets in protected workers (opd_code,target_workers; a TOTAL line for
    #: the province): the coverage page's progress. Unset: the shipped file (see
    #: `Settings.data_file`).
    coverage_targets_file: Path | None = None
    #: The coverage page shows figures at most this old (seconds), read again in the
    #: background when older (`storage.coverage_cache`); 0: read on every request.
    coverage_max_age_s: float = Field(60.0, ge=0)


class TelegramSettings(BaseSettings):
    model_config = _group("TELEGRAM_")

    token: SecretStr | None = None
    #: The bot's @username without "@": for invite links t.me/<username>?start=<code>.
    bot_username: str = ""
    #: Base URL of the Bot API server: a self-hosted server or the tests' fake.
    api_base: str = "https://api.telegram.org"
    mode: TelegramMode = TelegramMode.POLLING
    #: Public HTTPS URL Telegram posts updates to (webhook mode).
    webhook_url: str = ""
    #: Checked against X-Telegram-Bot-Api-Secret-Token on every webhook request.
    webhook_secret: SecretStr | None = None
    webhook_path: str = "/telegram/webhook"
    polling_timeout_s: int = Field(25, ge=0, le=50)
    #: After this many failed attempts an update is parked (failed_update) and the
    #: bot moves on, so one broken update cannot stall everyone behind it.
    max_update_attempts: int = Field(5, ge=1)
    #: Documents larger than this are not downloaded (the engine is told the file
    #: is too large). The Bot API serves downloads up to 20 MB.
    max_file_bytes: int = Field(10 * 1024 * 1024, ge=1, le=20 * 1024 * 1024)


class WhatsAppSettings(BaseSettings):
    """The WhatsApp Cloud API channel (bot/whatsapp/), env prefix WHATSAPP_.

    The channel runs when `phone_number_id` and `access_token` are set; the
    webhook then needs `app_secret` (X-Hub-Signature-256) and `verify_token`
    (the GET handshake).
    """

    model_config = _group("WHATSAPP_")

    phone_number_id: str = ""
    access_token: SecretStr | None = None
    #: The Meta app's secret: every webhook POST must carry its HMAC-SHA256 of the body.
    app_secret: SecretStr | None = None
    #: Echoed back in the GET verification handshake when it matches hub.verify_token.
    verify_token: SecretStr | None = None
    #: Graph API base URL without the version: a BSP's proxy or the tests' fake.
    api_base: str = "https://graph.facebook.com"
    #: Graph API version, as in https://graph.facebook.com/v<version>/.
    api_version: str = "24.0"
    webhook_path: str = "/whatsapp/webhook"
    #: Webhook bodies above this are refused (413) before they are read. Meta's
    #: own payloads are a few kilobytes.
    max_body_bytes: int = Field(1024 * 1024, ge=16 * 1024, le=16 * 1024 * 1024)
    #: Proactive message kinds -> approved template name, language and parameters.
    #: Unset: the shipped file (see `Settings.data_file`).
    templates_file: Path | None = None
    #: Documents larger than this are not downloaded (the engine is told).
    max_file_bytes: int = Field(10 * 1024 * 1024, ge=1, le=100 * 1024 * 1024)
    #: After this many failed attempts an inbound message is parked (failed_update).
    max_update_attempts: int = Field(5, ge=1)
    #: Messages whose WhatsApp `timestamp` is older than this are acknowledged and dropped
    #: (a signed body replayed weeks later is not applied today). 24 h: WhatsApp's reply
    #: window; after a longer outage of ours, Meta's late redeliveries are dropped too.
    max_message_age_s: float = Field(24 * 3600.0, ge=60)
    #: A person's messages wait until this long after the newest of them arrived, and are
    #: then applied in WhatsApp's `timestamp` order: two answers typed quickly and
    #: delivered out of order are not swapped. Adds up to this much to every reply.
    order_hold_s: float = Field(1.0, ge=0, le=30)

    @property
    def enabled(self) -> bool:
        return bool(self.phone_number_id) and self.access_token is not None


class DispatcherSettings(BaseSettings):
    """The outbox dispatcher (scheduler/dispatcher.py), env prefix DISPATCH_."""

    model_config = _group("DISPATCH_")

    #: Telegram messages per second for the whole bot: all chats, notices and replies,
    #: all processes together (shared through PostgreSQL; storage/send_budget.py).
    #: The Bot API allows about 30.
    telegram_rate_per_s: float = Field(30.0, gt=0, le=1000)
    #: At most one notice per this many seconds to one Telegram chat.
    telegram_chat_interval_s: float = Field(1.0, ge=0)
    #: WhatsApp messages per second from our number, notices and replies, all processes
    #: together (Cloud API: 80 by default).
    whatsapp_rate_per_s: float = Field(70.0, gt=0, le=1000)
    #: At most one message per this many seconds to one WhatsApp user (Meta's pair rate limit).
    whatsapp_chat_interval_s: float = Field(6.0, ge=0)
    #: Rows claimed per tick; with `tick_interval_s` it bounds the throughput
    #: (150 rows every 2 s = 75/s: above WhatsApp's 70/s), so keep it >= rate * interval.
    batch_size: int = Field(150, ge=1, le=10_000)
    #: A claim holds its rows this long; after it a crashed dispatcher's rows are
    #: sent by another. Must exceed one batch's sending time.
    lease_s: float = Field(300.0, ge=10)
    #: Sends tried before a row with transient errors ends in `failed`.
    max_attempts: int = Field(8, ge=1)
    #: Back-off after the first transient failure, doubling per attempt, up to the cap.
    backoff_first_s: float = Field(30.0, gt=0)
    backoff_cap_s: float = Field(3600.0, gt=0)
    #: Quiet hours, local time in SERTAKAN_TIMEZONE: nothing proactive is sent
    #: from `quiet_start` to `quiet_end` (equal values: no quiet hours).
    quiet_start: time = time(21, 0)
    quiet_end: time = time(7, 0)
    #: How often the scheduler runs a dispatcher tick.
    tick_interval_s: float = Field(2.0, gt=0)
    #: `Dispatcher.run` waits this long after a tick that found less than a full batch.
    idle_s: float = Field(1.0, gt=0)
    #: Share of each rate left unused: sends are paced on their start, and the margin
    #: absorbs the jitter of their arrival at the platform (0.04: 96 % of the rate).
    rate_margin: float = Field(0.04, ge=0, lt=0.5)


class ReplySettings(BaseSettings):
    """Replies to people (bot/delivery.py), env prefix REPLY_."""

    model_config = _group("REPLY_")

    #: First retry of a reply the platform refused (5xx, timeout, 429 without a
    #: wait); doubles per attempt up to the cap.
    retry_first_s: float = Field(1.0, gt=0)
    retry_cap_s: float = Field(60.0, gt=0)
    #: A reply still undelivered after this long is dropped (logged). WhatsApp
    #: refuses free text after 24 hours anyway.
    max_age_hours: float = Field(24.0, gt=0)
    #: A process holds a reply it works on this long before another may take it over
    #: (after a crash, replies wait at most this long).
    lease_s: float = Field(30.0, ge=1)
    #: One send (a message, a document upload) taking longer counts as failed and is
    #: retried. Telegram answers in well under a second.
    send_timeout_s: float = Field(20.0, gt=0)


class PlannerSettings(BaseSettings):
    """The daily planning runs (scheduler/planning.py), env prefix PLANNER_."""

    model_config = _group("PLANNER_")

    #: Run the dues reminder planner in a child process with its own database
    #: connection, so chats are answered while it plans. Off: on the bot's event
    #: loop (an in-memory SQLite database always is).
    off_loop: bool = True
    #: Sponsorships per page of the reminder planner, each page one transaction.
    chunk_size: int = Field(5000, ge=100, le=100_000)
    #: PostgreSQL: pages of the reminder planner planned at once, each on a connection
    #: of its own (SQLite ignores it: one writer). 2 puts a second core of the database
    #: server to work: at 1.44 M sponsorships the first run took 1.7-1.9x less time,
    #: while chats answered meanwhile had a slower median (docs/BENCHMARKS.md 14).
    pages_in_flight: int = Field(1, ge=1, le=8)
    #: A planning run holds its lease this long past its last page; a run whose
    #: process died is taken over by another process after it. Must exceed one page's time.
    lease_s: float = Field(120.0, ge=10)
    #: How often each process looks for a due planning run not done yet.
    tick_s: float = Field(60.0, ge=1)


class WebSettings(BaseSettings):
    model_config = _group("WEB_")

    host: str = "127.0.0.1"
    port: int = 8080
    #: The address people open, when a reverse proxy is in front ("https://sertakan.example.go.id");
    #: empty: http://WEB_HOST:WEB_PORT. An https address makes the session cookie Secure.
    base_url: str = ""
    #: A web session ends after this long without a request.
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    #: Sign-in attempts one address may make per minute (the rest get 429), counted in the
    #: database: the limit holds for all processes together.
    sign_in_per_minute: int = Field(default=10, ge=1)
    #: Peers whose X-Forwarded-For names the client (the reverse proxy): addresses or
    #: networks ("172.16.0.0/12"), comma-separated. Loopback by default: nginx on the same
    #: machine (deploy/nginx). Empty: the header is never believed.
    trusted_proxies: str = "127.0.0.1,::1"
    #: Largest KPJ file accepted on the web, in MiB (the Bot API's download limit is 20).
    max_upload_mb: int = Field(default=20, ge=1, le=64)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in value.split(","):
            if item.strip():
                ipaddress.ip_network(item.strip(), strict=False)  # ValueError: not one
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(
            ipaddress.ip_network(item.strip(), strict=False)
            for item in self.trusted_proxies.split(",")
            if item.strip()
        )

    @property
    def public_url(self) -> str:
        """Where the web workbench is reached, without a trailing slash."""
        if self.base_url.strip():
            return self.base_url.strip().rstrip("/")
        return f"http://{self.host}:{self.port}"

    #: Processes serving the web server on one port (`sertakan run --workers`, which wins);
    #: webhook mode and PostgreSQL only. 1: this process alone.
    workers: int = Field(1, ge=1, le=64)
    #: Serve /metrics (Prometheus text). Keep it off the public site (deploy/nginx).
    metrics_enabled: bool = True
    #: /readyz fails when an outbox notice has been due (outside quiet hours) this long.
    ready_outbox_stuck_minutes: float = Field(30.0, gt=0)
    #: /readyz and /metrics read the database at most once per this many seconds.
    ready_cache_s: float = Field(2.0, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app: AppSettings = Field(default_factory=AppSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    program: ProgramSettings = Field(default_factory=ProgramSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    whatsapp: WhatsAppSettings = Field(default_factory=WhatsAppSettings)
    dispatch: DispatcherSettings = Field(default_factory=DispatcherSettings)
    planner: PlannerSettings = Field(default_factory=PlannerSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    reply: ReplySettings = Field(default_factory=ReplySettings)

    def data_file(self, name: str, configured: Path | None) -> Path:
        """The reference data file `name` (a `sertakan_data` constant) to read: `configured`
        (its own setting, e.g. `program.tariff_file`) when set, else the copy in
        SERTAKAN_REFERENCE_DIR when there is one, else the one shipped in the package."""
        return data_file(name, configured=configured, override_dir=self.app.reference_dir)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.app.data_dir / 'sertakan.db').as_posix()}"
