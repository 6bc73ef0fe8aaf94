"""Quiet hours (PRODUCT 5): nothing proactive is sent between `start` and `end` local time.

The default window is 21:00-07:00 in the province's time zone (WIB, WITA or WIT).
A window may cross midnight (`start` after `end`); `start == end` means no quiet
hours at all. Times are wall-clock times of the zone: on a day when a zone
changes its offset (none of Indonesia's do) the window follows the local clock.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclasses.dataclass(slots=True, frozen=True)
class QuietHours:
    """The daily window `[start, end)` of local time in which proactive messages wait."""

    start: time
    end: time

    def __post_init__(self) -> None:
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("quiet hours are local wall-clock times without a zone")

    @property
    def disabled(self) -> bool:
        """True when `start == end`: the window is empty."""
        return self.start == self.end

    def contains(self, local: time) -> bool:
        """Whether the local wall-clock time `local` lies inside the window."""
        if self.disabled:
            return False
        local = local.replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def is_quiet(self, moment: datetime, zone: ZoneInfo) -> bool:
        """Whether the aware instant `moment` falls inside the window in `zone`."""
        return self.contains(_local(moment, zone).time())

    def next_allowed(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """The first instant at or after `moment` outside the window, in `moment`'s zone.

        `moment` itself when it is outside; otherwise the window's end on the
        right local day (today's end, or tomorrow's for a window crossing
        midnight entered in the evening).
        """
        local = _local(moment, zone)
        if not self.contains(local.time()):
            return moment
        end_day = local.date()
        if self.start > self.end and local.time() >= self.start:
            end_day += timedelta(days=1)
        end = datetime.combine(end_day, self.end, tzinfo=zone)
        return end.astimezone(moment.tzinfo)


def _local(moment: datetime, zone: ZoneInfo) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return moment.astimezone(zone)
