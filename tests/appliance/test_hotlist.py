import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import audit, hotlist
from appliance.models import AccessRecord, Hotlist, HotlistEntry, utcnow
from tests.conftest import make_settings

ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")
OFFICER = audit.Actor("officer.lee", "Demo PD", "10.0.0.7")
HEADER = "plate,state,reason,entry_date,source_ref\n"
ROOT = Path(__file__).resolve().parents[2]


def write_csv(tmp_path, body, name="svs.csv", header=HEADER):
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def test_import_replaces_the_list_in_one_go(settings, db, tmp_path):
    first = write_csv(tmp_path, "7ABC123,ca,STOLEN VEHICLE,2026-11-20,SVS-1\n8XYZ 999,ca,WANTED,2026-11-19,SVS-2\n")
    result = hotlist.import_csv(settings, first, "SVS", ADMIN)
    assert (result.entries, result.replaced) == (2, 0)
    assert sorted(e.plate for e in HotlistEntry.select()) == ["7ABC123", "8XYZ999"]
    second = write_csv(tmp_path, "5LMN432,ca,AMBER ALERT,2026-11-21,SVS-9\n", "svs2.csv")
    result = hotlist.import_csv(settings, second, "SVS", ADMIN)
    assert (result.entries, result.replaced) == (1, 2)
    h = Hotlist.get(Hotlist.name == "SVS")
    assert h.entry_count == 1 and h.source == "svs2.csv" and h.refreshed_at is not None
    rec = AccessRecord.select().where(AccessRecord.action == "hotlist.import").order_by(AccessRecord.seq.desc()).get()
    assert json.loads(rec.details)["replaced"] == 2 and rec.result_count == 1


def test_malformed_lines_are_named_and_nothing_is_imported(settings, db, tmp_path):
    good = write_csv(tmp_path, "7ABC123,ca,STOLEN VEHICLE,2026-11-20,SVS-1\n")
    hotlist.import_csv(settings, good, "SVS", ADMIN)
    bad = write_csv(
        tmp_path,
        "6DEF456,ca,STOLEN,2026-11-20,A\n"
        "7AB$123,ca,STOLEN,2026-11-20,B\n"
        "8GHI789,california,STOLEN,2026-11-20,C\n"
        "9JKL012,ca,,2026-11-20,D\n"
        "1MNO345,ca,STOLEN,20/11/2026,E\n"
        "2PQR678,ca,STOLEN,2026-11-20,F,extra\n",
        "bad.csv",
    )
    with pytest.raises(hotlist.HotlistError) as err:
        hotlist.import_csv(settings, bad, "SVS", ADMIN)
    text = str(err.value)
    assert "bad.csv: line 3: field plate: '7AB$123'" in text
    assert "bad.csv: line 4: field state: 'california'" in text
    assert "bad.csv: line 5: field reason: empty" in text
    assert "bad.csv: line 6: field entry_date: '20/11/2026'" in text
    assert "bad.csv: line 7: 6 fields, the header has 5" in text
    assert [e.plate for e in HotlistEntry.select()] == ["7ABC123"]  # the old list stands
    assert Hotlist.get(Hotlist.name == "SVS").source == "svs.csv"


def test_line_numbers_count_blank_lines_and_only_real_line_ends(settings, db, tmp_path):
    # Exports from records systems carry blank lines, CRLF line ends, and the odd form feed or
    # U+2028 inside a field: the line named must be the one an editor shows.
    path = tmp_path / "gaps.csv"
    path.write_bytes(
        (
            HEADER + "7ABC123,ca,STOLEN,2026-11-20,A\r\n\r\n\n"
            "6DEF456,ca,STOLEN \u2028VEHICLE,2026-11-20,B\f\n\n"
            "8XYZ99$,ca,WANTED,2026-11-20,C\n"
        ).encode()
    )
    with pytest.raises(hotlist.HotlistError) as err:
        hotlist.import_csv(settings, path, "SVS", ADMIN)
    assert (
        str(err.value) == f"{path}: line 7: field plate: '8XYZ99$' is not a plate "
        "(1-8 letters and digits; spaces and dashes are ignored)"
    )


