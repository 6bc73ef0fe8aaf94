"""The Grafana dashboard in deploy/ queries only metrics the bot exports (bot.metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bot import metrics
from bot.health import Reading

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sertakan-dashboard.json"
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


class _Probe:
    """What `DatabaseCollector` reads: the probe's last reading."""

    last = Reading(True, "head", outbox_due=3, oldest_due_age_s=12.0, parked=1, problems=())


def exported_names() -> set[str]:
    text, _ = metrics.exposition(metrics.DatabaseCollector(_Probe()))  # type: ignore[arg-type]
    names = set()
    for line in text.decode().splitlines():
        match = re.fullmatch(r"# TYPE (\w+) (\w+)", line)
        if match:
            names.add(match[1])
            names.update(match[1] + suffix for suffix in SUFFIXES)
    return names


def test_every_dashboard_query_uses_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"\bsertakan_\w+", query)}
    exported = exported_names()
    assert used and used <= exported, used - exported
    # Everything issue 14 asks to see is on it.
    for wanted in (
        "sertakan_updates_total",
        "sertakan_engine_step_seconds_bucket",
        "sertakan_sends_total",
        "sertakan_outbox_backlog",
        "sertakan_outbox_oldest_due_age_seconds",
        "sertakan_parked_updates",
        "sertakan_scheduled_job_seconds_sum",
    ):
        assert wanted in used, wanted
    assert 'result="rate_limited"' in " ".join(queries)
