"""Accounts, training and the account review through the real app: each change an access record
under the administrator's name, one-time passwords shown once, and the guards that keep an agency
from locking itself out."""

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from appliance import users
from appliance.audit import system_actor, verify
from appliance.models import AccessRecord, User, utcnow
from appliance.roles import allowed
from tests.web.conftest import CHROMIUM, PASSWORD, csrf, sign_in

TODAY = dt.date.today()


def records(action, username=None):
    query = AccessRecord.select().where(AccessRecord.action == action)
    if username:
        query = query.where(AccessRecord.username == username)
    return list(query.order_by(AccessRecord.seq))


def user(username) -> User:
    return User.get(User.username == username)


@pytest.fixture
def admin(app, account):
    """A signed-in administrator's client."""
    account("admin.ito", "admin")
    client = app.test_client()
    assert sign_in(client, "admin.ito").status_code == 302
    return client


def post(client, page_url, url, **data):
    """POST a form as the browser does: with the CSRF token of the page it came from."""
    token = csrf(client.get(page_url).get_data(as_text=True))
    return client.post(url, data={"csrf_token": token, **data})


def create(
    client,
    username="officer.park",
    display_name="Dana Park",
    job_title="Patrol Officer",
    organization="Demo Police Department",
    role="officer",
):
    return post(
        client,
        "/admin/accounts/new",
        "/admin/accounts/new",
        username=username,
        display_name=display_name,
        job_title=job_title,
        organization=organization,
        role=role,
    )


def one_time_password(html: str) -> str:
    match = re.search(r'id="one-time-password">([^<]+)<', html)
    assert match, "no one-time password on the page"
    return match.group(1)


def test_an_administrator_creates_an_account_that_must_change_its_one_time_password(app, settings, admin):
    form = admin.get("/admin/accounts/new").get_data(as_text=True)
    assert 'value="Demo Police Department"' in form  # the post's agency is the default organization
    resp = create(admin)
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Shown once" in html
    password = one_time_password(html)
    assert len(password) >= settings.web.min_password_length

    made = user("officer.park")
    assert (made.display_name, made.job_title, made.role, made.must_change_password) == (
        "Dana Park",
        "Patrol Officer",
        "officer",
        True,
    )
    [rec] = records("user.add", "admin.ito")
    assert (
        rec.username == "admin.ito"
        and f'"user:{made.id}"' in rec.object_ids
        and '"job_title":"Patrol Officer"' in rec.details
    )
    assert password not in rec.details
    # shown once: not on the list, the account page, nor carried in the session to the next page
    for url in ("/admin/accounts", f"/admin/accounts/{made.id}"):
        assert password not in admin.get(url).get_data(as_text=True)

    newcomer = app.test_client()
    resp = sign_in(newcomer, "officer.park", password)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/auth/password")
    assert newcomer.get("/").headers["Location"].endswith("/auth/password")  # nothing else until it is changed
    page = newcomer.get("/auth/password").get_data(as_text=True)
    resp = newcomer.post(
        "/auth/password",
        data={
            "current": password,
            "new": "harbor kestrel 1987",
            "confirm": "harbor kestrel 1987",
            "csrf_token": csrf(page),
        },
    )
    assert resp.status_code == 302 and not user("officer.park").must_change_password


def test_account_creation_refuses_bad_input_and_duplicates_with_the_reason(admin):
    resp = create(admin, username="Bad Name!")
    assert resp.status_code == 400 and "must be 2-40 lower-case letters" in resp.get_data(as_text=True)
    assert create(admin, username="officer.park").status_code == 200
    resp = create(admin, username="OFFICER.PARK")  # names are folded to lower case, so this is the same one
    assert resp.status_code == 400 and "already exists" in resp.get_data(as_text=True)
    resp = create(admin, username="x.y", role="sheriff")
    assert resp.status_code == 400 and "Not a valid choice" in resp.get_data(as_text=True)
    resp = create(admin, username="x.z", job_title="")
    assert resp.status_code == 400
    assert [u.username for u in User.select().order_by(User.id)] == ["admin.ito", "officer.park"]
    assert len(records("user.add")) == 2  # the fixture's admin and officer.park


