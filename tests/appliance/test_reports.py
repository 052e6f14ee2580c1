"""The quarterly audit and the annual report counted on a hand-made access log with known answers."""

import datetime as dt
import json
import sqlite3
import uuid

import pytest
from click.testing import CliRunner

from appliance import audit, reports
from appliance import db as dbmod
from appliance.cli import main
from appliance.models import AccessRecord, Alert, Read
from tests.conftest import operator_env

AGENCY = "Demo Police Department"


def put(records):
    """Append hand-made records with chosen times, chained as record() chains them.
    Each record: (at (naive UTC datetime), username, action, query dict, purpose code, case, result_count)."""
    with dbmod.write():
        seq, prev = audit.head()
        rows = []
        for i, (at, who, action, query, code, case, count) in enumerate(records):
            rows.append(
                (
                    seq + 1 + i,
                    audit.stamp(at),
                    who,
                    AGENCY,
                    action,
                    audit.canonical(query),
                    code,
                    case,
                    "[]",
                    count,
                    "10.0.0.9",
                    "{}",
                )
            )
        dbmod.database.cursor().executemany(
            f"INSERT INTO access_record ({', '.join(audit.COLUMNS)}) VALUES ({', '.join('?' * 14)})",
            list(audit.sealed(rows, prev)),
        )


# 2025-Q1 in Los Angeles is 2025-01-01T08:00Z .. 2025-04-01T07:00Z (PST, then PDT from 9 March).
IN = dt.datetime(2025, 2, 10, 18, 0)


def at(hours):
    return IN + dt.timedelta(hours=hours)


LOG = [
    # alice: 3 searches (1 without a hit), 1 view; bob: 2 searches (2 without a hit); carol: admin actions
    (at(0), "alice", "read.search", {"plate": "7ABC123"}, "STOLEN-VEH", "25-000101", 2),
    (at(1), "alice", "read.search", {"plate": "8XYZ999"}, "STOLEN-VEH", "25-000101", 0),
    (at(2), "alice", "read.search", {"plate": "7ABC*"}, "WANTED", "25-000202", 5),
    (at(3), "alice", "read.view", {"read": "r-1"}, "WANTED", "25-000202", 1),
    (at(4), "bob", "read.search", {"plate": "1AAA111"}, "CRIME-INV", "25-000303", 0),
    (at(5), "bob", "read.search", {"plate": "2BBB222"}, "CRIME-INV", "25-000304", 0),
    (at(6), "carol", "hotlist.entry_add", {"plate": "3CCC333"}, "", "", None),
    (at(7), "carol", "hotlist.entry_remove", {"plate": "3CCC333"}, "", "", None),
    (at(8), "carol", "hotlist.import", {}, "", "", 120),
    (at(9), "carol", "sharing.request", {"agency": "Oakland PD"}, "", "", None),
    (at(10), "carol", "sharing.approve", {"request": 1}, "", "", None),
    (at(11), "carol", "hold.place", {"read": "r-1"}, "", "", 1),
    (at(12), "system", "retention.run", {}, "", "", 40),
    (at(13), "mallory", "auth.login_failed", {}, "", "", None),
    (at(14), "mallory", "auth.login_failed", {}, "", "", None),
    (at(15), "mallory", "auth.lockout", {}, "", "", None),
    (at(16), "bob", "auth.login_failed", {}, "", "", None),
    # the edges: 07:59Z on 1 January is still 2024 in Los Angeles; 06:59Z on 1 April is still Q1
    (dt.datetime(2025, 1, 1, 7, 59), "edge", "read.search", {"plate": "OUT1"}, "STOLEN-VEH", "25-000999", 0),
    (dt.datetime(2025, 4, 1, 6, 59), "edge", "read.search", {"plate": "IN1"}, "STOLEN-VEH", "25-000998", 3),
    (dt.datetime(2025, 4, 1, 7, 0), "edge", "read.search", {"plate": "OUT2"}, "STOLEN-VEH", "25-000997", 0),
]


@pytest.fixture
def log(db):
    put(LOG)
    return db


def test_quarter_boundaries_are_local():
    p = reports.quarter("2025-Q1", "America/Los_Angeles")
    assert p.start_utc == dt.datetime(2025, 1, 1, 8) and p.end_utc == dt.datetime(2025, 4, 1, 7)
    assert reports.quarter("2024q4", "UTC").end_utc == dt.datetime(2025, 1, 1)
    assert reports.previous_quarter("UTC", dt.date(2025, 2, 3)) == "2024-Q4"
    for bad in ("2025-Q5", "Q1", "", "2025-13"):
        with pytest.raises(reports.ReportError, match="YEAR-QN"):
            reports.quarter(bad, "UTC")


