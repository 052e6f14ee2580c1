"""The account page's training form holds a record to appliance/users.py's rules: a course name of
real length, an expiry at most two years after completion. Each refusal is shown beside the field
it is about, and nothing is recorded."""

import datetime as dt
import re

from appliance.models import AccessRecord, User
from tests.web.conftest import csrf, sign_in

TODAY = dt.date.today()
DONE = TODAY - dt.timedelta(days=10)


def _field_errors(html: str, field: str) -> list[str]:
    """The errors the page shows right after the input `field`."""
    match = re.search(rf'id="{field}"[^>]*>((?:\s*<p class="field-error" role="alert">[^<]*</p>)*)', html)
    assert match, f"no input {field} on the page"
    return re.findall(r"<p class=\"field-error\" role=\"alert\">([^<]*)</p>", match.group(1))


def test_the_training_form_refuses_a_token_course_and_a_far_expiry_beside_the_field(app, account):
    account("admin.ito", "admin")
    officer = account("officer.lee", "officer")
    client = app.test_client()
    sign_in(client, "admin.ito")
    page = f"/admin/accounts/{officer.id}"

    def record(**data):
        token = csrf(client.get(page).get_data(as_text=True))
        return client.post(f"{page}/training", data={"csrf_token": token, "completed_on": DONE.isoformat(), **data})

    for data, field, reason in (
        ({"course": "x1"}, "course", "at least 5 characters"),
        ({"course": "12345"}, "course", "only digits or punctuation"),
        ({"course": "--.--"}, "course", "only digits or punctuation"),
        (
            {"course": "POST ALPR 101", "expires_on": DONE.replace(year=DONE.year + 5).isoformat()},
            "expires_on",
            "at most two years",
        ),
    ):
        resp = record(**data)
        html = resp.get_data(as_text=True)
        assert resp.status_code == 400, data
        assert any(reason in e for e in _field_errors(html, field)), (data, _field_errors(html, field))
        assert not _field_errors(html, "completed_on"), data
    assert not AccessRecord.select().where(AccessRecord.action == "user.training").exists()
    assert User.get_by_id(officer.id).training_completed_on is None

    resp = record(course="POST ALPR 101", expires_on=DONE.replace(year=DONE.year + 2).isoformat())
    assert resp.status_code == 302
    assert User.get_by_id(officer.id).training_expires_on == DONE.replace(year=DONE.year + 2)
