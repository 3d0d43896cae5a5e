"""CSV for spreadsheets, safe to open: every CSV the service writes goes through `csv_text`.

A spreadsheet evaluates a cell that starts with `=`, `+`, `-` or `@` (and, in some, a tab or carriage return
before one of those) as a formula: a value a caller chose (an agent id, a name) could then run `=HYPERLINK(...)` or
worse on the reader's machine. Such a text cell is prefixed with a single quote, which spreadsheets show as text
(OWASP's "CSV injection" advice). Numbers are written as numbers: a negative figure stays a number.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """`value` as a CSV cell: None as empty, a text starting like a formula behind a quote, anything else as is."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The CSV text (one header row) with every cell made safe by `safe_cell`. Lines end in CRLF (RFC 4180):
    Python's writer quotes a cell holding a character of the line terminator, so a CR inside a cell is quoted
    too and cannot end a row early in a spreadsheet."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in header])
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return out.getvalue()
