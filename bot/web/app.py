"""The web workbench's server side: sign-in, sessions, CSRF, language, scope (issue 13).

`add_web_routes(app, parts)` mounts everything under /web on the process's one
aiohttp application (the webhooks' server). Every request:

1. finds its session from the HttpOnly cookie (server-side row, idle expiry)
   and derives the person's role again from their account (`Access`): a PIC
   removed since sign-in is signed out, a PIC's OPD is always their current one;
2. for a POST, checks the session's CSRF token (form field `csrf` or header
   `X-CSRF-Token`) and refuses a program leader (read only);
3. runs the page, which opens its own transaction and calls the same storage
   functions as the chat.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from enum import StrEnum
from functools import cache
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.settings import WebSettings
from domain.local_time import format_local
from domain.vocabulary import Language
from handlers.engine import Clock, Engine
from handlers.i18n import Catalogs, Translator
from storage import audit, web_access
from storage.coverage_cache import CoverageCache
from storage.crypto import NikCipher
from storage.models import Opd
from storage.web_access import Access, LinkProblem, SessionInfo, WebRole

if TYPE_CHECKING:
    import jinja2

#: The session cookie (its value is a random token; the row holds the rest).
COOKIE = "sertakan_web"
PREFIX = "/web"
STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ReceiptProblem(StrEnum):
    """Why a receipt is not shown; each has its page message `web.payments.receipt_<value>`."""

    #: Not reachable now (the channel is not configured here, or it failed): try later.
    UNAVAILABLE = "unavailable"
    #: The platform no longer holds it (WhatsApp deletes media after a while).
    GONE = "gone"
    #: Larger than `MAX_RECEIPT_BYTES`.
    TOO_LARGE = "too_large"


#: Receipts larger than this are not shown (a photo of a slip is a few hundred KB).
MAX_RECEIPT_BYTES = 10 << 20


class ReceiptSource:
    """Fetches a payment receipt's bytes from the channel that holds it. This base holds
    none (the console, or no channel configured)."""

    async def fetch(self, channel: str, file_ref: str) -> tuple[bytes, str] | ReceiptProblem | None:
        """(bytes, content type) of the file, or why not; None: not this source's channel
        (said as `ReceiptProblem.UNAVAILABLE`)."""
        return None


@dataclasses.dataclass(slots=True, frozen=True)
class WebParts:
    """What the pages need, built once by the composition root."""

    database: AsyncEngine
    engine: Engine
    catalogs: Catalogs
    cipher: NikCipher
    clock: Clock
    settings: WebSettings
    receipts: ReceiptSource = dataclasses.field(default_factory=ReceiptSource)
    #: The coverage page's figures (None: no coverage page).
    coverage: CoverageCache | None = None


PARTS = web.AppKey("sertakan_web_parts", WebParts)


@dataclasses.dataclass(slots=True)
class Visit:
    """One request's signed-in person: their session, what they may do, their language."""

    session: SessionInfo
    access: Access
    t: Translator

    @property
    def csrf(self) -> str:
        return self.session.csrf_token


VISIT = web.RequestKey("sertakan_visit", Visit)


def client_address(
    request: web.Request, trusted_proxies: Sequence[IPv4Network | IPv6Network]
) -> str:
    """The address a request came from: the peer's, or behind a trusted reverse proxy
    (WEB_TRUSTED_PROXIES) the last address it put in X-Forwarded-For (the one it saw;
    earlier entries are the client's own claim)."""
    peer = request.remote or "-"
    try:
        trusted = any(ipaddress.ip_address(peer) in network for network in trusted_proxies)
    except ValueError:  # not an address (a Unix socket's peer)
        trusted = False
    if trusted:
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if forwarded:
            return forwarded[:64]
    return peer


def translator(parts: WebParts, language: str | None) -> Translator:
    try:
        chosen = Language(language or parts.engine.config.default_language.value)
    except ValueError:
        chosen = Language.INDONESIAN
    return parts.catalogs.translator(chosen)


def see_other(location: str) -> web.Response:
    """303 See Other: after a POST, the browser GETs `location`."""
    return web.Response(status=303, headers={"Location": location})


def parts_of(request: web.Request) -> WebParts:
    return request.app[PARTS]


def visit_of(request: web.Request) -> Visit:
    visit = request.get(VISIT)
    if not isinstance(visit, Visit):
        raise web.HTTPFound(f"{PREFIX}/signin")
    return visit


