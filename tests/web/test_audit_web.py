"""The access log pages through the real app: filters, keyset pages, verification after tampering
with the real file, exports and reports; each view an access record; everyone else refused."""

import csv
import datetime as dt
import io
import json
import re

import pytest

from appliance import audit, bundle, reports
from appliance import db as dbmod
from appliance.models import AccessRecord
from tests.appliance.test_reports import LOG, _read, put
from tests.web.conftest import csrf, state_purpose, tamper_record
from tests.web.conftest import sign_in as sign_in_only

AUDIT_PURPOSE = ("AUDIT", "AUD-2026-Q1")


def sign_in(client, username, **kwargs):
    """Sign in and state the purpose the access-log pages are opened for (its records hold plates)."""
    resp = sign_in_only(client, username, **kwargs)
    state_purpose(client, *AUDIT_PURPOSE)
    return resp


@pytest.fixture
def auditor(trained, db):
    put(LOG)
    return trained("auditor.kim", "auditor")


def views():
    return [
        json.loads(r.query)
        for r in AccessRecord.select().where(AccessRecord.action == "audit.view").order_by(AccessRecord.seq)
    ]


def shown(html):
    return [int(s) for s in re.findall(r'<tr id="records-(\d+)"', html)]


def filter_log(client, **fields):
    page = client.get("/auth/password")  # a token from a page that records nothing
    data = {"csrf_token": csrf(page.get_data(as_text=True))}
    data.update(fields)
    return client.post("/audit/", data=data)


def seqs(where):
    return sorted((r.seq for r in AccessRecord.select().where(where)), reverse=True)


def test_log_newest_first_and_recorded(client, auditor):
    sign_in(client, "auditor.kim")
    resp = client.get("/audit/")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    got = shown(html)
    assert got == sorted(got, reverse=True) and got[0] == audit.head()[0] - 1  # its own record comes after
    assert "8XYZ999" in html
    [view] = views()
    assert "8XYZ999" in view["plates"] and set(view) == {"plates"}  # no filter; the plates the page shows
    rec = AccessRecord.select().where(AccessRecord.action == "audit.view").get()
    assert (rec.purpose_code, rec.case_number) == AUDIT_PURPOSE


@pytest.mark.parametrize(
    "fields,where",
    [
        ({"username": "bob"}, AccessRecord.username == "bob"),
        ({"action": "read.search"}, AccessRecord.action == "read.search"),
        ({"action": "hotlist.*"}, AccessRecord.action.startswith("hotlist.")),
        ({"query": "3ccc"}, AccessRecord.query.contains("3CCC")),
        ({"purpose": "WANTED"}, AccessRecord.purpose_code == "WANTED"),
        (
            {"since": "2025-02-10T12:00", "until": "2025-02-10T15:00"},  # typed in Los Angeles (PST)
            (AccessRecord.at >= "2025-02-10T20:00") & (AccessRecord.at < "2025-02-10T23:01"),
        ),  # all of 15:00
        (
            {"username": "alice", "purpose": "STOLEN-VEH"},
            (AccessRecord.username == "alice") & (AccessRecord.purpose_code == "STOLEN-VEH"),
        ),
    ],
)
def test_filters_return_the_right_records_and_are_recorded(client, auditor, fields, where):
    sign_in(client, "auditor.kim")
    expected = seqs(where)
    assert expected
    resp = filter_log(client, **fields)
    assert resp.status_code == 200
    assert shown(resp.get_data(as_text=True)) == expected
    recorded = views()[-1]
    for key, value in fields.items():
        key = {"purpose": "purpose"}.get(key, key)
        assert key in recorded and value.split("T")[0] in recorded[key]


