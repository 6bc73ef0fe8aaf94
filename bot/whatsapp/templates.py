"""Approved WhatsApp message templates: the configuration file and its validation.

Outside the 24-hour customer-service window WhatsApp delivers only templates
that Meta approved beforehand (PRODUCT 5). Every outbox row carries a `template`
(our name, e.g. "card_ready_sponsor") and its `params` (a dict); the file named
by `WHATSAPP_TEMPLATES_FILE` (shipped: sertakan_data/whatsapp_templates.json) maps each
of our names to what the operator submitted to Meta:

    {"templates": {
      "card_ready_sponsor": {
        "name": "sertakan_card_ready_sponsor",     # the approved template's name
        "category": "UTILITY",
        "parameters": ["name", "kpj", "opd"],       # params keys, in {{1}}, {{2}}, ... order
        "examples": {"name": "Siti Aminah", ...},   # sample values Meta asks for
        "buttons": [{"payload": "consent:yes:{sponsorship_id}"}, ...],   # quick replies
        "languages": {
          "id": {"code": "id", "body": "... {{1}} ...", "buttons": ["YA", ...]},
          "en": {"code": "en_US", "body": "...", "buttons": ["YES", ...]}}}}}

`languages` is keyed by our `Language` ("id", "en"); `code` is Meta's language
code of the approved translation ("en" or "en_US", as submitted). Indonesian is
required: a recipient whose language has no translation gets it. A quick-reply
payload is filled from the row's params (`{sponsorship_id}`), so the tap comes
back as a button reply the engine can route.

`load_templates` refuses a file Meta would refuse too (a body starting or
ending with a variable, variables not numbered 1..n, texts over Meta's limits)
and names the entry in its error.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pywa_async.types.templates import TemplateLanguage

from domain.vocabulary import Language

#: Meta's limits for template content.
MAX_BODY_CHARS: Final = 1024
MAX_BUTTON_TEXT: Final = 25
MAX_QUICK_REPLIES: Final = 10
MAX_PAYLOAD_CHARS: Final = 256
CATEGORIES: Final = frozenset({"UTILITY", "MARKETING", "AUTHENTICATION"})

_NAME = re.compile(r"[a-z0-9_]{1,512}")
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_VARIABLE = re.compile(r"\{\{\s*(\d+)\s*\}\}")
_ADJACENT = re.compile(r"\}\}\s*\{\{")
#: Meta refuses parameter values with new lines, tabs or more than four spaces in a row.
_WHITESPACE = re.compile(r"\s+")
_META_CODES: Final = frozenset(member.value for member in TemplateLanguage)
_ENTRY_KEYS: Final = frozenset(
    {"name", "category", "parameters", "examples", "buttons", "languages"}
)
_TEXT_KEYS: Final = frozenset({"code", "body", "buttons"})


class TemplateConfigError(ValueError):
    """The template file is unusable; the message names the file and the entry."""


class MissingParameter(KeyError):
    """A row's params lack a value the template needs."""


@dataclasses.dataclass(slots=True, frozen=True)
class TemplateText:
    """One approved translation: Meta's language code, the body with {{1}}.., button texts."""

    code: str
    body: str
    buttons: tuple[str, ...] = ()


@dataclasses.dataclass(slots=True, frozen=True)
class QuickReply:
    """A quick-reply button; `payload` names params in braces ("consent:yes:{sponsorship_id}")."""

    payload: str

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for _, name, _, _ in string.Formatter().parse(self.payload) if name)


