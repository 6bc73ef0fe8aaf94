"""Charts of the coverage page as accessible SVG strings (issue 13, page 1).

Pure functions: numbers and labels in, one `<svg>` element out, inlined in the
page by the template. No JavaScript and nothing fetched from elsewhere: the
charts draw on a cheap phone and on an intranet with no internet access, and
a page with them is one response. Every chart:

- is `role="img"` with a `<title>` and a `<desc>` that states the data in words
  (screen readers read them; `aria-labelledby` points at both), and every bar
  carries its own `<title>` (shown as a tooltip);
- scales to its container (`viewBox`, width 100 %) from a 360-unit-wide design,
  the width of a small phone screen, with text at least 10 units high;
- escapes every text it is given (`&`, `<`, `>`, quotes) and drops the
  characters XML 1.0 does not allow, so a hostile OPD name stays text;
- uses the Okabe-Ito colour-blind-safe palette, and never colour alone: values
  are written next to the bars or in the description.

`chart_id` prefixes the ids inside the SVG (several charts share a page); only
letters, digits, "-" and "_" are kept from it.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
from collections.abc import Callable, Sequence
from datetime import date

from domain.dues import PaidStanding
from storage.coverage import CoverageDashboard

#: The design width (viewBox units): a phone screen's CSS width.
WIDTH = 360
#: Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#D55E00", "#009E73", "#CC79A7", "#56B4E9")
_TEXT_COLOUR = "#222222"
_GRID_COLOUR = "#DDDDDD"
_TRACK_COLOUR = "#E8E8E8"
_FONT = 'font-family="system-ui, sans-serif"'

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    """One named row of values of a bar chart (one value per category)."""

    name: str
    values: Sequence[int]


def text(value: str) -> str:
    """`value` as XML character data or attribute text: escaped, illegal characters dropped."""
    return html.escape(_XML_ILLEGAL.sub("", value), quote=True)


def _id(chart_id: str) -> str:
    cleaned = _ID_UNSAFE.sub("", chart_id)
    return cleaned or "chart"


def _plain(value: int) -> str:
    return str(value)


def _open(chart_id: str, height: int, title: str, description: str) -> list[str]:
    prefix = _id(chart_id)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" style="max-width:{WIDTH * 2}px" role="img" '
        f'aria-labelledby="{prefix}-title {prefix}-desc" {_FONT} font-size="11">',
        f'<title id="{prefix}-title">{text(title)}</title>',
        f'<desc id="{prefix}-desc">{text(description)}</desc>',
    ]


def _text_width(value: str, size: float = 11) -> float:
    """A generous estimate of `value`'s width at `size` (no font metrics on the server)."""
    return len(value) * size * 0.6


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= `value` (1 for 0)."""
    if value <= 0:
        return 1
    power = int(10 ** max(0, math.floor(math.log10(value))))
    for step in (1, 2, 2.5, 5, 10):
        candidate = math.ceil(step * power)
        if candidate >= value:
            return candidate
    return 10 * power


def bar_chart(
    *,
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    empty_text: str = "-",
    number: Callable[[int], str] = _plain,
) -> str:
    """Grouped vertical bars: one group per category (e.g. week), one bar per series.

    `categories` label the groups along the bottom (every label when they fit,
    else every second or third); each series has one value per category
    (missing values count as 0). A legend names the series above the plot; the
    description lists every value. No categories: the frame with `empty_text`.
    `number` formats values (e.g. `Translator.number`).
    """
    summary = "; ".join(
        f"{category}: "
        + ", ".join(
            f"{one.name} {number(one.values[index] if index < len(one.values) else 0)}"
            for one in series
        )
        for index, category in enumerate(categories)
    )
    left, right = 40, WIDTH - 8
    # The legend flows onto more lines when the names do not fit on one.
    legend: list[tuple[float, float, str, str]] = []
    x, y = float(left), 6.0
    for index, one in enumerate(series):
        width = 14 + _text_width(one.name) + 12
        if x + width > right and x > left:
            x, y = float(left), y + 15
        legend.append((x, y, PALETTE[index % len(PALETTE)], one.name))
        x += width
    top = int(y) + 28
    bottom = top + 162
    height = bottom + 34
    parts = _open(chart_id, height, title, summary or empty_text)
    for x, y, colour, name in legend:
        parts.append(f'<rect x="{x:.1f}" y="{y}" width="10" height="10" fill="{colour}"/>')
        parts.append(
            f'<text x="{x + 14:.1f}" y="{y + 9}" fill="{_TEXT_COLOUR}">{text(name)}</text>'
        )
    if not categories or not series:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{(top + bottom) / 2}" text-anchor="middle" '
            f'fill="{_TEXT_COLOUR}">{text(empty_text)}</text>'
        )
        parts.append("</svg>")
        return "".join(parts)
    highest = max((value for one in series for value in one.values[: len(categories)]), default=0)
    ceiling = _nice_ceiling(highest)
    plot_height = bottom - top
    for step in range(5):
        value = ceiling * step / 4
        y = bottom - plot_height * step / 4
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" '
            f'stroke="{_GRID_COLOUR}" stroke-width="1"/>'
        )
        if value == int(value):
            parts.append(
                f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" '
                f'fill="{_TEXT_COLOUR}" font-size="10">{text(number(int(value)))}</text>'
            )
    slot = (right - left) / len(categories)
    bar = max(1.0, (slot - 4) / len(series))
    label_every = max(1, math.ceil(34 / slot))
    for index, category in enumerate(categories):
        x0 = left + index * slot + 2
        for number_, one in enumerate(series):
            value = one.values[index] if index < len(one.values) else 0
            bar_height = plot_height * value / ceiling
            parts.append(
                f'<rect x="{x0 + number_ * bar:.1f}" y="{bottom - bar_height:.1f}" '
                f'width="{bar:.1f}" height="{bar_height:.1f}" '
                f'fill="{PALETTE[number_ % len(PALETTE)]}">'
                f"<title>{text(category)}: {text(one.name)} {text(number(value))}</title></rect>"
            )
        if index % label_every == 0:
            parts.append(
                f'<text x="{left + (index + 0.5) * slot:.1f}" y="{bottom + 14}" '
                f'text-anchor="middle" fill="{_TEXT_COLOUR}" font-size="10">'
                f"{text(category)}</text>"
            )
    parts.append(
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" '
        f'stroke="{_TEXT_COLOUR}" stroke-width="1"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    *,
    chart_id: str,
    title: str,
    buckets: Sequence[tuple[str, int]],
    colours: Sequence[str] | None = None,
    empty_text: str = "-",
    number: Callable[[int], str] = _plain,
) -> str:
    """Horizontal bars, one per (label, count) bucket in the given order, each with its
    label above and its count at its end (e.g. the paid-until distribution).

    `colours` gives one colour per bucket (default: the palette's first). All
    counts zero: empty tracks; no buckets: `empty_text`.
    """
    row = 34
    height = 16 + max(1, len(buckets)) * row
    summary = "; ".join(f"{label}: {number(count)}" for label, count in buckets)
    parts = _open(chart_id, height, title, summary or empty_text)
    if not buckets:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{height / 2 + 4}" text-anchor="middle" '
            f'fill="{_TEXT_COLOUR}">{text(empty_text)}</text></svg>'
        )
        return "".join(parts)
    highest = max(count for _, count in buckets)
    left, track = 8, WIDTH - 8 - 8 - 56
    for index, (label, count) in enumerate(buckets):
        y = 8 + index * row
        colour = colours[index % len(colours)] if colours else PALETTE[0]
        width = track * count / highest if highest else 0
        parts.append(
            f'<text x="{left}" y="{y + 10}" fill="{_TEXT_COLOUR}">{text(label)}</text>'
            f'<rect x="{left}" y="{y + 14}" width="{track}" height="12" fill="{_TRACK_COLOUR}"/>'
            f'<rect x="{left}" y="{y + 14}" width="{width:.1f}" height="12" fill="{colour}">'
            f"<title>{text(label)}: {text(number(count))}</title></rect>"
            f'<text x="{left + track + 6}" y="{y + 24}" fill="{_TEXT_COLOUR}">'
            f"{text(number(count))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def progress_bar(
    *,
    chart_id: str,
    title: str,
    reached: int,
    target: int | None,
    caption: str,
    no_target_text: str,
    percent: Callable[[float], str] = lambda share: f"{share:.0%}",
) -> str:
    """A horizontal bar of `reached` against `target`, with `caption` under it (e.g.
    "38,880 of 144,000 workers") and the share in per cent at its end.

    The fill stops at the track's end above 100 % (the share still says how
    far). No target (None or 0): an empty track and `no_target_text` instead
    of a share.
    """
    height = 64
    share = reached / target if target else None
    shown = no_target_text if share is None else percent(share)
    parts = _open(chart_id, height, title, f"{caption}: {shown}")
    left, track = 8, WIDTH - 8 - 8 - 56
    fill = 0.0 if share is None else track * min(share, 1.0)
    parts.append(
        f'<text x="{left}" y="14" fill="{_TEXT_COLOUR}" font-weight="bold">{text(title)}</text>'
        f'<rect x="{left}" y="22" width="{track}" height="16" rx="3" fill="{_TRACK_COLOUR}"/>'
        f'<rect x="{left}" y="22" width="{fill:.1f}" height="16" rx="3" fill="{PALETTE[3]}"/>'
        f'<text x="{left + track + 6}" y="35" fill="{_TEXT_COLOUR}">{text(shown)}</text>'
        f'<text x="{left}" y="56" fill="{_TEXT_COLOUR}" font-size="10">{text(caption)}</text>'
        "</svg>"
    )
    return "".join(parts)


# --- the coverage page's three charts -------------------------------------------------------

#: Paid-until buckets from paid ahead to three months behind: green, blue, then warmer.
PAID_COLOURS: tuple[str, ...] = ("#009E73", "#0072B2", "#E69F00", "#D55E00", "#CC79A7")


@dataclasses.dataclass(frozen=True, slots=True)
class CoverageCharts:
    """The SVG of the coverage page's pictures (see `coverage_charts`)."""

    progress: str
    weeks: str
    paid: str


