"""The web workbench's sign-in link, asked for in the chat ("/web", the PIC menu).

A PIC, a program leader or an administrator's chat account gets a one-time link
(storage.web_access: ten minutes, used once, bound to this account); anybody
else is told the web pages are for staff.
"""

from __future__ import annotations

from handlers import menus
from handlers.context import Context
from handlers.types import Reply
from storage.web_access import LINK_TTL, account_principal, issue_link, principal_access

#: The path the link opens (bot.web serves it).
SIGN_IN_PATH = "/web/signin"


async def web_link(ctx: Context) -> list[Reply]:
    """A fresh sign-in link for the person's web role, or why there is none."""
    connection = ctx.repo.connection
    if ctx.repo.has_session:
        await ctx.repo.session.flush()
    principal = await account_principal(connection, ctx.account.id, now=ctx.now)
    access = (
        None if principal is None else await principal_access(connection, principal, now=ctx.now)
    )
    if principal is None or access is None:
        return [Reply(ctx.t("web.link.not_staff")), await menus.main_menu(ctx)]
    token = await issue_link(connection, principal, actor=access.actor, now=ctx.now)
    url = f"{ctx.config.web_base_url.rstrip('/')}{SIGN_IN_PATH}?t={token}"
    minutes = int(LINK_TTL.total_seconds() // 60)
    # The link, then a way on in the chat (PRODUCT 4: no screen without options).
    return [Reply(ctx.t("web.link.sent", url=url, minutes=minutes)), await menus.main_menu(ctx)]
