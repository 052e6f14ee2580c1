"""Times as people read and type them: in the site's time zone, stored in UTC.

Everything is stored and exchanged in UTC (naive datetimes mean UTC; exports, the API and the
sync protocol stay UTC ISO-8601). Only the pages speak local time: the `localtime` filter shows a
stored instant in the zone with its abbreviation, so that a page that is evidence (the access
log) still names one instant, also in the repeated hour when clocks go back. The search forms
take a local date and time (LocalDateTimeField) and hand the query the UTC instant.

The zone is the configuration's `post.timezone` (the post's, or at headquarters its own
configuration's); a settings object without one means UTC.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flask import current_app
from wtforms import DateTimeLocalField

UTC = ZoneInfo("UTC")
# The forms take minutes; the end of a window ("To 14:05") takes in all of its last minute.
END_OF_MINUTE = dt.timedelta(seconds=59, microseconds=999_999)

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


def zone() -> ZoneInfo:
    """The zone of the running app (web.base_app stores it)."""
    return current_app.config.get("WAYPOST_ZONE") or UTC


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


def localtime(value, fmt: str = "datetime", tz: ZoneInfo | None = None) -> str:
    """Jinja filter: `{{ read.captured_at|localtime }}` -> '2026-11-28 22:14:03 PST'; formats:
    datetime (default), minutes, date, time, time_minutes. None shows as an empty string.

    A value that is not a time is shown as it is stored: the access log's verification page shows
    a tampered record, and must show it as found rather than fail."""
    if value is None or value == "":
        return ""
    if fmt not in FORMATS:
        raise ValueError(f"localtime format {fmt!r} is not one of {', '.join(FORMATS)}")
    try:
        return to_local(value, tz or zone()).strftime(FORMATS[fmt])
    except (ValueError, TypeError, OverflowError):
        return str(value)


def zone_label(tz: ZoneInfo | None = None) -> str:
    """How a form or a page names the zone: 'America/Los_Angeles' or 'UTC'."""
    return str(tz or zone())


# --- local input -----------------------------------------------------------------------------------

def to_utc(local: dt.datetime, tz: ZoneInfo, latest: bool = False) -> dt.datetime:
    """A local wall time in `tz` as a naive UTC datetime. In the hour that repeats when clocks go
    back the wall time names two instants: the earlier one, or with `latest` the later one (so a
    window from..to covers both). A wall time skipped when clocks go forward raises ValueError."""
    if local.tzinfo is not None:
        raise ValueError("expected a wall time without a zone")
    first, second = (local.replace(tzinfo=tz, fold=f).astimezone(dt.UTC) for f in (0, 1))
    if first.astimezone(tz).replace(tzinfo=None) != local:
        raise ValueError(f"{local:%Y-%m-%d %H:%M} does not exist in {tz}: the clocks moved forward then. "
                         "Enter a time an hour earlier or later.")
    return max(first, second).replace(tzinfo=None) if latest else min(first, second).replace(tzinfo=None)


def with_offset(local: dt.datetime, tz: ZoneInfo, latest: bool = False) -> str:
    """The local wall time with its UTC offset, as recorded beside the UTC instant:
    '2026-11-28T14:00:00-08:00'."""
    at = to_utc(local, tz, latest).replace(tzinfo=dt.UTC).astimezone(tz)
    return at.isoformat(timespec="seconds")


class LocalDateTimeField(DateTimeLocalField):
    """A date and time typed in the app's zone (an <input type=datetime-local>). `.data` stays the
    wall time as typed (the form shows it back); `.utc` is the instant to query with. A time the
    clocks skipped is a form error. A `latest` field is the end of a window: in the repeated hour it
    picks the later instant, and it takes in the whole minute typed (To 14:05 is 14:05:59.999999),
    so a read at 14:05:30 is inside a window that ends at 14:05."""

    def __init__(self, label=None, validators=None, latest: bool = False, **kwargs):
        self.zone = zone()
        self.latest = latest
        super().__init__(f"{label} ({zone_label(self.zone)})" if label else label, validators,
                         format="%Y-%m-%dT%H:%M", **kwargs)

    def post_validate(self, form, validation_stopped):
        if self.data is not None and not validation_stopped:
            try:
                to_utc(self.data, self.zone)
            except ValueError as exc:
                self.errors.append(str(exc))

    @property
    def utc(self) -> dt.datetime | None:
        if self.data is None:
            return None
        at = to_utc(self.data, self.zone, self.latest)
        return at + END_OF_MINUTE if self.latest else at

    def record(self) -> str | None:
        """The local time the field stands for, with its offset, for the access record: as typed,
        or for the end of a window the last second of the minute typed ('...T14:05:59-08:00')."""
        if self.data is None:
            return None
        if not self.latest:
            return with_offset(self.data, self.zone)
        return self.utc.replace(tzinfo=dt.UTC).astimezone(self.zone).isoformat(timespec="seconds")


def window_record(since: LocalDateTimeField, until: LocalDateTimeField) -> dict:
    """What an access record adds to a query's UTC since/until: the times as the user typed them,
    with their offset, and the zone."""
    out = {}
    if since.data is not None:
        out["since_local"] = since.record()
    if until.data is not None:
        out["until_local"] = until.record()
    if out:
        out["zone"] = zone_label(since.zone)
    return out

