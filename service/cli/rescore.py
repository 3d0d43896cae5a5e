"""`huifang rescore`: re-assess stored calls with the current assessor and risk weights from their stored
transcripts (no ASR), keep each replaced report as an earlier version, and print what changed (service/rescore.py,
docs/operations.md)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from service.bankdays import bank_zone, day_start_utc
from service.errors import ServiceError

if TYPE_CHECKING:  # the command line imports settings only once a command runs
    from service.settings import Settings

HELP = "re-assess stored calls with the current assessor from their stored transcripts (no ASR)"
DESCRIPTION = """Re-assess stored calls with the current assessor and risk weights (configs/, HUIFANG_NLU__*,
HUIFANG_SCORING__RISK_FILE) from the transcripts their reports keep; nothing is transcribed again. Each re-scored
report becomes the call's current one; the one it replaces is kept as an earlier version with its assessor
version. Prints one line per call (risk score and tier before -> after, each topic's verdict and each action that
changed) and a total. A call already scored by this assessor under these weights is skipped unless --force, so a
second run changes nothing. The run and every stored report are audited; customers of re-scored calls are planned
again."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add `rescore` to the `huifang` command line."""
    rs = sub.add_parser("rescore", help=HELP, description=DESCRIPTION)
    rs.add_argument("--since", default=None, metavar="DATE", help="only calls from this date (YYYY-MM-DD, the "
                    "bank's time zone HUIFANG_LOANBOOK__TIMEZONE) or time (YYYY-MM-DDTHH:MM, the same zone) on")
    rs.add_argument("--call", default=None, metavar="ID", help="only this call")
    rs.add_argument("--force", action="store_true", help="also re-score calls already at the current assessor")
    rs.add_argument("--dry-run", action="store_true", help="print what would change; store nothing")
    rs.set_defaults(func=cmd_rescore)


def cmd_rescore(args: argparse.Namespace) -> int:
    from service.settings import get_settings

    return rescore_command(get_settings(), args.since, args.call, args.force, args.dry_run)


def parse_since(text: str, timezone: str) -> datetime:
    """`--since` as naive UTC (how call times are stored): a date is its midnight in the bank's time zone."""
    zone = bank_zone(timezone)
    try:
        if len(text) == 10:
            return day_start_utc(date.fromisoformat(text), zone)
        local = datetime.fromisoformat(text)
    except ValueError as e:
        raise ServiceError("usage", f"--since {text!r} is not a date (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM)") from e
    if local.tzinfo is None:
        local = local.replace(tzinfo=zone)
    return local.astimezone(UTC).replace(tzinfo=None)


def rescore_command(settings: Settings, since: str | None, call_id: str | None, force: bool, dry_run: bool) -> int:
    """Run `huifang rescore`; 0 when every selected call was re-scored or skipped, 1 when some failed."""
    from nlu.report import load_risk
    from nlu.script import ScriptError
    from service import bootstrap
    from service.rescore import CallChange, RescoreError, RescoreOptions, rescore
    from service.store.store import StoreError

    options = RescoreOptions(parse_since(since, settings.loanbook.timezone) if since else None, call_id, force,
                             dry_run)
    try:
        risk = load_risk(settings.scoring.risk_file)
        assessor = bootstrap.load_assessor(settings)
        store = bootstrap.open_store(settings)
    except (ScriptError, StoreError) as e:
        raise ServiceError("usage", str(e)) from e

    def show(change: CallChange) -> None:
        print(change.line(), flush=True)

    try:
        book = None if dry_run else bootstrap.build_loanbook(settings, store, assessor)
        result = rescore(store, assessor, bootstrap.dialogue_options(settings), risk, options, show,
                         book.plan if book is not None else None)
    except RescoreError as e:
        raise ServiceError("usage", str(e)) from e
    except StoreError as e:
        raise ServiceError("usage", f"cannot re-score: {e}") from e
    finally:
        store.close()
    for failed_id, why in result.failed:
        print(f"huifang: rescore: call {failed_id}: {why}", file=sys.stderr)
    changed = sum(c.changed for c in result.changes)
    total = (f"rescore: {len(result.changes)} call(s) {'would be ' if dry_run else ''}re-scored, {changed} changed; "
             f"{result.skipped} already at assessor {assessor.version} (risk {risk.version}) skipped")
    if result.superseded:
        total += f"; {result.superseded} replaced by a new upload meanwhile, left as it is"
    if result.failed:
        total += f"; {len(result.failed)} failed"
    print(total + (" (dry run: nothing stored)" if dry_run else ""))
    return 1 if result.failed else 0
