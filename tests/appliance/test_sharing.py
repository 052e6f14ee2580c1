"""Data-sharing requests on a real database: who may receive data, review, and export."""

import dataclasses
import datetime as dt
import getpass
import json
import zipfile
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from peewee import IntegrityError

from appliance import audit, export, reports, search, sharing
from appliance.cli import main
from appliance.db import migrate, write
from appliance.models import AccessRecord
from appliance.store import EvidenceStore, NewRead, save_read

T0 = dt.datetime(2026, 3, 2, 14, 0, 0)
OFFICER = audit.Actor("officer.lee", "Demo Police Department", "10.0.0.7")
ADMIN = audit.Actor("admin.chen", "Demo Police Department", "10.0.0.2")
PURPOSE = audit.Purpose("CRIME-INV", "2026-001234")


def new_request(**changes) -> sharing.NewRequest:
    fields: dict[str, Any] = dict(
        agency_name="Fresno Police Department",
        agency_type="ca-city-police",
        agency_state="CA",
        requester_name="Det. Maria Ortiz",
        requester_title="Detective, Robbery Unit",
        requester_contact="mortiz@fresno.example, 559-555-0142",
        intended_purpose="Locate a vehicle seen leaving an armed robbery on March 2",
        legal_authority="FPD case 26-00417",
        plate="7ABC123",
        match_mode="exact",
        period_start_at=T0 - dt.timedelta(days=1),
        period_end_at=T0 + dt.timedelta(days=1),
    )
    fields.update(changes)
    return sharing.NewRequest(**fields)


def records(action):
    return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


@pytest.fixture
def stored(settings, db):
    rng = np.random.default_rng(5)
    out = []
    for i, (plate, alts) in enumerate(
        [("7ABC123", [{"text": "7A8C123", "score": 0.31}]), ("7ABC123", []), ("5LMN432", [])]
    ):
        crop = rng.integers(0, 255, (40, 120, 3), dtype=np.uint8)
        frame = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
        out.append(
            save_read(
                settings,
                EvidenceStore(settings),
                NewRead(
                    plate_raw=plate,
                    plate=plate,
                    confidence=0.9,
                    captured_at=T0 + dt.timedelta(minutes=i),
                    alternatives=alts,
                    direction="away",
                ),
                crop,
                frame,
            )
        )
    return out


def test_models_match_the_migration(db):
    for model in (sharing.SharingRequest, sharing.SharingExport):
        columns = {row[1] for row in db.execute_sql(f'PRAGMA table_info("{model._meta.table_name}")')}
        assert columns == {f.column_name for f in model._meta.sorted_fields}, model


@pytest.mark.parametrize(
    "agency_type, state, words",
    [
        ("out-of-state", "NV", "another state"),
        ("federal", "DC", "federal agency"),
        ("private", "CA", "private entity"),
        ("ca-county-sheriff", "OR", "in OR, not California"),
    ],
)
def test_recipients_that_are_not_california_public_agencies_are_refused(settings, db, agency_type, state, words):
    with pytest.raises(sharing.RecipientRefused) as refused:
        sharing.create(
            settings,
            OFFICER,
            new_request(agency_type=agency_type, agency_state=state, agency_name="Some Agency"),
            PURPOSE,
        )
    message = str(refused.value)
    assert words in message and "1798.90.55" in message and "2023-DLE-06" in message
    assert sharing.SharingRequest.select().count() == 0
    [rec] = records("sharing.refuse")  # the attempt is on the log, nothing is on file
    assert rec.username == "officer.lee" and agency_type in rec.details and rec.case_number == "2026-001234"