def test_header_mapping_and_missing_columns(tmp_path, db):
    settings = make_settings(
        tmp_path / "d", hotlist__plate_column="LIC", hotlist__reason_column="CATEGORY", hotlist__date_format="%m/%d/%Y"
    )
    path = write_csv(tmp_path, "7ABC123,STOLEN,11/20/2026\n", header="LIC,CATEGORY,entry_date\n")
    assert hotlist.import_csv(settings, path, "NCIC", ADMIN).entries == 1
    assert HotlistEntry.get().entry_date == dt.date(2026, 11, 20)
    wrong = write_csv(tmp_path, "7ABC123,STOLEN\n", "wrong.csv", header="plate,reason\n")
    with pytest.raises(hotlist.HotlistError, match=r"wrong.csv: line 1: header .* lacks plate \(column 'LIC'\)"):
        hotlist.import_csv(settings, wrong, "NCIC", ADMIN)


def test_empty_or_unreadable_files_are_refused(settings, db, tmp_path):
    with pytest.raises(hotlist.HotlistError, match="no entries"):
        hotlist.import_csv(settings, write_csv(tmp_path, ""), "SVS", ADMIN)
    latin = tmp_path / "latin.csv"
    latin.write_bytes(HEADER.encode() + "7ABC123,ca,VOL\xe9,2026-11-20,x\n".encode("latin-1"))
    with pytest.raises(hotlist.HotlistError, match="not UTF-8"):
        hotlist.import_csv(settings, latin, "SVS", ADMIN)
    with pytest.raises(hotlist.HotlistError, match="file not found"):
        hotlist.import_csv(settings, tmp_path / "nope.csv", "SVS", ADMIN)


def test_staleness_is_recorded_once(settings, db, tmp_path):
    hotlist.import_csv(settings, write_csv(tmp_path, "7ABC123,ca,STOLEN,2026-11-20,x\n"), "SVS", ADMIN)
    assert hotlist.record_stale(settings, ADMIN) == []
    Hotlist.update(refreshed_at=utcnow() - dt.timedelta(hours=73)).execute()
    assert hotlist.record_stale(settings, ADMIN) == ["SVS"]
    assert hotlist.record_stale(settings, ADMIN) == ["SVS"]
    assert AccessRecord.select().where(AccessRecord.action == "hotlist.stale").count() == 1
    assert hotlist.status(settings)[0]["stale"] is True


def test_custom_entries_need_approval_and_narrative(settings, db):
    with pytest.raises(hotlist.HotlistError) as err:
        hotlist.add_custom(settings, ADMIN, "7A*", "ROBBERY", approved_by="", narrative="short")
    text = str(err.value)
    assert "approving commander" in text and "narrative" in text and "at least 3 known characters" in text
    entry = hotlist.add_custom(
        settings,
        ADMIN,
        "7AB?12*",
        "ARMED ROBBERY",
        approved_by="Capt. R. Alvarez",
        narrative="Case 26-004512: witness saw partial plate on getaway sedan.",
    )
    assert entry.pattern and entry.plate == "7AB?12*"
    removed = hotlist.remove_entry(audit.Actor("officer.lee", "Demo PD"), entry.id, "vehicle recovered")
    assert removed.removed_by == "officer.lee" and removed.removed_at is not None
    with pytest.raises(hotlist.HotlistError, match="no such active entry"):
        hotlist.remove_entry(ADMIN, entry.id, "again")
    actions = [r.action for r in AccessRecord.select().order_by(AccessRecord.seq)]
    assert actions[-2:] == ["hotlist.entry_add", "hotlist.entry_remove"]
    assert audit.verify().ok


# --- issue 16, finding 6: hotlists from a state or DOJ extract --------------------------------

NCIC = {
    "hotlist__plate_column": "LIC",
    "hotlist__state_column": "LIS",
    "hotlist__plate_type_column": "LIT",
    "hotlist__plate_year_column": "LIY",
    "hotlist__vehicle_make_column": "MKE",
    "hotlist__source_ref_column": "NIC",
    "hotlist__ori_column": "ORI",
    "hotlist__entry_date_column": "DTE",
    "hotlist__reason_column": "CAT",
    "hotlist__date_format": "%Y%m%d",
}
NCIC_HEADER = "LIC,LIS,LIT,LIY,MKE,NIC,ORI,DTE,CAT\n"


