"""What keeps a plate search from holding up the post (issue 17, finding 4), on a real SQLite file:
the read transaction it runs in never takes the write lock, and its time cap stops it even inside
one long statement. tests/web/test_search_lock.py drives the same through the app."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

import peewee
import pytest

from appliance import audit, search
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bench import data as bench_data
from appliance.models import utcnow
from appliance.store import EvidenceStore, NewRead, save_read


def test_a_read_transaction_never_takes_the_write_lock(settings, db):
    with dbmod.read():
        db.execute_sql("SELECT count(*) FROM read").fetchone()
        with pytest.raises(peewee.OperationalError, match="readonly"):
            db.execute_sql("INSERT INTO outbox (kind, object_id, created_at) VALUES ('read', 'x', '2026-01-01')")
    with dbmod.write():  # the connection writes again once it is over
        db.execute_sql("INSERT INTO outbox (kind, object_id, created_at) VALUES ('read', 'y', '2026-01-01')")
        with pytest.raises(RuntimeError, match="inside another transaction"):
            with dbmod.read():
                pass


def test_the_time_cap_stops_a_statement_that_finds_no_row(settings, db):
    """A scan whose filter rejects every read never hands a row back: only SQLite's progress
    handler can stop it. The statement is held 1.2 s as it starts (SQLite's trace callback), past
    the 1 s cap; without the cap it would answer an empty page."""
    bench_data.fill(settings, 5000)
    held = []

    def hold(sql: str) -> None:
        if not held and "FROM read r" in sql:
            held.append(sql)
            time.sleep(1.2)

    db.connection().set_trace_callback(hold)
    now = utcnow()
    q = search.Query("1?1?1?1", "wildcard", since=now - dt.timedelta(days=366), until=now, camera_id="no-such-cam")
    try:
        with dbmod.read(), pytest.raises(search.SearchStopped, match=r"ran past the 1 s one search may take"):
            search.search(q, time_cap_s=1)
    finally:
        db.connection().set_trace_callback(None)
    assert held
    assert search.search(q).hits == []  # the same search, uncapped, runs to its end


def test_a_scan_refused_midway_leaves_no_snapshot_to_its_record(settings, db, monkeypatch):
    """A scan refused after MAX_SCAN reads (here 1) raises while its statement is still open; the
    refusal is recorded while the exception is handled, after the pipeline stored a read. The
    statement must be reset with the refusal: left open, it kept the search's snapshot past its
    transaction, and the record's write failed at once with "database is locked"."""
    for i, plate in enumerate(["1A1B1C1", "7ABC123", "1X1Y1Z1"]):
        at = dt.datetime(2026, 11, 20, 17, 30) + dt.timedelta(minutes=i)
        save_read(settings, EvidenceStore(settings), NewRead(plate, plate, 0.9, at), None, None)
    monkeypatch.setattr(search, "MAX_SCAN", 1)
    q = search.Query("1?1?1?1", "wildcard", since=dt.datetime(2026, 11, 20), until=dt.datetime(2026, 11, 21))
    with pytest.raises(search.SearchError, match="would scan more than 1 reads") as refused:
        with dbmod.read():
            search.search(q)
    pipeline = sqlite3.connect(settings.db_path, isolation_level=None)  # another writer commits
    pipeline.execute("INSERT INTO outbox (kind, object_id, created_at) VALUES ('read', 'x', '2026-11-20')")
    pipeline.close()
    with dbmod.write():  # as web.reads.recorded_search records it, the exception still in hand
        audit.record(
            "read.search_refused",
            system_actor(settings),
            query=q.as_record(),
            purpose=audit.Purpose("CRIME-INV", "26-000321"),
            details={"reason": refused.value.reason},
        )
    assert refused.value.reason == "too broad"


def test_a_scan_finds_an_alternative_whatever_json_made_of_it(settings, db):
    """A scan looks for a matching alternative in the stored JSON before decoding it; a text JSON
    escapes (a quote, a backslash, a non-ASCII letter) must still be found, and the same pattern
    must not find a read that only looks close in the JSON text."""
    at = dt.datetime(2026, 11, 20, 17, 30)
    odd = ['7A"C1X3', "7A\\C1Y3", "7AÉC1Z3"]
    for i, text in enumerate(odd):
        save_read(
            settings,
            EvidenceStore(settings),
            NewRead(
                "8NOPE88", "8NOPE88", 0.9, at + dt.timedelta(minutes=i), alternatives=[{"text": text, "score": 0.1}]
            ),
            None,
            None,
        )
    save_read(
        settings, EvidenceStore(settings), NewRead("9ZZZ999", "9ZZZ999", 0.9, at, alternatives=["7AB"]), None, None
    )
    q = search.Query("7???1?3", "wildcard", since=at - dt.timedelta(hours=1), until=at + dt.timedelta(hours=1))
    with dbmod.read():
        page = search.search(q)
    assert sorted(h.matched for h in page.hits) == sorted(odd) and all(h.on_alternative for h in page.hits)