def test_keyset_pages(client, auditor):
    with dbmod.write():
        for _ in range(60):
            audit.record("auth.logout", audit.Actor("pager", "Demo Police Department"))
    sign_in(client, "auditor.kim")
    first = filter_log(client, username="pager").get_data(as_text=True)
    page1 = shown(first)
    assert len(page1) == 50
    before = re.search(r'name="before" value="(\d+)"', first).group(1)
    assert int(before) == page1[-1]
    second = filter_log(client, username="pager", before=before).get_data(as_text=True)
    page2 = shown(second)
    assert len(page2) == 10 and max(page2) < min(page1)
    assert sorted(page1 + page2, reverse=True) == seqs(AccessRecord.username == "pager")
    assert 'name="before"' not in second
    assert views()[-1].get("username") == "pager"


def test_bad_filter_is_refused_without_records(client, auditor):
    sign_in(client, "auditor.kim")
    resp = filter_log(client, since="2025-02-11T00:00", until="2025-02-10T00:00")
    assert resp.status_code == 400 and "before" in resp.get_data(as_text=True)
    assert views() == []  # refused: nothing shown, nothing recorded


@pytest.mark.parametrize("role", ["officer", "dispatcher", "technician"])
def test_others_are_refused(client, account, db, role):
    account("someone", role)
    sign_in(client, "someone")
    token = csrf(client.get("/auth/password").get_data(as_text=True))
    for method, url in [
        ("get", "/audit/"),
        ("post", "/audit/"),
        ("post", "/audit/verify"),
        ("get", "/audit/export"),
        ("post", "/audit/export"),
        ("get", "/audit/reports"),
        ("get", "/audit/reports/quarterly/2025-Q1"),
        ("get", "/audit/reports/annual/2025"),
    ]:
        resp = getattr(client, method)(url, data={"csrf_token": token} if method == "post" else None)
        assert resp.status_code == 403, (role, url)
    assert views() == [] and AccessRecord.select().where(AccessRecord.action.startswith("audit.")).count() == 0


def test_admin_may_audit(client, trained, db):
    trained("chief.admin", "admin")
    sign_in(client, "chief.admin")
    assert client.get("/audit/").status_code == 200


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_the_log_needs_current_training(client, account, db, role):
    """The access log holds every plate searched and its case number: ALPR data, so an auditor or
    administrator without current training is refused it, and told why."""
    account("someone", role)
    sign_in(client, "someone")
    for url in ("/audit/", "/audit/export", "/audit/reports"):
        resp = client.get(url)
        assert resp.status_code == 403 and "training" in resp.get_data(as_text=True).lower(), (role, url)
    assert views() == []


def test_anonymous_is_sent_to_sign_in(client, db):
    resp = client.get("/audit/")
    assert resp.status_code == 302 and "/auth/login" in resp.headers["Location"]


def verify(client):
    token = csrf(client.get("/audit/").get_data(as_text=True))
    return client.post("/audit/verify", data={"csrf_token": token})


def test_verify_ok_then_names_the_first_broken_record(client, auditor, settings):
    sign_in(client, "auditor.kim")
    html = verify(client).get_data(as_text=True)
    assert 'id="chain-ok"' in html and f"{audit.head()[0] - 1} " in html
    target = AccessRecord.get(AccessRecord.action == "sharing.request").seq
    tamper_record(settings, target, "query", '{"agency":"Reno PD"}')
    resp = verify(client)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'id="chain-broken"' in html
    assert f"BROKEN at record {target}" in html and "a field was modified" in html
    assert f'id="bad-{target}"' in html and "Reno PD" in html
    dbmod.database.connect(reuse_if_open=True)
    recs = AccessRecord.select().where(AccessRecord.action == "audit.verify").order_by(AccessRecord.seq)
    assert [json.loads(r.details)["ok"] for r in recs] == [True, False]
    assert json.loads(recs[-1].details)["bad_seq"] == target


def test_verify_needs_csrf(client, auditor):
    sign_in(client, "auditor.kim")
    assert client.post("/audit/verify").status_code == 400


def export(client, **fields):
    token = csrf(client.get("/audit/export").get_data(as_text=True))
    return client.post("/audit/export", data={"csrf_token": token, **fields})


