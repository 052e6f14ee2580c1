"""Times as people read and type them: in the site's time zone, stored in UTC.

Everything is stored and exchanged in UTC (naive datetimes mean UTC; exports, the API and the
sync protocol stay UTC ISO-8601). Only what people read speaks local time, and names the zone, so
that a page or a command's output that is evidence (the access log) still names one instant, also
in the repeated hour when clocks go back. The pages' filter and form fields (web/clock.py) and the
CLI's listings both convert here.

The zone is the configuration's `post.timezone` (the post's, or at headquarters its own
configuration's); a settings object without one means UTC.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

UTC = ZoneInfo("UTC")

FORMATS = {
    "datetime": "%Y-%m-%d %H:%M:%S %Z",
    "minutes": "%Y-%m-%d %H:%M %Z",
    "date": "%Y-%m-%d",
    "time": "%H:%M:%S %Z",
    "time_minutes": "%H:%M %Z",
}


def zone_of(settings) -> ZoneInfo:
    """The display zone of a configuration: post.timezone when it has one, else UTC."""
    name = getattr(getattr(settings, "post", None), "timezone", None)
    return ZoneInfo(name) if name else UTC


def to_local(value, tz: ZoneInfo) -> dt.datetime:
    """A stored instant (naive UTC or aware datetime, or an ISO-8601 string as headquarters and
    the access log keep them) as an aware datetime in `tz`."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"time {value!r} is not ISO-8601 (expected e.g. 2026-11-29T14:14:03Z)") from None
    if not isinstance(value, dt.datetime):
        raise TypeError(f"expected a datetime or an ISO-8601 string, got {type(value).__name__} {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(tz)


def to_utc(local: dt.datetime, tz: ZoneInfo, latest: bool = False) -> dt.datetime:
    """A local wall time in `tz` as a naive UTC datetime. In the hour that repeats when clocks go
    back the wall time names two instants: the earlier one, or with `latest` the later one (so a
    window from..to covers both). A wall time skipped when clocks go forward raises ValueError."""
    if local.tzinfo is not None:
        raise ValueError("expected a wall time without a zone")
    first, second = (local.replace(tzinfo=tz, fold=f).astimezone(dt.UTC) for f in (0, 1))
    if first.astimezone(tz).replace(tzinfo=None) != local:
        raise ValueError(
            f"{local:%Y-%m-%d %H:%M} does not exist in {tz}: the clocks moved forward then. "
            "Enter a time an hour earlier or later."
        )
    return max(first, second).replace(tzinfo=None) if latest else min(first, second).replace(tzinfo=None)


def with_offset(local: dt.datetime, tz: ZoneInfo, latest: bool = False) -> str:
    """The local wall time with its UTC offset, as recorded beside the UTC instant:
    '2026-11-28T14:00:00-08:00'."""
    at = to_utc(local, tz, latest).replace(tzinfo=dt.UTC).astimezone(tz)
    return at.isoformat(timespec="seconds")


def local_text(value, settings, fmt: str = "%Y-%m-%d %H:%M %Z") -> str:
    """A stored instant in the configuration's zone with the zone's abbreviation, as the CLI
    prints it: '2026-11-29 08:53 PST'."""
    return to_local(value, zone_of(settings)).strftime(fmt)
