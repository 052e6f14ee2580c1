"""UTC <-> the post's zone, without Flask: what the pages' filter and forms and the CLI's listings
convert with (the pages' side is tested in tests/web/test_local_time.py)."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from appliance import clock

LA = ZoneInfo("America/Los_Angeles")
FALL_BACK_PDT = dt.datetime(2026, 11, 1, 8, 30)  # 01:30 PDT, the first 01:30 of the day
FALL_BACK_PST = dt.datetime(2026, 11, 1, 9, 30)  # 01:30 PST, the second one


def test_local_input_becomes_utc_and_the_clock_changes_do_not_crash():
    assert clock.to_utc(dt.datetime(2026, 11, 28, 14, 0), LA) == dt.datetime(2026, 11, 28, 22, 0)
    assert clock.to_utc(dt.datetime(2026, 7, 4, 14, 0), LA) == dt.datetime(2026, 7, 4, 21, 0)
    ambiguous = dt.datetime(2026, 11, 1, 1, 30)
    assert clock.to_utc(ambiguous, LA) == FALL_BACK_PDT  # a window's start: the first 01:30
    assert clock.to_utc(ambiguous, LA, latest=True) == FALL_BACK_PST  # its end: the second
    with pytest.raises(ValueError, match="does not exist in America/Los_Angeles"):
        clock.to_utc(dt.datetime(2026, 3, 8, 2, 30), LA)
    assert clock.with_offset(ambiguous, LA, latest=True) == "2026-11-01T01:30:00-08:00"
    assert clock.zone_of(object()) == clock.UTC  # settings without a zone: UTC
    with pytest.raises(ValueError, match="not ISO-8601"):
        clock.to_local("yesterday", LA)
