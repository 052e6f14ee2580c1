"""Evidence ZIPs: a real export verifies offline, and each kind of tampering is named."""

import datetime as dt
import getpass
import hashlib
import json
import zipfile

import pytest
from click.testing import CliRunner

from appliance import audit, export, holds, search, sharing
from appliance.cli import main
from appliance.models import AccessRecord
from tests.appliance.test_sharing import ADMIN, OFFICER, PURPOSE, T0, new_request, stored  # noqa: F401 (fixture)
from tests.conftest import operator_env


@pytest.fixture
def evidence(settings, db, stored, tmp_path):  # noqa: F811
    req = sharing.create(settings, OFFICER, new_request(), PURPOSE)
    sharing.decide(settings, ADMIN, req.id, True, "Approved, case nexus shown")
    return sharing.export(settings, ADMIN, req.id, tmp_path / "out" / "evidence.zip").path


def rewrite(src, dst, change=lambda name, data: data, extra=()):
    """Copy a ZIP, passing each member through change(name, data) (None drops it), then add extras.
    The copy is a well-formed ZIP: only the verifier's own checks can catch the change."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
        for name, data in extra:
            zout.writestr(name, data)
    return dst


def names(path):
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def first_image(path):
    return next(n for n in names(path) if n.startswith("images/"))


def edit_manifest(fn):
    def change(name, data):
        if name != "manifest.json":
            return data
        manifest = json.loads(data)
        fn(manifest)
        return json.dumps(manifest).encode()

    return change


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_an_export_verifies_and_holds_what_it_says(evidence, stored):  # noqa: F811
    report = export.verify(evidence)
    assert report.ok, report.problem
    assert "2 read(s), 4 image(s), 8 file(s)" in report.facts[0]
    with zipfile.ZipFile(evidence) as zf:
        assert sorted(n for n in zf.namelist() if not n.startswith("images/")) == [
            "STATEMENT.txt",
            "access_record.json",
            "manifest.json",
            "reads.csv",
            "reads.json",
        ]
        rows = json.loads(zf.read("reads.json"))
        assert {r["uuid"] for r in rows} == {stored[0].uuid, stored[1].uuid}
        alt = next(r for r in rows if r["uuid"] == stored[0].uuid)
        assert alt["alternatives"] == [{"score": 0.31, "text": "7A8C123"}] and alt["camera_name"]
        assert alt["captured_at"] == "2026-03-02T14:00:00.000000Z" and alt["direction"] == "away"
        csv_text = zf.read("reads.csv").decode()
        assert "7A8C123" in csv_text and stored[0].uuid in csv_text
        for name in zf.namelist():
            if name.startswith("images/"):
                assert sha(zf.read(name)) == name[7:71] and zf.read(name)[:2] == b"\xff\xd8"
        [rec] = json.loads(zf.read("access_record.json"))["records"]
        stored_rec = AccessRecord.get(AccessRecord.seq == rec["seq"])
        assert rec["hash"] == stored_rec.hash and rec["prev_hash"] == stored_rec.prev_hash
        assert rec["action"] == "sharing.export"
        statement = zf.read("STATEMENT.txt").decode()
        for words in (
            "admin.chen",
            "Fresno Police Department",
            "Det. Maria Ortiz",
            "FPD case 26-00417",
            rec["hash"],
            "waypost evidence verify",
            "1798.90.55",
            "2023-DLE-06",
            "CRIME-INV",
        ):
            assert words in statement, words


def test_a_changed_image_byte_is_named(evidence, tmp_path):
    image = first_image(evidence)
    bad = rewrite(
        evidence, tmp_path / "bad.zip", lambda n, d: d[:100] + bytes([d[100] ^ 1]) + d[101:] if n == image else d
    )
    report = export.verify(bad)
    assert (
        not report.ok
        and report.problem.startswith(f"{image}: sha256 ")
        and "does not match the manifest" in report.problem
    )


def test_a_byte_flipped_inside_the_zip_file_is_caught(evidence, tmp_path):
    """Bit rot or an edit of the file itself, not a re-zip: the ZIP's own checksum gives it away."""
    image = first_image(evidence)
    with zipfile.ZipFile(evidence) as zf:
        data = zf.read(image)
    raw = bytearray(evidence.read_bytes())
    at = raw.index(data) + 200
    raw[at] ^= 0xFF
    bad = tmp_path / "flipped.zip"
    bad.write_bytes(bytes(raw))
    report = export.verify(bad)
    assert not report.ok and image in report.problem and "damaged" in report.problem


def test_a_changed_csv_is_named(evidence, tmp_path):
    bad = rewrite(
        evidence, tmp_path / "bad.zip", lambda n, d: d.replace(b"7ABC123", b"7ABC124", 1) if n == "reads.csv" else d
    )
    report = export.verify(bad)
    assert not report.ok and report.problem.startswith("reads.csv: sha256 ")


