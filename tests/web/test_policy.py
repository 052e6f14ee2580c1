"""The public usage and privacy policy: no sign-in, no access record, generated from the
configuration, with live totals and no plate data."""

import datetime as dt
import re

import numpy as np
import pytest
from peewee import SqliteDatabase

from appliance import alerts, audit, hotlist, sharing
from appliance.db import write
from appliance.models import AccessRecord, database, utcnow
from appliance.roles import ROLES
from appliance.store import EvidenceStore, NewRead, save_read
from tests.appliance.test_sharing import new_request
from tests.conftest import make_settings
from web import policy

ADMIN = audit.Actor("admin.chen", "Harbor City Police Department", "10.0.0.2")
REVIEWER = audit.Actor("capt.ruiz", "Harbor City Police Department", "10.0.0.3")  # decides what ADMIN records
PURPOSE = audit.Purpose("PARK-SCOFF", "26-000981")
PURPOSES = (
    '[{code = "PARK-SCOFF", label = "Towing of vehicles with five or more unpaid citations"}, '
    '{code = "WANTED", label = "Wanted person or warrant"}]'
)


@pytest.fixture
def settings(tmp_path):
    return make_settings(
        tmp_path / "data",
        post__agency="Harbor City Police Department",
        post__name="Pier Road",
        audit__purposes=PURPOSES,
        retention__read_days=400,
        retention__hit_read_days=730,
        retention__audit_days=2555,
        hotlist__stale_after_hours=48,
    )


def figure(html: str, key: str) -> str:
    match = re.search(rf'<dd id="fig-{key}">\s*([^<]*?)\s*(<|$)', html)
    assert match, f"no figure {key}"
    return match.group(1)


def store(settings, plate, captured_at, on_stored=None):
    rng = np.random.default_rng(7)
    return save_read(
        settings,
        EvidenceStore(settings),
        NewRead(plate_raw=plate, plate=plate, confidence=0.9, captured_at=captured_at),
        rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
        None,
        on_stored=on_stored,
    )


def test_the_policy_renders_without_a_session_and_writes_no_access_record(app):
    before = AccessRecord.select().count()
    client = app.test_client()
    resp = client.get("/policy")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "usage and privacy policy" in html
    assert AccessRecord.select().count() == before
    assert not resp.headers.getlist("Set-Cookie")  # nothing about the visitor is kept
    assert 'href="/policy"' in client.get("/auth/login").get_data(as_text=True)  # linked from sign-in


def test_the_policy_states_what_the_configuration_enforces(app, account):
    account("sgt.ruiz", "officer")
    html = app.test_client().get("/policy").get_data(as_text=True)
    # (A) purposes, exactly the configured ones
    assert re.findall(r"<tr><td><code>([^<]+)</code></td><td>([^<]+)</td></tr>", html) == [
        ("PARK-SCOFF", "Towing of vehicles with five or more unpaid citations"),
        ("WANTED", "Wanted person or warrant"),
    ]
    assert "STOLEN-VEH" not in html  # a default that this agency did not configure
    # (B) every role, its permissions, the job titles holding it, and that training is required
    for key, role in ROLES.items():
        assert f'id="role-{key}"' in html and role["label"] in html
    every = {p for role in ROLES.values() for p in role["permissions"]}
    role_table = re.search(r'<table class="list" id="role-list">.*?</table>', html, re.S).group(0)
    assert not [p for p in every if p in role_table], "a permission without words in web.admin.PERMISSION_LABELS"
    officer_row = re.search(r'<tr id="role-officer">.*?</tr>', html, re.S).group(0)
    assert "Search reads by plate" in officer_row and "plate data" in officer_row
    assert "Training is required" in html
    # (C) monitoring, (D) sharing, (E) custodian, (F) accuracy, (G) retention
    assert "1798.90.52" in html and "2555 days" in html
    assert "California state and local public agencies" in html and "2023-DLE-06" in html and "1798.90.55" in html
    assert "Harbor City Police Department owns the ALPR information" in html and "ALPR administrator" in html
    assert "UNCONFIRMED" in html and "CLETS" in html and "within 48 hours" in html
    assert "kept for 400 days" in html and "hotlist for\n      730 days" in html
    assert "Pier Road" in html


