"""Quiet hours: a daily local window, possibly across midnight, in the province's zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.quiet_hours import QuietHours

WIB = ZoneInfo("Asia/Jakarta")  # UTC+7
WIT = ZoneInfo("Asia/Jayapura")  # UTC+9
NIGHT = QuietHours(time(21, 0), time(7, 0))


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        (time(20, 59, 59), False),
        (time(21, 0), True),
        (time(23, 30), True),
        (time(0, 0), True),
        (time(6, 59, 59), True),
        (time(7, 0), False),
        (time(12, 0), False),
    ],
)
def test_default_window_crosses_midnight(local: time, quiet: bool) -> None:
    assert NIGHT.contains(local) is quiet


@pytest.mark.parametrize(
    ("local", "quiet"),
    [(time(12, 59), False), (time(13, 0), True), (time(13, 59), True), (time(14, 0), False)],
)
def test_a_window_within_one_day(local: time, quiet: bool) -> None:
    assert QuietHours(time(13, 0), time(14, 0)).contains(local) is quiet


def test_equal_start_and_end_means_no_quiet_hours() -> None:
    window = QuietHours(time(21, 0), time(21, 0))
    assert window.disabled
    assert not any(window.contains(time(hour, minute)) for hour in range(24) for minute in (0, 30))


def test_the_zone_decides() -> None:
    moment = datetime(2026, 3, 2, 13, 30, tzinfo=UTC)  # 20:30 WIB, 22:30 WIT
    assert not NIGHT.is_quiet(moment, WIB)
    assert NIGHT.is_quiet(moment, WIT)


def test_next_allowed_in_the_evening_is_the_next_morning() -> None:
    evening = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 22:00 WIB on 2 March
    assert NIGHT.next_allowed(evening, WIB) == datetime(2026, 3, 3, 0, 0, tzinfo=UTC)  # 07:00


def test_next_allowed_after_midnight_is_the_same_morning() -> None:
    early = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)  # 03:00 WIB on 3 March
    assert NIGHT.next_allowed(early, WIB) == datetime(2026, 3, 3, 0, 0, tzinfo=UTC)


def test_next_allowed_outside_the_window_is_now() -> None:
    noon = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)
    assert NIGHT.next_allowed(noon, WIB) == noon


def test_naive_datetimes_and_zoned_times_are_refused() -> None:
    with pytest.raises(ValueError):
        NIGHT.is_quiet(datetime(2026, 3, 2, 12, 0), WIB)
    with pytest.raises(ValueError):
        QuietHours(time(21, 0, tzinfo=UTC), time(7, 0))


times = st.times()
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
zones = st.sampled_from([WIB, ZoneInfo("Asia/Makassar"), WIT])


@given(times, times, times)
def test_a_window_and_its_complement_cover_the_day_once(start: time, end: time, t: time) -> None:
    if start == end:
        assert not QuietHours(start, end).contains(t)
    else:
        assert QuietHours(start, end).contains(t) != QuietHours(end, start).contains(t)


@given(times, times, instants, zones)
def test_next_allowed_is_outside_the_window_and_within_a_day(
    start: time, end: time, moment: datetime, zone: ZoneInfo
) -> None:
    window = QuietHours(start, end)
    allowed = window.next_allowed(moment, zone)
    assert moment <= allowed <= moment + timedelta(days=1)
    assert not window.is_quiet(allowed, zone)


@given(times, times, instants, zones)
def test_every_moment_before_next_allowed_is_quiet(
    start: time, end: time, moment: datetime, zone: ZoneInfo
) -> None:
    window = QuietHours(start, end)
    allowed = window.next_allowed(moment, zone)
    if allowed > moment:
        assert window.is_quiet(moment, zone)
        assert window.is_quiet(allowed - timedelta(microseconds=1), zone)