def test_a_removed_file_is_named(evidence, tmp_path):
    image = first_image(evidence)
    bad = rewrite(evidence, tmp_path / "bad.zip", lambda n, d: None if n == image else d)
    report = export.verify(bad)
    assert not report.ok and report.problem == f"{image}: listed in manifest.json but missing from the ZIP"


def test_an_extra_file_is_named(evidence, tmp_path):
    bad = rewrite(evidence, tmp_path / "bad.zip", extra=[("notes.txt", b"added later")])
    report = export.verify(bad)
    assert not report.ok and report.problem == "notes.txt: in the ZIP but not listed in manifest.json (an extra file)"


def test_an_edited_manifest_is_named(evidence, tmp_path):
    def change(manifest):
        manifest["files"]["reads.json"]["sha256"] = "0" * 64

    report = export.verify(rewrite(evidence, tmp_path / "bad.zip", edit_manifest(change)))
    assert not report.ok and report.problem.startswith("reads.json: sha256 ") and ("0" * 64) in report.problem


def test_a_changed_csv_with_a_matching_manifest_fails_on_the_access_record(evidence, tmp_path):
    """Someone who rewrites a file AND its manifest entry still has the export's record against them."""
    with zipfile.ZipFile(evidence) as zf:
        forged = zf.read("reads.csv").replace(b",away,", b",toward,")
        forged_json = zf.read("reads.json").replace(b'"away"', b'"toward"')

    def change(name, data):
        return {"reads.csv": forged, "reads.json": forged_json}.get(name, data)

    def fix(manifest):
        manifest["files"]["reads.csv"] = {"sha256": sha(forged), "bytes": len(forged)}
        manifest["files"]["reads.json"] = {"sha256": sha(forged_json), "bytes": len(forged_json)}

    bad = rewrite(evidence, tmp_path / "a.zip", change)
    bad = rewrite(bad, tmp_path / "b.zip", edit_manifest(fix))
    report = export.verify(bad)
    assert not report.ok and report.problem.startswith("the data files do not match the export's access record")


def test_an_edited_access_record_fails_its_own_hash(evidence, tmp_path):
    def change(name, data):
        if name != "access_record.json":
            return data
        doc = json.loads(data)
        doc["records"][0]["username"] = "someone.else"
        return json.dumps(doc).encode()

    bad = rewrite(evidence, tmp_path / "a.zip", change)
    with zipfile.ZipFile(bad) as zf:
        new = zf.read("access_record.json")
    bad = rewrite(
        bad,
        tmp_path / "b.zip",
        edit_manifest(lambda m: m["files"].__setitem__("access_record.json", {"sha256": sha(new), "bytes": len(new)})),
    )
    report = export.verify(bad)
    assert not report.ok and "does not match its own hash" in report.problem


def test_an_image_renamed_to_another_hash_is_named(evidence, tmp_path):
    image = first_image(evidence)
    with zipfile.ZipFile(evidence) as zf:
        data = zf.read(image)
    other = "images/" + "a" * 64 + ".jpg"
    bad = rewrite(evidence, tmp_path / "a.zip", lambda n, d: None if n == image else d, extra=[(other, data)])

    def fix(manifest):
        manifest["files"][other] = manifest["files"].pop(image)

    report = export.verify(rewrite(bad, tmp_path / "b.zip", edit_manifest(fix)))
    assert not report.ok and report.problem == f"{other}: its content's sha256 is {sha(data)}, not its name"


