"""The access log: what it records, what it refuses, and tampering with a real database file."""

import sqlite3

import pytest
from click.testing import CliRunner

from appliance import audit
from appliance import db as dbmod
from appliance.cli import main
from appliance.models import AccessRecord
from tests.conftest import operator_env

OFFICER = audit.Actor("officer.lee", "Demo Police Department", "10.1.2.3")
PURPOSE = audit.Purpose("STOLEN-VEH", "24-001234")


def append(n, start=0):
    for i in range(start, start + n):
        with dbmod.write():
            audit.record(
                "read.search",
                OFFICER,
                query={"plate": f"7ABC{i:03d}"},
                purpose=PURPOSE,
                objects=[f"read:{i}"],
                result_count=i,
            )


def test_record_holds_what_the_law_asks(db):
    first = AccessRecord.get(AccessRecord.seq == 1)  # the configuration, recorded at start
    assert first.action == "config.change" and first.prev_hash == audit.GENESIS
    append(1)
    rec = AccessRecord.get(AccessRecord.action == "read.search")
    assert rec.seq == 2 and rec.prev_hash == first.hash and len(rec.hash) == 64
    assert rec.at.endswith("Z") and rec.username == "officer.lee" and rec.organization == "Demo Police Department"
    assert rec.query == '{"plate":"7ABC000"}'
    assert (rec.purpose_code, rec.case_number) == ("STOLEN-VEH", "24-001234")
    assert rec.client_addr == "10.1.2.3" and rec.result_count == 0 and rec.object_ids == '["read:0"]'


def test_data_access_needs_a_purpose(db):
    with pytest.raises(audit.PurposeError):
        with dbmod.write():
            audit.record("read.search", OFFICER, query={"plate": "7ABC123"})
    assert AccessRecord.select().where(AccessRecord.action == "read.search").count() == 0


@pytest.mark.parametrize(
    "code,case,message",
    [
        ("", "24-1", "purpose code is required"),
        ("FISHING", "24-001", "unknown purpose code"),
        ("STOLEN-VEH", "", "case or incident number is required"),
        ("STOLEN-VEH", "n/a", "not a case or incident number"),
        ("STOLEN-VEH", "investigation", "not a case or incident number"),
        ("STOLEN-VEH", "1234", "not a case or incident number"),
        ("STOLEN-VEH", "0000000", "not a case or incident number"),
        ("STOLEN-VEH", "ABC-DEF", "not a case or incident number"),
        ("STOLEN-VEH", "24 00 12", "not a case or incident number"),
    ],
)
def test_placeholder_purposes_are_refused(settings, code, case, message):
    with pytest.raises(audit.PurposeError, match=message):
        audit.check_purpose(settings, code, case)


def test_good_purpose_is_normalised(settings):
    assert audit.check_purpose(settings, "stolen-veh ", " 24-001234 ") == audit.Purpose("STOLEN-VEH", "24-001234")


def test_record_outside_a_transaction_is_refused(db):
    with pytest.raises(audit.AuditError, match="inside the transaction"):
        audit.record("auth.logout", OFFICER)


def test_record_rolls_back_with_its_action(db):
    with pytest.raises(RuntimeError):
        with dbmod.write():
            audit.record("auth.logout", OFFICER)
            raise RuntimeError("the action failed")
    assert AccessRecord.select().where(AccessRecord.action == "auth.logout").count() == 0
    assert audit.verify().ok


def test_control_characters_cannot_forge_the_serialization(db):
    with dbmod.write():
        audit.record("auth.login_failed", audit.Actor("evil\x1fname\n", "org", "1.2.3.4"))
    rec = AccessRecord.get(AccessRecord.action == "auth.login_failed")
    assert "\x1f" not in rec.username and "\n" not in rec.username
    assert audit.verify().ok


def test_unknown_action_is_a_programming_error(db):
    with pytest.raises(audit.AuditError, match="unknown audit action"):
        with dbmod.write():
            audit.record("reads.serch", OFFICER)


# --- tampering with the real file, as someone with the SD card would ---------------------------


@pytest.fixture
def chain(db, settings):
    append(19)  # record 1 is the configuration recorded at start: 20 in all
    assert audit.verify().ok
    head = audit.head()
    db.close()
    conn = sqlite3.connect(settings.db_path)
    yield conn, head
    conn.close()
    db.connect(reuse_if_open=True)


def reverify(db, head=None):
    """Verify in one process and split across three; both must reach the same verdict."""
    db.close()
    db.connect()
    single = audit.verify(head)
    split = audit.verify(head, workers=3, parallel_from=1)
    assert (single.ok, single.bad_seq, single.problem) == (split.ok, split.bad_seq, split.problem)
    return single


def test_tamper_modified_field(chain, db):
    conn, head = chain
    with conn:
        conn.execute('UPDATE access_record SET query = \'{"plate":"6ZZZ999"}\' WHERE seq = 7')
    result = reverify(db)
    assert not result.ok and result.bad_seq == 7 and "modified" in result.problem