def test_training_is_recorded_checked_and_opens_plate_data(admin, account):
    officer = account("officer.lee", "officer")
    page = f"/admin/accounts/{officer.id}"
    url = f"/admin/accounts/{officer.id}/training"
    bad = [
        ({"completed_on": (TODAY + dt.timedelta(days=2)).isoformat(), "course": "POST ALPR 101"}, "in the future"),
        (
            {"completed_on": TODAY.isoformat(), "course": "POST ALPR 101", "expires_on": TODAY.isoformat()},
            "expiry date must be after the completion date",
        ),
        ({"completed_on": TODAY.isoformat(), "course": "  "}, "course"),
        ({"completed_on": "11/02/2026", "course": "POST ALPR 101"}, "Not a valid date"),
    ]
    for data, message in bad:
        resp = post(admin, page, url, **data)
        assert resp.status_code == 400 and message in resp.get_data(as_text=True), data
    assert records("user.training") == [] and not allowed(user("officer.lee"), "reads.search")

    done = TODAY - dt.timedelta(days=3)
    resp = post(admin, page, url, completed_on=done.isoformat(), course="POST ALPR 101")
    assert resp.status_code == 302
    trained = user("officer.lee")
    assert (trained.training_completed_on, trained.training_expires_on, trained.training_course) == (
        done,
        done.replace(year=done.year + 1),
        "POST ALPR 101",
    )  # default expiry: one year, as the CLI
    assert allowed(trained, "reads.search")
    [rec] = records("user.training")
    assert rec.username == "admin.ito" and '"course":"POST ALPR 101"' in rec.details
    listing = admin.get("/admin/accounts").get_data(as_text=True)
    row = re.search(r'<tr id="account-officer.lee">.*?</tr>', listing, re.S).group(0)
    assert "current" in row and "POST ALPR 101" in row and str(done) in row


def test_deactivation_and_reactivation_are_recorded_and_take_effect(app, admin, account):
    officer = account("officer.lee", "officer")
    page = f"/admin/accounts/{officer.id}"
    resp = post(admin, page, f"/admin/accounts/{officer.id}/deactivate", back="account")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(page)
    assert not user("officer.lee").active
    assert "is deactivated" in admin.get(page).get_data(as_text=True)
    assert sign_in(app.test_client(), "officer.lee").status_code == 401

    post(admin, page, f"/admin/accounts/{officer.id}/reactivate", back="account")
    assert user("officer.lee").active and sign_in(app.test_client(), "officer.lee").status_code == 302
    assert [r.username for r in records("user.disable")] == ["admin.ito"]
    assert [r.username for r in records("user.enable")] == ["admin.ito"]
    # the return address is a name from a fixed table, never a URL from the form
    resp = post(admin, page, f"/admin/accounts/{officer.id}/deactivate", back="https://evil.example/")
    assert resp.status_code == 400 and user("officer.lee").active


def test_password_reset_shows_a_new_one_time_password_and_unlocks(app, settings, admin, account):
    officer = account("officer.lee", "officer")
    for _ in range(settings.web.failed_logins_before_lockout):
        sign_in(app.test_client(), "officer.lee", "not the password at all")
    assert sign_in(app.test_client(), "officer.lee").status_code == 401  # locked, for this address that failed
    resp = post(admin, f"/admin/accounts/{officer.id}", f"/admin/accounts/{officer.id}/password")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "Password reset" in html and "unlocked" in html
    password = one_time_password(html)
    reset = user("officer.lee")
    assert reset.locked_until is None and reset.must_change_password
    [rec] = records("user.password_reset")
    assert rec.username == "admin.ito" and f'"user:{officer.id}"' in rec.object_ids
    assert sign_in(app.test_client(), "officer.lee").status_code == 401  # the old password is gone
    client = app.test_client()
    assert sign_in(client, "officer.lee", password).headers["Location"].endswith("/auth/password")