def test_not_a_zip_and_no_manifest(evidence, tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    assert "not a readable ZIP file" in export.verify(junk).problem
    bare = rewrite(evidence, tmp_path / "bare.zip", lambda n, d: None if n == "manifest.json" else d)
    assert export.verify(bare).problem == "manifest.json is missing"
    assert "no such file" in export.verify(tmp_path / "nope.zip").problem


def test_cli_verify_exit_codes(evidence, tmp_path):
    runner = CliRunner()
    good = runner.invoke(main, ["evidence", "verify", str(evidence)])
    assert good.exit_code == 0 and "OK" in good.output and "2 read(s)" in good.output
    bad = rewrite(evidence, tmp_path / "bad.zip", extra=[("notes.txt", b"x")])
    result = runner.invoke(main, ["evidence", "verify", str(bad)])
    assert result.exit_code == 1 and "notes.txt: in the ZIP but not listed" in result.output


def test_cli_request_approve_export_verify(settings, db, stored, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WAYPOST_STORAGE__DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("WAYPOST_STORAGE__MIN_FREE_MB", "0")
    officer, admin = operator_env(settings, "op.officer", "officer"), operator_env(settings, "op.admin", "admin")
    runner = CliRunner()
    base = [
        "sharing",
        "request",
        "--agency",
        "Kern County Sheriff's Office",
        "--state",
        "CA",
        "--ori",
        "CA0150000",
        "--requester",
        "Sgt. Lee Park",
        "--title",
        "Sergeant",
        "--contact",
        "lpark@kern.example",
        "--intended-purpose",
        "Stolen truck recovered near the post",
        "--authority",
        "KCSO 26-1102",
        "--assurance",
        "KCSO will not share the data outside California state and local public agencies",
        "--plate",
        "7ABC123",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-04",
        "--purpose",
        "STOLEN-VEH",
        "--case",
        "2026-000777",
    ]
    refused = runner.invoke(main, base + ["--agency-type", "federal"], env=officer)
    assert refused.exit_code == 1 and "federal agency" in refused.output and "1798.90.55" in refused.output
    made = runner.invoke(main, base + ["--agency-type", "ca-county-sheriff"], env=officer)
    assert made.exit_code == 0, made.output
    req_id = made.output.split()[2]
    out = tmp_path / "cli.zip"
    early = runner.invoke(main, ["evidence", "export", "--request", req_id, "--out", str(out)], env=admin)
    assert early.exit_code == 1 and "pending, not approved" in early.output and not out.exists()
    approved = runner.invoke(main, ["sharing", "approve", req_id, "--note", "Approved by Lt. Ng"], env=admin)
    assert approved.exit_code == 0, approved.output
    done = runner.invoke(main, ["evidence", "export", "--request", req_id, "--out", str(out)], env=admin)
    assert done.exit_code == 0, done.output
    assert export.verify(out).ok
    statement = " ".join(zipfile.ZipFile(out).read("STATEMENT.txt").decode().split())
    assert "ORI CA0150000" in statement and "KCSO will not share the data outside California" in statement
    shown = runner.invoke(main, ["sharing", "show", req_id, "--case", "SHR-2026-001"], env=admin)
    assert "approved by op.admin" in shown.output and "Export:" in shown.output
    listed = runner.invoke(main, ["sharing", "list", "--status", "approved", "--case", "SHR-2026-001"], env=admin)
    assert "Kern County Sheriff's Office" in listed.output
    assert [
        r.action
        for r in AccessRecord.select().where(AccessRecord.action.startswith("sharing.")).order_by(AccessRecord.seq)
    ] == [
        "sharing.refuse",
        "sharing.request",
        "sharing.approve",
        "sharing.export",
        "sharing.view",
        "sharing.list",
    ]  # show and list are recorded
    assert audit.verify().ok


def test_the_statement_carries_the_recipients_ori_and_written_assurance(evidence):
    """AG bulletin 2023-DLE-06: the recipient assures no onward sharing; the ZIP says so to whoever holds it."""
    statement = zipfile.ZipFile(evidence).read("STATEMENT.txt").decode()
    flat = " ".join(statement.split())
    assert "Fresno Police Department (California city police department), state CA, ORI CA0100500" in flat
    assert (
        'Assurance: "Fresno PD will not share the data outside California state and local public agencies '
        "(letter of Lt. K. Moua, 2026-03-01)\" (the recipient's written assurance" in flat
    )
    assert "Onward sharing:" in statement and "only to California state or local public agencies" in flat
    assert "Recorded by:       officer.lee" in statement and "Approved by:       admin.chen" in statement


def test_an_export_for_a_legal_hold_verifies_and_a_released_hold_is_refused(settings, db, stored, tmp_path):  # noqa: F811

    hold = holds.place_on_query(
        settings,
        OFFICER,
        search.Query("7ABC123", "exact", since=T0 - dt.timedelta(hours=1), until=T0 + dt.timedelta(hours=1)),
        "CRIME-INV",
        "2026-004400",
        "Robbery suspect vehicle, court case pending",
    )
    summary = export.for_hold(settings, ADMIN, hold.id, tmp_path / "hold.zip")
    assert summary.read_count == 2 and export.verify(summary.path).ok
    [rec] = AccessRecord.select().where(AccessRecord.action == "hold.export")
    assert (rec.username, rec.purpose_code, rec.case_number, rec.result_count) == (
        "admin.chen",
        "CRIME-INV",
        "2026-004400",
        2,
    )
    with zipfile.ZipFile(summary.path) as zf:
        assert "Robbery suspect vehicle" in zf.read("STATEMENT.txt").decode()
    env = {"WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    env.update(operator_env(settings, "sgt.lee", "officer"))  # an officer exports a hold's evidence
    made = CliRunner().invoke(
        main, ["evidence", "export", "--hold", str(hold.id), "--out", str(tmp_path / "b.zip")], env=env
    )
    assert made.exit_code == 0 and export.verify(tmp_path / "b.zip").ok, made.output
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:  # the finding: it said "Exported by: cli:root"
        assert (
            f"Exported by:       sgt.lee (Demo Police Department), from cli:{getpass.getuser()}"
            in zf.read("STATEMENT.txt").decode()
        )
    holds.release(ADMIN, hold.id, "Case closed by the district attorney")
    with pytest.raises(holds.HoldError, match="only an active hold"):
        export.for_hold(settings, ADMIN, hold.id, tmp_path / "late.zip")
    assert not (tmp_path / "late.zip").exists()
    result = CliRunner().invoke(
        main, ["evidence", "export", "--hold", str(hold.id), "--out", str(tmp_path / "c.zip")], env=env
    )
    assert result.exit_code == 1 and "only an active hold" in result.output
