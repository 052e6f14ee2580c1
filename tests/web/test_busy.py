"""Searching while a long write holds the database: the real app over HTTP (waitress on 127.0.0.1),
real SQLite files, the writer in another process (a held BEGIN IMMEDIATE, as a sync batch being
stored, a retention batch or a hotlist import holds it) or a real hotlist import in a thread.

A search reads without the write lock, but writes its access records (asked, then what it showed)
in short transactions that need it: it waits for it (busy timeout); if it still cannot have it the
officer gets 503 "busy, try again" with Retry-After and nothing is shown (held before the search,
nothing is recorded either). The waits are printed (pytest -s), not asserted against a clock.
tests/web/test_search_lock.py holds the lock while the search reads."""

from __future__ import annotations

import datetime as dt
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from http.cookiejar import CookieJar

import pytest

from appliance import audit, bundle, hotlist, retention, users
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bench import data as bench_data
from appliance.bootstrap import bootstrap
from appliance.models import AccessRecord, Hotlist, HotlistEntry
from sync import hq, post
from sync.hq import search as hq_search
from tests.conftest import make_settings
from tests.sync.conftest import HQServer, add_reads, free_port
from tests.web.conftest import PASSWORD, csrf
from web import create_app
from web.hq import create_hq_app
from web.server import WebServer

PURPOSE = {"purpose": "STOLEN-VEH", "case_number": "2026-004512"}

# Holds the write lock of the database file argv[1] until its stdin closes (another process, as
# the post's upkeep or a CLI command would be).
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


