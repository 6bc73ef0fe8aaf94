"""Page 1, coverage (issue 13): tiles, progress against the targets, the weekly chart, the
paid-until distribution, the OPD and area tables, CSV and XLSX downloads.

The figures come from `storage.coverage.dashboard` through the process's
`CoverageCache` (at most PROGRAM_COVERAGE_MAX_AGE_S old); the charts are the
server-side SVG of `bot.web.charts`. A PIC sees their own OPD; a program leader
and an administrator the province, or one OPD they choose.
"""

from __future__ import annotations

from aiohttp import web
from markupsafe import Markup

from bot.web import charts
from bot.web.app import parts_of, refuse, render, scoped_opd, visit_of
from domain.dues import PaidStanding
from domain.vocabulary import SponsorshipStatus
from handlers.i18n import Translator
from storage.coverage import (
    AreaSort,
    CoverageDashboard,
    OpdSort,
    by_district,
    sort_areas,
    sort_opds,
)
from storage.coverage_export import coverage_csv, coverage_xlsx

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
#: Village rows shown on the page (the download has all of them).
AREA_ROWS = 200


async def _figures(request: web.Request) -> CoverageDashboard | web.Response:
    parts, visit = parts_of(request), visit_of(request)
    if parts.coverage is None:
        return refuse(request, 404, "web.not_found")
    chosen = request.query.get("opd")
    opd_id: int | None = None
    if visit.access.pic is not None or chosen:
        async with parts.database.begin() as connection:
            scope = await scoped_opd(request, connection, chosen=chosen)
        if scope is None:
            return refuse(request, 404, "web.not_found")
        opd_id = scope[0]
    return await parts.coverage.dashboard(opd_id=opd_id)


def _charts(t: Translator, figures: CoverageDashboard) -> dict[str, Markup]:
    progress = figures.progress
    caption = t(
        "coverage.chart.progress_caption",
        reached=t.number(progress.reached),
        target=t.number(progress.target) if progress.target else t("coverage.no_target"),
    )
    return {
        # The chart functions escape every text they are given (bot.web.charts).
        "progress": Markup(
            charts.progress_bar(
                chart_id="progress",
                title=t("coverage.chart.progress"),
                reached=progress.reached,
                target=progress.target,
                caption=caption,
                no_target_text=t("coverage.no_target"),
            )
        ),
        "weekly": Markup(
            charts.bar_chart(
                chart_id="weekly",
                title=t("coverage.chart.weekly"),
                categories=[t.date(week.week_start) for week in figures.weeks],
                series=[
                    charts.Series(
                        t("coverage.enrollments"), [w.enrollments for w in figures.weeks]
                    ),
                    charts.Series(t("coverage.cards"), [w.cards for w in figures.weeks]),
                    charts.Series(t("coverage.lapses"), [w.lapses for w in figures.weeks]),
                ],
                empty_text=t("coverage.no_data"),
                number=t.number,
            )
        ),
        "paid": Markup(
            charts.histogram(
                chart_id="paid",
                title=t("coverage.chart.paid"),
                buckets=[
                    (t(f"paid_standing.{standing.value}"), figures.paid.get(standing, 0))
                    for standing in PaidStanding
                ],
                colours=charts.PALETTE,
                empty_text=t("coverage.no_data"),
                number=t.number,
            )
        ),
    }


async def coverage_page(request: web.Request) -> web.StreamResponse:
    figures = await _figures(request)
    if isinstance(figures, web.Response):
        return figures
    t = visit_of(request).t
    query = request.query
    opd_sort = query.get("sort", OpdSort.CODE.value)
    area_sort = query.get("area_sort", AreaSort.PLACE.value)
    descending = query.get("desc") == "1"
    villages = query.get("areas") == "village"
    areas = sort_areas(
        figures.areas if villages else by_district(figures.areas),
        AreaSort(area_sort) if area_sort in set(AreaSort) else AreaSort.PLACE,
        descending=descending and "area_sort" in query,
    )
    opds = sort_opds(
        figures.opds,
        OpdSort(opd_sort) if opd_sort in set(OpdSort) else OpdSort.CODE,
        descending=descending and "sort" in query,
    )
    return render(
        request,
        "coverage.html",
        {
            "figures": figures,
            "charts": _charts(t, figures),
            "statuses": list(SponsorshipStatus),
            "waiting": SponsorshipStatus.WAITING_FOR_PIC,
            "lapsed": SponsorshipStatus.LAPSED,
            "opds": opds,
            "areas": areas[:AREA_ROWS],
            "more_areas": max(0, len(areas) - AREA_ROWS),
            "villages": villages,
            "opd_sorts": OpdSort,
            "area_sorts": AreaSort,
            "sorted_by": opd_sort,
            "area_sorted_by": area_sort,
            "descending": descending,
            "opd_query": f"opd={figures.opd_id}&" if "opd" in query else "",
            "share": lambda value: "–" if value is None else f"{value:.0%}",
        },
    )


async def coverage_download(request: web.Request) -> web.StreamResponse:
    """The page's figures as CSV or XLSX, in the reader's language (no NIK, no names of
    people: counts per OPD and place)."""
    figures = await _figures(request)
    if isinstance(figures, web.Response):
        return figures
    t = visit_of(request).t
    kind = request.match_info["kind"]
    stamp = figures.today.isoformat()
    if kind == "csv":
        body, mime = coverage_csv(figures, t), "text/csv"
    else:
        body, mime = coverage_xlsx(figures, t), XLSX_MIME
    return web.Response(
        body=body,
        content_type=mime,
        headers={
            "Content-Disposition": f'attachment; filename="cakupan-{stamp}.{kind}"',
            "Cache-Control": "no-store",
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/coverage", coverage_page)
    app.router.add_get("/coverage.{kind:csv|xlsx}", coverage_download)
