"""Headquarters' people side: sign-in, roles, training, the purpose rule, the access log, and the
search across posts. Two real posts push real batches (over HTTP, to headquarters on 127.0.0.1)
into headquarters' database (a SQLite file, or the private PostgreSQL); headquarters then serves
its pages from create_hq_app with its own accounts database, as `waypost hq serve` does."""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from appliance import audit, bundle, users
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from appliance.models import AccessRecord
from sync import hq, post
from sync.hq import search as hq_search
from tests.conftest import make_settings
from tests.sync.conftest import HQServer, add_reads, free_port
from tests.web.conftest import CHROMIUM, PASSWORD, artifacts, csrf, page, sign_in, state_purpose  # noqa: F401 (fixtures)
from web.hq import create_hq_app
from web.server import WebServer

PURPOSE = {"purpose": "STOLEN-VEH", "case_number": "24-001234"}


def _post(tmp_path, post_id, name, camera, hq_port):
    settings = make_settings(
        tmp_path / post_id,
        post__id=post_id,
        post__name=name,
        post__camera_id=camera,
        sync__hq_url=f"http://127.0.0.1:{hq_port}",
        sync__batch_max_reads=5,
    )
    bootstrap(settings, create_admin=False)
    bundle.post_key(settings)
    return settings


@pytest.fixture
def hq_site(tmp_path, hq_target):
    """Posts post-a (Main St, 3 reads) and post-b (Harbor Rd, 2 reads) pushed to headquarters;
    then headquarters' full app over its accounts database. Yields (app, hq settings, post settings)."""
    port = free_port()
    api = HQServer(hq_target, port).start()
    posts = {}
    try:
        for post_id, name, camera, seed, n in (
            ("post-a", "Main St", "cam-a", 1, 3),
            ("post-b", "Harbor Rd", "cam-b", 2, 2),
        ):
            s = _post(tmp_path, post_id, name, camera, port)
            with hq.hq_database.connection_context():
                hq.enroll(post_id, name, bundle.public_key_file(s).read_bytes())
            with dbmod.connection():
                add_reads(s, n, seed=seed)
                result = post.push(s)
            assert result.reads == n, result.lines()
            posts[post_id] = s
    finally:
        api.stop()
    settings = make_settings(tmp_path / "hq-data", post__id="hq", post__name="Headquarters")
    bootstrap(settings, create_admin=False)
    app = create_hq_app(hq_target, settings=settings)
    app.config["TESTING"] = True
    with dbmod.connection():
        actor = system_actor(settings)
        for username, role, trained in (
            ("officer.lee", "officer", True),
            ("officer.new", "officer", False),
            ("disp.kay", "dispatcher", True),
            ("admin.ray", "admin", True),
            ("tech.sam", "technician", False),
        ):
            users.add(
                actor,
                username=username,
                display_name=username,
                organization="PD",
                role=role,
                password=PASSWORD,
                must_change_password=False,
            )
            if trained:
                users.set_training(
                    actor,
                    username,
                    dt.date.today() - dt.timedelta(days=30),
                    "ALPR 101",
                    dt.date.today() + dt.timedelta(days=335),
                )
    yield app, settings, posts
    if not hq.hq_database.is_closed():
        hq.hq_database.close()


def _records(settings, action):
    with dbmod.connection():
        return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def _search(client, plate, mode="exact", **extra):
    page_ = client.get("/hq/reads/search")
    assert page_.status_code == 200
    data = {"plate": plate, "mode": mode, "csrf_token": csrf(page_.get_data(as_text=True)), **PURPOSE, **extra}
    return client.post("/hq/reads/search", data=data)


def test_every_page_needs_sign_in_and_the_api_needs_a_signature(hq_site):
    app, _, _ = hq_site
    client = app.test_client()
    for url in ("/hq", "/hq/reads/search", "/hq/reads/1", "/hq/reads/1/image/crop", "/audit/", "/admin/accounts"):
        resp = client.get(url)
        assert resp.status_code == 302 and "/auth/login" in resp.headers["Location"], url
    # The sync API keeps its own authentication: a signature, never a session.
    resp = client.get("/hq/v1/posts/post-a/position")
    assert resp.status_code == 401 and resp.get_json()["problem"] == "bad_signature"
    # Every route says who may use it (a permission, signed-in, or public for the signed API and sign-in).
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        assert rule.endpoint == "static" or hasattr(view, "permission"), rule


