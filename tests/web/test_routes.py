"""Every route in the URL map, for every kind of account, against the permission table.

A route must declare who may reach it (web.access: @public, @signed_in or @requires(permission));
one that declares nothing fails here, so a new page cannot ship open by accident.
"""

import datetime as dt
import re

import pytest

from appliance import users
from appliance.audit import system_actor
from appliance.models import User
from appliance.roles import PLATE_DATA, ROLES, allowed
from tests.web.conftest import csrf, sign_in

SAMPLE_ARGS = {"int": 1, "default": "crop"}
TRAINED = {
    "completed_on": dt.date.today() - dt.timedelta(days=30),
    "expires_on": dt.date.today() + dt.timedelta(days=335),
    "course": "POST ALPR 101",
}


def routes(app):
    """(endpoint, method, url, permission) for every route but static files."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        assert hasattr(view, "permission"), (
            f"route {rule.rule} ({rule.endpoint}) declares no permission: decorate it with @public, "
            "@signed_in or @requires(...) from web.access"
        )
        values = {}
        for arg in rule.arguments:
            converter = type(rule._converters[arg]).__name__.lower()
            values[arg] = SAMPLE_ARGS["int"] if "integer" in converter else SAMPLE_ARGS["default"]
        url = rule.build(values)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, url, view.permission))
    return out


def principals():
    """Every role with current training, and the accounts that must be kept out of plate data."""
    kinds = [(role, role, True, True) for role in ROLES]
    kinds += [
        ("untrained officer", "officer", False, True),
        ("inactive officer", "officer", True, False),
        ("anonymous", None, None, None),
    ]
    return kinds


def login_redirect(resp) -> bool:
    return resp.status_code in (301, 302, 303) and "/auth/login" in resp.headers.get("Location", "")


@pytest.mark.parametrize("label, role, trained, active", principals(), ids=[p[0] for p in principals()])
def test_every_route_answers_as_the_permission_table_says(app, settings, account, label, role, trained, active):
    client = app.test_client()
    user = None
    if role is not None:
        name = label.replace(" ", ".")
        account(name, role)
        if trained:
            users.set_training(system_actor(settings), name, **TRAINED)
        assert sign_in(client, name).status_code == 302
        token = csrf(client.get("/auth/password").get_data(as_text=True))
        if not active:
            users.set_active(system_actor(settings), name, False)
        user = User.get(User.username == name)
    else:
        token = csrf(client.get("/auth/login").get_data(as_text=True))

    checked = {"refused": 0, "reached": 0}
    for endpoint, method, url, permission in routes(app):
        if endpoint == "auth.logout":
            continue  # it signs the account out; its own tests cover it
        resp = client.open(url, method=method, data={"csrf_token": token} if method == "POST" else None)
        where = f"{label}: {method} {url} ({endpoint}, needs {permission!r}) answered {resp.status_code}"
        if permission is None:
            assert resp.status_code != 403 and not login_redirect(resp), where
        elif user is None or not user.active:
            assert login_redirect(resp), where
            checked["refused"] += 1
        elif permission == "signed-in" or allowed(user, permission):
            assert resp.status_code != 403 and not login_redirect(resp), where
            checked["reached"] += 1
        else:
            assert resp.status_code == 403, where
            checked["refused"] += 1
    # the walk really covered the map: plate-data routes exist, and this account met refusals
    # unless it may do everything
    assert len(routes(app)) >= 15
    if role in (None, "dispatcher", "auditor", "technician") or not trained or not active:
        assert checked["refused"] > 0


def test_a_route_without_a_declared_permission_fails_the_walk(app):
    @app.get("/undeclared")
    def undeclared():
        return "open to all"

    with pytest.raises(AssertionError, match="declares no permission"):
        routes(app)


def test_pages_of_plate_data_declare_a_plate_data_permission(app):
    """Reads, alerts, the live view and the access log (its records hold the plates searched) show
    plates: their routes must need a permission that is only granted with current training
    (appliance.roles.PLATE_DATA), never just a sign-in."""

    plate_routes = [
        (url, perm) for _, _, url, perm in routes(app) if url.startswith(("/reads", "/alerts", "/live", "/audit"))
    ]
    assert len(plate_routes) >= 8
    for url, perm in plate_routes:
        assert perm in PLATE_DATA, f"{url} shows plate data but needs {perm!r}"


def test_plate_data_permissions_are_refused_without_current_training(app, settings, account):
    """The untrained officer's refusal names training, not the role, so they know what to do."""
    account("officer.u", "officer")
    client = app.test_client()
    sign_in(client, "officer.u")
    resp = client.get("/reads/search")
    assert resp.status_code == 403 and "training" in resp.get_data(as_text=True).lower()


def test_administrators_see_the_roles_table_from_the_code(app, settings, account):
    account("admin.ro", "admin")
    client = app.test_client()
    sign_in(client, "admin.ro")
    html = client.get("/admin/roles").get_data(as_text=True)
    for role in ROLES.values():
        assert role["label"] in html
    # the dispatcher's column says yes exactly for its two permissions

    rows = re.findall(r'<tr><th scope="row">.*?\((\w+\.\w+)\).*?</th>(.*?)</tr>', html, re.S)
    dispatcher_col = list(ROLES).index("dispatcher")
    granted = {perm for perm, cells in rows if re.findall(r'class="(yes|no)"', cells)[dispatcher_col] == "yes"}
    assert granted == ROLES["dispatcher"]["permissions"]
