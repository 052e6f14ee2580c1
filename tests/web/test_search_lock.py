"""A search must not lock the post's database (issue 17, finding 4): a wildcard such as 1?1?1?1
over a long time range scans up to MAX_SCAN reads, and it used to do so inside the write
transaction that recorded it, so the pipeline could not store a read meanwhile ("database is
locked") and other officers got 503. Now a search is recorded as asked, reads in a snapshot, and
is recorded again with the plates shown; a refused search is recorded as refused.

The real app through its test client, real SQLite files, the pipeline's own save_read in a thread
of its own. To act while a search is reading, without timing anything, a test stops the request
at the moment its search starts reading the read table: SQLite's trace callback on the request's
connection (`WhileSearching`) runs the step there, in the request's thread, and the search goes
on when it returns.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time

import numpy as np
import pytest

from appliance import audit
from appliance import db as dbmod
from appliance.models import AccessRecord, Read
from appliance.store import EvidenceStore, NewRead, save_read
from tests.conftest import make_settings
from tests.web.conftest import csrf, sign_in
from tests.web.test_busy import _hq_search, _records, hq_site  # noqa: F401 (hq_site: a fixture)

T0 = dt.datetime(2026, 11, 20, 17, 30)  # UTC: 09:30 at the post (America/Los_Angeles)
WINDOW = {"since": "2026-11-20T00:00", "until": "2026-11-21T00:00"}  # typed in the post's time
PATTERN = "1?1?1?1"  # no three known characters in a row: a heavy search, a scan of the window
PURPOSE = {"purpose": "STOLEN-VEH", "case_number": "2026-004512"}


@pytest.fixture
def settings(tmp_path, request):
    """The post's settings with a short busy timeout (a write that cannot have the lock fails in
    0.3 s instead of 5), and the test's own overrides (indirect parametrization)."""
    return make_settings(tmp_path / "data", storage__busy_timeout_ms=300, **getattr(request, "param", {}))


@pytest.fixture
def reads(settings, db):
    rng = np.random.default_rng(17)
    made = {}
    for i, plate in enumerate(["1A1B1C1", "7ABC123", "1X1Y1Z1"]):
        new = NewRead(plate_raw=plate, plate=plate, confidence=0.9, captured_at=T0 + dt.timedelta(minutes=i))
        made[plate] = save_read(
            settings, EvidenceStore(settings), new, rng.integers(0, 255, (40, 120, 3), np.uint8), None
        )
    return made


@pytest.fixture
def officers(trained):
    for username in ("officer.lee", "officer.kim"):
        trained(username, "officer")


class WhileSearching:
    """Runs `step()` once, in the request's thread, when a search starts reading the read table
    (its first `SELECT ... FROM read r`), and keeps what it raised. Set up before the app's first
    request: it adds a before_request hook that puts SQLite's trace callback on each request's
    connection."""

    def __init__(self, app, step):
        self.step, self.ran, self.raised = step, False, []
        app.before_request(self._watch)

    def _watch(self):
        dbmod.database.connection().set_trace_callback(self._statement)

    def _statement(self, sql: str) -> None:
        if self.ran or not sql.lstrip().upper().startswith("SELECT") or "FROM read r" not in sql:
            return
        self.ran = True
        try:
            self.step()
        except BaseException as exc:  # a trace callback's exception would be swallowed by sqlite3
            self.raised.append(exc)


def search(client, plate=PATTERN, mode="wildcard", **fields):
    token = csrf(client.get("/reads/search").get_data(as_text=True))
    return client.post(
        "/reads/search", data={"plate": plate, "mode": mode, **WINDOW, **PURPOSE, "csrf_token": token, **fields}
    )


def signed_in(app, username):
    client = app.test_client()
    assert sign_in(client, username).status_code == 302
    return client


def in_thread(work):
    """Run `work()` in a thread of its own (its own database connection) and wait for it; returns
    what it returned, or raises what it raised."""
    out = {}

    def run():
        try:
            out["value"] = work()
        except BaseException as exc:
            out["error"] = exc
        finally:
            if not dbmod.database.is_closed():
                dbmod.database.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the thread did not finish in 60 s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def pipeline_stores(settings, plate="8PIP808"):
    """What the pipeline does with a vehicle pass: save_read in its own thread and connection."""

    def store():
        new = NewRead(plate_raw=plate, plate=plate, confidence=0.9, captured_at=T0 + dt.timedelta(hours=1))
        frame = np.zeros((90, 160, 3), np.uint8)
        with dbmod.connection():
            return save_read(settings, EvidenceStore(settings), new, frame[:40, :120], frame)

    return in_thread(store)