def test_dispatcher_untrained_officer_and_technician_are_refused_the_search(hq_site):
    app, settings, _ = hq_site
    for username, reason in (("disp.kay", "role"), ("officer.new", "training"), ("tech.sam", "role")):
        client = app.test_client()
        assert sign_in(client, username).status_code == 302
        resp = client.get("/hq/reads/search")
        assert resp.status_code == 403, username
        body = resp.get_data(as_text=True)
        assert ("training" in body) == (reason == "training"), username
        assert client.get("/hq/reads/1").status_code == 403
        assert client.get("/hq/reads/1/image/crop").status_code == 403
    assert _records(settings, "read.search") == []


def test_a_search_without_a_purpose_is_refused_and_shows_nothing(hq_site):
    app, settings, _ = hq_site
    client = app.test_client()
    sign_in(client, "officer.lee")
    page_ = client.get("/hq/reads/search")
    for purpose in ({"purpose": "", "case_number": ""}, {"purpose": "STOLEN-VEH", "case_number": "N/A"}):
        resp = client.post(
            "/hq/reads/search",
            data={"plate": "7ABC010", "mode": "exact", **purpose, "csrf_token": csrf(page_.get_data(as_text=True))},
        )
        assert resp.status_code == 400
        assert "result-table" not in resp.get_data(as_text=True)
    assert _records(settings, "read.search") == []
    # Nor can a read be opened before a purpose is stated: the purpose form comes instead.
    read_id = _read_id("post-a")
    body = client.get(f"/hq/reads/{read_id}").get_data(as_text=True)
    assert "purpose-form" in body and "7ABC010" not in body
    assert client.get(f"/hq/reads/{read_id}/image/crop").status_code == 428
    assert _records(settings, "read.view") == [] and _records(settings, "evidence.view") == []


def _read_id(post_id, plate=None):
    with hq.hq_database.connection_context():
        q = hq.HQRead.select().where(hq.HQRead.post_id == post_id)
        if plate:
            q = q.where(hq.HQRead.plate == plate)
        return q.order_by(hq.HQRead.id).first().id


def test_a_search_across_posts_is_recorded_with_its_query_and_purpose_and_the_chain_verifies(hq_site):
    app, settings, _ = hq_site
    client = app.test_client()
    sign_in(client, "officer.lee")
    # Every read of both posts carries the alternative 7A8C123: one search finds all five.
    resp = _search(client, "7A8C123")
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert body.count('class="post-name"') == 5
    assert "Main St" in body and "Harbor Rd" in body and "matched alternative" in body
    assert 'src="/hq/reads/' in body and "/image/crop" in body
    [rec] = _records(settings, "read.search")
    assert rec.username == "officer.lee" and rec.purpose_code == "STOLEN-VEH" and rec.case_number == "24-001234"
    assert '"plate":"7A8C123"' in rec.query and rec.result_count == 5
    assert rec.object_ids.count("read:post-a/") == 3 and rec.object_ids.count("read:post-b/") == 2
    # The thumbnail and the read are shown under the same purpose, and each is recorded.
    read_id = _read_id("post-b")
    crop = client.get(f"/hq/reads/{read_id}/image/crop")
    assert crop.status_code == 200 and crop.data[:2] == b"\xff\xd8"
    detail = client.get(f"/hq/reads/{read_id}").get_data(as_text=True)
    assert "Harbor Rd (post-b)" in detail and "7A8C123" in detail and 'id="crop"' in detail
    [view] = _records(settings, "read.view")
    [image] = _records(settings, "evidence.view")
    assert view.case_number == image.case_number == "24-001234" and '"post":"post-b"' in view.query
    plate = _plate_of(read_id)  # named in both records, so the log's plate filter finds the views
    assert f'"plate":"{plate}"' in view.query and f'"plate":"{plate}"' in image.query
    with dbmod.connection():
        result = audit.verify()
    assert result.ok, result.summary()