def test_an_administrator_cannot_deactivate_or_reset_their_own_account(admin):
    me = user("admin.ito")
    page = f"/admin/accounts/{me.id}"
    assert 'id="deactivate" disabled' in admin.get(page).get_data(as_text=True)
    resp = post(admin, page, f"/admin/accounts/{me.id}/deactivate", back="account")
    assert resp.status_code == 302
    html = admin.get(page).get_data(as_text=True)
    assert "You cannot deactivate your own account; another administrator must do it." in html
    assert user("admin.ito").active and records("user.disable") == []
    post(admin, page, f"/admin/accounts/{me.id}/password")
    assert "Change your own password on the Password page" in admin.get(page).get_data(as_text=True)
    assert records("user.password_reset") == []


def test_the_last_active_administrator_stays(settings, account):
    account("admin.one", "admin")
    account("admin.two", "admin")
    users.set_active(users.actor_for(user("admin.one"), "local"), "admin.two", False)
    with pytest.raises(users.UserError, match="'admin.one' is the last active administrator"):
        users.set_active(system_actor(settings), "admin.one", False)
    assert user("admin.one").active
    users.set_active(system_actor(settings), "admin.two", True)
    users.set_active(system_actor(settings), "admin.one", False)  # now another one remains
    assert [r.details for r in records("user.disable")] == ['{"username":"admin.two"}', '{"username":"admin.one"}']


@pytest.mark.parametrize("role", ["officer", "dispatcher", "auditor", "technician"])
def test_accounts_pages_are_refused_to_everyone_but_administrators(app, settings, account, role):
    target = account("admin.ito", "admin")
    account("someone", role)
    users.set_training(
        system_actor(settings), "someone", TODAY - dt.timedelta(days=1), "POST ALPR 101", TODAY + dt.timedelta(days=300)
    )
    client = app.test_client()
    sign_in(client, "someone")
    token = csrf(client.get("/auth/password").get_data(as_text=True))
    for url in ("/admin/accounts", "/admin/accounts/new", "/admin/accounts/review", f"/admin/accounts/{target.id}"):
        assert client.get(url).status_code == 403, url
    for action in ("deactivate", "password", "training"):
        resp = client.post(
            f"/admin/accounts/{target.id}/{action}",
            data={"csrf_token": token, "completed_on": TODAY.isoformat(), "course": "x"},
        )
        assert resp.status_code == 403, action
    resp = client.post(
        "/admin/accounts/new",
        data={
            "csrf_token": token,
            "username": "mole",
            "display_name": "M",
            "job_title": "x",
            "organization": "x",
            "role": "admin",
        },
    )
    assert resp.status_code == 403
    assert user("admin.ito").active and not User.select().where(User.username == "mole").exists()
    assert records("user.review") == [] and records("user.disable") == []


def test_posts_without_the_csrf_token_are_refused(admin, account):
    officer = account("officer.lee", "officer")
    assert admin.post(f"/admin/accounts/{officer.id}/deactivate", data={"back": "account"}).status_code == 400
    assert (
        admin.post(
            "/admin/accounts/new",
            data={"username": "x.y", "display_name": "X", "job_title": "x", "organization": "x", "role": "admin"},
        ).status_code
        == 400
    )
    assert user("officer.lee").active and records("user.disable") == []


def _age(username, *, last_login_days=None, created_days=0):
    u = user(username)
    u.last_login_at = None if last_login_days is None else utcnow() - dt.timedelta(days=last_login_days)
    u.created_at = utcnow() - dt.timedelta(days=created_days)
    u.save()


def review_names(html: str, key: str) -> set[str]:
    table = re.search(rf'<table class="list" id="review-{key}">.*?</table>', html, re.S)
    return set(re.findall(rf'<tr id="review-{key}-([^"]+)">', table.group(0))) if table else set()


