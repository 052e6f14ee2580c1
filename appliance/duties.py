"""The administrator's recurring duties and whether each is due, for the home page: the quarterly
audit of the access log (Barstow 466: quarterly audits; Civil Code 1798.90.51(b)(C): how use is
monitored, including periodic audits) and the account review (466.6(d): the accounts of people no
longer authorized are reviewed and deactivated).

Doing either leaves a record in the access log, which is where this looks: producing the quarterly
report of a quarter writes audit.report with the query {"report": "quarter", "period": "2026-Q3"}
(appliance/reports.py record_viewed), and opening the account review writes user.review
(appliance/users.py review). Dates are the post's: a quarter ends at midnight in its zone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from appliance import audit, reports
from appliance.clock import to_local, zone_of
from appliance.models import database, utcnow

AUDIT_WITHIN_DAYS = 30  # after the quarter's last day
REVIEW_EVERY_DAYS = 90  # so no account goes unused, or untrained, for longer than a review cycle unnoticed


@dataclasses.dataclass(frozen=True)
class Duty:
    state: str  # "done", "due" or "overdue"
    due_on: dt.date | None  # the last day to do it in time; None: due now (never done)
    done_on: dt.date | None = None
    next_due_on: dt.date | None = None  # when done: the last day for the next one
    period: str = ""  # the quarterly audit: the quarter it covers, "2026-Q3"
    first_day: dt.date | None = None
    last_day: dt.date | None = None

    @property
    def overdue_since(self) -> dt.date | None:
        return self.due_on + dt.timedelta(days=1) if self.state == "overdue" and self.due_on else None


def _today(settings, now: dt.datetime) -> dt.date:
    return to_local(now, zone_of(settings)).date()


def _local_date(stamp: str, settings) -> dt.date:
    return to_local(stamp, zone_of(settings)).date()


def quarterly_audit(settings, now: dt.datetime | None = None) -> Duty:
    """The audit of the last quarter that has ended: due within AUDIT_WITHIN_DAYS of its last day,
    done by its quarterly report produced after it ended (one produced while it ran left part of
    the quarter unaudited)."""
    now = now or utcnow()
    tz = settings.post.timezone
    today = _today(settings, now)
    period = reports.quarter(reports.previous_quarter(tz, today), tz)
    last_day = (period.end - dt.timedelta(days=1)).date()
    due_on = last_day + dt.timedelta(days=AUDIT_WITHIN_DAYS)
    (first_done,) = database.execute_sql(
        "SELECT min(at) FROM access_record WHERE action = 'audit.report' AND at >= ? "
        "AND json_extract(query, '$.report') = 'quarter' AND json_extract(query, '$.period') = ?",
        (audit.stamp(period.end_utc), period.label),
    ).fetchone()
    duty = Duty(
        "due" if today <= due_on else "overdue",
        due_on,
        period=period.label,
        first_day=period.start.date(),
        last_day=last_day,
    )
    if not first_done:
        return duty
    running = reports.quarter(reports.current_quarter(tz, today), tz)
    next_due = (running.end - dt.timedelta(days=1)).date() + dt.timedelta(days=AUDIT_WITHIN_DAYS)
    return dataclasses.replace(duty, state="done", done_on=_local_date(first_done, settings), next_due_on=next_due)


def account_review(settings, now: dt.datetime | None = None) -> Duty:
    """Due REVIEW_EVERY_DAYS after the last review, and now when none is on record."""
    now = now or utcnow()
    (last,) = database.execute_sql("SELECT max(at) FROM access_record WHERE action = 'user.review'").fetchone()
    if not last:
        return Duty("due", None)
    done_on = _local_date(last, settings)
    due_on = done_on + dt.timedelta(days=REVIEW_EVERY_DAYS)
    if _today(settings, now) > due_on:
        return Duty("overdue", due_on, done_on)
    return Duty("done", due_on, done_on, next_due_on=due_on)