def test_an_ncic_extract_keeps_plate_type_year_make_and_ori(tmp_path, db):
    settings = make_settings(tmp_path / "d", **NCIC)
    path = write_csv(
        tmp_path,
        "7ABC123,CA,PC,2027,TOYT,V123456789,CA0360100,20261120,STOLEN VEHICLE\n"
        "8XYZ999,NV,tk,NX,FORD,V987654321,nv0020000,20261119,STOLEN PLATE\n",
        header=NCIC_HEADER,
    )
    assert hotlist.import_csv(settings, path, "NCIC", ADMIN).entries == 2
    got = [
        (e.plate, e.state, e.plate_type, e.plate_year, e.vehicle_make, e.source_ref, e.ori, e.entry_date)
        for e in HotlistEntry.select().order_by(HotlistEntry.plate)
    ]
    assert got == [
        ("7ABC123", "ca", "PC", "2027", "TOYT", "V123456789", "CA0360100", dt.date(2026, 11, 20)),
        ("8XYZ999", "nv", "TK", "NX", "FORD", "V987654321", "NV0020000", dt.date(2026, 11, 19)),
    ]


def test_a_repeated_nic_or_entry_is_refused_naming_both_lines(settings, db, tmp_path):
    hotlist.import_csv(settings, write_csv(tmp_path, "5LMN432,ca,AMBER ALERT,2026-11-21,SVS-9\n"), "SVS", ADMIN)
    bad = write_csv(
        tmp_path,
        "7ABC123,ca,STOLEN VEHICLE,2026-11-20,V1\n"  # line 2
        "8XYZ999,ca,WANTED,2026-11-20,V2\n"  # line 3
        "7ABC123,ca,WANTED,2026-11-20,V3\n"  # line 4: same plate, another reason: its own entry
        "7ABC123,nv,STOLEN VEHICLE,2026-11-20,V4\n"  # line 5: same plate, another state: its own entry
        "6DEF456,ca,STOLEN PLATE,2026-11-20,V2\n"  # line 6: the NIC of line 3
        "7ABC 123,CA,stolen  vehicle,2026-11-20,V7\n"  # line 7: line 2's plate, state and reason
        "9GHI789,ca,STOLEN PLATE,2026-11-20,v2\n",  # line 8: line 3's NIC again
        "dups.csv",
    )
    with pytest.raises(hotlist.HotlistError) as err:
        hotlist.import_csv(settings, bad, "SVS", ADMIN)
    assert err.value.problems == [
        f"{bad}: line 6: field source_ref: 'V2' is also on line 3; each NIC names one record: "
        "remove one of the two lines",
        f"{bad}: line 7: 7ABC123 (state ca, reason 'stolen  vehicle') is also on line 2: remove one of the two lines",
        f"{bad}: line 8: field source_ref: 'v2' is also on line 3; each NIC names one record: "
        "remove one of the two lines",
    ]
    assert [e.plate for e in HotlistEntry.select()] == ["5LMN432"]  # the old list stands


def test_bytes_that_are_not_utf8_are_named_by_line_and_column_and_every_line_is_checked(settings, db, tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(
        HEADER.encode()
        + b"7ABC123,ca,STOLEN,2026-11-20,A\n"
        + "6DEF456,ca,VOL\xe9,2026-11-20,B\n".encode("latin-1")  # line 3: \xe9 is the 15th character
        + b"8XYZ99$,ca,WANTED,2026-11-20,C\n"  # line 4: no plate
        + b"\xff5LMN432,ca,WANTED,2026-11-20,D\n"  # line 5: first character
        + b"9GHI789,ca,WANTED,2026-11-20,E\n"
    )
    with pytest.raises(hotlist.HotlistError) as err:
        hotlist.import_csv(settings, path, "SVS", ADMIN)
    problems = err.value.problems
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}: line 3: column 15: byte 0xE9 is not UTF-8 text; save the file as UTF-8 CSV")
    assert problems[1].startswith(f"{path}: line 4: field plate: '8XYZ99$' is not a plate")
    assert problems[2].startswith(f"{path}: line 5: column 1: byte 0xFF is not UTF-8 text")
    assert HotlistEntry.select().count() == 0


