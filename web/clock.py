"""Times as people read and type them: in the site's time zone, stored in UTC.

The pages' side of appliance/clock.py: the `localtime` filter shows a stored instant in the app's
zone with its abbreviation, and the search forms take a local date and time (LocalDateTimeField)
and hand the query the UTC instant. The zone is the one web.base_app stored from the
configuration.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flask import current_app
from wtforms import DateTimeLocalField

from appliance.clock import FORMATS, UTC, to_local, to_utc, with_offset

# The forms take minutes; the end of a window ("To 14:05") takes in all of its last minute.
END_OF_MINUTE = dt.timedelta(seconds=59, microseconds=999_999)


def zone() -> ZoneInfo:
    """The zone of the running app (web.base_app stores it)."""
    return current_app.config.get("WAYPOST_ZONE") or UTC


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


class LocalDateTimeField(DateTimeLocalField):
    """A date and time typed in the app's zone (an <input type=datetime-local>). `.data` stays the
    wall time as typed (the form shows it back); `.utc` is the instant to query with. A time the
    clocks skipped is a form error. A `latest` field is the end of a window: in the repeated hour it
    picks the later instant, and it takes in the whole minute typed (To 14:05 is 14:05:59.999999),
    so a read at 14:05:30 is inside a window that ends at 14:05."""

    def __init__(self, label=None, validators=None, latest: bool = False, **kwargs):
        self.zone = zone()
        self.latest = latest
        super().__init__(
            f"{label} ({zone_label(self.zone)})" if label else label, validators, format="%Y-%m-%dT%H:%M", **kwargs
        )

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
        at = self.utc
        assert at is not None  # self.data is not None
        return at.replace(tzinfo=dt.UTC).astimezone(self.zone).isoformat(timespec="seconds")


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
