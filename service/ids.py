"""Identifiers: the one pattern for call, agent, customer and loan ids on every path (HTTP, websockets, the
tokens file, the command line).

An id names files, URLs, database keys and log lines, so it is letters, digits, '.', '_', ':' or '-', starting
with a letter or digit: nothing else may ride in it. Call ids take up to 128 characters (switches make long
ones), agent, customer and loan ids up to 64 (their columns). An id is also refused when it looks like a personal
number (an ID-card number, a mobile or landline number, a bank-card number): such an id would put personal data
into every URL and log line, and the logs then could not show it. Ids that pass are therefore logged as they
are (service/logs.py), so that an operator can tell calls apart.

Also here: the name a process goes by on what it leases (`process_name`).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

IdKind = Literal["call", "agent", "customer", "loan"]

#: Longest id of each kind (characters).
MAX_LENGTH: dict[IdKind, int] = {"call": 128, "agent": 64, "customer": 64, "loan": 64}
#: The characters of an id, as a regular expression of one id (anchored by the caller).
ID_CHARS = r"[A-Za-z0-9][A-Za-z0-9._:-]*"
_SHAPE = re.compile(ID_CHARS)

#: What an id may not contain: an ID-card number (17 digits and a check digit or X), a mainland mobile number
#: (11 digits from 13-19, also written 138-1234-5678 or after +86), a landline with its area code (010-12345678),
#: or a run of 12 digits or more (a bank card, an account). Digit runs are maximal: 20261206 is a date, not part
#: of a longer number.
_PERSONAL_NUMBER = re.compile(
    r"(?<![0-9])(?:"
    r"[0-9]{17}[0-9Xx]"
    r"|(?:86[-.]?)?1[3-9][0-9][-.]?[0-9]{4}[-.]?[0-9]{4}"
    r"|0[0-9]{2,3}[-.]?[0-9]{7,8}"
    r"|[0-9]{12,}"
    r")(?![0-9])")


class BadId(ValueError):
    """An id that is malformed, too long, or looks like a personal number."""


def id_problem(value: str, kind: IdKind = "call") -> str | None:
    """Why `value` is not a valid id of `kind`; None when it is."""
    limit = MAX_LENGTH[kind]
    if not isinstance(value, str) or _SHAPE.fullmatch(value) is None:
        return (f"{kind}_id: 1-{limit} letters, digits, '.', '_', ':' or '-', starting with a letter or digit")
    if len(value) > limit:
        return f"{kind}_id: at most {limit} characters"
    if _PERSONAL_NUMBER.search(value):
        return (f"{kind}_id looks like an ID-card, phone or bank-card number: ids are logged and shown, so they "
                "may not carry personal numbers")
    return None


def valid_id(value: str, kind: IdKind = "call") -> bool:
    """Whether `value` is a well-formed id of `kind` (the whole string: no trailing newline)."""
    return id_problem(value, kind) is None


def check_id(value: str, kind: IdKind = "call") -> str:
    """`value` when it is a valid id of `kind`; raises `BadId` saying why not."""
    problem = id_problem(value, kind)
    if problem is not None:
        raise BadId(problem)
    return value


def _checker(kind: IdKind) -> AfterValidator:
    return AfterValidator(lambda v: check_id(v, kind))


#: pydantic field types of the ids (a JSON body's field, a loan file's, a start message's).
CallId = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH["call"]), _checker("call")]
AgentId = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH["agent"]), _checker("agent")]
CustomerId = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH["customer"]), _checker("customer")]
LoanId = Annotated[str, Field(min_length=1, max_length=MAX_LENGTH["loan"]), _checker("loan")]

#: An id inside free text (a log line, a URL path): what `service.logs` keeps unmasked when it is a valid id.
ID_TOKEN = re.compile(r"(?<![A-Za-z0-9._:-])" + ID_CHARS)


def is_logged_as_is(token: str) -> bool:
    """Whether a word of a log line is an id to keep unmasked: a valid id with at least one letter (a bare run of
    digits is masked as text is: it may be part of a number written with spaces)."""
    return any(c.isalpha() for c in token) and valid_id(token, "call")


def process_name(kind: str | None = None) -> str:
    """This process's name on what it leases or claims (recording jobs, outbox messages, live calls in Redis):
    host, process id and a nonce, so that it is unique across replicas and across restarts with one pid, and a
    stuck one can be found. `kind` (`archive`, `ray`) says which sort of worker holds a job. At most 64
    characters, the width of the lease columns."""
    name = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
    return f"{kind}-{name}" if kind else name
