"""Who may be enrolled: the working-age bounds (PRODUCT 3; configuration, not law)."""

from __future__ import annotations

import dataclasses
from datetime import date
from enum import StrEnum


def age_on(birth: date, on: date) -> int:
    """Completed years of age on `on`.

    Someone born on 29 Feb turns a year older on 1 Mar in non-leap years.
    Negative when `on` is before `birth` (callers check that first).
    """
    birthday_not_reached = (on.month, on.day) < (birth.month, birth.day)
    return on.year - birth.year - int(birthday_not_reached)


@dataclasses.dataclass(slots=True, frozen=True)
class AgeBounds:
    """Inclusive age bounds at enrollment, in completed years.

    The default "15 to 65" admits someone from their 15th birthday up to the
    day before their 66th birthday. No public source pins these numbers.
    """

    minimum: int = 15
    maximum: int = 65

    def __post_init__(self) -> None:
        if not 0 <= self.minimum <= self.maximum:
            raise ValueError(f"age bounds need 0 <= minimum <= maximum, got {self}")


DEFAULT_AGE_BOUNDS = AgeBounds()


class AgeProblem(StrEnum):
    TOO_YOUNG = "too_young"
    TOO_OLD = "too_old"
    BORN_IN_FUTURE = "born_in_future"


def check_age(birth: date, on: date, bounds: AgeBounds = DEFAULT_AGE_BOUNDS) -> AgeProblem | None:
    """None when the age in completed years on `on` lies within `bounds`, else the problem."""
    if birth > on:
        return AgeProblem.BORN_IN_FUTURE
    age = age_on(birth, on)
    if age < bounds.minimum:
        return AgeProblem.TOO_YOUNG
    if age > bounds.maximum:
        return AgeProblem.TOO_OLD
    return None