def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    """A page in the person's language, with what every page's layout needs."""
    visit = request.get(VISIT)
    t = visit.t if isinstance(visit, Visit) else translator(parts_of(request), _lang_query(request))
    zone = parts_of(request).engine.config.timezone
    full = {
        "t": t,
        "visit": visit,
        "prefix": PREFIX,
        "path": request.path,
        "roles": WebRole,
        "when": lambda moment: format_local(moment, zone),
        "notices": (),
        "problem": None,
        "token": None,
        "lang": None,
        **context,
    }
    text = _templates().get_template(template).render(full)
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


@cache
def _templates() -> jinja2.Environment:
    """The pages' Jinja2 environment, built on the first page: jinja2 (1.3 MB) stays out
    of a bot that serves no page (the running bot's webhooks, health and metrics)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _lang_query(request: web.Request) -> str | None:
    lang = request.query.get("lang")
    return lang if lang in {item.value for item in Language} else None


def refuse(request: web.Request, status: int, key: str) -> web.Response:
    """An error page (404 for a record outside the person's scope, 403 for a refused
    action) saying why in their language."""
    visit = request.get(VISIT)
    t = visit.t if isinstance(visit, Visit) else translator(parts_of(request), None)
    return render(request, "message.html", {"message": t(key)}, status=status)


async def scoped_opd(
    request: web.Request, connection: AsyncConnection, *, chosen: str | None
) -> tuple[int, str] | None:
    """The OPD a page works on: a PIC's own (whatever was asked), or for a leader or an
    administrator the one they chose (None: they must choose)."""
    access = visit_of(request).access
    if access.pic is not None:
        return access.pic.opd_id, access.pic.opd_name
    if not chosen or not chosen.isascii() or not chosen.isdigit() or len(chosen) > 9:
        return None
    row = (await connection.execute(select(Opd.id, Opd.name).where(Opd.id == int(chosen)))).first()
    return (int(row[0]), str(row[1])) if row is not None else None


async def opd_choices(connection: AsyncConnection) -> list[tuple[int, str]]:
    rows = await connection.execute(
        select(Opd.id, Opd.name).where(Opd.active.is_(True)).order_by(Opd.name)
    )
    return [(int(i), str(n)) for i, n in rows]


# -- the middleware ------------------------------------------------------------------------

_PUBLIC = {f"{PREFIX}/signin"}
#: POSTs a read-only leader may still make (their own session, not the program's data).
_OWN_SESSION_POSTS = {f"{PREFIX}/signout", f"{PREFIX}/language"}


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in _PUBLIC or request.path.startswith(f"{PREFIX}/static/"):
        return await handler(request)
    parts = parts_of(request)
    token = request.cookies.get(COOKIE)
    visit: Visit | None = None
    if token:
        now = parts.clock()
        async with parts.database.begin() as connection:
            session = await web_access.session_for(
                connection,
                token,
                now=now,
                idle=timedelta(minutes=parts.settings.session_idle_minutes),
            )
            access = None
            if session is not None:
                access = await web_access.principal_access(connection, session.principal, now=now)
                if access is None:
                    # The role behind it ended (a PIC removed): the session ends too.
                    await web_access.end_session(connection, session.id, now=now)
        if session is not None and access is not None:
            visit = Visit(session, access, translator(parts, session.language))
    if visit is None:
        if request.method == "POST" or request.headers.get("HX-Request"):
            return refuse(request, 401, "web.signed_out")
        return render(request, "signin.html", {"problem": "web.signed_out"}, status=401)
    request[VISIT] = visit
    if request.method == "POST":
        if not await _csrf_ok(request, visit):
            return refuse(request, 403, "web.csrf_refused")
        if visit.access.read_only and request.path not in _OWN_SESSION_POSTS:
            return refuse(request, 403, "web.read_only")
    response = await handler(request)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'",
    )
    return response


async def _csrf_ok(request: web.Request, visit: Visit) -> bool:
    sent = request.headers.get("X-CSRF-Token") or request.query.get("csrf")
    if sent is None and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        value = form.get("csrf")
        sent = value if isinstance(value, str) else None
    return sent is not None and hmac.compare_digest(sent.encode(), visit.csrf.encode())


# -- sign-in and out -------------------------------------------------------------------------


async def sign_in_page(request: web.Request) -> web.Response:
    """The link from the bot opens this page; its button spends the token. (A GET must not
    spend it: link previews and mail scanners fetch links.)"""
    token = request.query.get("t", "")
    return render(request, "signin.html", {"token": token[:100], "lang": _lang_query(request)})


async def sign_in(request: web.Request) -> web.StreamResponse:
    parts = parts_of(request)
    address = client_address(request, parts.settings.trusted_proxy_networks)
    async with parts.database.begin() as connection:
        allowed = await web_access.sign_in_allowed(
            connection, address, per_window=parts.settings.sign_in_per_minute, now=parts.clock()
        )
    if not allowed:
        return render(request, "signin.html", {"problem": "web.signin.too_many"}, status=429)
    form = await request.post()
    token = form.get("t")
    language = form.get("lang")
    if not isinstance(token, str) or not token or len(token) > 100:
        return render(request, "signin.html", {"problem": "web.signin.unknown"}, status=400)
    now = parts.clock()
    async with parts.database.begin() as connection:
        outcome = await web_access.redeem_link(connection, token, now=now)
        if isinstance(outcome, LinkProblem):
            problem = outcome
        else:
            lang = language if isinstance(language, str) else None
            cookie = await web_access.open_session(
                connection, outcome, language=translator(parts, lang).language.value, now=now
            )
            access = await web_access.principal_access(connection, outcome, now=now)
            assert access is not None  # redeem_link checked it in this transaction
            await audit.record(
                connection,
                access.actor,
                "web.sign_in",
                record_type="web_session",
                record_id=None,
                opd_id=access.pic.opd_id if access.pic is not None else None,
                now=now,
                details={"role": access.role.value},
            )
    if isinstance(outcome, LinkProblem):
        return render(
            request, "signin.html", {"problem": f"web.signin.{problem.value}"}, status=403
        )
    response = see_other(f"{PREFIX}/")
    response.set_cookie(
        COOKIE,
        cookie,
        httponly=True,
        samesite="Strict",
        secure=parts.settings.public_url.startswith("https://"),
        path=PREFIX,
    )
    return response


async def sign_out(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    parts = parts_of(request)
    async with parts.database.begin() as connection:
        await web_access.end_session(connection, visit.session.id, now=parts.clock())
    response = render(request, "signin.html", {"problem": "web.signed_out_now"})
    response.del_cookie(COOKIE, path=PREFIX)
    return response


async def choose_language(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    form = await request.post()
    language = form.get("lang")
    if language not in {item.value for item in Language}:
        return refuse(request, 400, "web.bad_request")
    parts = parts_of(request)
    async with parts.database.begin() as connection:
        await web_access.set_language(connection, visit.session.id, str(language))
    back = form.get("back")
    target = back if isinstance(back, str) and back.startswith(f"{PREFIX}/") else f"{PREFIX}/"
    return see_other(target)


async def home(request: web.Request) -> web.StreamResponse:
    visit = visit_of(request)
    if visit.access.role is WebRole.PIC:
        return see_other(f"{PREFIX}/queue")
    return see_other(f"{PREFIX}/coverage")


def add_web_routes(app: web.Application, parts: WebParts) -> None:
    """Mount the web workbench under /web on `app` (the process's one web server)."""
    from bot.web import coverage_page, pages

    sub = web.Application(middlewares=[_guard])
    sub[PARTS] = parts
    sub.router.add_get("/", home)
    sub.router.add_get("/signin", sign_in_page)
    sub.router.add_post("/signin", sign_in)
    sub.router.add_post("/signout", sign_out)
    sub.router.add_post("/language", choose_language)
    sub.router.add_static("/static", STATIC_DIR)
    pages.add_routes(sub)
    coverage_page.add_routes(sub)
    app.add_subapp(PREFIX, sub)


def web_parts(runtime: Any, receipts: ReceiptSource | None = None) -> WebParts:
    """The pages' parts from the process's `bot.app.Runtime`."""
    from bot.app import coverage_cache

    return WebParts(
        database=runtime.db,
        engine=runtime.engine,
        catalogs=runtime.catalogs,
        cipher=runtime.cipher,
        clock=runtime.clock,
        settings=runtime.settings.web,
        receipts=receipts or ReceiptSource(),
        coverage=coverage_cache(runtime),
    )