@dataclasses.dataclass(slots=True, frozen=True)
class Template:
    """One of our template names and the approved template it is sent as."""

    key: str
    name: str
    category: str
    parameters: tuple[str, ...]
    texts: Mapping[Language, TemplateText]
    buttons: tuple[QuickReply, ...] = ()
    examples: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def text_for(self, language: Language | None) -> TemplateText:
        """The translation for `language`; Indonesian when there is none (or no language)."""
        if language is not None and language in self.texts:
            return self.texts[language]
        return self.texts[Language.INDONESIAN]

    def components(
        self, params: Mapping[str, Any], language: Language | None
    ) -> list[dict[str, Any]]:
        """The `components` of a Graph API template message for a row's `params`.

        Values are made acceptable to Meta: new lines and tabs become spaces,
        long runs of spaces shrink, an empty value becomes "-", and when the
        filled body would exceed 1,024 characters the longest value is cut.
        Raises `MissingParameter` when `params` lacks a name the template uses.
        """
        values = [_clean(_value(params, name)) for name in self.parameters]
        _fit(self.text_for(language).body, values)
        components: list[dict[str, Any]] = []
        if values:
            components.append(
                {"type": "body", "parameters": [{"type": "text", "text": v} for v in values]}
            )
        for index, button in enumerate(self.buttons):
            payload = button.payload.format_map(
                {name: _value(params, name) for name in button.fields}
            )
            components.append(
                {
                    "type": "button",
                    "sub_type": "quick_reply",
                    # A string, as in Meta's own examples ("0", "1").
                    "index": str(index),
                    "parameters": [{"type": "payload", "payload": payload}],
                }
            )
        return components


@dataclasses.dataclass(slots=True, frozen=True)
class TemplateBook:
    """Every configured template, by our template name."""

    templates: Mapping[str, Template]

    def get(self, key: str | None) -> Template | None:
        return self.templates.get(key) if key else None

    def __contains__(self, key: object) -> bool:
        return key in self.templates

    def __len__(self) -> int:
        return len(self.templates)


