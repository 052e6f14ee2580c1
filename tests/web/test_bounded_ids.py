"""Numbers in URLs and forms that no database column holds: every <int:...> route of the post's app
and of headquarters' answers 404 to an id past a signed 64-bit integer (one converter, registered on
both apps, before any view runs), and the search forms' page position out of that range is a form
error. All of them answered 500 (OverflowError in the SQLite driver) to 99999999999999999999999."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from werkzeug.exceptions import NotFound

from appliance import db as dbmod
from appliance import users
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from appliance.models import AccessRecord
from sync import hq
from tests.conftest import make_settings
from tests.web.conftest import PASSWORD, csrf, sign_in, state_purpose
from web.hq import create_hq_app

HUGE = "99999999999999999999999"
TOP = 2**63 - 1
PURPOSE = {"purpose": "STOLEN-VEH", "case_number": "2026-004512"}
_ARG = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


def int_routes(app) -> list[tuple[str, str]]:
    """(method, URL) for every route with an <int:...> part, each such part HUGE (a <kind> is 'crop')."""
    out = []
    for rule in app.url_map.iter_rules():
        if "<int:" not in rule.rule:
            continue
        url = _ARG.sub(lambda m: HUGE if m.group(1) == "int" else "crop", rule.rule)
        out += [(method, url) for method in sorted(rule.methods & {"GET", "POST"})]
    return out


def assert_every_int_route_is_404(app, client) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a fault is answered as in service: a 500 page
    token = csrf(client.get("/auth/password").get_data(as_text=True))
    routes = int_routes(app)
    assert len(routes) >= 5, routes  # the walk found the routes it is about
    answers = {}
    for method, url in routes:
        resp = client.get(url) if method == "GET" else client.post(url, data={"csrf_token": token, **PURPOSE})
        answers[(method, url)] = resp.status_code
    assert set(answers.values()) == {404}, {k: v for k, v in answers.items() if v != 404}


def assert_bounded(app, url_with_id: str) -> None:
    """The largest id still reaches the view's lookup; one more is no route at all."""
    adapter = app.url_map.bind("localhost")
    endpoint, args = adapter.match(url_with_id.format(TOP))
    assert TOP in args.values(), (endpoint, args)
    with pytest.raises(NotFound):
        adapter.match(url_with_id.format(TOP + 1))


def test_every_int_route_of_the_post_answers_404_past_bigint(app, client, trained):
    trained("admin.ray", "admin")  # every permission, with training: each view would run
    sign_in(client, "admin.ray")
    state_purpose(client, PURPOSE["purpose"], PURPOSE["case_number"])
    assert_every_int_route_is_404(app, client)
    assert_bounded(app, "/reads/{}")


@pytest.fixture
def hq_app(tmp_path):
    settings = make_settings(tmp_path / "hq-data", post__id="hq", post__name="Headquarters")
    bootstrap(settings, create_admin=False)
    app = create_hq_app(str(tmp_path / "hq" / "hq.sqlite"), settings=settings)
    app.config["TESTING"] = True
    with dbmod.connection():
        actor = system_actor(settings)
        users.add(
            actor,
            username="admin.ray",
            display_name="Ray",
            organization="PD",
            role="admin",
            password=PASSWORD,
            must_change_password=False,
        )
        users.set_training(
            actor,
            "admin.ray",
            dt.date.today() - dt.timedelta(days=30),
            "ALPR 101",
            dt.date.today() + dt.timedelta(days=335),
        )
    yield app
    if not hq.hq_database.is_closed():
        hq.hq_database.close()


def test_every_int_route_of_headquarters_answers_404_past_bigint(hq_app):
    client = hq_app.test_client()
    sign_in(client, "admin.ray")
    state_purpose(client, PURPOSE["purpose"], PURPOSE["case_number"])
    assert_every_int_route_is_404(hq_app, client)
    assert_bounded(hq_app, "/hq/reads/{}")


def test_headquarters_api_alone_has_the_same_bounded_ids(tmp_path):
    """The app without settings (the sync API alone) gets the converter too: a route added to it is bounded."""
    app = create_hq_app(str(tmp_path / "hq" / "hq.sqlite"))
    try:
        app.add_url_rule("/hq/v1/probe/<int:n>", "probe", lambda n: str(n))
        assert_bounded(app, "/hq/v1/probe/{}")
    finally:
        hq.hq_database.close()


def test_a_search_page_position_past_bigint_is_a_form_error(app, client, trained):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    trained("officer.lee", "officer")
    sign_in(client, "officer.lee")
    page = client.get("/reads/search")
    data = {"plate": "7ABC123", "mode": "exact", "before": HUGE, "csrf_token": csrf(page.get_data(as_text=True))}
    before = AccessRecord.select().count()
    resp = client.post("/reads/search", data={**data, **PURPOSE})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "page position" in html, html[-2000:]
    assert AccessRecord.select().count() == before  # refused by the form: nothing searched, nothing to record
    assert client.post("/reads/search", data={**data, **PURPOSE, "before": str(TOP)}).status_code == 200


def test_a_headquarters_page_cursor_past_bigint_is_a_form_error(hq_app):
    hq_app.config["PROPAGATE_EXCEPTIONS"] = False
    client = hq_app.test_client()
    sign_in(client, "admin.ray")
    page = client.get("/hq/reads/search")
    data = {"plate": "7ABC123", "mode": "exact", "csrf_token": csrf(page.get_data(as_text=True)), **PURPOSE}
    for cursor in (f"2026-01-01T00:00:00|{HUGE}", HUGE):
        resp = client.post(
            "/hq/reads/search", data={**data, "cursor": cursor, "mode": "similar" if "|" not in cursor else "exact"}
        )
        html = resp.get_data(as_text=True)
        assert resp.status_code == 400 and "page position" in html, (cursor, resp.status_code, html[-1500:])
    ok = client.post("/hq/reads/search", data={**data, "cursor": f"2026-01-01T00:00:00|{TOP}"})
    assert ok.status_code == 200