class Held:
    """The write lock of a database file, held by another process until release()."""

    def __init__(self, path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.communicate("", timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class Browser:
    """An officer's session over HTTP: cookies, CSRF tokens, status codes kept (no exceptions)."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def request(self, path: str, data: dict | None = None) -> tuple[int, dict, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.base + path, data=body, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read().decode()

    def sign_in(self, username: str) -> None:
        _, _, page = self.request("/auth/login")
        status, _, _ = self.request(
            "/auth/login", {"username": username, "password": PASSWORD, "csrf_token": csrf(page)}
        )
        assert status == 200

    def form(self, path: str) -> str:
        status, _, page = self.request(path)
        assert status == 200, page
        return csrf(page)

    def timed(self, path: str, data: dict) -> tuple[int, dict, str, float]:
        t0 = time.perf_counter()
        status, headers, page = self.request(path, data)
        return status, headers, page, time.perf_counter() - t0


def _records(settings, action: str) -> list[AccessRecord]:
    with dbmod.connection():
        return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def _trained_officer(settings, username="officer.lee") -> None:
    actor = system_actor(settings)
    with dbmod.connection():
        users.add(
            actor,
            username=username,
            display_name=username,
            organization="PD",
            role="officer",
            password=PASSWORD,
            must_change_password=False,
        )
        users.set_training(
            actor,
            username,
            dt.date.today() - dt.timedelta(days=30),
            "ALPR 101",
            dt.date.today() + dt.timedelta(days=335),
        )


def _serve(app):
    server = WebServer(app, "127.0.0.1", 0).start()
    return server, f"http://127.0.0.1:{server.port}"


# --- the post -------------------------------------------------------------------------------------


@pytest.fixture
def post_site(tmp_path):
    """The post's app served over HTTP with three reads, an officer signed in at the search form.
    The busy timeout is short so that a held lock outlasts it quickly. Yields (settings, browser)."""
    settings = make_settings(tmp_path / "data", storage__busy_timeout_ms=300)
    bootstrap(settings, create_admin=False)
    with dbmod.connection():
        add_reads(settings, 3, actor=False)
    _trained_officer(settings)

    server, base = _serve(create_app(settings))
    browser = Browser(base)
    browser.sign_in("officer.lee")
    try:
        yield settings, browser
    finally:
        server.stop()


def _post_search(browser, plate="7ABC0*"):
    token = browser.form("/reads/search")
    return browser.timed("/reads/search", {"plate": plate, "mode": "wildcard", "csrf_token": token, **PURPOSE})


def test_a_search_held_out_by_a_long_write_is_told_to_try_again(post_site):
    settings, browser = post_site
    with Held(settings.db_path):
        status, headers, page, waited = _post_search(browser)
    print(
        f"\npost search against a held write lock: HTTP {status} after {waited:.2f} s "
        f"(busy timeout {settings.storage.busy_timeout_ms} ms)"
    )
    assert status == 503, page[:2000]
    assert int(headers["Retry-After"]) > 0
    assert "busy" in page and "try again" in page
    assert "7ABC00" not in page  # no data without its access record...
    assert _records(settings, "read.search") == []  # ...and no record of a search that did not run
    status, _, page, waited = _post_search(browser)
    print(f"the same search after the write committed: HTTP {status} after {waited:.2f} s")
    assert status == 200 and "7ABC00" in page
    assert len(_records(settings, "read.search")) == 1
    with dbmod.connection():
        assert audit.verify().ok


def test_a_search_waits_for_a_write_shorter_than_the_busy_timeout(tmp_path):
    settings = make_settings(tmp_path / "data")  # the shipped busy timeout
    bootstrap(settings, create_admin=False)
    with dbmod.connection():
        add_reads(settings, 3, actor=False)
    _trained_officer(settings)

    server, base = _serve(create_app(settings))
    try:
        browser = Browser(base)
        browser.sign_in("officer.lee")
        held = Held(settings.db_path)
        threading.Timer(0.5, held.release).start()  # a write a tenth of the busy timeout long
        status, _, page, waited = _post_search(browser)
    finally:
        server.stop()
    print(
        f"\npost search behind a 0.5 s write: HTTP {status} after {waited:.2f} s "
        f"(busy timeout {settings.storage.busy_timeout_ms} ms)"
    )
    assert status == 200 and "7ABC00" in page
    assert len(_records(settings, "read.search")) == 1


def _hotlist_csv(path, n: int, seed: int = 1):
    rng = random.Random(seed)
    seen: set[str] = set()  # an import refuses a plate listed twice with the same state and reason
    with path.open("w") as f:
        f.write("plate,state,reason,entry_date,source_ref\n")
        for i in range(n):
            plate = ""
            while not plate or plate in seen:
                plate = (
                    f"{rng.randrange(1, 10)}{''.join(rng.choices('ABCDEFGHJKLMNPRSTUVWXYZ', k=3))}"
                    f"{rng.randrange(1000):03d}"
                )
            seen.add(plate)
            f.write(f"{plate},ca,STOLEN VEHICLE,2026-11-20,SVS-{i}\n")
    return path


def _search_while(settings, job) -> list[tuple[int, float]]:
    """Run `job` (a long write) in a thread while a signed-in officer searches over HTTP, one search
    after another until it ends. Returns each search's (status, seconds waited)."""

    server, base = _serve(create_app(settings))
    answers, done = [], threading.Event()

    def working():
        try:
            with dbmod.connection():
                job()
        finally:
            done.set()

    try:
        browser = Browser(base)
        browser.sign_in("officer.lee")
        worker = threading.Thread(target=working)
        worker.start()
        while not done.is_set():
            status, _, _, waited = _post_search(browser)
            answers.append((status, waited))
        worker.join()
    finally:
        server.stop()
    return answers


def test_searches_go_on_during_a_large_hotlist_import(tmp_path):
    """A state list of 60,000 entries replaced while an officer searches: every search is answered
    (the import commits in short chunks) and the list is replaced whole."""
    settings = make_settings(tmp_path / "data", storage__busy_timeout_ms=3000)
    bootstrap(settings, create_admin=False)
    actor = system_actor(settings)
    first, second = _hotlist_csv(tmp_path / "a.csv", 60_000, 1), _hotlist_csv(tmp_path / "b.csv", 60_000, 2)
    with dbmod.connection():
        add_reads(settings, 3, actor=False)
        hotlist.import_csv(settings, first, "SVS", actor)
    _trained_officer(settings)
    t0 = time.perf_counter()
    answers = _search_while(settings, lambda: hotlist.import_csv(settings, second, "SVS", actor))
    took = time.perf_counter() - t0
    print(
        f"\nhotlist import of 60,000 entries took {took:.1f} s; {len(answers)} searches meanwhile, "
        f"statuses {sorted({s for s, _ in answers})}, longest {max(w for _, w in answers):.2f} s"
    )
    assert answers and all(status == 200 for status, _ in answers), answers
    assert len(_records(settings, "read.search")) == len(answers)
    with dbmod.connection():
        [svs] = [h for h in Hotlist.select() if h.name == "SVS"]
        assert svs.source == "b.csv" and svs.entry_count == 60_000
        assert HotlistEntry.select().count() == 60_000  # the old list is gone, all of it
        assert audit.verify().ok


def test_searches_go_on_during_a_retention_purge(tmp_path):
    """A purge of about 20,000 reads while an officer searches: every search is answered, each
    waiting at most about one batch (the purge's batches are paced and leave the lock free
    between them)."""

    settings = make_settings(tmp_path / "data", storage__busy_timeout_ms=3000, retention__read_days=183)
    bootstrap(settings, create_admin=False)
    with dbmod.connection():
        bench_data.fill(settings, 40_000)
        add_reads(settings, 3, actor=False)  # today's: kept, and what the officer finds
    _trained_officer(settings)
    result = {}
    answers = _search_while(settings, lambda: result.update(run=retention.run(settings, system_actor(settings))))
    run = result["run"]
    print(
        f"\nretention purge of {run.reads:,} reads in {run.batches} batches took {run.seconds:.1f} s; "
        f"{len(answers)} searches meanwhile, statuses {sorted({s for s, _ in answers})}, "
        f"longest {max(w for _, w in answers):.2f} s"
    )
    assert run.reads > 15_000 and answers
    assert all(status == 200 for status, _ in answers), answers
    assert len(_records(settings, "read.search")) == len(answers)


# --- headquarters -----------------------------------------------------------------------------------


@contextmanager
def _hq_and_post(tmp_path):
    """Headquarters' sync API on a SQLite file, up for the block, and a post it has enrolled.
    Yields (the file's path, the post's settings)."""
    target = tmp_path / "hq" / "hq.sqlite"
    port = free_port()
    api = HQServer(target, port).start()
    try:
        s = make_settings(tmp_path / "post", post__id="post-a", sync__hq_url=f"http://127.0.0.1:{port}")
        bootstrap(s, create_admin=False)
        bundle.post_key(s)
        with hq.hq_database.connection_context():
            hq.enroll("post-a", "Main St", bundle.public_key_file(s).read_bytes())
        yield target, s
    finally:
        api.stop()


@pytest.fixture
def hq_site(tmp_path):
    """Headquarters on SQLite with a post's five reads (three indexed for the search), its pages served
    over HTTP, an officer signed in. Yields (hq database path, accounts settings, browser)."""
    with _hq_and_post(tmp_path) as (target, s):
        with dbmod.connection():
            add_reads(s, 3, actor=False)
            assert post.push(s).reads == 3
        with hq.hq_database.connection_context():
            hq_search.catch_up()
        with dbmod.connection():  # stored, not yet indexed: the indexer thread's next tick
            add_reads(s, 2, seed=1, actor=False)
            assert post.push(s).reads == 2
    settings = make_settings(
        tmp_path / "hq-data", post__id="hq", post__name="Headquarters", storage__busy_timeout_ms=300
    )
    bootstrap(settings, create_admin=False)
    _trained_officer(settings)
    server, base = _serve(create_hq_app(str(target), settings=settings))
    browser = Browser(base)
    browser.sign_in("officer.lee")
    try:
        yield target, settings, browser
    finally:
        server.stop()
        if not hq.hq_database.is_closed():
            hq.hq_database.close()


def _hq_search(browser, plate="7ABC0*"):
    token = browser.form("/hq/reads/search")
    return browser.timed("/hq/reads/search", {"plate": plate, "mode": "wildcard", "csrf_token": token, **PURPOSE})


def test_hq_search_answers_while_a_batch_is_being_stored(hq_site):
    """A batch being stored holds headquarters' write lock, and two reads of the last batch are not
    indexed yet. The search does not wait for the lock to index them: it reads (WAL), answers from
    the reads indexed so far and says so, and records in the accounts database."""
    target, settings, browser = hq_site
    with Held(target):
        status, _, page, waited = _hq_search(browser)
    print(f"\nheadquarters search while its reads database is held: HTTP {status} after {waited:.2f} s")
    assert status == 200, page[:2000]
    assert set(re.findall(r"7ABC00\d", page)) == {"7ABC000", "7ABC001", "7ABC002"}
    assert 'id="index-behind"' in page and "7ABC01" not in page
    [rec] = _records(settings, "read.search")
    assert rec.result_count == 3
    status, _, page, _ = _hq_search(browser)  # the batch committed: indexed now, found
    assert status == 200 and {"7ABC010", "7ABC011"} <= set(re.findall(r"7ABC01\d", page))
    assert 'id="index-behind"' not in page


def test_hq_search_held_out_of_the_accounts_database_is_told_to_try_again(hq_site):
    _, settings, browser = hq_site
    with Held(settings.db_path):
        status, headers, page, waited = _hq_search(browser)
    print(f"\nheadquarters search while its accounts database is held: HTTP {status} after {waited:.2f} s")
    assert status == 503, page[:2000]
    assert int(headers["Retry-After"]) > 0
    assert "busy" in page and "7ABC00" not in page
    assert _records(settings, "read.search") == []
    status, _, page, _ = _hq_search(browser)
    assert status == 200 and "7ABC00" in page
    assert len(_records(settings, "read.search")) == 1


def test_a_batch_pushed_while_headquarters_is_held_is_told_busy_in_json_and_sent_again(tmp_path):
    """Headquarters' reads database held past its busy timeout (10 s) while a post pushes: the
    API answers 503 with JSON the post quotes (not the pages' HTML busy page) and Retry-After;
    nothing is stored, and the next push sends the reads."""
    try:
        with _hq_and_post(tmp_path) as (target, s), dbmod.connection():
            add_reads(s, 2, actor=False)
            with Held(target), pytest.raises(post.SyncError) as refused:
                post.push(s)
            message = str(refused.value)
            print(f"\npush while headquarters is held: {message}")
            assert "503" in message and "busy with another write; nothing was stored" in message
            assert "<" not in message  # no HTML quoted
            with hq.hq_database.connection_context():
                assert hq.HQRead.select().count() == 0
            assert post.push(s).reads == 2
            with hq.hq_database.connection_context():
                assert hq.HQRead.select().count() == 2
    finally:
        if not hq.hq_database.is_closed():
            hq.hq_database.close()
