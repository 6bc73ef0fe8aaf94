"""All configuration, read once from the environment (and an optional .env file).

Built in the composition root (`bot.app`) and passed down; no other module reads
`os.environ`. Each group reads its own prefix, e.g. `TELEGRAM_TOKEN`,
`DATABASE_URL`, `PROGRAM_MAX_AGE`.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.vocabulary import Language


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


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
    #: 32-byte key, urlsafe base64. Required in production; in development a key
    #: file is generated in data_dir on first start.
    nik_key: SecretStr | None = None
    default_language: Language = Language.INDONESIAN
    #: The province's time zone (WIB Asia/Jakarta, WITA Asia/Makassar, WIT Asia/Jayapura).
    timezone: str = "Asia/Jakarta"
    log_level: str = "INFO"
    #: OPD list loaded on the console's first run when the database has none.
    opd_seed_file: Path = Path("data/opd_bengkulu.csv")
    #: Inbound update ids are kept this long for deduplication (Meta retries for days).
    processed_update_retention_days: int = Field(30, ge=8)


class DatabaseSettings(BaseSettings):
    model_config = _group("DATABASE_")

    #: Empty means SQLite in data_dir (sertakan.db).
    url: str = ""
    #: Run Alembic upgrade to head on `sertakan run` / `sertakan console`.
    auto_migrate: bool = True
    #: SQLite busy timeout in milliseconds.
    sqlite_busy_timeout_ms: int = 5000
    echo: bool = False


class ProgramSettings(BaseSettings):
    model_config = _group("PROGRAM_")

    min_age: int = Field(15, ge=0, le=120)
    max_age: int = Field(65, ge=0, le=120)
    max_workers_per_asn: int = Field(5, ge=1)
    #: A flow untouched this long is parked as a draft and offered for resumption.
    draft_idle_minutes: int = Field(30, ge=1)


class TelegramSettings(BaseSettings):
    model_config = _group("TELEGRAM_")

    token: SecretStr | None = None
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


class WebSettings(BaseSettings):
    model_config = _group("WEB_")

    host: str = "127.0.0.1"
    port: int = 8080


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    app: AppSettings = Field(default_factory=AppSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    program: ProgramSettings = Field(default_factory=ProgramSettings)
    telegram: TelegramSettings = Field(default_factory=TelegramSettings)
    web: WebSettings = Field(default_factory=WebSettings)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.app.data_dir / 'sertakan.db').as_posix()}"