def test_fields_longer_than_their_limit_are_refused_naming_line_and_field(settings, db, tmp_path):
    header = "plate,state,reason,entry_date,source_ref,plate_type,plate_year,vehicle_make,ori\n"
    at_limits = f"7ABC123,ca,{'R' * 200},2026-11-20,{'S' * 40},{'T' * 10},2027,{'M' * 24},CA0360100\n"
    assert hotlist.import_csv(settings, write_csv(tmp_path, at_limits, header=header), "SVS", ADMIN).entries == 1
    entry = HotlistEntry.get()
    assert (len(entry.reason), len(entry.source_ref), len(entry.vehicle_make)) == (200, 40, 24)  # kept whole
    over = write_csv(
        tmp_path,
        f"1AAA111,ca,{'R' * 201},2026-11-20,S1,PC,2027,TOYT,CA0360100\n"
        f"2AAA222,ca,STOLEN,2026-11-20,{'S' * 41},PC,2027,TOYT,CA0360100\n"
        f"3AAA333,ca,STOLEN,2026-11-20,S3,{'T' * 11},2027,TOYT,CA0360100\n"
        "4AAA444,ca,STOLEN,2026-11-20,S4,PC,20270,TOYT,CA0360100\n"
        f"5AAA555,ca,STOLEN,2026-11-20,S5,PC,2027,{'M' * 25},CA0360100\n"
        "6AAA666,ca,STOLEN,2026-11-20,S6,PC,2027,TOYT,CA03601000\n"
        "7AAA777,ca,STOLEN,2026-11-20,S7,PC,2027,TOYT,CA-036010\n",
        "over.csv",
        header=header,
    )
    with pytest.raises(hotlist.HotlistError) as err:
        hotlist.import_csv(settings, over, "SVS", ADMIN)
    problems = err.value.problems
    assert [p.split(": ")[1:3] for p in problems] == [
        ["line 2", "field reason"],
        ["line 3", "field source_ref"],
        ["line 4", "field plate_type"],
        ["line 5", "field plate_year"],
        ["line 6", "field vehicle_make"],
        ["line 7", "field ori"],
        ["line 8", "field ori"],
    ]
    assert "201 characters, at most 200 ('RRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR'... (201 characters))" in problems[0]
    assert problems[5].endswith("10 characters, at most 9 ('CA03601000')")
    assert problems[6].endswith("'CA-036010' is not a code (letters and digits only)")
    assert [e.reason for e in HotlistEntry.select()] == ["R" * 200]  # the old list stands


def test_a_line_longer_than_any_entry_is_named_and_the_rest_is_checked(settings, db, tmp_path):
    path = write_csv(
        tmp_path,
        "7ABC123,ca,STOLEN,2026-11-20,A\n"
        f"6DEF456,ca,{'X' * 100_000},2026-11-20,B\n"  # line 3: never read into memory whole
        "8XYZ99$,ca,WANTED,2026-11-20,C\n"  # line 4
        f'5LMN432,ca,"{"Y" * 40_000}\n{"Y" * 40_000}\n{"Y" * 60_000}",2026-11-20,D\n'  # lines 5-7: one field
        "9GHI789,ca,WANTED,2026-11-20,E\n",
    )
    with pytest.raises(hotlist.HotlistError) as err:
        hotlist.import_csv(settings, path, "SVS", ADMIN)
    assert err.value.problems == [
        f"{path}: line 3: longer than {hotlist.MAX_LINE} characters; no entry is that long: is it a CSV file?",
        f"{path}: line 4: field plate: '8XYZ99$' is not a plate "
        "(1-8 letters and digits; spaces and dashes are ignored)",
        f"{path}: line 7: not CSV: field larger than field limit (131072)",
    ]