def coverage_charts(
    board: CoverageDashboard,
    translate: Callable[..., str],
    *,
    number: Callable[[int], str] = _plain,
    week_label: Callable[[date], str] = lambda day: f"{day.day}/{day.month}",
) -> CoverageCharts:
    """The progress bar, the weekly bars and the paid-until histogram of `board`, labelled
    with `translate` (a `handlers.i18n.Translator`: keys `coverage.*`, `paid_standing.*`).

    `number` formats counts (e.g. `Translator.number`), `week_label` a week's Monday.
    """
    target = board.progress.target
    caption = translate(
        "coverage.chart.progress_caption",
        reached=number(board.progress.reached),
        target=number(target) if target else "-",
    )
    return CoverageCharts(
        progress=progress_bar(
            chart_id="coverage-progress",
            title=translate("coverage.chart.progress"),
            reached=board.progress.reached,
            target=target,
            caption=caption,
            no_target_text=translate("coverage.no_target"),
        ),
        weeks=bar_chart(
            chart_id="coverage-weeks",
            title=translate("coverage.chart.weekly"),
            categories=[week_label(week.week_start) for week in board.weeks],
            series=[
                Series(
                    translate("coverage.enrollments"),
                    [week.enrollments for week in board.weeks],
                ),
                Series(translate("coverage.cards"), [week.cards for week in board.weeks]),
                Series(translate("coverage.lapses"), [week.lapses for week in board.weeks]),
            ],
            empty_text=translate("coverage.no_data"),
            number=number,
        ),
        paid=histogram(
            chart_id="coverage-paid",
            title=translate("coverage.chart.paid"),
            buckets=[
                (translate(f"paid_standing.{standing.value}"), board.paid[standing])
                for standing in PaidStanding
            ],
            colours=PAID_COLOURS,
            empty_text=translate("coverage.no_data"),
            number=number,
        ),
    )
