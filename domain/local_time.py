"""Moments as the province reads them: SERTAKAN_TIMEZONE's wall clock and date.

The database keeps aware UTC times; people (the PIC's file, the operator's
terminal) read local ones. Every "which day is it" and every time printed for
a person goes through here, so the chat and the command line never disagree
after midnight local time.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo


def local_moment(moment: datetime, zone: tzinfo) -> datetime:
    """`moment` (aware) on the wall clock of `zone`. Raises ValueError for a naive time."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no place in time; pass an aware one")
    return moment.astimezone(zone)


def local_date(moment: datetime, zone: tzinfo) -> date:
    """The calendar date in `zone` at `moment` (a batch made at 00:30 WIB is dated that day)."""
    return local_moment(moment, zone).date()


def format_local(moment: datetime, zone: tzinfo, *, seconds: bool = False) -> str:
    """`moment` as "2026-12-02 08:15 WIB" (with `seconds`, "08:15:09 WIB").

    The zone's abbreviation at that moment is used ("WIB", "WITA", "WIT");
    zones without one show their offset ("+07"), as the tz database names them.
    """
    local = local_moment(moment, zone)
    shown = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return f"{shown} {local.tzname() or local.strftime('%z')}"
