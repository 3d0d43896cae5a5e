"""Days of the bank's calendar (`loanbook.timezone`, default Asia/Shanghai) as the stored times they begin at.

Call and follow-up times are stored as naive UTC (SQLite has no time zones), while people ask by the day on their
wall: 12月1日 in Shanghai begins at 16:00 UTC on 30 November, so a filter on UTC days would put a call made at
07:00 local on the wrong day. Every "day" a route, page or command takes is turned into stored time here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from service.errors import ServiceError


def bank_zone(name: str) -> ZoneInfo:
    """The time zone `name` (IANA, e.g. Asia/Shanghai); ServiceError `bad_timezone` (503: a setting is wrong,
    not the request) when the system has no such zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ServiceError("bad_timezone", f"unknown time zone {name!r}", 503) from e


def day_start_utc(day: date, tz: ZoneInfo) -> datetime:
    """When the bank's calendar day `day` begins, as stored (naive UTC)."""
    return datetime.combine(day, time(), tzinfo=tz).astimezone(UTC).replace(tzinfo=None)
