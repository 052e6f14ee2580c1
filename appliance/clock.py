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
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
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


# -- whether the clock is synchronised ---------------------------------------------------------
# An offline post without a real-time clock starts at whatever time it last saved and stamps its
# reads with it; chrony (or systemd-timesyncd) says whether the time has been set from a server.
# The answer is asked at most once a minute (a subprocess each time) and kept.

SYNC_CHECK_EVERY_S = 60.0
MAX_OFFSET_S = 1.0  # chrony synchronised but further off than this (still slewing) is not in sync
COMMAND_TIMEOUT_S = 3.0
_CHRONY_OFFSET = re.compile(r"^System time\s*:\s*([0-9.]+) seconds (fast|slow)", re.MULTILINE)
_CHRONY_LEAP = re.compile(r"^Leap status\s*:\s*(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ClockSync:
    synchronised: bool | None  # None: no tool could tell
    source: str  # "chrony", "timedatectl" or "none"
    checked_at: dt.datetime  # naive UTC
    detail: str  # what the tool said, for /health and the log

    def as_dict(self) -> dict:
        return {
            "synchronised": self.synchronised,
            "source": self.source,
            "checked_at": self.checked_at.isoformat(timespec="seconds") + "Z",
            "detail": self.detail,
        }


def _run(command: list[str]) -> str | None:
    """The tool's standard output, or None when it is not installed, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def check_sync(max_offset_s: float = MAX_OFFSET_S) -> ClockSync:
    """Ask chrony (`chronyc tracking`: leap status Normal and an offset under max_offset_s), or
    else systemd (`timedatectl show -p NTPSynchronized`), whether the clock is synchronised."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    out = _run(["chronyc", "tracking"])
    if out is not None and (leap := _CHRONY_LEAP.search(out)):
        offset = _CHRONY_OFFSET.search(out)
        offset_s = float(offset.group(1)) if offset else None
        if leap.group(1) != "Normal":
            return ClockSync(False, "chrony", now, f"leap status {leap.group(1)}")
        if offset_s is None or offset_s > max_offset_s:
            shown = "unknown" if offset_s is None else f"{offset_s:.3f} s"
            return ClockSync(False, "chrony", now, f"offset {shown} (more than {max_offset_s:g} s)")
        return ClockSync(True, "chrony", now, f"offset {offset_s:.6f} s")
    out = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
    if out is not None and out.strip() in ("yes", "no"):
        return ClockSync(out.strip() == "yes", "timedatectl", now, f"NTPSynchronized={out.strip()}")
    return ClockSync(None, "none", now, "neither chronyc nor timedatectl answered")


class SyncWatch:
    """check_sync() kept for SYNC_CHECK_EVERY_S: the pipeline asks for every read it stamps."""

    def __init__(self, every_s: float = SYNC_CHECK_EVERY_S):
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last: ClockSync | None = None
        self._at = 0.0

    def get(self) -> ClockSync:
        with self._lock:
            if self._last is None or time.monotonic() - self._at >= self.every_s:
                self._last = check_sync()
                self._at = time.monotonic()
            return self._last

    def forget(self) -> None:
        """Ask again at the next get() (after chrony was set up, and in tests)."""
        with self._lock:
            self._last = None


sync_watch = SyncWatch()
