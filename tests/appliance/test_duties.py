"""When the administrator's recurring duties are due, read from a real access log with records at
chosen times: the quarterly audit of the quarter that ended last (due within 30 days after it, done
by a quarterly report of that quarter produced after it ended: audit.report), and the account review
(due 90 days after the last user.review, or now when there is none). Dates are the post's (Los
Angeles here), so a record made in the evening of a UTC morning counts on the local day."""

import datetime as dt

from appliance import duties
from tests.appliance.test_reports import put

# 2026-Q3 in Los Angeles ends at 2026-10-01T07:00Z.
OCT_15 = dt.datetime(2026, 10, 15, 18, 0)
NOV_05 = dt.datetime(2026, 11, 5, 18, 0)


def report(at, period, kind="quarter"):
    return (at, "admin.chen", "audit.report", {"report": kind, "period": period}, "AUDIT", "AUD-1", 10)


def review(at):
    return (at, "admin.chen", "user.review", {}, "", "", 4)


def test_the_quarterly_audit_is_due_within_30_days_of_the_quarters_end_then_overdue(settings, db):
    due = duties.quarterly_audit(settings, OCT_15)
    assert (due.period, due.state, due.due_on, due.done_on) == ("2026-Q3", "due", dt.date(2026, 10, 30), None)
    assert due.first_day == dt.date(2026, 7, 1) and due.last_day == dt.date(2026, 9, 30)
    late = duties.quarterly_audit(settings, NOV_05)
    assert (late.state, late.overdue_since) == ("overdue", dt.date(2026, 10, 31))


def test_only_a_report_of_that_quarter_made_after_it_ended_does_it(settings, db):
    put(
        [
            report(dt.datetime(2026, 9, 20, 18, 0), "2026-Q3"),  # before the quarter ended: not its audit
            report(dt.datetime(2026, 10, 3, 18, 0), "2026-Q2"),  # another quarter
            report(dt.datetime(2026, 10, 3, 19, 0), "2026", kind="year"),  # the annual report
        ]
    )
    assert duties.quarterly_audit(settings, NOV_05).state == "overdue"
    put([report(dt.datetime(2026, 10, 2, 3, 0), "2026-Q3")])  # 20:00 on 1 October in Los Angeles
    done = duties.quarterly_audit(settings, NOV_05)
    assert (done.state, done.done_on) == ("done", dt.date(2026, 10, 1))
    assert done.next_due_on == dt.date(2027, 1, 30)  # 2026-Q4 ends on 31 December


def test_the_quarter_that_ended_last_is_the_posts(settings, db):
    # 06:30Z on 1 October is still 30 September in Los Angeles: 2026-Q3 has not ended there.
    still = duties.quarterly_audit(settings, dt.datetime(2026, 10, 1, 6, 30))
    assert (still.period, still.state, still.overdue_since) == ("2026-Q2", "overdue", dt.date(2026, 7, 31))


def test_the_account_review_is_due_90_days_after_the_last_one_or_now_without_one(settings, db):
    none = duties.account_review(settings, OCT_15)
    assert (none.state, none.due_on, none.done_on) == ("due", None, None)
    put([review(dt.datetime(2026, 9, 1, 5, 0))])  # 22:00 on 31 August in Los Angeles
    done = duties.account_review(settings, dt.datetime(2026, 11, 20, 18, 0))
    assert (done.state, done.done_on, done.next_due_on) == ("done", dt.date(2026, 8, 31), dt.date(2026, 11, 29))
    late = duties.account_review(settings, dt.datetime(2026, 12, 6, 18, 0))
    assert (late.state, late.due_on, late.overdue_since) == ("overdue", dt.date(2026, 11, 29), dt.date(2026, 11, 30))
    put([review(dt.datetime(2026, 12, 6, 17, 0))])
    again = duties.account_review(settings, dt.datetime(2026, 12, 6, 18, 0))
    assert (again.state, again.done_on) == ("done", dt.date(2026, 12, 6))