def actions_since(seq: int) -> list[AccessRecord]:
    return [
        r
        for r in AccessRecord.select().where(AccessRecord.seq > seq).order_by(AccessRecord.seq)
        if not r.action.startswith("auth.")
    ]


def last_seq() -> int:
    return AccessRecord.select(AccessRecord.seq).order_by(AccessRecord.seq.desc()).scalar() or 0


def shown(resp) -> set[str]:
    return {p for p in ("1A1B1C1", "1X1Y1Z1", "7ABC123") if p in resp.get_data(as_text=True)}


def test_the_pipeline_stores_a_read_while_a_heavy_search_reads(app, settings, officers, reads):
    """The finding itself: a read stored by the pipeline's save_read while an officer's scan is
    reading. Before, the scan held the write lock: the store waited out the busy timeout and
    failed with "database is locked"."""

    stored = []
    hook = WhileSearching(app, lambda: stored.append(pipeline_stores(settings)))
    client = signed_in(app, "officer.lee")
    before = last_seq()
    resp = search(client)
    assert hook.ran and not hook.raised, hook.raised
    assert [r.plate for r in stored] == ["8PIP808"]
    assert Read.select().where(Read.plate == "8PIP808").count() == 1
    assert resp.status_code == 200 and shown(resp) == {"1A1B1C1", "1X1Y1Z1"}
    asked, done = actions_since(before)
    assert (asked.action, done.action) == ("read.search_asked", "read.search")
    assert json.loads(asked.query)["plate"] == PATTERN and "plates" not in json.loads(asked.query)
    assert json.loads(done.query)["plates"] == ["1A1B1C1", "1X1Y1Z1"] and done.result_count == 2
    assert json.loads(done.details)["asked"] == asked.seq
    for rec in (asked, done):
        assert (rec.username, rec.purpose_code, rec.case_number) == ("officer.lee", "STOLEN-VEH", "2026-004512")
    assert audit.verify().ok


def test_nothing_is_shown_when_the_record_of_what_is_shown_cannot_be_written(app, settings, officers, reads):
    """The search reads without the lock, so another writer may hold it when the search is done:
    then the record naming the plates cannot be written, and the officer gets 503 and no plate.
    The log keeps the search as asked, with no outcome (true: nothing was shown)."""
    holder = sqlite3.connect(settings.db_path, isolation_level=None, timeout=0)

    def another_writer_takes_the_lock():
        holder.execute("BEGIN IMMEDIATE")

    hook = WhileSearching(app, another_writer_takes_the_lock)
    client = signed_in(app, "officer.lee")
    before = last_seq()
    try:
        resp = search(client)
        assert hook.ran and not hook.raised, hook.raised  # before: the search held the lock itself
        assert holder.in_transaction
    finally:
        holder.execute("ROLLBACK") if holder.in_transaction else None
        holder.close()
    assert resp.status_code == 503 and int(resp.headers["Retry-After"]) > 0
    assert shown(resp) == set()
    [asked] = actions_since(before)
    assert asked.action == "read.search_asked" and json.loads(asked.query)["plate"] == PATTERN
    assert audit.verify().ok


def test_a_second_heavy_search_of_the_same_account_is_refused_and_recorded(app, settings, officers, reads):
    """search.heavy_per_user is 1: while officer.lee's scan reads, a second one of hers (another
    tab, a script's loop) is refused at once with 429 and recorded as refused; officer.kim's runs.
    Before, both waited for the lock the first held and got 503, unrecorded."""
    answers = {}

    def others_search():
        answers["lee"] = in_thread(lambda: search(second_tab, plate="1?1?1?1"))
        answers["kim"] = in_thread(lambda: search(colleague, plate="1?1?1?1"))
        answers["lee light"] = in_thread(lambda: search(second_tab, plate="7ABC123", mode="exact"))

    hook = WhileSearching(app, others_search)
    client, second_tab, colleague = (signed_in(app, u) for u in ("officer.lee", "officer.lee", "officer.kim"))
    before = last_seq()
    first = search(client)
    assert hook.ran and not hook.raised, hook.raised
    assert first.status_code == 200 and shown(first) == {"1A1B1C1", "1X1Y1Z1"}
    lee, kim, light = answers["lee"], answers["kim"], answers["lee light"]
    assert lee.status_code == 429 and int(lee.headers["Retry-After"]) > 0, lee.status_code
    assert "You already have 1 heavy search running" in lee.get_data(as_text=True) and shown(lee) == set()
    assert kim.status_code == 200 and shown(kim) == {"1A1B1C1", "1X1Y1Z1"}
    assert light.status_code == 200 and shown(light) == {"7ABC123"}  # an indexed search is not bounded
    [refused] = [r for r in actions_since(before) if r.action == "read.search_refused"]
    assert refused.username == "officer.lee" and (refused.purpose_code, refused.case_number) == tuple(PURPOSE.values())
    assert json.loads(refused.query)["plate"] == PATTERN and refused.result_count == 0
    assert json.loads(refused.details)["reason"] == "over the per-user bound"
    assert audit.verify().ok