def test_quarterly_counts(settings, log):
    r = reports.quarterly(settings, "2025-Q1")
    assert r.records == 18  # 17 mid-quarter + the 1 April 06:59Z edge record
    users = {u.username: u for u in r.users}
    assert set(users) == {"alice", "bob", "carol", "system", "mallory", "edge"}
    a, b = users["alice"], users["bob"]
    assert (a.records, a.data_accesses, a.searches, a.searches_without_hit) == (4, 4, 3, 1)
    assert (b.records, b.data_accesses, b.searches, b.searches_without_hit) == (3, 2, 2, 2)
    assert (users["carol"].records, users["carol"].data_accesses) == (6, 0)
    assert (r.searches, r.searches_without_hit) == (6, 3)
    assert [x["seq"] for x in r.empty_searches] == sorted([x["seq"] for x in r.empty_searches], reverse=True)
    assert {json.loads(x["query"])["plate"] for x in r.empty_searches} == {"8XYZ999", "1AAA111", "2BBB222"}
    purposes = {p["code"]: (p["accesses"], p["cases"], p["users"]) for p in r.purposes}
    assert purposes == {"STOLEN-VEH": (3, 2, 2), "WANTED": (2, 1, 1), "CRIME-INV": (2, 2, 1)}
    sections = {s.title: s for s in r.sections}
    hot = sections["Hotlist changes"]
    assert hot.total == 3 and dict(hot.counts) == {
        "hotlist.entry_add": 1,
        "hotlist.entry_remove": 1,
        "hotlist.import": 1,
    }
    assert [x["action"] for x in hot.records] == ["hotlist.entry_add", "hotlist.entry_remove", "hotlist.import"]
    assert dict(sections["Data sharing"].counts) == {"sharing.approve": 1, "sharing.request": 1}
    assert sections["Legal holds"].total == 1 and sections["Purges and retention"].total == 1
    assert r.failed_total == 3 and r.lockouts_total == 1
    assert r.sign_in_failures[0] == {"username": "mallory", "failed": 2, "lockouts": 1}
    assert r.chain.ok and r.chain.checked == AccessRecord.select().count()
    assert dict(r.by_action)["read.search"] == 6


def test_quarterly_lists_are_limited_but_counts_are_not(settings, log):
    r = reports.quarterly(settings, "2025-Q1", limit=1)
    hot = next(s for s in r.sections if s.title == "Hotlist changes")
    assert hot.total == 3 and len(hot.records) == 1 and hot.truncated
    assert r.searches_without_hit == 3 and len(r.empty_searches) == 1


def test_a_stepped_clock_is_counted_by_time_and_noted(settings, log):
    put(
        [
            (dt.datetime(2025, 5, 5), "late", "auth.login", {}, "", "", None),  # Q2, between Q1 records
            (at(20), "alice", "read.search", {"plate": "9ZZZ000"}, "WANTED", "25-000202", 0),
        ]
    )
    r = reports.quarterly(settings, "2025-Q1")
    assert r.records == 19 and "late" not in {u.username for u in r.users}
    assert r.notes and "outside the quarter" in r.notes[0]


def test_quarterly_shows_a_broken_chain(settings, log):
    dbmod.database.close()
    conn = sqlite3.connect(settings.db_path)
    with conn:
        conn.execute("UPDATE access_record SET username = 'nobody' WHERE action = 'hotlist.import'")
    conn.close()
    dbmod.database.connect()
    bad = AccessRecord.get(AccessRecord.action == "hotlist.import").seq
    r = reports.quarterly(settings, "2025-Q1")
    assert not r.chain.ok and r.chain.bad_seq == bad


def _read(captured_at, status=None):
    read = Read.create(
        uuid=str(uuid.uuid4()),
        post_id="post-1",
        camera_id="cam-1",
        captured_at=captured_at,
        plate_raw="7ABC123",
        plate="7ABC123",
        confidence=0.9,
    )
    if status:
        Alert.create(
            read=read,
            hotlist_name="SVS",
            entry_plate="7ABC123",
            entry_state="CA",
            entry_reason="stolen",
            entry_source_ref="x",
            matched_text="7ABC123",
            match_kind="exact",
            score=1.0,
            status=status,
            created_at=captured_at,
        )
    return read