def test_the_figures_are_live_totals_without_plate_data(app, settings, tmp_path):
    client = app.test_client()
    html = client.get("/policy").get_data(as_text=True)
    assert [figure(html, k) for k in ("reads", "oldest", "hits", "searches-30d", "sharing")] == [
        "0",
        "none",
        "0",
        "0",
        "0",
    ]

    oldest = utcnow() - dt.timedelta(days=20)
    store(settings, "7ABC123", oldest)
    lists = tmp_path / "svs.csv"
    lists.write_text("plate,state,reason,entry_date,source_ref\n5LMN432,ca,STOLEN VEHICLE,2026-11-20,SVS-1\n")
    hotlist.import_csv(settings, lists, "SVS", ADMIN)
    store(settings, "5LMN432", utcnow(), on_stored=lambda r: alerts.raise_alerts(settings, r))
    with write():
        for _ in range(3):
            audit.record("read.search", ADMIN, query={"plate": "7ABC*"}, purpose=PURPOSE, result_count=1)
    approved = sharing.create(settings, ADMIN, _request(), PURPOSE)
    sharing.decide(settings, REVIEWER, approved.id, True, "Case nexus shown in the request")
    denied = sharing.create(settings, ADMIN, _request(), PURPOSE)
    sharing.decide(settings, REVIEWER, denied.id, False, "No case number given")
    sharing.create(settings, ADMIN, _request(), PURPOSE)  # still pending
    old = sharing.create(settings, ADMIN, _request(), PURPOSE)
    sharing.decide(settings, REVIEWER, old.id, True, "Approved two years ago")
    database.execute_sql(
        "UPDATE sharing_request SET decided_at = ? WHERE id = ?", (utcnow() - dt.timedelta(days=730), old.id)
    )

    before = AccessRecord.select().count()
    html = client.get("/policy").get_data(as_text=True)
    assert figure(html, "reads") == "2"
    assert figure(html, "oldest") == oldest.date().isoformat()
    assert figure(html, "hits") == "1"
    assert figure(html, "searches-30d") == "3"
    assert figure(html, "sharing") == "1"
    assert "7ABC123" not in html and "5LMN432" not in html and "admin.chen" not in html
    assert AccessRecord.select().count() == before


def _request():
    return new_request()


def test_searches_are_counted_per_calendar_month(db):
    with write():
        for _ in range(2):
            audit.record(
                "read.search", ADMIN, query={"plate": "7ABC*"}, purpose=audit.Purpose("WANTED", "26-1"), result_count=0
            )
        audit.record("auth.login", ADMIN)
    now = utcnow()
    this_month = policy.figures(now)
    next_month = policy.figures((now.replace(day=1) + dt.timedelta(days=32)).replace(day=3))
    assert (this_month.searches_30d, next_month.searches_last_month) == (2, 2)
    assert next_month.last_month == now.strftime("%B %Y")
    assert policy.figures(now + dt.timedelta(days=70)).searches_last_month == 0


def test_no_sharing_table_counts_zero(tmp_path):
    """A post without the sharing feature's table (or with one lacking a status) shows 0, no error."""
    scratch = SqliteDatabase(str(tmp_path / "scratch.db"))
    saved = database.obj
    database.initialize(scratch)
    try:
        since = utcnow() - dt.timedelta(days=365)
        assert policy._sharing_granted(since) == 0
        scratch.execute_sql("CREATE TABLE sharing_request (id INTEGER PRIMARY KEY, agency TEXT)")
        assert policy._sharing_granted(since) == 0
        scratch.execute_sql("DROP TABLE sharing_request")
        scratch.execute_sql("CREATE TABLE sharing_request (id INTEGER PRIMARY KEY, status TEXT, created_at TIMESTAMP)")
        scratch.execute_sql(
            "INSERT INTO sharing_request (status, created_at) VALUES ('approved', ?), ('denied', ?), ('approved', ?)",
            (utcnow(), utcnow(), utcnow() - dt.timedelta(days=400)),
        )
        assert policy._sharing_granted(since) == 1
    finally:
        scratch.close()
        database.initialize(saved)