@pytest.mark.parametrize("settings", [{"search__heavy_at_once": 1}], indirect=True)
def test_a_heavy_search_over_the_posts_bound_is_told_busy_and_recorded(app, settings, officers, reads):
    answers = {}
    hook = WhileSearching(app, lambda: answers.update(kim=in_thread(lambda: search(colleague))))
    client, colleague = signed_in(app, "officer.lee"), signed_in(app, "officer.kim")
    before = last_seq()
    assert search(client).status_code == 200
    assert hook.ran and not hook.raised, hook.raised
    kim = answers["kim"]
    assert kim.status_code == 503 and int(kim.headers["Retry-After"]) > 0 and shown(kim) == set()
    assert "The post is busy: it runs at most 1 heavy search at once" in kim.get_data(as_text=True)
    [refused] = [r for r in actions_since(before) if r.action == "read.search_refused"]
    assert refused.username == "officer.kim" and json.loads(refused.details)["reason"] == "busy"


@pytest.mark.parametrize("settings", [{"search__time_cap_s": 1}], indirect=True)
def test_a_search_past_the_time_cap_is_stopped_refused_and_recorded(app, settings, officers, reads):
    """The search is made slow by holding it 1.2 s as it starts reading; the cap is 1 s."""
    hook = WhileSearching(app, lambda: time.sleep(1.2))
    client = signed_in(app, "officer.lee")
    before = last_seq()
    resp = search(client)
    assert hook.ran and not hook.raised, hook.raised
    assert resp.status_code == 400 and shown(resp) == set()
    assert "ran past the 1 s one search may take (search.time_cap_s)" in resp.get_data(as_text=True)
    asked, refused = actions_since(before)
    assert (asked.action, refused.action) == ("read.search_asked", "read.search_refused")
    details = json.loads(refused.details)
    assert details["reason"] == "time cap" and details["asked"] == asked.seq
    assert json.loads(refused.query)["plate"] == PATTERN and refused.purpose_code == "STOLEN-VEH"
    assert search(client).status_code == 200  # the stopped search left its heavy-search slot free


def test_a_search_refused_before_it_runs_is_recorded_with_its_reason(app, officers, reads):
    client = signed_in(app, "officer.lee")
    before = last_seq()
    resp = search(client, since="", until="")  # a scan of every read: refused
    assert resp.status_code == 400 and "give a time range" in resp.get_data(as_text=True)
    [refused] = actions_since(before)
    assert refused.action == "read.search_refused" and refused.username == "officer.lee"
    assert json.loads(refused.query) == {"plate": PATTERN, "mode": "wildcard"}
    assert (refused.purpose_code, refused.case_number) == ("STOLEN-VEH", "2026-004512")
    assert json.loads(refused.details)["reason"] == "too broad"


# --- headquarters ------------------------------------------------------------------------------------


def test_headquarters_records_the_plates_it_shows_and_the_searches_it_refuses(hq_site):  # noqa: F811
    _, settings, browser = hq_site
    status, _, page, _ = _hq_search(browser, "7ABC00*")
    assert status == 200
    [done] = _records(settings, "read.search")
    assert json.loads(done.query)["plates"] == ["7ABC000", "7ABC001", "7ABC002"]
    [asked] = _records(settings, "read.search_asked")
    assert json.loads(done.details)["asked"] == asked.seq
    token = browser.form("/hq/reads/search")
    status, _, page, _ = browser.timed(
        "/hq/reads/search", {"plate": "BC0", "mode": "partial", "csrf_token": token, **PURPOSE}
    )
    assert status == 400 and "time range" in page and "7ABC000" not in page
    [refused] = _records(settings, "read.search_refused")
    assert refused.username == "officer.lee" and json.loads(refused.query)["plate"] == "BC0"
    assert "time range" in json.loads(refused.details)["message"]