def test_csv_export_content_and_record(client, auditor):
    sign_in(client, "auditor.kim")
    resp = export(client, start="2025-02-10", end="2025-02-10", fmt="csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    expected = [r for r in audit.export_rows() if r["at"].startswith("2025-02-10")]
    assert len(rows) == len(expected) == 6
    assert [r["seq"] for r in rows] == [str(r["seq"]) for r in expected]
    assert rows[1]["query"] == '{"plate":"8XYZ999"}' and rows[1]["result_count"] == "0"
    assert list(rows[0]) == list(audit.COLUMNS)
    rec = AccessRecord.get(AccessRecord.action == "audit.export")
    assert rec.username == "auditor.kim" and rec.result_count == 6 and json.loads(rec.details)["format"] == "csv"
    assert audit.verify().ok


def test_bundle_export_verifies_with_the_post_key(client, auditor, settings):
    sign_in(client, "auditor.kim")
    resp = export(client, start="2025-02-10", end="2025-02-11", fmt="bundle")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    key = bundle.load_public_key(bundle.public_key_file(settings).read_bytes())
    checked = bundle.verify(resp.get_data(), key)
    assert checked.ok and checked.count == 17
    assert json.loads(AccessRecord.get(AccessRecord.action == "audit.export").details)["format"] == "bundle"
    assert not list(settings.data_dir.glob("waypost-export-*"))  # the temporary file is gone


def test_export_refuses_a_backwards_period(client, auditor):
    sign_in(client, "auditor.kim")
    resp = export(client, start="2025-02-11", end="2025-02-10", fmt="csv")
    assert resp.status_code == 400 and "before" in resp.get_data(as_text=True)
    assert AccessRecord.select().where(AccessRecord.action == "audit.export").count() == 0


def test_quarterly_report_page_renders_for_an_auditor(client, auditor):
    sign_in(client, "auditor.kim")
    resp = client.get("/audit/reports/quarterly/2025-Q1")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert re.search(r'id="total-searches">6<', html) and re.search(r'id="total-empty">3', html)
    assert 'id="user-alice"' in html and 'id="purpose-CRIME-INV"' in html and 'id="chain-ok"' in html
    assert html.count("<svg") == 2 and "<rect" in html
    assert "style=" not in html and "<script>" not in html.replace("<script src=", "")
    assert "reports.css" in html
    printable = client.get("/audit/reports/quarterly/2025-Q1?print=1").get_data(as_text=True)
    assert 'id="total-searches">6<' in printable and "<nav" not in printable and "<svg" in printable
    reported = list(AccessRecord.select().where(AccessRecord.action == "audit.report"))
    seen = [json.loads(r.query) for r in reported]
    listed = ["1AAA111", "2BBB222", "3CCC333", "8XYZ999"]  # the plates the records it lists name
    assert seen == [{"period": "2025-Q1", "report": "quarter", "plates": listed}] * 2
    assert {(r.purpose_code, r.case_number) for r in reported} == {AUDIT_PURPOSE}


def test_annual_report_and_index(client, auditor, settings):
    with dbmod.write():
        _read(dt.datetime(2025, 3, 3, 9, 0))
        _read(dt.datetime(2025, 6, 3, 9, 0), "misread")
    sign_in(client, "auditor.kim")
    index = client.get("/audit/reports").get_data(as_text=True)
    assert reports.previous_quarter(settings.post.timezone) in index
    resp = client.get("/audit/reports/annual/2025")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and 'id="total-sharing">2<' in html and html.count("<svg") == 3
    assert 'id="total-reads">2<' in html and 'id="total-misreads">1 (100.0% of hits)' in html
    assert client.get("/audit/reports/quarterly/2025-Q9").status_code == 404
    assert (
        client.get("/audit/reports/go?kind=annual&period=2025")
        .headers["Location"]
        .endswith("/audit/reports/annual/2025")
    )
