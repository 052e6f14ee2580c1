"""The administrator starts on the home page, which says when the quarterly audit and the account
review are due ("due by", "overdue since" or "done on", dates in the post's zone), from the records
the access log holds of doing them. An auditor sees the audit only; officers still start at work."""

import datetime as dt
import re
from zoneinfo import ZoneInfo

from appliance import audit
from appliance.db import write
from tests.web.conftest import sign_in


def _local_today(settings) -> dt.date:
    return dt.datetime.now(ZoneInfo(settings.post.timezone)).date()


def _last_quarter(today: dt.date) -> tuple[str, dt.date]:
    """The label and last day of the quarter before today's (worked out here, not by the product)."""
    first_of_this = dt.date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
    last_day = first_of_this - dt.timedelta(days=1)
    return f"{last_day.year}-Q{(last_day.month - 1) // 3 + 1}", last_day


def _duty(html: str, key: str) -> str:
    match = re.search(rf'<tr id="duty-{key}">(.*?)</tr>', html, re.S)
    assert match, f"no duty {key} on the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1)))


def test_the_administrators_home_page_says_when_the_audit_and_the_review_are_due(app, settings, trained):
    trained("admin.ito", "admin")
    client = app.test_client()
    sign_in(client, "admin.ito")
    home = client.get("/")
    assert home.status_code == 200  # not sent on to the live view: the duties are here
    html = home.get_data(as_text=True)
    today = _local_today(settings)
    label, last_day = _last_quarter(today)
    due_on = last_day + dt.timedelta(days=30)
    audit_duty = _duty(html, "quarterly-audit")
    assert label in audit_duty
    if today <= due_on:
        assert f"due by {due_on}" in audit_duty, audit_duty
    else:
        assert f"overdue since {due_on + dt.timedelta(days=1)}" in audit_duty, audit_duty
    assert f'href="/audit/reports/quarterly/{label}"' in html
    assert "no account review is on record" in _duty(html, "account-review")
    assert 'href="/admin/accounts/review"' in html

    assert client.get("/admin/accounts/review").status_code == 200  # the review itself (user.review)
    # The quarterly report of that quarter, as its page records it (appliance/reports.record_viewed).
    with write():
        audit.record(
            "audit.report",
            audit.Actor("admin.ito", settings.post.agency, "127.0.0.1"),
            query={"report": "quarter", "period": label},
            purpose=audit.Purpose("AUDIT", "AUD-1"),
            details={"via": "web"},
        )
    html = client.get("/").get_data(as_text=True)
    assert f"done on {today}" in _duty(html, "quarterly-audit")
    review = _duty(html, "account-review")
    assert f"done on {today}" in review and f"the next is due by {today + dt.timedelta(days=90)}" in review


def test_an_auditor_sees_the_audit_only_and_officers_still_start_at_work(app, trained):
    trained("auditor.kim", "auditor")
    client = app.test_client()
    sign_in(client, "auditor.kim")
    html = client.get("/").get_data(as_text=True)
    assert 'id="duty-quarterly-audit"' in html and 'id="duty-account-review"' not in html

    trained("officer.lee", "officer")
    officer = app.test_client()
    sign_in(officer, "officer.lee")
    assert officer.get("/").headers["Location"] == "/live"