def test_a_request_is_recorded_with_the_four_statutory_fields(settings, db):
    req = sharing.create(settings, OFFICER, new_request(plate="7abc-123"), PURPOSE)
    assert (req.status, req.plate, req.created_by) == ("pending", "7ABC123", "officer.lee")
    [rec] = records("sharing.request")
    assert rec.at and rec.username == "officer.lee" and rec.organization == "Demo Police Department"
    assert json.loads(rec.query)["plate"] == "7ABC123" and json.loads(rec.query)["sharing_request"] == req.id
    assert (rec.purpose_code, rec.case_number) == ("CRIME-INV", "2026-001234")


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"agency_type": "vendor-network"}, "agency_type"),
        ({"agency_state": "California"}, "agency_state"),
        ({"agency_name": " "}, "agency_name"),
        ({"requester_name": ""}, "requester_name"),
        ({"intended_purpose": "inv"}, "intended_purpose"),
        ({"legal_authority": ""}, "legal_authority"),
        ({"plate": "7ABC*", "match_mode": "exact"}, "plate"),
        ({"match_mode": "similar"}, "match_mode"),
        ({"period_end_at": T0 - dt.timedelta(days=2)}, "period_end_at"),
        ({"period_start_at": None}, "period_start_at"),
    ],
)
def test_bad_input_names_the_field_and_records_nothing(settings, db, changes, field):
    with pytest.raises(sharing.SharingError) as bad:
        sharing.create(settings, OFFICER, new_request(**changes), PURPOSE)
    assert bad.value.field == field and not isinstance(bad.value, sharing.RecipientRefused)
    assert sharing.SharingRequest.select().count() == 0 and records("sharing.request") == []


def test_a_placeholder_case_number_is_refused(settings, db):
    with pytest.raises(audit.PurposeError):
        sharing.create(settings, OFFICER, new_request(), audit.Purpose("CRIME-INV", "N/A"))


def test_only_an_approved_request_exports(settings, db, stored, tmp_path):
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    out = tmp_path / "exports" / "out.zip"
    with pytest.raises(sharing.NotApproved, match="pending, not approved"):
        sharing.export(settings, ADMIN, req.id, out)
    sharing.decide(settings, ADMIN, req.id, False, "No case nexus shown")
    with pytest.raises(sharing.NotApproved, match="denied, not approved"):
        sharing.export(settings, ADMIN, req.id, out)
    assert not out.parent.exists()
    assert records("sharing.export") == [] and sharing.SharingExport.select().count() == 0
    with pytest.raises(sharing.SharingError, match="already denied"):
        sharing.decide(settings, ADMIN, req.id, True, "Changed my mind")


def test_approval_rechecks_the_recipient(settings, db):
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    # a row changed behind the product's back (or a rule tightened since) is caught at approval
    sharing.SharingRequest.update(agency_type="federal").where(sharing.SharingRequest.id == req.id).execute()
    with pytest.raises(sharing.RecipientRefused, match="federal agency.*Deny the request instead"):
        sharing.decide(settings, ADMIN, req.id, True, "Looks fine")
    assert sharing.get(req.id).status == "pending" and records("sharing.approve") == []
    sharing.decide(settings, ADMIN, req.id, False, "Federal recipients are not allowed")
    assert sharing.get(req.id).status == "denied"


def test_a_decision_needs_a_note(settings, db):
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    with pytest.raises(sharing.SharingError) as bad:
        sharing.decide(settings, ADMIN, req.id, True, " ")
    assert bad.value.field == "note" and sharing.get(req.id).status == "pending"


def test_approve_and_export_leave_access_records_and_the_request_on_file(settings, db, stored, tmp_path):

    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    sharing.decide(settings, ADMIN, req.id, True, "Approved by Capt. Ruiz, case nexus shown")
    summary = sharing.export(settings, ADMIN, req.id, tmp_path / "evidence.zip")
    assert summary.read_count == 2 and summary.image_count == 4
    assert export.verify(summary.path).ok, export.verify(summary.path).problem
    for action, who in [
        ("sharing.request", "officer.lee"),
        ("sharing.approve", "admin.chen"),
        ("sharing.export", "admin.chen"),
    ]:
        [rec] = records(action)
        assert rec.at and rec.username == who and rec.organization == "Demo Police Department", action
        assert json.loads(rec.query)["plate"] == "7ABC123", action
        assert (rec.purpose_code, rec.case_number) == ("CRIME-INV", "2026-001234"), action
    [rec] = records("sharing.export")
    assert rec.result_count == 2 and {f"read:{r.uuid}" for r in stored[:2]} <= set(json.loads(rec.object_ids))
    [filed] = sharing.get(req.id).exports
    assert (filed.read_count, filed.record_seq, filed.data_sha256) == (2, rec.seq, summary.data_sha256)
    assert audit.verify().ok
    # The approved request and its exports are never purged with the reads (retention leaves the
    # sharing tables alone) and cannot be deleted while an export refers to them.

    with pytest.raises(IntegrityError):
        with write():
            sharing.SharingRequest.delete().where(sharing.SharingRequest.id == req.id).execute()
    assert sharing.get(req.id).status == "approved"


