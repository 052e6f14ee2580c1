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
from tests.conftest import operator_env

T0 = dt.datetime(2026, 3, 2, 14, 0, 0)
OFFICER = audit.Actor("officer.lee", "Demo Police Department", "10.0.0.7")
ADMIN = audit.Actor("admin.chen", "Demo Police Department", "10.0.0.2")
PURPOSE = audit.Purpose("CRIME-INV", "2026-001234")
REVIEW = audit.Purpose("SHARING", "SHR-2026-001")  # looking at the file of requests


def new_request(**changes) -> sharing.NewRequest:
    fields: dict[str, Any] = dict(
        agency_name="Fresno Police Department",
        agency_type="ca-city-police",
        agency_state="CA",
        agency_ori="CA0100500",
        requester_name="Det. Maria Ortiz",
        requester_title="Detective, Robbery Unit",
        requester_contact="mortiz@fresno.example, 559-555-0142",
        intended_purpose="Locate a vehicle seen leaving an armed robbery on March 2",
        legal_authority="FPD case 26-00417",
        plate="7ABC123",
        match_mode="exact",
        period_start_at=T0 - dt.timedelta(days=1),
        period_end_at=T0 + dt.timedelta(days=1),
        assurance="Fresno PD will not share the data outside California state and local public agencies "
        "(letter of Lt. K. Moua, 2026-03-01)",
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
        ({"agency_ori": ""}, "agency_ori"),
        ({"agency_ori": "CA01005"}, "agency_ori"),
        ({"agency_ori": "C10100500"}, "agency_ori"),
        ({"agency_ori": "CA0100500X"}, "agency_ori"),
        ({"agency_ori": "CA01#0500"}, "agency_ori"),
        ({"assurance": ""}, "assurance"),
        ({"assurance": "ok"}, "assurance"),
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


# every way a request can name 7ABC123: exact, and wildcards through the index (a request needs three
# known characters in a row, as a search without a time range does)
@pytest.mark.parametrize(
    "plate, mode", [("7ABC123", "exact"), ("7ABC*", "wildcard"), ("*BC123", "wildcard"), ("7?B?123", "wildcard")]
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
    assert [r.id for r in sharing.listing(ADMIN, REVIEW)] == [second.id, first.id]
    [rec] = records("sharing.list")
    assert (rec.username, json.loads(rec.query), rec.result_count) == (
        "admin.chen",
        {"status": "all", "plates": ["5LMN432", "7ABC123"]},
        2,
    )
    assert (rec.purpose_code, rec.case_number) == ("SHARING", "SHR-2026-001")
    assert json.loads(rec.object_ids) == [f"sharing_request:{second.id}", f"sharing_request:{first.id}"]
    assert [r.id for r in sharing.listing(OFFICER, REVIEW, "pending")] == [first.id]
    assert json.loads(records("sharing.list")[1].query) == {"status": "pending", "plates": ["7ABC123"]}
    req, exports, _ = sharing.view(OFFICER, first.id, REVIEW)
    assert (req.id, exports) == (first.id, [])
    [rec] = records("sharing.view")
    assert (rec.username, json.loads(rec.query), rec.organization) == (
        "officer.lee",
        {"sharing_request": first.id, "plate": "7ABC123"},
        "Demo Police Department",
    )
    assert (rec.purpose_code, rec.case_number) == ("SHARING", "SHR-2026-001")
    assert json.loads(rec.details)["plate"] == "7ABC123"
    before = AccessRecord.select().count()
    with pytest.raises(sharing.SharingError):
        sharing.view(OFFICER, 999, REVIEW)
    with pytest.raises(sharing.SharingError):
        sharing.listing(OFFICER, REVIEW, "everything")
    assert AccessRecord.select().count() == before and audit.verify().ok


def test_viewing_records_count_in_the_quarterly_audit_but_not_the_annual_sharing_figure(settings, db):

    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    sharing.listing(ADMIN, REVIEW)
    sharing.view(ADMIN, req.id, REVIEW)
    sharing.view(ADMIN, req.id, REVIEW)
    now = dt.datetime.now(dt.UTC)
    label = reports.current_quarter(settings.post.timezone)
    section = {s.title: s for s in reports.quarterly(settings, label).sections}["Data sharing"]
    assert dict(section.counts) == {"sharing.list": 1, "sharing.request": 1, "sharing.view": 2}
    annual = reports.annual(settings, now.astimezone(reports.ZoneInfo(settings.post.timezone)).year)
    assert (annual.sharing.total, dict(annual.sharing.counts)) == (1, {"sharing.request": 1})
    assert annual.data_accesses == 4  # the request, and the listing and two views, each under its purpose
    assert reports.annual(settings, 1999).sharing.total == 0  # a year without any record


def test_cli_list_and_show_record_who_looked(settings, db, monkeypatch):
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    for name, value in operator_env(settings, "sgt.lee", "officer").items():
        monkeypatch.setenv(name, value)
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    runner = CliRunner()
    listed = runner.invoke(main, ["sharing", "list", "--status", "pending", "--case", "SHR-2026-001"])
    assert listed.exit_code == 0 and "plate 7ABC123" in listed.output, listed.output
    [rec] = records("sharing.list")
    assert (rec.username, rec.client_addr, json.loads(rec.query), rec.result_count) == (
        "sgt.lee",
        f"cli:{getpass.getuser()}",
        {"status": "pending", "plates": ["7ABC123"]},
        1,
    )
    assert (rec.purpose_code, rec.case_number) == ("SHARING", "SHR-2026-001")
    shown = runner.invoke(main, ["sharing", "show", str(req.id), "--case", "SHR-2026-001"])
    assert shown.exit_code == 0 and "Fresno Police Department" in shown.output, shown.output
    [rec] = records("sharing.view")
    assert (rec.username, json.loads(rec.query)) == ("sgt.lee", {"sharing_request": req.id, "plate": "7ABC123"})
    missing = runner.invoke(main, ["sharing", "show", "999", "--case", "SHR-2026-001"])
    assert missing.exit_code == 1 and "no sharing request 999" in missing.output
    assert len(records("sharing.view")) == 1 and audit.verify().ok


# -- the recipient: its name and ORI against the list of refused recipients (issue 16) -------------


def refused_on_entry(settings, **changes) -> sharing.RecipientRefused:
    with pytest.raises(sharing.RecipientRefused) as refused:
        sharing.create(settings, OFFICER, new_request(**changes), PURPOSE)
    assert sharing.SharingRequest.select().count() == 0
    return refused.value


@pytest.mark.parametrize(
    "name, entry, term",
    [
        (
            "U.S. Immigration and Customs Enforcement, San Francisco Field Office",
            "U.S. Immigration and Customs Enforcement (ICE), DHS",
            "immigration and customs enforcement",
        ),
        ("Flock Safety National Lookup", "Flock Safety and its network", "flock safety"),
    ],
)
def test_the_auditors_recipients_are_refused_whatever_type_they_are_given(settings, db, name, entry, term):
    """The finding: entered as "Other California state or local public agency" in CA, both were
    recorded, approved and exported. The name is checked against the list whatever the type."""
    refused = refused_on_entry(settings, agency_name=name, agency_type="ca-other-public", agency_state="CA")
    message = str(refused)
    assert refused.field == "agency_name"
    assert f'"{term}"' in message and entry in message and "recipients_refused.toml" in message
    assert "1798.90.55" in message and "2023-DLE-06" in message and "Nothing has been shared" in message
    [rec] = records("sharing.refuse")  # the attempt is on the log, nothing is on file
    details = json.loads(rec.details)
    assert (details["agency_name"], details["listed"], details["term"]) == (name, entry, term)
    assert details["agency_ori"] == "CA0100500" and rec.case_number == "2026-001234"


# One name (or more) per family of the list, spelled the ways people type them: the normalisation
# (case, punctuation, U.S./United States, Dept., &) must not let any of them through.
FAMILIES = {
    "federal": [
        ("Department of Homeland Security", "department of homeland security"),
        ("DHS Office of Intelligence", "dhs"),
        ("Dept. of Homeland Sec.", "department of homeland"),
        ("I.C.E. Enforcement & Removal Operations", "enforcement and removal operations"),
        ("united states immigration & customs enforcement", "immigration and customs enforcement"),
        ("Homeland Security Investigations, San Diego", "homeland security investigations"),
        ("HSI Los Angeles", "hsi"),
        ("U.S. Customs & Border Protection", "customs and border protection"),
        ("Border Patrol, El Centro Sector", "border patrol"),
        ("F.B.I. Sacramento Field Office", "fbi"),
        ("Federal Bureau of Investigation", "federal bureau of investigation"),
        ("DEA San Francisco Division", "dea"),
        ("Drug Enforcement Admin.", "drug enforcement administration"),
        ("ATF Oakland Field Office", "atf"),
        ("Bureau of Alcohol, Tobacco, Firearms & Explosives", "alcohol tobacco firearms"),
        ("U.S. Marshals Service, Northern District of California", "us marshals service"),
        ("USMS Eastern District", "usms"),
        ("United States Secret Service", "secret service"),
        ("US Dept. of Justice", "us department of justice"),
        ("Federal Protective Service", "federal"),
        ("U. S. Army CID, Fort Irwin", "us army"),
        ("USCIS Fraud Detection", "uscis"),
    ],
    "federal-task-force": [
        ("FBI Safe Streets Task Force", "safe streets task force"),
        ("Joint Terrorism Task Force, Los Angeles", "joint terrorism task force"),
        ("Pacific Southwest Regional Fugitive Task Force", "regional fugitive task force"),
        ("Northern California HIDTA", "hidta"),
        ("Central Valley High Intensity Drug Trafficking Area", "high intensity drug trafficking area"),
        ("OCDETF Strike Force", "ocdetf"),
    ],
    "national": [
        ("National Plate Reader Exchange", "national"),
        ("Nat'l Plate Lookup Network", "national"),
        ("Nationwide LPR Exchange", "nationwide"),
    ],
    "out-of-state": [
        ("Nevada Highway Patrol", "nevada highway patrol"),
        ("State of Oregon, Department of Justice", "oregon department of justice"),
        ("State of Washington", "state of washington"),
        ("Las Vegas Metropolitan Police Department", "las vegas metropolitan"),
        ("Arizona Dept. of Public Safety", "arizona department of public safety"),
        ("Royal Canadian Mounted Police", "royal canadian mounted police"),
    ],
    "tribal": [
        ("Bureau of Indian Affairs, Office of Justice Services", "bureau of indian affairs"),
        ("Hoopa Valley Tribal Police", "tribal"),
        ("Pechanga Band of Indians Public Safety", "band of indians"),
    ],
    "vendor": [
        ("Flock Safety", "flock safety"),
        ("Vigilant Solutions LEARN", "vigilant solutions"),
        ("Motorola Solutions", "motorola solutions"),
        ("Rekor Systems", "rekor systems"),
        ("Leonardo / ELSAG", "leonardo"),
        ("Genetec AutoVu Cloud", "genetec"),
        ("Axon Enterprise", "axon enterprise"),
    ],
    "private": [
        ("Golden State Recovery, LLC", "llc"),
        ("National Insurance Crime Bureau", "insurance crime bureau"),
        ("Acme Repossession Inc.", "repossession"),
        ("Stanford University Department of Public Safety", "stanford"),
        ("Private Investigator J. Doe", "private investigator"),
    ],
}


@pytest.mark.parametrize(
    "family, name, term", [(family, name, term) for family, names in FAMILIES.items() for name, term in names]
)
def test_every_family_of_the_list_is_refused_and_the_refusal_names_the_entry(family, name, term):
    found = sharing.screen("ca-other-public", "CA", name, "CA0100500")
    assert found is not None, name
    assert (found.field, found.family, found.term) == ("agency_name", family, term), name
    assert found.entry and found.entry in found.message and f'"{term}"' in found.message


def test_every_family_of_the_list_is_tested():
    assert set(FAMILIES) == set(sharing.refused_list().families)


# Real California public agencies, some with a listed word nearby: none may be refused. Their ORIs
# here only have the shape of a California ORI (county digits), they were not looked up.
CALIFORNIA = [
    "San Francisco Police Department",
    "Los Angeles County Sheriff's Department",
    "California Highway Patrol",
    "Alameda County District Attorney's Office",
    "Fresno Police Department",
    "National City Police Department",
    "Sacramento County Probation",
    "California Department of Justice",
    "California Department of Fish and Wildlife",
    "Nevada County Sheriff's Office",
    "Nevada City Police Department",
    "La Cañada Flintridge, City of (public safety)",
    "University of California Police Department, Berkeley",
    "Department of State Hospitals, Office of Protective Services",
    "California Military Department",
    "Bay Area Rapid Transit Police Department",
    "Los Angeles Interagency Metropolitan Police Apprehension Crime Task Force (LA IMPACT)",
    "Marin County Major Crimes Task Force",
    "San Diego Association of Governments (ARJIS)",
    "Orange County District Attorney – Bureau of Investigation",
    "Del Norte County Sheriff's Office",
]


@pytest.mark.parametrize("name", CALIFORNIA)
def test_real_california_agencies_are_not_refused(settings, db, name):
    assert sharing.screen("ca-other-public", "CA", name, "CA0190000") is None, name
    req = sharing.create(settings, OFFICER, new_request(agency_name=name, agency_ori="ca-019 0000"), PURPOSE)
    assert (req.agency_name, req.agency_ori) == (name, "CA0190000") and records("sharing.refuse") == []


@pytest.mark.parametrize(
    "ori, words, entry",
    [
        ("NV0020000", "begins with NV, not CA", None),
        ("DCFBIWA00", "begins with DC, not CA", None),
        ("CAFBISF00", "FBI", "Federal Bureau of Investigation (FBI), U.S. Department of Justice"),
        ("caice0100", "ICE", "U.S. Immigration and Customs Enforcement (ICE), DHS"),
    ],
)
def test_an_ori_outside_california_or_of_a_federal_office_is_refused(settings, db, ori, words, entry):
    refused = refused_on_entry(settings, agency_name="Bay Area Investigations Unit", agency_ori=ori)
    assert refused.field == "agency_ori" and words in str(refused) and ori.upper() in str(refused)
    assert entry is None or entry in str(refused)
    [rec] = records("sharing.refuse")
    assert json.loads(rec.details)["agency_ori"] == ori.upper()


def test_the_ori_is_kept_with_the_request_and_its_record(settings, db):
    req = sharing.create(settings, OFFICER, new_request(agency_ori=" ca 0100500 "), PURPOSE)
    assert sharing.get(req.id).agency_ori == "CA0100500"
    assert sharing.get(req.id).assurance.startswith("Fresno PD will not share")
    [rec] = records("sharing.request")
    assert json.loads(rec.details)["agency_ori"] == "CA0100500"


def test_a_name_changed_behind_the_products_back_is_caught_at_approval_and_export(settings, db, stored, tmp_path):
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    rename = sharing.SharingRequest.update(agency_name="DEA Fresno Resident Office")
    rename.where(sharing.SharingRequest.id == req.id).execute()
    with pytest.raises(sharing.RecipientRefused, match='"dea".*Deny the request instead'):
        sharing.decide(settings, ADMIN, req.id, True, "Looks fine")
    assert sharing.get(req.id).status == "pending" and records("sharing.approve") == []
    # approved before the list caught it (as the auditor's ICE request was): the export refuses
    sharing.SharingRequest.update(status="approved", decided_by="admin.chen", decided_at=T0, decision_note="ok").where(
        sharing.SharingRequest.id == req.id
    ).execute()
    with pytest.raises(sharing.RecipientRefused, match="Drug Enforcement Administration"):
        sharing.export(settings, ADMIN, req.id, tmp_path / "out" / "x.zip")
    assert not (tmp_path / "out").exists() and records("sharing.export") == []


# -- two people -----------------------------------------------------------------------------------

CAPTAIN = audit.Actor("capt.ruiz", "Demo Police Department", "10.0.0.3")


@pytest.mark.parametrize("approve", [True, False])
def test_whoever_records_a_request_cannot_decide_it(settings, db, approve):
    req = sharing.create(settings, ADMIN, new_request(), PURPOSE)
    with pytest.raises(sharing.SharingError) as refused:
        sharing.decide(settings, ADMIN, req.id, approve, "Approved by myself")
    message = str(refused.value)
    assert refused.value.field == "decision" and not isinstance(refused.value, sharing.RecipientRefused)
    assert "admin.chen recorded" in message and "another" in message
    assert sharing.get(req.id).status == "pending"
    assert records("sharing.approve") == records("sharing.deny") == []
    decided = sharing.decide(settings, CAPTAIN, req.id, approve, "Reviewed by a second person")
    assert (decided.status, decided.decided_by) == ("approved" if approve else "denied", "capt.ruiz")


# -- what an approval releases, counted before it -------------------------------------------------


def test_the_reads_and_images_a_request_covers_are_counted_before_approval(settings, db, with_lookalike, tmp_path):
    stored, other = with_lookalike
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    shown, exports, covers = sharing.view(ADMIN, req.id, REVIEW)
    assert (shown.id, exports) == (req.id, [])
    assert (covers.read_count, covers.image_count) == (2, 4)  # the look-alike's read is not counted
    [rec] = records("sharing.view")
    details = json.loads(rec.details)
    assert (details["reads_covered"], details["images_covered"]) == (2, 4)
    assert any("2 read(s) and 4 image(s)" in line for line in sharing.coverage_lines(covers))
    sharing.decide(settings, ADMIN, req.id, True, "Approved by Capt. Ruiz")
    summary = sharing.export(settings, ADMIN, req.id, tmp_path / "evidence.zip")
    assert (summary.read_count, summary.image_count) == (covers.read_count, covers.image_count)


def test_a_denied_request_counts_nothing(settings, db, stored):
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    sharing.decide(settings, ADMIN, req.id, False, "No case nexus")
    _, _, covers = sharing.view(ADMIN, req.id, REVIEW)
    assert covers is None and "reads_covered" not in json.loads(records("sharing.view")[0].details)


# -- the plate pattern ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plate, mode", [("7?B?1?3", "wildcard"), ("7A*", "wildcard"), ("*12", "wildcard"), ("AB", "exact")]
)
def test_a_plate_needs_three_known_characters_in_a_row(settings, db, plate, mode):
    with pytest.raises(sharing.SharingError) as bad:
        sharing.create(settings, OFFICER, new_request(plate=plate, match_mode=mode), PURPOSE)
    assert bad.value.field == "plate" and "three known characters in a row" in str(bad.value)
    assert sharing.SharingRequest.select().count() == 0 and records("sharing.request") == []


# -- requests recorded before the ORI and the assurance were asked for ---------------------------


def _old(req_id: int) -> None:
    """What a request recorded before migration 0011 looks like: no ORI, no assurance."""
    sharing.SharingRequest.update(agency_ori="", assurance="").where(sharing.SharingRequest.id == req_id).execute()


def test_an_old_request_is_viewable_but_approved_only_with_an_ori_and_an_assurance(settings, db, stored):
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    _old(req.id)
    shown, _, covers = sharing.view(ADMIN, req.id, REVIEW)
    assert shown.agency_ori == "" and covers.read_count == 2
    lines = "\n".join(sharing.request_lines(shown))
    assert "ORI not recorded" in lines and "Assurance:         not recorded" in lines
    with pytest.raises(sharing.SharingError) as refused:
        sharing.decide(settings, ADMIN, req.id, True, "Approved")
    message = str(refused.value)
    assert refused.value.field == "decision" and "ORI" in message and "written assurance" in message
    assert "record the request again" in message and sharing.get(req.id).status == "pending"
    assert sharing.decide(settings, ADMIN, req.id, False, "Re-record with ORI and assurance").status == "denied"


def test_an_old_approved_request_without_an_assurance_does_not_export(settings, db, stored, tmp_path):
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    sharing.decide(settings, ADMIN, req.id, True, "Approved")
    _old(req.id)
    with pytest.raises(sharing.SharingError, match="written assurance") as refused:
        sharing.export(settings, ADMIN, req.id, tmp_path / "out" / "x.zip")
    assert refused.value.field == "assurance"
    assert not (tmp_path / "out").exists() and records("sharing.export") == []


# -- the command line -----------------------------------------------------------------------------


def test_cli_request_show_and_the_second_person(settings, db, stored, monkeypatch):
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    officer, admin = operator_env(settings, "op.officer", "officer"), operator_env(settings, "op.admin", "admin")
    runner = CliRunner()
    base = ["sharing", "request", "--agency-type", "ca-county-sheriff", "--state", "CA"]
    base += ["--requester", "Sgt. Lee Park", "--title", "Sergeant", "--contact", "lpark@kern.example"]
    base += ["--intended-purpose", "Stolen truck recovered near the post", "--authority", "KCSO 26-1102"]
    base += ["--plate", "7ABC123", "--from", "2026-03-01", "--to", "2026-03-04"]
    base += ["--purpose", "STOLEN-VEH", "--case", "2026-000777"]
    assurance = ["--assurance", "KCSO shares nothing outside California public agencies (Sgt. Park, 2026-03-01)"]
    ice = runner.invoke(
        main,
        base + ["--agency", "ICE ERO Bakersfield", "--ori", "CA0150000"] + assurance,
        env=officer,
    )
    assert ice.exit_code == 1 and '"ice"' in ice.output and "(agency_name)" in ice.output, ice.output
    made = runner.invoke(
        main, base + ["--agency", "Kern County Sheriff's Office", "--ori", "CA0150000"] + assurance, env=officer
    )
    assert made.exit_code == 0, made.output
    req_id = made.output.split()[2]
    shown = runner.invoke(main, ["sharing", "show", req_id, "--case", "SHR-2026-001"], env=admin)
    assert shown.exit_code == 0, shown.output
    assert "ORI CA0150000" in shown.output and "KCSO shares nothing outside" in shown.output
    assert "2 read(s) and 4 image(s)" in shown.output, shown.output
    own = runner.invoke(
        main, base + ["--agency", "Kern County Sheriff's Office", "--ori", "CA0150000"] + assurance, env=admin
    )
    assert own.exit_code == 0, own.output
    own_id = own.output.split()[2]
    refused = runner.invoke(main, ["sharing", "approve", own_id, "--note", "Approved"], env=admin)
    assert refused.exit_code == 1 and "op.admin recorded" in refused.output, refused.output
    assert runner.invoke(main, ["sharing", "approve", req_id, "--note", "Approved"], env=admin).exit_code == 0
    assert [r.action for r in AccessRecord.select().where(AccessRecord.action.startswith("sharing."))] == [
        "sharing.refuse",
        "sharing.request",
        "sharing.view",
        "sharing.request",
        "sharing.approve",
    ]
