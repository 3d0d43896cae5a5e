"""`huifang export-feedback`: the disputed prompts supervisors reviewed, as JSON lines in the format of the shared
`nlu_dev` validation set (service/feedback/export.py), for `python -m bench.nlu_eval --extra FILE`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from service.errors import ServiceError

if TYPE_CHECKING:  # the command line imports settings only once a command runs
    from service.settings import Settings

HELP = "write the reviewed disputes of prompts as an evaluation set for the assessor (JSON lines, nlu_dev's format)"
DESCRIPTION = """Write every disputed prompt a supervisor reviewed (upheld or overturned: the reviewer's label is the
gold label either way) as one JSON line {id, topic, question, answer, label, source} in the format of
../shared/data/nlu_dev, question and answer redacted; then `python -m bench.nlu_eval --extra FILE` scores the
assessor on them. Prints to stdout unless --out."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `export-feedback` to the `huifang` command line."""
    ef = sub.add_parser("export-feedback", help=HELP, description=DESCRIPTION)
    ef.add_argument("--since", default=None, metavar="DATE", help="only disputes reviewed from this date "
                    "(YYYY-MM-DD, the bank's time zone HUIFANG_LOANBOOK__TIMEZONE) or time (YYYY-MM-DDTHH:MM) on")
    ef.add_argument("--out", default=None, metavar="FILE", help="write here instead of stdout")
    ef.set_defaults(func=cmd_export_feedback)


def cmd_export_feedback(args: argparse.Namespace) -> int:
    from service.settings import get_settings

    return export_command(get_settings(), args.since, Path(args.out) if args.out else None)


def export_command(settings: Settings, since: str | None, out: Path | None) -> int:
    """Run `huifang export-feedback`; prints how many lines were written to stderr."""
    from service import bootstrap
    from service.cli.rescore import parse_since
    from service.feedback.export import export_lines
    from service.feedback.repository import reviewed_since
    from service.store import audit
    from service.store.store import StoreError

    start = parse_since(since, settings.loanbook.timezone) if since else None
    try:
        store = bootstrap.open_store(settings)
    except StoreError as e:
        raise ServiceError("usage", str(e)) from e
    try:
        lines = list(export_lines(reviewed_since(store, start)))
        # Redacted customers' answers leave the service: said in the audit log, as every read of call data is.
        audit.append(store, "feedback_export", "export-feedback", None,
                     {"since": start.isoformat() if start else None, "lines": len(lines),
                      "out": str(out) if out else "stdout"})
    finally:
        store.close()
    text = "".join(f"{line}\n" for line in lines)
    if out is None:
        sys.stdout.write(text)
    else:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as e:
            raise ServiceError("usage", f"cannot write {out}: {e}") from e
    print(f"export-feedback: {len(lines)} reviewed dispute(s)" + (f" written to {out}" if out else ""),
          file=sys.stderr)
    return 0