def test_the_review_lists_unused_untrained_and_administrator_accounts(settings, admin, account):
    trained = (TODAY - dt.timedelta(days=200), "POST ALPR 101", TODAY + dt.timedelta(days=165))
    for name, role in [
        ("stale.signin", "officer"),
        ("never.old", "officer"),
        ("never.new", "officer"),
        ("recent", "officer"),
        ("expired", "dispatcher"),
        ("gone", "officer"),
        ("admin.two", "admin"),
    ]:
        account(name, role)
        if name != "never.new":
            users.set_training(system_actor(settings), name, *trained)
    users.set_training(
        system_actor(settings),
        "expired",
        TODAY - dt.timedelta(days=400),
        "POST ALPR 101",
        TODAY - dt.timedelta(days=35),
    )
    users.set_training(system_actor(settings), "admin.ito", *trained)
    _age("stale.signin", last_login_days=91, created_days=400)
    _age("never.old", created_days=120)
    _age("never.new", created_days=10)
    _age("recent", last_login_days=1, created_days=400)
    _age("expired", last_login_days=2, created_days=400)
    _age("gone", last_login_days=200, created_days=400)
    _age("admin.two", last_login_days=3, created_days=400)
    users.set_active(system_actor(settings), "gone", False)  # already deactivated: nothing to review

    html = admin.get("/admin/accounts/review").get_data(as_text=True)
    assert review_names(html, "stale") == {"stale.signin", "never.old"}
    assert review_names(html, "training") == {"never.new", "expired"}
    assert review_names(html, "admins") == {"admin.ito", "admin.two"}
    [rec] = records("user.review")
    assert rec.username == "admin.ito" and '"stale":["never.old","stale.signin"]' in rec.details

    # one click from the review deactivates, returns to the review, and the record says why
    stale = user("stale.signin")
    resp = post(admin, "/admin/accounts/review", f"/admin/accounts/{stale.id}/deactivate", back="review")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/admin/accounts/review")
    assert not user("stale.signin").active
    [rec] = records("user.disable", "admin.ito")
    assert '"reason":"account review"' in rec.details
    html = admin.get("/admin/accounts/review").get_data(as_text=True)
    assert review_names(html, "stale") == {"never.old"}
    assert len(records("user.review")) == 3  # each look at the review is recorded (the POST's page was one)
    assert verify().ok


