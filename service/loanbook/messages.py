"""Messages to customers from templates: one per report action and channel, in Simplified Chinese
(`configs/messages.yaml`), filled only with the fields the template names.

A template may name only fields of `ALLOWED_FIELDS` (a masked name, the last digits of the loan number, the
repayment day and amount, the bank's name and hotline, ...): no field can carry an ID, card or phone number in,
and whatever was filled in, a rendered message in which `nlu.pii.find_numbers` still finds a personal number is
refused. Pure: no I/O besides reading the template file.

Errors, all `MessageError` (a `ValueError`):
- `TemplateError`: the file or a template is malformed, or names a field outside `ALLOWED_FIELDS` (at load);
- `MissingField`: `render` was not given a field the template names;
- `PersonalNumber`: the rendered subject or body would contain a personal number.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from huifang_configs import configs_file
from nlu.pii import find_numbers
from nlu.script import read_mapping

DEFAULT_MESSAGES_FILE = configs_file("messages.yaml")

MessageChannel = Literal["sms", "email", "letter"]
MESSAGE_CHANNELS: tuple[MessageChannel, ...] = get_args(MessageChannel)

#: The only fields a template may name. None of them is an identifier of a person: the name comes masked
#: (张**), the loan number as its last four digits, amounts and days as figures.
ALLOWED_FIELDS = frozenset({
    "customer_name_masked",  # 张** (the caller masks the name)
    "loan_id_tail",          # last four characters of the loan number
    "repay_day",             # day of the month, 15
    "monthly_yuan",          # monthly instalment, 4200
    "amount_yuan",           # loan amount, 800000
    "term_years",            # 20
    "due_date",              # a date, 2026-12-15
    "bank_name",             # bank-wide default in the template file
    "hotline",               # bank-wide default in the template file (a 400/800 or short service number)
    "topics",                # names of call-script topics (还款日、月供), joined
})
#: Longest SMS body accepted from the template file (characters, after filling): a gateway splits longer ones.
MAX_SMS_CHARS = 300


class MessageError(ValueError):
    """A message cannot be made from its template."""


class TemplateError(MessageError):
    """The template file or one template is malformed or names a field outside `ALLOWED_FIELDS`."""


class MissingField(MessageError):
    """A field the template names was not given."""


class PersonalNumber(MessageError):
    """The rendered message would contain an ID, card or phone number (which kind is said; the text is not)."""


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """One action's message over one channel. `subject` only for e-mail; `fields` are the names the subject and
    body use."""

    action: str
    channel: MessageChannel
    subject: str | None
    body: str
    fields: frozenset[str]


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A message ready to send, free of personal numbers."""

    subject: str | None
    body: str


@dataclass(frozen=True, slots=True)
class MessageBook:
    """Every template of the file, and the bank-wide defaults (`bank_name`, `hotline`)."""

    templates: dict[tuple[str, MessageChannel], MessageTemplate]
    defaults: dict[str, str]

    def template(self, action: str, channel: str) -> MessageTemplate | None:
        """The template of `action` over `channel`, or None when the file has none."""
        return self.templates.get((action, channel))  # type: ignore[arg-type]

    def actions(self) -> list[str]:
        return sorted({action for action, _ in self.templates})


def _named_fields(text: str, where: str) -> set[str]:
    """The fields `text` names ({name}); refuses attribute or index access, conversions and format specs, and any
    name outside ALLOWED_FIELDS."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise TemplateError(f"{where}: {e}") from e
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(f"{where}: only plain fields like {{repay_day}} are allowed, not {{{name}}}")
        if name not in ALLOWED_FIELDS:
            raise TemplateError(f"{where}: field {{{name}}} is not one a message may carry "
                                f"(allowed: {', '.join(sorted(ALLOWED_FIELDS))})")
        names.add(name)
    return names


def make_template(action: str, channel: str, body: object, subject: object = None) -> MessageTemplate:
    """A checked template (as `load_messages` builds them): e-mail needs a subject, others have none."""
    where = f"template {action}.{channel}"
    if channel not in MESSAGE_CHANNELS:
        raise TemplateError(f"{where}: channel must be one of {', '.join(MESSAGE_CHANNELS)}")
    if not isinstance(body, str) or not body.strip():
        raise TemplateError(f"{where}: needs a body")
    if channel == "email" and (not isinstance(subject, str) or not subject.strip()):
        raise TemplateError(f"{where}: an e-mail needs a subject")
    if channel != "email" and subject is not None:
        raise TemplateError(f"{where}: only e-mail has a subject")
    assert isinstance(body, str) and (subject is None or isinstance(subject, str))  # checked above; for mypy
    fields = _named_fields(body, where) | (_named_fields(subject, where) if subject else set())
    return MessageTemplate(action, channel, subject, body, frozenset(fields))


def render(template: MessageTemplate, fields: dict[str, str]) -> RenderedMessage:
    """The message of `template` filled with `fields` (only those it names are read; others are ignored).
    Raises `MissingField` for a named field not given and `PersonalNumber` if the result holds an ID, card or
    full phone number."""
    missing = sorted(template.fields - fields.keys())
    if missing:
        raise MissingField(f"template {template.action}.{template.channel} needs {', '.join(missing)}")
    values = {name: str(fields[name]) for name in template.fields}
    subject = template.subject.format_map(values) if template.subject else None
    body = template.body.format_map(values)
    for part, text in (("subject", subject), ("body", body)):
        kinds = sorted({span.kind for span in find_numbers(text or "")})
        if kinds:
            raise PersonalNumber(f"template {template.action}.{template.channel}: the {part} would contain a "
                                 f"personal number ({', '.join(kinds)}); check the fields given")
    if template.channel == "sms" and len(body) > MAX_SMS_CHARS:
        raise TemplateError(f"template {template.action}.sms: {len(body)} characters, more than {MAX_SMS_CHARS}")
    return RenderedMessage(subject, body)


def load_messages(path: str | Path | None = None) -> MessageBook:
    """Read and check the template file (default configs/messages.yaml). Raises `TemplateError`."""
    path = Path(path) if path else DEFAULT_MESSAGES_FILE
    raw = read_mapping(path, TemplateError)
    if not isinstance(raw.get("templates"), dict):
        raise TemplateError(f"{path}: needs a mapping `templates` (action -> channel -> subject/body)")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict) or not all(isinstance(v, str | int) for v in defaults.values()):
        raise TemplateError(f"{path}: `defaults` must map field names to text")
    for name, value in defaults.items():
        if name not in ALLOWED_FIELDS:
            raise TemplateError(f"{path}: default {name} is not a field a message may carry")
        if find_numbers(str(value)):
            raise TemplateError(f"{path}: default {name} looks like a personal number")
    templates: dict[tuple[str, MessageChannel], MessageTemplate] = {}
    for action, channels in raw["templates"].items():
        if not isinstance(channels, dict):
            raise TemplateError(f"{path}: templates.{action} must map channels to a subject and body")
        for channel, spec in channels.items():
            if not isinstance(spec, dict):
                raise TemplateError(f"{path}: templates.{action}.{channel} must have a body (and e-mail a subject)")
            template = make_template(str(action), str(channel), spec.get("body"), spec.get("subject"))
            templates[(template.action, template.channel)] = template
    return MessageBook(templates, {str(k): str(v) for k, v in defaults.items()})
