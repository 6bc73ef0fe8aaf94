"""The WhatsApp template configuration: the shipped file, the loader's checks, the components."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings, WhatsAppSettings
from bot.whatsapp.templates import (
    MissingParameter,
    TemplateConfigError,
    load_templates,
    parse_templates,
)
from domain.vocabulary import Language, PaymentStatus
from sertakan_data import WHATSAPP_TEMPLATES
from storage.dues_queries import SPONSORSHIP_REMINDER_KINDS
from tests.fakes.graph_api import SHIPPED_TEMPLATES as SHIPPED

ROOT = Path(__file__).resolve().parents[2]

#: Worker notices and their answers, planned by the WhatsApp issue's flows.
WORKER_KINDS = (
    "consent_request",
    "card_ready_worker",
    "enrollment_accepted_worker",
    "lapsed_worker",
    "at_risk_worker",
    "consent_answered",
    "worker_erased",
)


def templates_the_code_writes() -> set[str]:
    """Every outbox `template` name the planners write."""
    literal = re.compile(r"""\btemplate="([a-z0-9_]+)\"""")
    names: set[str] = set()
    for package in ("handlers", "scheduler", "storage"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(literal.findall(path.read_text(encoding="utf-8")))
    # handlers/notices.py: template=f"payment_{status.value}" for decided payments.
    names |= {
        f"payment_{status.value}" for status in (PaymentStatus.CONFIRMED, PaymentStatus.REJECTED)
    }
    # scheduler/reminders.py writes kinds; storage/dues_queries.py names templates after them.
    kinds = [f"reminder.{kind}" for kind in SPONSORSHIP_REMINDER_KINDS]
    kinds += ["reminder.payroll", "reminder.payroll_overdue", "lapsed.asn", "lapsed.pic"]
    names |= {kind.replace(".", "_") for kind in kinds}
    return names


def shipped() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SHIPPED.read_text(encoding="utf-8"))
    return data


def test_the_shipped_file_is_the_default_and_configures_every_template_written() -> None:
    settings = Settings(whatsapp=WhatsAppSettings(_env_file=None))
    assert settings.data_file(WHATSAPP_TEMPLATES, settings.whatsapp.templates_file) == SHIPPED
    book = load_templates(SHIPPED)
    written = templates_the_code_writes()
    assert {"card_ready_sponsor", "enrollment_returned", "pic_digest"} <= written  # the scan works
    assert sorted(written - set(book.templates)) == []
    assert sorted(set(WORKER_KINDS) - set(book.templates)) == []


def test_every_shipped_template_is_submitted_in_indonesian_and_english() -> None:
    book = load_templates(SHIPPED)
    for template in book.templates.values():
        assert template.texts[Language.INDONESIAN].code == "id", template.key
        assert template.texts[Language.ENGLISH].code in ("en", "en_US"), template.key
        assert template.category == "UTILITY", template.key
        assert template.name.startswith("sertakan_"), template.key


def test_the_consent_request_carries_yes_and_no_buttons_for_its_sponsorship() -> None:
    """The quick replies' index is a string, as in Meta's examples (issue 12, item 22)."""
    consent = load_templates(SHIPPED).get("consent_request")
    assert consent is not None
    assert consent.parameters == ("worker", "asn", "program")
    assert consent.texts[Language.INDONESIAN].buttons == ("YA", "TIDAK")
    params = {"worker": "Siti", "asn": "Budi", "program": "SERTAKAN", "sponsorship_id": 41}
    components = consent.components(params, Language.INDONESIAN)
    assert components[1:] == [
        {"type": "button", "sub_type": "quick_reply", "index": "0",
         "parameters": [{"type": "payload", "payload": "consent:yes:41"}]},
        {"type": "button", "sub_type": "quick_reply", "index": "1",
         "parameters": [{"type": "payload", "payload": "consent:no:41"}]},
    ]  # fmt: skip


def test_parameters_go_in_the_configured_order_and_are_made_acceptable_to_meta() -> None:
    book = load_templates(SHIPPED)
    rejected = book.get("payment_rejected")
    assert rejected is not None
    params = {
        "reason": "Bukti\nbayar\t\ttidak      terbaca",
        "months": "Januari–Maret 2027",
        "name": "",
    }
    [body] = rejected.components(params, Language.ENGLISH)
    assert body == {
        "type": "body",
        "parameters": [
            {"type": "text", "text": "-"},
            {"type": "text", "text": "Januari–Maret 2027"},
            {"type": "text", "text": "Bukti bayar tidak terbaca"},
        ],
    }