def test_a_request_withdrawn_during_an_export_stops_it(settings, db, stored, tmp_path):
    """The export re-checks the approval inside its own transaction."""

    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    sharing.decide(settings, ADMIN, req.id, True, "Approved")
    reads = list(sharing.matching_reads(req))
    sharing.SharingRequest.update(status="denied").where(sharing.SharingRequest.id == req.id).execute()
    reason = export.Reason(
        action="sharing.export",
        purpose=req.purpose,
        query=req.as_record(),
        objects=[],
        subject="test",
        statement=[],
        still_allowed=lambda: sharing._require_approved(sharing.get(req.id)),
    )
    with pytest.raises(sharing.NotApproved):
        export.build_zip(settings, ADMIN, reads, reason, out=tmp_path / "exports" / "x.zip")
    assert list((tmp_path / "exports").iterdir()) == [] and records("sharing.export") == []


def test_the_sharing_tables_survive_a_later_migration_run(settings, db):
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    assert migrate(settings) == []
    assert sharing.get(req.id).agency_name == "Fresno Police Department"


def test_wildcard_requests_cover_every_matching_read(settings, db, stored):
    req = sharing.create(settings, OFFICER, new_request(plate="7AB*", match_mode="wildcard"), PURPOSE)
    assert sorted(r.id for r in sharing.matching_reads(req, page=1)) == sorted(r.id for r in stored[:2])
    assert dataclasses.asdict(new_request())["agency_state"] == "CA"


# -- only the read plate counts -------------------------------------------------------------------


@pytest.fixture
def with_lookalike(settings, db, stored):
    """`stored` plus another vehicle's read, 8XYZ999, whose OCR offered 7ABC123 as an alternative."""
    rng = np.random.default_rng(6)
    other = save_read(
        settings,
        EvidenceStore(settings),
        NewRead(
            plate_raw="8XYZ999",
            plate="8XYZ999",
            confidence=0.95,
            captured_at=T0 + dt.timedelta(minutes=5),
            alternatives=[{"text": "7ABC123", "score": 0.05}],
        ),
        rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
        rng.integers(0, 255, (120, 200, 3), dtype=np.uint8),
    )
    return stored, other


# every way a request can name 7ABC123: exact, wildcards through the index, and a pattern without
# three known characters in a row (a scan of the period)
@pytest.mark.parametrize(
    "plate, mode", [("7ABC123", "exact"), ("7ABC*", "wildcard"), ("*BC123", "wildcard"), ("7?B?1?3", "wildcard")]
)
def test_a_read_with_the_plate_only_as_an_alternative_is_not_shared(
    settings, db, with_lookalike, tmp_path, plate, mode
):

    stored, other = with_lookalike
    assert mode in sharing.MATCH_MODES
    req = sharing.create(settings, OFFICER, new_request(plate=plate, match_mode=mode), PURPOSE)
    assert sorted(r.id for r in sharing.matching_reads(req, page=1)) == sorted(r.id for r in stored[:2])
    sharing.decide(settings, ADMIN, req.id, True, "Approved by Capt. Ruiz")
    summary = sharing.export(settings, ADMIN, req.id, tmp_path / "evidence.zip")
    assert summary.read_count == 2 and summary.image_count == 4
    shipped = json.loads(zipfile.ZipFile(summary.path).read("reads.json"))
    assert sorted(r["plate"] for r in shipped) == ["7ABC123", "7ABC123"]
    assert other.uuid not in zipfile.ZipFile(summary.path).read("reads.json").decode()
    [rec] = records("sharing.export")
    assert rec.result_count == 2 and f"read:{other.uuid}" not in json.loads(rec.object_ids)
    assert json.loads(rec.query)["plate_only"] is True
    [filed] = sharing.get(req.id).exports
    assert filed.read_count == 2


def test_a_read_whose_plate_matches_is_shared_whatever_its_alternatives(settings, db, with_lookalike):
    _, other = with_lookalike
    # stored[0] is 7ABC123 with the alternative 7A8C123: its plate matches, so it is covered
    req = sharing.create(settings, OFFICER, new_request(plate="8XYZ999"), PURPOSE)
    assert [r.id for r in sharing.matching_reads(req)] == [other.id]
    req = sharing.create(settings, OFFICER, new_request(plate="7A8C123"), PURPOSE)
    assert list(sharing.matching_reads(req)) == []


