"""Every access to plate data names what Civil Code 1798.90.52 asks of it: the date and time, the
data used to query (every plate shown, and the plate acted on), the username and organization,
and the purpose (a code and a case or reference).

The list of what to drive is derived from the permission table, as the route x role walk is
(tests/web/test_routes.py): every route of the post whose permission is plate data
(appliance.roles.PLATE_DATA), and every `waypost` command that runs as a named account with such
a permission. A new route or command that is neither driven here nor set aside with its reason
fails the test, so it cannot be forgotten. Real app over its test client, real commands, a real
database file with reads, an alert, holds and a sharing request in it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import numpy as np
import pytest
from click.testing import CliRunner

from appliance import alerts, audit, holds, hotlist, reports, search, sharing, users
from appliance.audit import system_actor
from appliance.cli import main
from appliance.models import AccessRecord, Alert, Read
from appliance.roles import PLATE_DATA
from appliance.store import EvidenceStore, NewRead, save_read
from tests.appliance.test_cli_operator import leaf_commands
from tests.conftest import operator_env
from tests.web.conftest import PASSWORD, csrf, sign_in, state_purpose
from tests.web.test_routes import routes
from tests.web.test_sharing_web import form_data as sharing_form

NOW = dt.datetime.now(dt.UTC).replace(tzinfo=None)
PLATES = ("7STA101", "7STA102", "8HOT555", "5HLD404", "4QRY777", "6SHR606")
PURPOSE = ("CRIME-INV", "26-000321")
STATED = {"purpose": PURPOSE[0], "case_number": PURPOSE[1]}
OFFICER = audit.Actor("officer.lee", "Demo Police Department", "10.0.0.7")


@dataclass
class Post:
    reads: dict[str, Read]
    alert: Alert
    read_hold: holds.LegalHold
    query_hold: holds.LegalHold
    request: sharing.SharingRequest
    known: set[str] = field(default_factory=set)  # every plate the post holds anywhere


@pytest.fixture
def post(settings, db) -> Post:
    rng = np.random.default_rng(16)
    hotlist.add_custom(
        settings,
        system_actor(settings),
        "8HOT555",
        "STOLEN",
        "Capt. R. Alvarez",
        "Case 26-004512: vehicle stolen from Main St, owner's report",
    )
    reads = {}
    for i, plate in enumerate(PLATES):
        new = NewRead(plate_raw=plate, plate=plate, confidence=0.93, captured_at=NOW - dt.timedelta(minutes=i))
        reads[plate] = save_read(
            settings,
            EvidenceStore(settings),
            new,
            rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
            rng.integers(0, 255, (90, 160, 3), dtype=np.uint8),
            on_stored=lambda r: alerts.raise_alerts(settings, r),
        )
    [alert] = Alert.select()
    read_hold = holds.place_on_read(
        settings, OFFICER, reads["5HLD404"].id, "CRIME-INV", "26-000404", "Vehicle of the Oak St hit and run"
    )
    query = search.Query("4QRY777", "exact", since=NOW - dt.timedelta(days=1), until=NOW + dt.timedelta(days=1))
    query_hold = holds.place_on_query(
        settings, OFFICER, query, "STOLEN-VEH", "26-000777", "Reads of a stolen vehicle, court case"
    )
    asked = sharing.NewRequest(
        agency_name="Fresno Police Department",
        agency_type="ca-city-police",
        agency_state="CA",
        agency_ori="CA0100500",
        requester_name="Det. Maria Ortiz",
        requester_title="Detective, Robbery Unit",
        requester_contact="mortiz@fresno.example",
        intended_purpose="Locate a vehicle seen leaving an armed robbery",
        legal_authority="FPD case 26-00417",
        plate="6SHR606",
        match_mode="exact",
        period_start_at=NOW - dt.timedelta(days=1),
        period_end_at=NOW + dt.timedelta(days=1),
        assurance="Fresno PD will not share the data outside California state and local public agencies",
    )
    request = sharing.create(settings, OFFICER, asked, audit.Purpose("CRIME-INV", "26-000606"))
    users.add(
        system_actor(settings),
        username="admin.ray",
        display_name="Capt. Ray",
        organization=settings.post.agency,
        role="admin",
        password=PASSWORD,
        must_change_password=False,
    )
    done = NOW.date() - dt.timedelta(days=9)
    users.set_training(system_actor(settings), "admin.ray", done, "ALPR policy 464", done + dt.timedelta(days=365))
    return Post(reads, alert, read_hold, query_hold, request, known=set(PLATES))


def plates_in(text: str, known: set[str]) -> set[str]:
    return {p for p in known if re.search(rf"(?<![A-Z0-9]){p}(?![A-Z0-9])", text)}


def new_records(after: int) -> list[AccessRecord]:
    """What the step recorded, but for the sign-in records of the account (no data in them)."""
    return [
        r
        for r in AccessRecord.select().where(AccessRecord.seq > after).order_by(AccessRecord.seq)
        if not r.action.startswith("auth.")
    ]


def last_seq() -> int:
    return AccessRecord.select(AccessRecord.seq).order_by(AccessRecord.seq.desc()).scalar() or 0


def check_records(where: str, records: list[AccessRecord], shown: set[str], acted_on: set[str]) -> None:
    """The statutory fields, and the plates: every one shown, and the one acted on, named in a query."""
    if shown or acted_on:
        assert records, f"{where}: plates {sorted(shown | acted_on)} shown or acted on, and nothing recorded"
    for rec in records:
        what = f"{where}: record {rec.seq} ({rec.action})"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", rec.at), f"{what}: no time"
        assert rec.username and rec.organization, f"{what}: no username or organization"
        assert rec.purpose_code and rec.case_number, f"{what}: no purpose ({rec.purpose_code!r}, {rec.case_number!r})"
    named = set().union(*(audit.plates_named(r.query) for r in records)) if records else set()
    missing = (shown | acted_on) - named
    assert not missing, (
        f"{where}: plates {sorted(missing)} shown or acted on but not named in {[r.query for r in records]}"
    )


# --- the pages ------------------------------------------------------------------------------------

# Routes set aside, each with why: a stream stays open, so it is checked where each event is pushed.
SET_ASIDE = {
    ("alerts.stream", "GET"): "an open event stream: tests/web/test_alerts_web.py checks each pushed alert's record",
    ("live.stream", "GET"): "an open event stream: tests/web/test_live.py checks each pushed read's record",
}


@dataclass
class Step:
    endpoint: str
    method: str
    url: str
    data: dict | None = None
    acted_on: set[str] = field(default_factory=set)  # the plate the step acts on, to be named
    purpose: tuple[str, str] | None = None  # stated for the session before the step


def steps(post: Post, today: dt.date) -> list[Step]:
    r101, hot, held = post.reads["7STA101"], post.alert, post.read_hold
    quarter = reports.current_quarter("America/Los_Angeles")
    req = post.request.id
    return [
        Step("reads.search_form", "GET", "/reads/search"),
        Step("reads.search_results", "POST", "/reads/search", {"plate": "7STA*", "mode": "wildcard", **STATED}),
        Step("reads.detail", "GET", f"/reads/{r101.id}", acted_on={"7STA101"}),
        Step("reads.detail", "POST", f"/reads/{r101.id}", {"purpose": PURPOSE[0], "case_number": PURPOSE[1]}),
        Step("reads.image", "GET", f"/reads/{r101.id}/image/crop", acted_on={"7STA101"}),
        Step("live.index", "GET", "/live"),
        Step("live.purpose", "POST", "/live/purpose", {"purpose": PURPOSE[0], "case_number": PURPOSE[1]}),
        Step("alerts.index", "GET", "/alerts"),
        Step("alerts.detail", "GET", f"/alerts/{hot.id}", acted_on={"8HOT555"}),
        Step("alerts.image", "GET", f"/alerts/{hot.id}/image/crop", acted_on={"8HOT555"}),
        Step("alerts.acknowledge", "POST", f"/alerts/{hot.id}/acknowledge", {}, acted_on={"8HOT555"}),
        Step(
            "alerts.confirm",
            "POST",
            f"/alerts/{hot.id}/confirm",
            {"outcome": "misread", "visual_compared": "y", "note": "The crop shows 8HOT535"},
            acted_on={"8HOT555"},
        ),
        Step("holds.index", "GET", "/holds/"),
        Step("holds.detail", "GET", f"/holds/{held.id}", acted_on={"5HLD404"}),
        Step("holds.detail", "POST", f"/holds/{held.id}", {"purpose": PURPOSE[0], "case_number": PURPOSE[1]}),
        Step("holds.new", "GET", "/holds/new"),
        Step(
            "holds.new",
            "POST",
            "/holds/new",
            {
                "plate": "7STA102",
                "mode": "exact",
                "since": f"{today - dt.timedelta(days=1)}T00:00",
                "until": f"{today + dt.timedelta(days=1)}T00:00",
                "purpose": "STOLEN-VEH",
                "case_number": "26-000102",
                "reason": "Reads of a stolen vehicle, court case",
            },
            acted_on={"7STA102"},
        ),
        Step(
            "holds.place_on_read",
            "POST",
            f"/holds/read/{r101.id}",
            {"purpose": "CRIME-INV", "case_number": "26-000101", "reason": "Vehicle seen leaving a robbery"},
            acted_on={"7STA101"},
        ),
        Step(
            "holds.export_evidence",
            "POST",
            f"/holds/{held.id}/export",
            {},
            acted_on={"5HLD404"},
            purpose=("CRIME-INV", "26-000404"),
        ),
        Step("sharing.index", "GET", "/sharing/"),
        Step("sharing.detail", "GET", f"/sharing/{req}", acted_on={"6SHR606"}),
        Step("sharing.new", "GET", "/sharing/new"),
        Step("sharing.new", "POST", "/sharing/new", {**sharing_form(), "plate": "7STA102"}, acted_on={"7STA102"}),
        Step(
            "sharing.decide", "POST", f"/sharing/{req}/decide", {"decision": "approve", "note": "Approved, Capt. Ruiz"}
        ),
        Step("sharing.export", "POST", f"/sharing/{req}/export", {}, acted_on={"6SHR606"}),
        Step("audit.index", "GET", "/audit/"),
        Step("audit.search", "POST", "/audit/", {"query": "7STA101"}),
        Step("audit.verify", "POST", "/audit/verify", {}),
        Step("audit.export_form", "GET", "/audit/export"),
        Step("audit.export", "POST", "/audit/export", {"start": f"{today}", "end": f"{today}", "fmt": "csv"}),
        Step("audit.reports_index", "GET", "/audit/reports"),
        Step("audit.reports_go", "GET", f"/audit/reports/go?kind=quarterly&label={quarter}"),
        Step("audit.quarterly", "GET", f"/audit/reports/quarterly/{quarter}"),
        Step("audit.annual", "GET", f"/audit/reports/annual/{today.year}"),
    ]


def test_every_page_of_plate_data_records_the_statutory_fields(app, post):
    client = app.test_client()
    assert sign_in(client, "admin.ray").status_code == 302
    plan = steps(post, NOW.date())
    driven = {(s.endpoint, s.method) for s in plan}
    plate_routes = {(e, m) for e, m, _, perm in routes(app) if perm in PLATE_DATA}
    forgotten = plate_routes - driven - set(SET_ASIDE)
    assert not forgotten, f"plate-data routes neither driven here nor set aside with a reason: {sorted(forgotten)}"
    assert not driven - plate_routes - {(s.endpoint, s.method) for s in plan if s.endpoint.endswith("search_form")}
    for step in plan:
        state_purpose(client, *(step.purpose or PURPOSE))
        before = last_seq()
        if step.method == "GET":
            resp = client.get(step.url)
        else:
            token_page = client.get("/auth/password").get_data(as_text=True)
            resp = client.post(step.url, data={**(step.data or {}), "csrf_token": csrf(token_page)})
        where = f"{step.method} {step.url}"
        assert resp.status_code in (200, 302), f"{where} answered {resp.status_code}"
        # what a page shows (a download's or an image's bytes are what the record's action releases)
        page = resp.status_code == 200 and resp.mimetype == "text/html"
        shown = plates_in(resp.get_data(as_text=True), post.known) if page else set()
        check_records(where, new_records(before), shown, step.acted_on)


# --- the commands ---------------------------------------------------------------------------------


def cli_steps(post: Post) -> dict[str, list[str]]:
    """Each plate-data command with the arguments it is run with here (in this order)."""
    held, req = post.query_hold, post.request
    return {
        "audit export": ["audit", "export", "--out", "{tmp}/log.csv", "--case", "AUD-2026-11"],
        "audit bundle": ["audit", "bundle", "--out", "{tmp}/log.json", "--case", "AUD-2026-11"],
        "report quarterly": ["report", "quarterly", "--case", "AUD-2026-11"],
        "report annual": ["report", "annual", "--case", "AUD-2026-11"],
        "hold list": ["hold", "list", "--case", "AUD-2026-11"],
        "hold place": [
            "hold",
            "place",
            "--read",
            post.reads["7STA102"].uuid,
            "--purpose",
            "CRIME-INV",
            "--case",
            "26-000102",
            "--reason",
            "Vehicle seen leaving a robbery",
        ],
        "sharing list": ["sharing", "list", "--case", "SHR-2026-11"],
        "sharing show": ["sharing", "show", str(req.id), "--case", "SHR-2026-11"],
        "sharing request": [
            "sharing",
            "request",
            "--agency",
            "Fresno Police Department",
            "--agency-type",
            "ca-city-police",
            "--state",
            "CA",
            "--ori",
            "CA0100500",
            "--requester",
            "Det. Maria Ortiz",
            "--title",
            "Detective",
            "--contact",
            "mortiz@fresno.example",
            "--intended-purpose",
            "Locate a vehicle seen at a robbery",
            "--authority",
            "FPD case 26-00417",
            "--assurance",
            "Fresno PD will not share the data outside California state and local public agencies",
            "--plate",
            "7STA101",
            "--from",
            f"{NOW - dt.timedelta(days=1):%Y-%m-%d}",
            "--to",
            f"{NOW + dt.timedelta(days=1):%Y-%m-%d}",
            "--purpose",
            "CRIME-INV",
            "--case",
            "26-000101",
        ],
        "sharing approve": ["sharing", "approve", str(req.id), "--note", "Approved, Capt. Ruiz"],
        "sharing deny": ["sharing", "deny", "999", "--note", "No such request: refused before anything"],
        "evidence export": ["evidence", "export", "--hold", str(held.id), "--out", "{tmp}/hold.zip"],
        # headquarters' commands, on a headquarters database of its own (its log: this data_dir's)
        "hq hold place": [
            "hq",
            "hold",
            "place",
            "--database",
            "{tmp}/hq.sqlite",
            "--all-posts",
            "--plate",
            "7STA101",
            "--from",
            f"{NOW - dt.timedelta(days=1):%Y-%m-%d}",
            "--to",
            f"{NOW:%Y-%m-%d}",
            "--purpose",
            "CRIME-INV",
            "--case",
            "26-000101",
            "--reason",
            "Vehicle seen leaving a robbery",
        ],
        "hq hold list": ["hq", "hold", "list", "--database", "{tmp}/hq.sqlite", "--case", "AUD-2026-11"],
    }


CLI_ACTED_ON = {
    "hq hold place": {"7STA101"},
    "hold place": {"7STA102"},
    "sharing show": {"6SHR606"},
    "sharing request": {"7STA101"},
    "sharing approve": {"6SHR606"},
    "evidence export": {"4QRY777"},
}


def test_every_command_with_plate_data_records_the_statutory_fields(settings, post, tmp_path):
    plate_commands = {path for path, command in leaf_commands() if command.permission in PLATE_DATA}
    plan = cli_steps(post)
    forgotten = plate_commands - set(plan)
    assert not forgotten, f"plate-data commands not driven here: {sorted(forgotten)}"
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
        **operator_env(settings, "capt.ruiz", "admin"),
    }
    for path, args in plan.items():
        before = last_seq()
        result = CliRunner().invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args], env=env)
        expected = 1 if path == "sharing deny" else 0
        assert result.exit_code == expected, f"{path}: {result.output}"
        shown = plates_in(result.output, post.known)
        check_records(path, new_records(before), shown, CLI_ACTED_ON.get(path, set()))