def test_annual_counts(settings, log):
    with dbmod.write():
        _read(dt.datetime(2025, 1, 1, 7, 0))  # 2024 in Los Angeles
        _read(dt.datetime(2025, 1, 1, 9, 0), "confirmed")  # January
        _read(dt.datetime(2025, 1, 20, 9, 0), "misread")
        _read(dt.datetime(2025, 3, 3, 9, 0))
        _read(dt.datetime(2025, 12, 31, 23, 0), "unconfirmed")  # December
        _read(dt.datetime(2026, 1, 1, 7, 30))  # still 31 December in Los Angeles
        _read(dt.datetime(2026, 1, 1, 8, 0), "confirmed")  # 2026
    r = reports.annual(settings, "2025")
    months = dict(r.reads_by_month)
    assert list(months) == ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    assert (months["Jan"], months["Mar"], months["Dec"], r.reads) == (2, 1, 2, 5)
    assert (r.hits, r.confirmed, r.misreads) == (3, 1, 1)
    assert dict(r.hits_by_month)["Jan"] == 2 and dict(r.hit_status) == {"confirmed": 1, "misread": 1, "unconfirmed": 1}
    purposes = {p["code"]: (p["accesses"], p["searches"], p["cases"]) for p in r.queries_by_purpose}
    assert purposes == {"STOLEN-VEH": (4, 4, 3), "WANTED": (2, 1, 1), "CRIME-INV": (2, 2, 2)}
    assert r.sharing.total == 2 and r.retention.total == 1 and r.retention.records[0]["result_count"] == 40
    assert r.records == 19 and r.searches == 7 and r.searches_without_hit == 4


def test_cli_reports_record_themselves(settings, log, monkeypatch):
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    for name, value in operator_env(settings, "audit.kim", "auditor").items():
        monkeypatch.setenv(name, value)
    dbmod.database.close()
    out = CliRunner().invoke(main, ["report", "quarterly", "2025-Q1", "--case", "AUD-2025-Q1"])
    assert out.exit_code == 0, out.output
    assert "searches: 6, without a hit: 3" in out.output and "access log verified" in out.output
    out = CliRunner().invoke(main, ["report", "annual", "2025", "--format", "json", "--case", "AUD-2025"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["queries_by_purpose"][0]["code"] == "STOLEN-VEH"
    out = CliRunner().invoke(main, ["report", "quarterly", "2025-Q7", "--case", "AUD-2025-Q7"])
    assert out.exit_code == 2 and "YEAR-QN" in out.output
    dbmod.database.connect(reuse_if_open=True)
    reported = list(AccessRecord.select().where(AccessRecord.action == "audit.report"))
    seen = [json.loads(r.query) for r in reported]
    # the plates the access records it lists name (what it showed), with the report and period
    assert [{k: v for k, v in q.items() if k != "plates"} for q in seen] == [
        {"period": "2025-Q1", "report": "quarter"},
        {"period": "2025", "report": "year"},
    ]
    assert seen[0]["plates"] == ["1AAA111", "2BBB222", "3CCC333", "8XYZ999"]
    assert [(r.username, r.purpose_code, r.case_number) for r in reported] == [
        ("audit.kim", "AUDIT", "AUD-2025-Q1"),
        ("audit.kim", "AUDIT", "AUD-2025"),
    ]


def test_cli_report_text_names_the_last_day_and_the_log_once(settings, log, monkeypatch):
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    for name, value in operator_env(settings, "audit.kim", "auditor").items():
        monkeypatch.setenv(name, value)
    dbmod.database.close()
    for args, period in (
        (["quarterly", "2026-Q3"], "(2026-07-01 to 2026-09-30, "),
        (["quarterly", "2025-Q4"], "(2025-10-01 to 2025-12-31, "),
        (["annual", "2025"], "(2025-01-01 to 2025-12-31, "),
    ):
        out = CliRunner().invoke(main, ["report", *args, "--case", "AUD-2026-1"])
        assert out.exit_code == 0, out.output
        first, second = out.output.splitlines()[:2]
        assert period in first, first
        assert second.startswith("access log verified: ") and second.count("access log") == 1, second
    dbmod.database.connect(reuse_if_open=True)