def test_a_long_value_is_cut_so_the_filled_body_fits_1024_characters() -> None:
    returned = load_templates(SHIPPED).get("enrollment_returned")
    assert returned is not None
    [body] = returned.components({"name": "Siti", "reason": "x" * 3000}, None)
    values = [parameter["text"] for parameter in body["parameters"]]
    filled = returned.text_for(None).body.replace("{{1}}", values[0]).replace("{{2}}", values[1])
    assert len(filled) <= 1024
    assert values[0] == "Siti" and values[1].endswith("…")


def test_a_missing_parameter_is_named() -> None:
    card = load_templates(SHIPPED).get("card_ready_worker")
    assert card is not None
    with pytest.raises(MissingParameter, match="kpj"):
        card.components({"name": "Siti", "opd": "Dinas Sosial"}, None)


def test_a_language_without_a_translation_gets_indonesian() -> None:
    data = {"templates": {"only_id": _entry()}}
    del data["templates"]["only_id"]["languages"]["en"]
    template = parse_templates(data).get("only_id")
    assert template is not None
    assert template.text_for(Language.ENGLISH).code == "id"
    assert template.text_for(None).code == "id"


def _entry() -> dict[str, Any]:
    return {
        "name": "sertakan_sample",
        "category": "UTILITY",
        "parameters": ["name", "kpj"],
        "examples": {"name": "Siti", "kpj": "123"},
        "buttons": [{"payload": "card:{kpj}"}],
        "languages": {
            "id": {"code": "id", "body": "Halo {{1}}, KPJ {{2}} siap.", "buttons": ["OK"]},
            "en": {"code": "en_US", "body": "Hello {{1}}, KPJ {{2}} is ready.", "buttons": ["OK"]},
        },
    }


def _broken(change: str) -> dict[str, Any]:
    entry = _entry()
    texts = entry["languages"]
    match change:
        case "starts with a variable":
            texts["id"]["body"] = "{{1}}, KPJ {{2}} siap."
        case "ends with a variable":
            texts["en"]["body"] = "Hello {{1}}, your KPJ is {{2}}"
        case "skips a number":
            texts["id"]["body"] = "Halo {{1}}, KPJ {{3}} siap."
        case "adjacent variables":
            texts["id"]["body"] = "Halo {{1}} {{2}} siap."
        case "unknown language code":
            texts["en"]["code"] = "english"
        case "no indonesian":
            del texts["id"]
        case "unknown language":
            texts["jv"] = copy.deepcopy(texts["id"])
        case "button count":
            texts["en"]["buttons"] = []
        case "button too long":
            texts["id"]["buttons"] = ["x" * 26]
        case "category":
            entry["category"] = "NOTIFICATION"
        case "meta name":
            entry["name"] = "Sertakan Sample"
        case "examples":
            entry["examples"] = {"name": "Siti"}
        case "typo":
            entry["parameter"] = entry.pop("parameters")
        case "body too long":
            texts["id"]["body"] = "Halo {{1}}, KPJ {{2}} siap." + "x" * 1024
    return {"templates": {"card_sample": entry}}


@pytest.mark.parametrize(
    "change",
    [
        "starts with a variable",
        "ends with a variable",
        "skips a number",
        "adjacent variables",
        "unknown language code",
        "no indonesian",
        "unknown language",
        "button count",
        "button too long",
        "category",
        "meta name",
        "examples",
        "typo",
        "body too long",
    ],
)
def test_the_loader_refuses_what_meta_would_refuse_and_names_the_entry(change: str) -> None:
    with pytest.raises(TemplateConfigError, match="card_sample"):
        parse_templates(_broken(change), source="whatsapp_templates.json")


def test_the_sample_entry_is_valid() -> None:
    template = parse_templates({"templates": {"card_sample": _entry()}}).get("card_sample")
    assert template is not None
    assert [c["type"] for c in template.components({"name": "A", "kpj": 7}, None)] == [
        "body",
        "button",
    ]


def test_an_unreadable_or_malformed_file_is_reported_with_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(TemplateConfigError, match=r"missing\.json"):
        load_templates(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{", encoding="utf-8")
    with pytest.raises(TemplateConfigError, match=r"broken\.json: not valid JSON"):
        load_templates(broken)
    empty = tmp_path / "empty.json"
    empty.write_text('{"templates": {}}', encoding="utf-8")
    with pytest.raises(TemplateConfigError, match="non-empty"):
        load_templates(empty)


def test_the_shipped_file_round_trips_through_the_loader() -> None:
    """What the loader reads is what an operator submits: names, bodies and examples intact."""
    data = shipped()
    book = parse_templates(data)
    for key, entry in data["templates"].items():
        template = book.get(key)
        assert template is not None
        assert template.name == entry["name"]
        assert dict(template.examples) == entry["examples"]
        for language, text in entry["languages"].items():
            assert template.texts[Language(language)].body == text["body"]