def _plate_of(read_id: int) -> str:
    with hq.hq_database.connection_context():
        return hq.HQRead.get_by_id(read_id).plate


def test_search_modes_filters_and_pages(hq_site):
    app, settings, _ = hq_site
    client = app.test_client()
    sign_in(client, "officer.lee")

    def plates(resp):
        assert resp.status_code == 200, resp.get_data(as_text=True)[-800:]

        return re.findall(r'<a class="plate" href="/hq/reads/\d+">(\w+)</a>', resp.get_data(as_text=True))

    assert plates(_search(client, "7ABC010")) == ["7ABC010"]
    assert plates(_search(client, "7abc-010")) == ["7ABC010"]  # typed as people type it
    assert plates(_search(client, "7ABC01*", "wildcard")) == ["7ABC012", "7ABC011", "7ABC010"]  # newest first
    assert sorted(plates(_search(client, "*020", "wildcard"))) == ["7ABC020"]
    assert plates(_search(client, "7ABC0?1", "wildcard")) == ["7ABC021", "7ABC011"]
    # Similar: 7A8C010 folds to the same skeleton as 7ABC010 (8/B); 7ABC01 is one deletion away from each.
    assert plates(_search(client, "7A8C010", "similar"))[0] == "7ABC010"
    assert set(plates(_search(client, "7ABC01", "similar"))) >= {"7ABC010", "7ABC011", "7ABC012"}
    # Contains needs a time range (it cannot use an index); with one it works.
    refused = _search(client, "BC0", "partial")
    assert refused.status_code == 400 and "time range" in refused.get_data(as_text=True)
    now = dt.datetime.now(ZoneInfo(settings.post.timezone))  # the form takes headquarters' local time
    window = {
        "since": (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
        "until": (now + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"),
    }
    assert len(plates(_search(client, "BC0", "partial", **window))) == 5
    before = {"since": "2020-01-01T00:00", "until": "2020-01-02T00:00"}
    assert plates(_search(client, "7A8C123", **before)) == []
    # Filters: one post, one camera.
    assert sorted(plates(_search(client, "7A8C123", post="post-b"))) == ["7ABC020", "7ABC021"]
    assert sorted(plates(_search(client, "7A8C123", camera="post-a/cam-a"))) == ["7ABC010", "7ABC011", "7ABC012"]
    # Pages: 25 to a page in the app; the search itself pages by cursor, newest first.
    with hq.hq_database.connection_context():
        first = hq_search.search(hq_search.Query("7A8C123"), limit=2)
        second = hq_search.search(hq_search.Query("7A8C123"), limit=2, cursor=first.next_cursor)
        third = hq_search.search(hq_search.Query("7A8C123"), limit=2, cursor=second.next_cursor)
    ids = [h.read.id for h in first.hits + second.hits + third.hits]
    assert len(ids) == len(set(ids)) == 5 and third.next_cursor is None
    times = [h.read.captured_at for h in first.hits + second.hits + third.hits]
    assert times == sorted(times, reverse=True)


def test_posts_page_needs_a_status_role_and_shows_the_chain(hq_site):
    app, settings, _ = hq_site
    client = app.test_client()
    sign_in(client, "officer.lee")
    assert client.get("/hq").status_code == 403
    client = app.test_client()
    sign_in(client, "tech.sam")  # health.view, no plate data: needs no ALPR training
    body = client.get("/hq").get_data(as_text=True)
    assert "Main St" in body and "Harbor Rd" in body and body.count(">verified</span>") == 2
    assert "7ABC" not in body
    # A tampered copy at headquarters is found by "Verify log now", naming the first bad record.
    with hq.hq_database.connection_context():
        hq.HQAccessRecord.update(query='{"plate":"XXX"}').where(
            (hq.HQAccessRecord.post_id == "post-a") & (hq.HQAccessRecord.seq == 2)
        ).execute()
        hq.HQPost.update(chain_status="broken", first_bad_seq=2, chain_problem="test").where(
            hq.HQPost.id == "post-a"
        ).execute()
    page_ = client.get("/hq").get_data(as_text=True)
    assert ">broken</span> first bad record 2" in page_ and "access log is BROKEN at record 2" in page_
    resp = client.post("/hq/verify", data={"post": "post-a", "csrf_token": csrf(page_)})
    assert resp.status_code == 200 and "does NOT verify" in resp.get_data(as_text=True)
    assert "first bad record 2" in resp.get_data(as_text=True)
    [rec] = _records(settings, "audit.verify")[-1:]
    assert rec.username == "tech.sam" and '"bad_seq":2' in rec.details


def test_posts_without_csrf_token_are_refused(hq_site):
    app, settings, _ = hq_site
    client = app.test_client()
    sign_in(client, "officer.lee")
    resp = client.post("/hq/reads/search", data={"plate": "7ABC010", "mode": "exact", **PURPOSE})
    assert resp.status_code == 400 and "result-table" not in resp.get_data(as_text=True)
    assert client.post(f"/hq/reads/{_read_id('post-a')}", data=PURPOSE).status_code == 400
    assert _records(settings, "read.search") == []
    # The login form too.
    assert (
        app.test_client().post("/auth/login", data={"username": "officer.lee", "password": PASSWORD}).status_code == 400
    )


def test_no_access_record_no_data(hq_site):
    """Fail closed: when the access log cannot be written, the search returns an error, not reads."""
    app, settings, _ = hq_site
    client = app.test_client()
    sign_in(client, "officer.lee")
    page_ = client.get("/hq/reads/search").get_data(as_text=True)
    con = sqlite3.connect(settings.db_path)
    con.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON access_record WHEN NEW.action = 'read.search' "
        "BEGIN SELECT RAISE(ABORT, 'log unavailable'); END"
    )
    con.commit()
    con.close()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.testing = False
    resp = client.post(
        "/hq/reads/search", data={"plate": "7A8C123", "mode": "exact", **PURPOSE, "csrf_token": csrf(page_)}
    )
    assert resp.status_code == 500 and "7ABC010" not in resp.get_data(as_text=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest.mark.parametrize("hq_target", ["sqlite"], indirect=True)
def test_search_page_in_a_browser(hq_site, page, artifacts):  # noqa: F811
    app, _, _ = hq_site
    server = WebServer(app, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        page.goto(f"{base}/auth/login")
        page.fill("#username", "officer.lee")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/hq/reads/search")
        page.fill("#plate", "7A8C123")
        page.select_option("#purpose", "STOLEN-VEH")
        page.fill("#case_number", "24-001234")
        page.click("#search")
        page.wait_for_selector("#result-table")
        assert page.locator("#result-table tbody tr").count() == 5

        thumbs = page.locator("img.thumb")
        assert thumbs.count() == 5
        for i in range(5):  # lazy images: each loads once scrolled into view
            thumbs.nth(i).scroll_into_view_if_needed()
            expect(thumbs.nth(i)).to_have_js_property("complete", True)
            assert thumbs.nth(i).evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(artifacts / "hq-search.png"), full_page=True)
        page.locator("#result-table a.plate").first.click()
        page.wait_for_selector("#post-name")
        page.screenshot(path=str(artifacts / "hq-read.png"), full_page=True)
    finally:
        server.stop()


def test_hq_serve_makes_its_accounts_database_and_first_admin(tmp_path):
    """`waypost hq serve` in a real process: its own accounts database in data_dir, the first
    administrator from WAYPOST_ADMIN_PASSWORD, sign-in required for the pages, the API signed."""

    port = free_port()
    data = tmp_path / "hq-data"
    env = dict(
        os.environ,
        WAYPOST_STORAGE__DATA_DIR=str(data),
        WAYPOST_STORAGE__MIN_FREE_MB="0",
        WAYPOST_ADMIN_PASSWORD=PASSWORD,
        WAYPOST_CONFIG="",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "hq", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "headquarters did not start"
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        landed = opener.open(f"{base}/hq")
        assert landed.url.startswith(f"{base}/auth/login")  # redirected to sign in
        with pytest.raises(urllib.error.HTTPError) as refused:
            opener.open(f"{base}/hq/v1/posts/post-a/position")
        assert refused.value.code == 404  # signed API: unknown post
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', landed.read().decode()).group(1)
        form = urllib.parse.urlencode({"username": "admin", "password": PASSWORD, "csrf_token": token}).encode()
        change = opener.open(f"{base}/auth/login?next=/hq", data=form)
        # the vault's password is known to whoever provisioned the host: the admin chooses a new one first
        assert change.url == f"{base}/auth/password"
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', change.read().decode()).group(1)
        new = "a new passphrase only the chief knows"
        form = urllib.parse.urlencode({"current": PASSWORD, "new": new, "confirm": new, "csrf_token": token}).encode()
        posts_page = opener.open(f"{base}/auth/password", data=form)  # changed: home is the posts page
        assert posts_page.url == f"{base}/hq" and "No post is enrolled yet" in posts_page.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert (data / "hq.sqlite").exists()
    con = sqlite3.connect(data / make_settings(data).storage.db_file)
    actions = [r[0] for r in con.execute("SELECT action FROM access_record ORDER BY seq")]
    con.close()
    assert "user.add" in actions and actions[-2:] == ["auth.login", "auth.password_change"]


def test_the_index_finds_reads_that_became_visible_out_of_order(tmp_path, hq_target, monkeypatch):
    """A read whose id is below ones already indexed (on PostgreSQL two batches can commit out of
    id order) is still found: the catch-up looks below the highest indexed id, and the indexer's
    full pass looks at every read."""
    hq.open_hq(hq_target)

    def add(read_id, plate):
        hq.HQRead.insert(
            id=read_id,
            post_id="post-a",
            uuid=f"u{read_id}",
            seq=read_id,
            captured_at=f"2026-11-0{read_id % 9 + 1}T10:00:00",
            plate=plate,
            content_hash="0" * 64,
            data={"camera_id": "cam-a", "alternatives": [{"text": "7XYZ999", "score": 0.1}]},
        ).execute()

    with hq.hq_database.connection_context():
        add(10, "7ABC111")
        assert hq_search.catch_up() == 1
        add(5, "7ABC555")  # committed late, with a lower id (captured later)
        hq_search.catch_up(full=True)
        assert [h.read.plate for h in hq_search.search(hq_search.Query("7XYZ999")).hits] == ["7ABC555", "7ABC111"]
        assert hq_search.catch_up(full=True) == 0  # nothing twice
        # More waiting than a search indexes itself: it answers from the index and says so.
        add(11, "7ABC777")
        add(12, "7ABC888")
        monkeypatch.setattr(hq_search, "SEARCH_CATCH_UP", 1)
        page_ = hq_search.search(hq_search.Query("7XYZ999"))
        assert page_.behind and len(page_.hits) == 3
        hq_search.catch_up()
        page_ = hq_search.search(hq_search.Query("7XYZ999"))
        assert not page_.behind and len(page_.hits) == 4
        rows = hq.models.HQReadText.select().where(hq.models.HQReadText.read_id == 5).count()
    assert rows == 2  # the plate and its alternative
    hq.hq_database.close()


def test_the_administrator_sees_headquarters_access_log_and_accounts(hq_site):
    app, _, _ = hq_site
    officer = app.test_client()
    sign_in(officer, "officer.lee")
    assert _search(officer, "7ABC010").status_code == 200
    admin = app.test_client()
    sign_in(admin, "admin.ray")
    assert admin.get("/").headers["Location"].endswith("/hq/reads/search")  # the admin's place of work here
    assert "Why are you opening the access log" in admin.get("/audit/").get_data(as_text=True)
    state_purpose(admin, "AUDIT", "AUD-2026-11")  # the log holds the plates searched: a purpose first
    log = admin.get("/audit/").get_data(as_text=True)
    assert "officer.lee" in log and "read.search" in log and "24-001234" in log
    accounts = admin.get("/admin/accounts").get_data(as_text=True)
    assert "disp.kay" in accounts and "officer.new" in accounts
    nav = admin.get("/hq").get_data(as_text=True)
    assert 'id="nav-search"' in nav and 'id="nav-posts"' in nav and 'id="nav-audit"' in nav