def test_hostile_names_are_shown_as_text(app, admin, account):
    hostile = '<script>alert("x")</script>'
    title = '"><img src=x onerror=alert(1)>'
    resp = create(admin, username="evil.one", display_name=hostile, job_title=title, organization=hostile)
    pages = [resp.get_data(as_text=True)]
    evil = user("evil.one")
    _age("evil.one", created_days=200)
    for url in ("/admin/accounts", f"/admin/accounts/{evil.id}", "/admin/accounts/review"):
        pages.append(admin.get(url).get_data(as_text=True))
    pages.append(app.test_client().get("/policy").get_data(as_text=True))
    for html in pages:
        assert hostile not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in pages[1]
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in pages[-1]  # job titles are on the public policy


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (apt install chromium)")
def test_browser_an_administrator_creates_an_account_and_records_its_training(live_server, account, page, artifacts):
    account("admin.chen", "admin")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(live_server + "/auth/login")
    page.fill("#username", "admin.chen")
    page.fill("#password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(live_server + "/")
    page.goto(live_server + "/admin/accounts")
    page.click("#link-new-account")
    page.fill("#username", "officer.park")
    page.fill("#display_name", "Dana Park")
    page.fill("#job_title", "Patrol Officer")
    page.select_option("#role", "officer")
    page.screenshot(path=str(artifacts / "1-new-account.png"), full_page=True)
    page.click("#create-account")
    password = page.locator("#one-time-password").inner_text()
    assert len(password) >= 12
    page.screenshot(path=str(artifacts / "2-one-time-password.png"), full_page=True)

    page.click("#to-account")
    expect(page.locator("#account-training")).to_contain_text("not recorded")
    done = TODAY - dt.timedelta(days=2)
    page.fill("#completed_on", done.isoformat())
    page.fill("#course", "POST ALPR 101")
    page.click("#record-training")
    expect(page.locator(".flash")).to_contain_text("Training recorded for officer.park")
    expect(page.locator("#account-training")).to_contain_text("current")
    expect(page.locator("#account-training")).to_contain_text(str(done.replace(year=done.year + 1)))
    page.screenshot(path=str(artifacts / "3-training-recorded.png"), full_page=True)

    page.goto(live_server + "/admin/accounts")
    row = page.locator("#account-officer\\.park")
    expect(row).to_contain_text("Dana Park")
    expect(row).to_contain_text("POST ALPR 101")
    page.screenshot(path=str(artifacts / "4-accounts.png"), full_page=True)
    page.goto(live_server + "/admin/accounts/review")
    expect(page.locator("#review-admins")).to_contain_text("admin.chen")
    page.screenshot(path=str(artifacts / "5-review.png"), full_page=True)

    # the new account signs in with the one-time password and must choose its own
    page.click("text=Sign out")
    page.wait_for_url("**/auth/login")
    page.fill("#username", "officer.park")
    page.fill("#password", password)
    page.click("main button[type=submit]")
    page.wait_for_url("**/auth/password")
    expect(page.locator(".notice")).to_contain_text("temporary password")

    # the public policy, from the sign-in page of a visitor with no session, names the new job title
    visitor = page.context.browser.new_context().new_page()
    visitor.goto(live_server + "/auth/login")
    visitor.click("#policy-link")
    expect(visitor.locator("#role-officer")).to_contain_text("Patrol Officer")
    visitor.screenshot(path=str(artifacts / "6-policy.png"), full_page=True)

    actions = [(r.action, r.username) for r in AccessRecord.select().order_by(AccessRecord.seq)]
    assert ("user.add", "admin.chen") in actions and ("user.training", "admin.chen") in actions
    assert ("user.review", "admin.chen") in actions


def test_an_untrained_administrator_is_sent_to_record_their_own_training(app, account):
    """The start page of an account that may manage accounts links to its own account page, where
    it records its training; others are told to ask. Permissions are shown by their labels."""
    me = account("admin.ito", "admin")
    client = app.test_client()
    sign_in(client, "admin.ito")
    home = client.get("/")
    page = home.get_data(as_text=True)
    assert home.status_code == 200 and 'id="training-required"' in page
    assert re.search(rf'<a href="/admin/accounts/{me.id}" id="record-own-training">Record your training</a>', page)
    assert "Ask the administrator" not in page
    assert "<li>Accounts and training records</li>" in page and "<li>accounts.manage</li>" not in page
    assert client.get(f"/admin/accounts/{me.id}").status_code == 200  # the link works for them

    account("officer.new", "officer")
    other = app.test_client()
    sign_in(other, "officer.new")
    page = other.get("/").get_data(as_text=True)
    assert "Ask the administrator to record your training." in page and "record-own-training" not in page
    assert "<li>View reads, their images and the live view</li>" in page and "<li>reads.view</li>" not in page


def test_a_new_account_starts_on_no_role_and_needs_one(admin):
    form = admin.get("/admin/accounts/new").get_data(as_text=True)
    select = form[form.index('<select id="role"') : form.index("</select>")]
    first = re.search(r"<option[^>]*>[^<]*</option>", select).group(0)
    assert 'value=""' in first and "— choose a role —" in first
    assert "selected" not in select  # so the browser shows the first, empty one
    assert "required" in select[: select.index(">")]
    # The username rule sits under the username, before the next field.
    assert form.index('id="username"') < form.index('id="username-rule"') < form.index('for="display_name"')
    added = len(records("user.add"))
    resp = create(admin, role="")
    assert resp.status_code == 400 and "Choose a role for the account." in resp.get_data(as_text=True)
    assert User.get_or_none(User.username == "officer.park") is None and len(records("user.add")) == added
    assert create(admin, role="officer").status_code == 200 and user("officer.park").role == "officer"