def load_templates(path: Path) -> TemplateBook:
    """Read and validate the template file; `TemplateConfigError` names what is wrong."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    except ValueError as exc:
        raise TemplateConfigError(f"{path}: not valid JSON ({exc})") from exc
    return parse_templates(data, source=str(path))


def parse_templates(data: Any, *, source: str = "templates") -> TemplateBook:
    """Validate already-parsed JSON (see the module docstring for the shape)."""
    if not isinstance(data, dict) or set(data) != {"templates"}:
        raise TemplateConfigError(f'{source}: expected an object with one key, "templates"')
    entries = data["templates"]
    if not isinstance(entries, dict) or not entries:
        raise TemplateConfigError(f'{source}: "templates" must be a non-empty object')
    templates = {
        key: _entry(key, entry, f"{source}: template {key!r}") for key, entry in entries.items()
    }
    return TemplateBook(templates)


def _entry(key: str, entry: Any, where: str) -> Template:
    if not _IDENTIFIER.fullmatch(key):
        raise TemplateConfigError(f"{where}: the name must be lower case letters, digits, _")
    if not isinstance(entry, dict):
        raise TemplateConfigError(f"{where}: must be an object")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise TemplateConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TemplateConfigError(f'{where}: "name" must be Meta\'s template name ([a-z0-9_])')
    category = entry.get("category")
    if category not in CATEGORIES:
        raise TemplateConfigError(f'{where}: "category" must be one of {sorted(CATEGORIES)}')
    parameters = entry.get("parameters", [])
    if (
        not isinstance(parameters, list)
        or not all(isinstance(p, str) and _IDENTIFIER.fullmatch(p) for p in parameters)
        or len(set(parameters)) != len(parameters)
    ):
        raise TemplateConfigError(f'{where}: "parameters" must be a list of distinct names')
    examples = entry.get("examples", {})
    if not isinstance(examples, dict) or not all(
        isinstance(v, str) and v.strip() for v in examples.values()
    ):
        raise TemplateConfigError(f'{where}: "examples" must map parameters to sample texts')
    if set(examples) != set(parameters):
        raise TemplateConfigError(
            f'{where}: "examples" must give exactly one sample per parameter {parameters}'
        )
    buttons = _buttons(entry.get("buttons", []), where)
    texts = entry.get("languages")
    if not isinstance(texts, dict) or Language.INDONESIAN.value not in texts:
        raise TemplateConfigError(f'{where}: "languages" must include "id" (Indonesian)')
    translations: dict[Language, TemplateText] = {}
    for language, text in texts.items():
        if language not in {member.value for member in Language}:
            raise TemplateConfigError(f"{where}: unknown language {language!r}")
        translations[Language(language)] = _text(
            text, len(parameters), len(buttons), f"{where}, language {language!r}"
        )
    return Template(
        key=key,
        name=name,
        category=category,
        parameters=tuple(parameters),
        texts=translations,
        buttons=buttons,
        examples=dict(examples),
    )


def _buttons(buttons: Any, where: str) -> tuple[QuickReply, ...]:
    if not isinstance(buttons, list) or len(buttons) > MAX_QUICK_REPLIES:
        raise TemplateConfigError(f'{where}: "buttons" must be a list of up to 10 quick replies')
    replies: list[QuickReply] = []
    for button in buttons:
        payload = button.get("payload") if isinstance(button, dict) else None
        if not isinstance(payload, str) or not payload or set(button) != {"payload"}:
            raise TemplateConfigError(f'{where}: a button is {{"payload": "..."}}')
        try:
            reply = QuickReply(payload)
            fields = reply.fields
        except ValueError as exc:
            raise TemplateConfigError(f"{where}: payload {payload!r}: {exc}") from exc
        if not all(_IDENTIFIER.fullmatch(field) for field in fields):
            raise TemplateConfigError(f"{where}: payload {payload!r} names a field badly")
        if len(payload) > MAX_PAYLOAD_CHARS:
            raise TemplateConfigError(f"{where}: payload {payload!r} is too long")
        replies.append(reply)
    return tuple(replies)


def _text(text: Any, parameters: int, buttons: int, where: str) -> TemplateText:
    if not isinstance(text, dict) or set(text) - _TEXT_KEYS:
        raise TemplateConfigError(f'{where}: expected {{"code", "body", "buttons"}}')
    code = text.get("code")
    if not isinstance(code, str) or code not in _META_CODES:
        raise TemplateConfigError(f"{where}: {code!r} is not a WhatsApp template language code")
    body = text.get("body")
    if not isinstance(body, str) or not body.strip():
        raise TemplateConfigError(f'{where}: "body" is missing')
    if len(body) > MAX_BODY_CHARS:
        raise TemplateConfigError(f"{where}: the body is longer than {MAX_BODY_CHARS} characters")
    numbers = [int(n) for n in _VARIABLE.findall(body)]
    if sorted(set(numbers)) != list(range(1, parameters + 1)):
        raise TemplateConfigError(
            f"{where}: the body must use {{{{1}}}}..{{{{{parameters}}}}} for its "
            f"{parameters} parameters, found {sorted(set(numbers))}"
        )
    stripped = body.strip()
    if _VARIABLE.match(stripped) or re.search(r"\{\{\s*\d+\s*\}\}$", stripped):
        raise TemplateConfigError(f"{where}: the body may not start or end with a variable")
    if _ADJACENT.search(body):
        raise TemplateConfigError(f"{where}: two variables may not stand side by side")
    labels = text.get("buttons", [])
    if (
        not isinstance(labels, list)
        or len(labels) != buttons
        or not all(isinstance(b, str) and 0 < len(b) <= MAX_BUTTON_TEXT for b in labels)
        or len(set(labels)) != len(labels)
    ):
        raise TemplateConfigError(
            f"{where}: {buttons} distinct button texts of up to {MAX_BUTTON_TEXT} characters needed"
        )
    return TemplateText(code=code, body=body, buttons=tuple(labels))


def _value(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise MissingParameter(name)
    return str(value)


def _clean(value: str) -> str:
    return _WHITESPACE.sub(" ", value).strip() or "-"


def _fit(body: str, values: list[str]) -> None:
    """Cut the longest values (in place) until the filled body fits Meta's 1,024 characters."""
    fixed = len(_VARIABLE.sub("", body))
    while values and fixed + sum(map(len, values)) > MAX_BODY_CHARS:
        longest = max(range(len(values)), key=lambda i: len(values[i]))
        excess = fixed + sum(map(len, values)) - MAX_BODY_CHARS
        keep = max(1, len(values[longest]) - excess - 1)
        if keep >= len(values[longest]):
            return  # nothing left to cut: the body alone is too long (validation prevents it)
        values[longest] = values[longest][:keep].rstrip() + "…"