def test_tamper_modified_field_with_recomputed_hash(chain, db):
    """Someone who recomputes the edited record's hash still breaks the next link."""
    conn, head = chain
    row = list(conn.execute(f"SELECT {', '.join(audit.COLUMNS)} FROM access_record WHERE seq = 7").fetchone())
    row[2] = "someone.else"
    row[13] = audit._digest(tuple(row))
    with conn:
        conn.execute("UPDATE access_record SET username = ?, hash = ? WHERE seq = 7", (row[2], row[13]))
    result = reverify(db)
    assert not result.ok and result.bad_seq == 8 and "link" in result.problem


def test_tamper_deleted_record(chain, db):
    conn, head = chain
    with conn:
        conn.execute("DELETE FROM access_record WHERE seq = 12")
    result = reverify(db)
    assert not result.ok and result.bad_seq == 13 and "missing" in result.problem


def test_tamper_deleted_and_renumbered(chain, db):
    """Deleting a record and renumbering the rest keeps seq contiguous; the link still breaks."""
    conn, head = chain
    with conn:
        conn.execute("DELETE FROM access_record WHERE seq = 12")
        for seq in range(13, 21):
            conn.execute("UPDATE access_record SET seq = ? WHERE seq = ?", (seq - 1, seq))
    result = reverify(db)
    assert not result.ok and result.bad_seq == 12 and "link" in result.problem


def test_tamper_inserted_record(chain, db):
    conn, head = chain
    with conn:
        for seq in range(20, 9, -1):
            conn.execute("UPDATE access_record SET seq = ? WHERE seq = ?", (seq + 1, seq))
        row = list(conn.execute(f"SELECT {', '.join(audit.COLUMNS)} FROM access_record WHERE seq = 9").fetchone())
        row[0], row[12] = 10, row[13]
        row[2] = "ghost.user"
        row[13] = audit._digest(tuple(row))
        conn.execute(f"INSERT INTO access_record VALUES ({', '.join('?' * 14)})", row)
    result = reverify(db)
    assert not result.ok and result.bad_seq == 11


def test_tamper_reordered_records(chain, db):
    conn, head = chain
    with conn:
        conn.execute("UPDATE access_record SET seq = -5 WHERE seq = 5")
        conn.execute("UPDATE access_record SET seq = 5 WHERE seq = 6")
        conn.execute("UPDATE access_record SET seq = 6 WHERE seq = -5")
    result = reverify(db)
    assert not result.ok and result.bad_seq == 5


def test_tamper_truncated_tail_needs_the_saved_head(chain, db):
    conn, head = chain
    with conn:
        conn.execute("DELETE FROM access_record WHERE seq > 15")
    assert reverify(db).ok, "a clean cut at the end is undetectable without a saved head"
    result = reverify(db, head)
    assert not result.ok and "truncated" in result.problem and "20" in result.problem


def test_rewritten_chain_detected_against_saved_head(chain, db):
    conn, head = chain
    rows = [list(r) for r in conn.execute(f"SELECT {', '.join(audit.COLUMNS)} FROM access_record ORDER BY seq")]
    prev = audit.GENESIS
    with conn:
        for row in rows:  # an insider rewrites the whole chain consistently
            if row[0] == 3:
                row[2] = "nobody"
            row[12] = prev
            row[13] = audit._digest(tuple(row))
            prev = row[13]
            conn.execute(
                "UPDATE access_record SET username = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (row[2], row[12], row[13], row[0]),
            )
    assert reverify(db).ok
    result = reverify(db, head)
    assert not result.ok and result.bad_seq == 20 and "rewritten" in result.problem


def test_cli_verify_head_and_export(chain, db, settings, tmp_path):
    conn, head = chain
    runner = CliRunner()
    env = {"WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir), "WAYPOST_CONFIG": ""}
    out = runner.invoke(main, ["audit", "head"], env=env)
    assert out.exit_code == 0 and out.output.strip() == f"{head[0]} {head[1]}"
    saved = tmp_path / "head.txt"
    saved.write_text(out.output)
    ok = runner.invoke(main, ["audit", "verify", "--head-file", str(saved)], env=env)
    assert ok.exit_code == 0, ok.output
    assert "verified: 20 records" in ok.output
    export = tmp_path / "log.csv"
    operator = operator_env(settings, "audit.kim", "auditor")  # its account and training are records 21 and 22
    res = runner.invoke(
        main, ["audit", "export", "--out", str(export), "--case", "AUD-2026-7"], env={**env, **operator}
    )
    assert res.exit_code == 0, res.output
    lines = export.read_text().splitlines()
    # the 20 records, the operator's account, training and sign-in, then the export's own record
    assert lines[0].startswith("seq,at,username") and len(lines) == 1 + 20 + 3
    [rec] = AccessRecord.select().where(AccessRecord.action == "audit.export")
    assert (rec.username, rec.purpose_code, rec.case_number) == ("audit.kim", "AUDIT", "AUD-2026-7")
    with conn:
        conn.execute("UPDATE access_record SET case_number = 'X' WHERE seq = 4")
    bad = runner.invoke(main, ["audit", "verify", "--head-file", str(saved)], env=env)
    assert bad.exit_code == 1 and "record 4" in bad.output