def plate_of(i: int) -> str:
    letters, rest = "", i // 9000
    for _ in range(3):
        letters, rest = "ABCDEFGHJKLMNPRSTUVWXYZ"[rest % 23] + letters, rest // 23
    return f"{i % 9 + 1}{letters}{i // 9 % 1000:03d}"


def test_a_large_import_runs_in_bounded_memory(settings, db, tmp_path):
    """The import streams the file: its peak memory does not grow with the file as it did (the
    whole file, then a dict per line: 2.4 GB for a million lines). Measured in a process of its
    own, as `waypost hotlist import` runs: the peak resident size during the import less what the
    process held when it began (Linux's /proc). `waypost bench hotlist-import` measures a million
    lines."""
    lines = 150_000
    path = tmp_path / "big.csv"
    with open(path, "w") as out:
        out.write(HEADER)
        for i in range(lines):
            out.write(f"{plate_of(i)},ca,STOLEN VEHICLE,2026-11-20,V{i:09d}\n")
    probe = (
        "import sys\n"
        "from appliance import config, db, hotlist\n"
        "from appliance.audit import system_actor\n"
        "settings = config.load(None)\n"
        "db.open_database(settings)\n"
        "def status(key):\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])\n"
        "with db.connection():\n"
        # resident now (kB), and the peak reset to it (Linux: clear_refs 5), so that what importing
        # the modules once peaked at does not count as the import's
        "    before = status('VmRSS:')\n"
        "    open('/proc/self/clear_refs', 'w').write('5')\n"
        f"    result = hotlist.import_csv(settings, {str(path)!r}, 'BIG', system_actor(settings))\n"
        "    after = status('VmHWM:')\n"
        "print(result.entries, (after - before) // 1024)\n"
    )
    env = dict(
        os.environ,
        WAYPOST_STORAGE__DATA_DIR=str(settings.data_dir),
        WAYPOST_STORAGE__MIN_FREE_MB="0",
        WAYPOST_CONFIG="",
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    entries, added_mib = (int(v) for v in done.stdout.split())
    assert entries == lines
    # 150,000 lines held as rows took about 360 MB; streamed, the chunk being written (up to
    # 20,000 rows), SQLite's page cache and 40 bytes a line for finding repeats
    assert added_mib < 60, f"the import added {added_mib} MiB to the process's peak"


def test_a_retired_list_is_shown_retired_recorded_and_started_again_by_an_import(settings, db, tmp_path):
    hotlist.import_csv(settings, write_csv(tmp_path, "7ABC123,ca,STOLEN,2026-11-20,x\n"), "SVS", ADMIN)
    for name, reason, problem in (
        ("SVS", "  ", "reason: say why the list is retired"),
        ("NOPE", "gone", "list 'NOPE': no such list"),
    ):
        with pytest.raises(hotlist.HotlistError, match=problem):
            hotlist.retire(ADMIN, name, reason)
    retired = hotlist.retire(ADMIN, "SVS", "replaced by the DOJ SVS extract")
    assert retired.retired_by == "admin.chen" and retired.retired_reason == "replaced by the DOJ SVS extract"
    rec = AccessRecord.select().where(AccessRecord.action == "hotlist.retire").get()
    assert rec.username == "admin.chen" and rec.object_ids == f'["hotlist:{retired.id}"]'
    assert json.loads(rec.details) == {"list": "SVS", "reason": "replaced by the DOJ SVS extract", "entries": 1}
    with pytest.raises(hotlist.HotlistError, match="already retired"):
        hotlist.retire(ADMIN, "SVS", "again")
    [row] = hotlist.status(settings)
    assert row["retired"] and row["retired_by"] == "admin.chen" and not row["stale"]
    assert HotlistEntry.select().count() == 1  # its entries stay on file
    # a retired list is not relied on: long unrefreshed, it is not stale and writes no stale record
    Hotlist.update(refreshed_at=utcnow() - dt.timedelta(hours=100)).execute()
    assert hotlist.record_stale(settings, ADMIN) == [] and hotlist.status(settings)[0]["stale"] is False

    result = hotlist.import_csv(
        settings, write_csv(tmp_path, "8XYZ999,ca,WANTED,2026-11-21,y\n", "n.csv"), "SVS", ADMIN
    )
    assert result.restarted and (result.entries, result.replaced) == (1, 1)
    [row] = hotlist.status(settings)
    assert not row["retired"] and row["retired_at"] is None and row["refreshed_at"] is not None
    rec = AccessRecord.select().where(AccessRecord.action == "hotlist.import").order_by(AccessRecord.seq.desc()).get()
    assert json.loads(rec.details)["restarted"]["retired_reason"] == "replaced by the DOJ SVS extract"
    assert audit.verify().ok


def test_the_custom_list_is_not_retired(settings, db):
    hotlist.add_custom(
        settings, ADMIN, "6TR*9", "ROBBERY", approved_by="Capt. R. Alvarez", narrative="Case 26-004512, a witness."
    )
    with pytest.raises(hotlist.HotlistError, match="'custom' is the custom list, which is not retired"):
        hotlist.retire(ADMIN, "custom", "no longer used")


def test_a_custom_entry_carries_a_review_date_and_is_renewed_with_a_reason(tmp_path, db):
    settings = make_settings(tmp_path / "d", hotlist__custom_review_days=7)
    today = hotlist.local_today(settings)
    entry = hotlist.add_custom(
        settings, ADMIN, "7ABC123", "ROBBERY", approved_by="Capt. R. Alvarez", narrative="Case 26-004512, a witness."
    )
    assert entry.review_on == today + dt.timedelta(days=7)
    add = AccessRecord.select().where(AccessRecord.action == "hotlist.entry_add").get()
    assert json.loads(add.details)["review_on"] == entry.review_on.isoformat()

    def custom():
        return next(h for h in hotlist.status(settings) if h["name"] == "custom")

    assert custom()["past_review"] == []

    HotlistEntry.update(review_on=today - dt.timedelta(days=1)).where(HotlistEntry.id == entry.id).execute()
    assert custom()["past_review"] == [entry.id]
    with pytest.raises(hotlist.HotlistError, match="reason: say why the entry is still needed"):
        hotlist.renew_entry(settings, OFFICER, entry.id, " ")
    renewed = hotlist.renew_entry(settings, OFFICER, entry.id, "suspect still at large, case 26-004512 open")
    assert renewed.review_on == today + dt.timedelta(days=7) and renewed.renewed_by == "officer.lee"
    assert HotlistEntry.get_by_id(entry.id).renew_reason == "suspect still at large, case 26-004512 open"
    assert custom()["past_review"] == []
    rec = AccessRecord.select().where(AccessRecord.action == "hotlist.entry_renew").get()
    assert rec.username == "officer.lee" and json.loads(rec.query) == {"plate": "7ABC123"}
    assert json.loads(rec.details) == {
        "reason": "suspect still at large, case 26-004512 open",
        "review_on": renewed.review_on.isoformat(),
        "was_due": (today - dt.timedelta(days=1)).isoformat(),
    }

    # an entry made before entries carried a review date is due custom_review_days after it was made
    HotlistEntry.update(review_on=None, created_at=utcnow() - dt.timedelta(days=8)).execute()
    assert custom()["past_review"] == [entry.id]
    # a state list's entries are refreshed by its imports, not renewed
    hotlist.import_csv(settings, write_csv(tmp_path, "8XYZ999,ca,WANTED,2026-11-21,y\n"), "SVS", ADMIN)
    state_entry = HotlistEntry.get(HotlistEntry.plate == "8XYZ999")
    with pytest.raises(hotlist.HotlistError, match="on the state list SVS, which each import refreshes"):
        hotlist.renew_entry(settings, ADMIN, state_entry.id, "still wanted")
    hotlist.remove_entry(ADMIN, entry.id, "vehicle recovered")
    with pytest.raises(hotlist.HotlistError, match="no such active entry"):
        hotlist.renew_entry(settings, ADMIN, entry.id, "still wanted")
    assert audit.verify().ok
