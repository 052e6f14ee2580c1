"""Every CSV the product writes goes through appliance/spreadsheet.py: a text cell that a spreadsheet
would run as a formula gets a leading single quote (OWASP, CSV injection); numbers and other text are
left as they are. The evidence ZIP's reads.csv is written with it and still verifies; reads.json keeps
the exact values. (The access-log CSV, from a real failed sign-in: tests/web/test_csv_exports.py.)"""

import csv
import datetime as dt
import io
import json
import zipfile

import numpy as np
import pytest

from appliance import audit, export, holds, search, spreadsheet
from appliance.bootstrap import bootstrap
from appliance.db import connection
from appliance.store import EvidenceStore, NewRead, save_read
from tests.conftest import make_settings

HOSTILE = '=HYPERLINK("http://x","y")'
OFFICER = audit.Actor("officer.lee", "Demo PD", "10.0.0.5")
ADMIN = audit.Actor("admin.chen", "Demo PD", "10.0.0.2")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+2", "'=1+2"),
        ("+1-2", "'+1-2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1+2", "'\t=1+2"),
        ("\r=1+2", "'\r=1+2"),
        (HOSTILE, "'" + HOSTILE),
        ("officer.lee", "officer.lee"),
        ('{"plate":"7ABC123"}', '{"plate":"7ABC123"}'),
        ("a=b", "a=b"),
        ("", ""),
        (-3, -3),  # a number the product writes is a number, not a formula
        (0.5, 0.5),
        (None, None),
    ],
)
def test_a_cell_that_would_run_as_a_formula_is_written_as_text(value, written):
    assert spreadsheet.cell(value) == written
    out = io.StringIO(newline="")
    writer = spreadsheet.DictWriter(out, fieldnames=["v"])
    writer.writeheader()
    writer.writerow({"v": value})
    writer.writerows([{"v": value}])
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    expected = "" if written is None else str(written)
    assert rows == [["v"], [expected], [expected]]


def test_the_evidence_zip_reads_csv_neutralises_a_hostile_camera_name_and_still_verifies(tmp_path):
    settings = make_settings(tmp_path / "data", post__camera_name=HOSTILE)
    bootstrap(settings, create_admin=False)
    at = dt.datetime(2026, 11, 20, 18, 0)
    rng = np.random.default_rng(3)
    with connection():
        save_read(
            settings,
            EvidenceStore(settings),
            NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.9, captured_at=at, direction="away"),
            rng.integers(0, 255, (40, 120, 3), dtype=np.uint8),
            rng.integers(0, 255, (120, 200, 3), dtype=np.uint8),
        )
        hold = holds.place_on_query(
            settings,
            OFFICER,
            search.Query("7ABC123", "exact", since=at - dt.timedelta(hours=1), until=at + dt.timedelta(hours=1)),
            "CRIME-INV",
            "2026-004400",
            "Robbery suspect vehicle, court case pending",
        )
        summary = export.for_hold(settings, ADMIN, hold.id, tmp_path / "hold.zip")
    assert export.verify(summary.path).ok
    with zipfile.ZipFile(summary.path) as zf:
        [row] = list(csv.DictReader(io.StringIO(zf.read("reads.csv").decode(), newline="")))
        [exact] = json.loads(zf.read("reads.json"))
    assert row["camera_name"] == "'" + HOSTILE and exact["camera_name"] == HOSTILE
    assert row["plate"] == "7ABC123" and row["crop_sha256"] == exact["crop_sha256"]
