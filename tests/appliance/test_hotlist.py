import datetime as dt
import json

import pytest

from appliance import audit, hotlist
from appliance.models import AccessRecord, Hotlist, HotlistEntry, utcnow
from tests.conftest import make_settings

ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")
HEADER = "plate,state,reason,entry_date,source_ref\n"


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
        hotlist.add_custom(ADMIN, "7A*", "ROBBERY", approved_by="", narrative="short")
    text = str(err.value)
    assert "approving commander" in text and "narrative" in text and "at least 3 known characters" in text
    entry = hotlist.add_custom(
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