@pytest.mark.parametrize(
    "mode, text", [("exact", "7ABC123"), ("wildcard", "7ABC*"), ("partial", "ABC12"), ("similar", "7ABC123")]
)
def test_search_plate_only_leaves_officers_searches_alone(settings, db, with_lookalike, mode, text):

    stored, other = with_lookalike
    every = search.search(search.Query(text, mode))
    assert other.id in {h.read.id for h in every.hits}  # an officer still sees the misread
    assert [h.on_alternative for h in every.hits if h.read.id == other.id] == [True]
    plate_only = search.search(search.Query(text, mode, alternatives=False))
    assert other.id not in {h.read.id for h in plate_only.hits}
    assert {h.read.id for h in plate_only.hits} >= {r.id for r in stored[:2]}
    assert not any(h.on_alternative for h in plate_only.hits)


# -- looking at the requests is recorded ----------------------------------------------------------


def test_listing_and_viewing_requests_are_recorded(settings, db):
    first = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    second = sharing.create(settings, OFFICER, new_request(plate="5LMN432"), PURPOSE)
    sharing.decide(settings, ADMIN, second.id, True, "Approved")
    assert [r.id for r in sharing.listing(ADMIN)] == [second.id, first.id]
    [rec] = records("sharing.list")
    assert (rec.username, json.loads(rec.query), rec.result_count) == ("admin.chen", {"status": "all"}, 2)
    assert json.loads(rec.object_ids) == [f"sharing_request:{second.id}", f"sharing_request:{first.id}"]
    assert [r.id for r in sharing.listing(OFFICER, "pending")] == [first.id]
    assert json.loads(records("sharing.list")[1].query) == {"status": "pending"}
    req, exports = sharing.view(OFFICER, first.id)
    assert (req.id, exports) == (first.id, [])
    [rec] = records("sharing.view")
    assert (rec.username, json.loads(rec.query), rec.organization) == (
        "officer.lee",
        {"sharing_request": first.id},
        "Demo Police Department",
    )
    assert json.loads(rec.details)["plate"] == "7ABC123"
    before = AccessRecord.select().count()
    with pytest.raises(sharing.SharingError):
        sharing.view(OFFICER, 999)
    with pytest.raises(sharing.SharingError):
        sharing.listing(OFFICER, "everything")
    assert AccessRecord.select().count() == before and audit.verify().ok


def test_viewing_records_count_in_the_quarterly_audit_but_not_the_annual_sharing_figure(settings, db):

    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    sharing.listing(ADMIN)
    sharing.view(ADMIN, req.id)
    sharing.view(ADMIN, req.id)
    now = dt.datetime.now(dt.UTC)
    label = reports.current_quarter(settings.post.timezone)
    section = {s.title: s for s in reports.quarterly(settings, label).sections}["Data sharing"]
    assert dict(section.counts) == {"sharing.list": 1, "sharing.request": 1, "sharing.view": 2}
    annual = reports.annual(settings, now.astimezone(reports.ZoneInfo(settings.post.timezone)).year)
    assert (annual.sharing.total, dict(annual.sharing.counts)) == (1, {"sharing.request": 1})
    assert annual.data_accesses == 1  # only the request carries a purpose
    assert reports.annual(settings, 1999).sharing.total == 0  # a year without any record


def test_cli_list_and_show_record_who_looked(settings, db, monkeypatch):
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    runner = CliRunner()
    listed = runner.invoke(main, ["sharing", "list", "--status", "pending"])
    assert listed.exit_code == 0 and "plate 7ABC123" in listed.output, listed.output
    [rec] = records("sharing.list")
    assert (rec.username, json.loads(rec.query), rec.result_count) == (
        f"cli:{getpass.getuser()}",
        {"status": "pending"},
        1,
    )
    shown = runner.invoke(main, ["sharing", "show", str(req.id)])
    assert shown.exit_code == 0 and "Fresno Police Department" in shown.output, shown.output
    [rec] = records("sharing.view")
    assert (rec.username, json.loads(rec.query)) == (f"cli:{getpass.getuser()}", {"sharing_request": req.id})
    missing = runner.invoke(main, ["sharing", "show", "999"])
    assert missing.exit_code == 1 and "no sharing request 999" in missing.output
    assert len(records("sharing.view")) == 1 and audit.verify().ok
