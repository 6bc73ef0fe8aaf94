"""The coverage charts are valid, accessible SVG that keeps hostile text as text."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from datetime import date

import pytest

from bot.web.charts import (
    PAID_COLOURS,
    PALETTE,
    WIDTH,
    Series,
    bar_chart,
    coverage_charts,
    histogram,
    progress_bar,
)
from domain.dues import PaidStanding
from domain.vocabulary import Language, SponsorshipStatus
from handlers.i18n import Catalogs
from storage.coverage import CoverageDashboard, Progress, Tiles, WeekPoint

NS = {"svg": "http://www.w3.org/2000/svg"}
HOSTILE = "<script>alert(\"x\")</script> & Dinas 'Lama'\x00\x1b"
#: What the hostile name reads as once the characters XML cannot hold are dropped.
HOSTILE_TEXT = "<script>alert(\"x\")</script> & Dinas 'Lama'"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return root


def accessible_name(root: ET.Element) -> tuple[str, str]:
    """The texts `aria-labelledby` points at (title, description), checking the ids exist."""
    assert root.get("role") == "img"
    ids = (root.get("aria-labelledby") or "").split()
    assert len(ids) == 2
    by_id = {element.get("id"): element for element in root.iter() if element.get("id")}
    title, desc = (by_id[one] for one in ids)
    assert title.tag.endswith("title") and desc.tag.endswith("desc")
    return title.text or "", desc.text or ""


def no_active_content(svg: str, root: ET.Element) -> None:
    """No script, no event handler, nothing fetched from elsewhere."""
    for element in root.iter():
        assert not element.tag.endswith(("script", "foreignObject", "image", "use"))
        for name in element.attrib:
            assert not name.startswith("on") and "href" not in name
    assert "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")


def bars(root: ET.Element) -> list[ET.Element]:
    """The rectangles that carry a value (they have a tooltip)."""
    return [rect for rect in root.iter("{http://www.w3.org/2000/svg}rect") if len(rect)]


def test_weekly_bars_scale_to_the_highest_value_and_fit_a_phone() -> None:
    svg = bar_chart(
        chart_id="weeks",
        title="Pendaftaran per minggu",
        categories=["7 Des", "14 Des", "21 Des"],
        series=[Series("Pendaftaran", [4, 0, 8]), Series("Kartu", [2, 1, 0])],
        number=lambda value: f"{value:,}".replace(",", "."),
    )
    root = parse(svg)
    no_active_content(svg, root)
    assert root.get("viewBox", "").split()[2] == str(WIDTH)
    assert root.get("width") == "100%"
    title, desc = accessible_name(root)
    assert title == "Pendaftaran per minggu"
    assert desc == (
        "7 Des: Pendaftaran 4, Kartu 2; 14 Des: Pendaftaran 0, Kartu 1; "
        "21 Des: Pendaftaran 8, Kartu 0"
    )
    drawn = bars(root)
    assert len(drawn) == 6
    heights = [float(rect.get("height", "")) for rect in drawn]
    # Group by group: the highest value (8) fills the plot up to the axis ceiling (10).
    assert heights[4] == pytest.approx(heights[0] * 2)
    assert heights[2] == 0 and heights[5] == 0
    assert heights[1] == pytest.approx(heights[0] / 2)
    tooltips = [rect.find("svg:title", NS) for rect in drawn]
    assert [tip.text if tip is not None else None for tip in tooltips][:2] == [
        "7 Des: Pendaftaran 4",
        "7 Des: Kartu 2",
    ]
    assert {rect.get("fill") for rect in drawn} == set(PALETTE[:2])
    texts = [element.text for element in root.iter("{http://www.w3.org/2000/svg}text")]
    assert {"7 Des", "14 Des", "21 Des", "Pendaftaran", "Kartu"} <= set(texts)
    # Text is at least 10 units high (readable on a phone).
    for element in root.iter("{http://www.w3.org/2000/svg}text"):
        assert float(element.get("font-size") or root.get("font-size") or 0) >= 10


def test_many_weeks_label_every_few_bars_only() -> None:
    categories = [f"W{number}" for number in range(52)]
    root = parse(
        bar_chart(
            chart_id="year",
            title="t",
            categories=categories,
            series=[Series("a", list(range(52)))],
        )
    )
    labels = [
        element.text
        for element in root.iter("{http://www.w3.org/2000/svg}text")
        if (element.text or "").startswith("W")
    ]
    assert 8 <= len(labels) < 26
    assert labels[0] == "W0"
    assert len(bars(root)) == 52


def test_hostile_text_stays_text_everywhere() -> None:
    charts = [
        bar_chart(
            chart_id='x" onload="alert(1)',
            title=HOSTILE,
            categories=[HOSTILE],
            series=[Series(HOSTILE, [3])],
        ),
        histogram(chart_id="h", title=HOSTILE, buckets=[(HOSTILE, 2)]),
        progress_bar(
            chart_id="p",
            title=HOSTILE,
            reached=1,
            target=2,
            caption=HOSTILE,
            no_target_text=HOSTILE,
        ),
    ]
    for svg in charts:
        assert "<script" not in svg
        root = parse(svg)
        no_active_content(svg, root)
        title, desc = accessible_name(root)
        assert title == HOSTILE_TEXT
        assert HOSTILE_TEXT in desc
        texts = [element.text for element in root.iter() if element.text]
        assert HOSTILE_TEXT in texts
    # The id keeps only safe characters: no attribute was injected.
    root = parse(charts[0])
    assert "onload" not in root.attrib
    assert root.get("aria-labelledby") == "xonloadalert1-title xonloadalert1-desc"


def test_empty_data_draws_a_frame_with_the_empty_text() -> None:
    for svg in (
        bar_chart(chart_id="e", title="Minggu", categories=[], series=[], empty_text="Kosong"),
        histogram(chart_id="e", title="Iuran", buckets=[], empty_text="Kosong"),
    ):
        root = parse(svg)
        _, desc = accessible_name(root)
        assert desc == "Kosong"
        assert "Kosong" in [element.text for element in root.iter()]
        assert bars(root) == []
    # All zeros: bars of height 0 (no division by zero), values still in the description.
    root = parse(
        bar_chart(chart_id="z", title="t", categories=["a", "b"], series=[Series("s", [0, 0])])
    )
    assert [float(rect.get("height", "")) for rect in bars(root)] == [0, 0]
    assert accessible_name(root)[1] == "a: s 0; b: s 0"
    root = parse(histogram(chart_id="z", title="t", buckets=[("lancar", 0), ("tunggak", 0)]))
    assert [float(rect.get("width", "")) for rect in bars(root)] == [0, 0]


def test_histogram_bars_are_proportional_with_their_counts_written() -> None:
    root = parse(
        histogram(
            chart_id="paid",
            title="Iuran lunas sampai",
            buckets=[("di muka", 30), ("lancar", 60), ("menunggak 1", 15)],
            colours=["#009E73", "#0072B2", "#E69F00"],
        )
    )
    widths = [float(rect.get("width", "")) for rect in bars(root)]
    assert widths[0] == pytest.approx(widths[1] / 2)
    assert widths[2] == pytest.approx(widths[1] / 4)
    assert max(widths) <= WIDTH
    assert [rect.get("fill") for rect in bars(root)] == ["#009E73", "#0072B2", "#E69F00"]
    texts = [element.text for element in root.iter("{http://www.w3.org/2000/svg}text")]
    assert {"30", "60", "15", "di muka"} <= set(texts)
    assert accessible_name(root)[1] == "di muka: 30; lancar: 60; menunggak 1: 15"


def test_progress_bar_fills_to_the_share_and_stops_at_the_end() -> None:
    def fill(svg: str) -> tuple[float, float, str]:
        root = parse(svg)
        rects = list(root.iter("{http://www.w3.org/2000/svg}rect"))
        track, filled = (float(rect.get("width", "")) for rect in rects[:2])
        return track, filled, accessible_name(root)[1]

    track, filled, desc = fill(
        progress_bar(
            chart_id="p",
            title="Capaian",
            reached=38_880,
            target=144_000,
            caption="38.880 dari 144.000 pekerja",
            no_target_text="belum ada target",
        )
    )
    assert filled == pytest.approx(track * 0.27, abs=0.1)
    assert desc == "38.880 dari 144.000 pekerja: 27%"
    track, filled, desc = fill(
        progress_bar(
            chart_id="p",
            title="t",
            reached=15,
            target=10,
            caption="15 dari 10",
            no_target_text="-",
            percent=lambda share: f"{share * 100:.0f} %",
        )
    )
    assert filled == track
    assert desc == "15 dari 10: 150 %"
    for target in (None, 0):
        track, filled, desc = fill(
            progress_bar(
                chart_id="p",
                title="t",
                reached=5,
                target=target,
                caption="5 pekerja",
                no_target_text="belum ada target",
            )
        )
        assert (filled, desc) == (0, "5 pekerja: belum ada target")


def test_a_long_legend_flows_onto_more_lines_within_the_width() -> None:
    names = ["Pendaftaran", "Kartu terbit", "Tidak aktif (menunggak)"]
    root = parse(
        bar_chart(
            chart_id="l",
            title="t",
            categories=["a"],
            series=[Series(name, [1]) for name in names],
        )
    )
    legend = [
        element
        for element in root.iter("{http://www.w3.org/2000/svg}text")
        if element.text in names
    ]
    assert [element.text for element in legend] == names
    rows = {element.get("y") for element in legend}
    assert len(rows) == 2
    for element in legend:
        # The generous estimate (0.6 em a character) of its end stays inside the picture.
        assert float(element.get("x", "")) + len(element.text or "") * 11 * 0.6 <= WIDTH


def test_the_coverage_pages_charts_in_indonesian() -> None:
    t = Catalogs().translator(Language.INDONESIAN)
    board = CoverageDashboard(
        today=date(2027, 1, 6),
        opd_id=None,
        scope_name=None,
        tiles=Tiles(
            asn_registered=4,
            asn_sponsoring=2,
            workers_by_status=dict.fromkeys(SponsorshipStatus, 0),
            active_cards=38_880,
            dues_bearing=3,
            paid_up=2,
        ),
        progress=Progress(reached=38_880, target=144_000),
        weeks=(
            WeekPoint(date(2026, 12, 28), enrollments=5, cards=1, lapses=2),
            WeekPoint(date(2027, 1, 4), enrollments=7, cards=0, lapses=0),
        ),
        paid={standing: number for number, standing in enumerate(PaidStanding)},
        opds=(),
        areas=(),
    )

    charts = coverage_charts(board, t, number=t.number)

    progress = parse(charts.progress)
    assert accessible_name(progress) == (
        "Capaian target",
        "38.880 dari 144.000 pekerja terlindungi (kartu aktif): 27%",
    )
    weeks = parse(charts.weeks)
    assert accessible_name(weeks)[1].startswith(
        "28/12: Pendaftaran 5, Kartu terbit 1, Tidak aktif (menunggak) 2; 4/1: Pendaftaran 7"
    )
    paid = parse(charts.paid)
    assert accessible_name(paid)[1] == (
        "dibayar di muka: 0; lancar: 1; menunggak 1 bulan: 2; menunggak 2 bulan: 3; "
        "menunggak 3 bulan atau lebih: 4"
    )
    assert [rect.get("fill") for rect in bars(paid)] == list(PAID_COLOURS)
    # No target: the text says so instead of a share.
    untargeted = dataclasses.replace(board, progress=Progress(reached=5, target=None))
    assert accessible_name(parse(coverage_charts(untargeted, t).progress))[1] == (
        "5 dari - pekerja terlindungi (kartu aktif): belum ada target"
    )
