"""`waypost hotlist ...` for state extracts and custom entries (issue 16, finding 6): retiring a
list, renewing a custom entry past its review date, and what `hotlist list` shows of both. The
real command (CliRunner) on a real database file, run as a named administrator."""

import datetime as dt
import json
import re

import pytest
from click.testing import CliRunner

from appliance import db as dbmod
from appliance import hotlist
from appliance.bootstrap import bootstrap
from appliance.cli import main
from appliance.models import AccessRecord, HotlistEntry, utcnow
from tests.conftest import make_settings, operator_env


@pytest.fixture
def run(tmp_path):
    settings = make_settings(tmp_path / "data")
    bootstrap(settings, create_admin=False)
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
        **operator_env(settings, "op.admin", "admin"),
    }

    def invoke(*args, code=0):
        result = CliRunner().invoke(main, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def listing(run) -> dict[str, str]:
    return {line.split()[0]: line for line in run("hotlist", "list").splitlines()}


def records(action):
    with dbmod.connection():
        return list(AccessRecord.select().where(AccessRecord.action == action).order_by(AccessRecord.seq))


def test_drop_retires_a_list_and_an_import_starts_it_again(run, tmp_path):
    extract = tmp_path / "svs.csv"
    extract.write_text("plate,state,reason,entry_date,source_ref\n7ABC123,ca,STOLEN,2026-11-20,S1\n")
    run("hotlist", "import", str(extract), "--list", "SVS")
    out = run("hotlist", "drop", "SVS", "--reason", "replaced by the DOJ extract")
    assert out.startswith("SVS: retired; it raises no alerts from now on (its 1 entry and their alerts stay on file)")
    line = listing(run)["SVS"]
    assert re.search(r"RETIRED \d{4}-\d\d-\d\d \d\d:\d\d P[SD]T by op\.admin: replaced by the DOJ extract", line)
    assert line.endswith("produces no alerts") and "fresh" not in line and "STALE" not in line
    [rec] = records("hotlist.retire")
    assert rec.username == "op.admin" and json.loads(rec.details)["reason"] == "replaced by the DOJ extract"
    assert "already retired" in run("hotlist", "drop", "SVS", "--reason", "again", code=1)
    assert "no such list" in run("hotlist", "drop", "NCIC", "--reason", "gone", code=1)

    out = run("hotlist", "import", str(extract), "--list", "SVS")
    assert "SVS was retired; this import started it again: it raises alerts from now on" in out
    assert listing(run)["SVS"].endswith("fresh")


def test_add_shows_the_review_date_and_renew_keeps_an_entry_alerting(run, tmp_path):
    out = run(
        "hotlist",
        "add",
        "7ABC123",
        "--reason",
        "ROBBERY",
        "--approved-by",
        "Capt. Alvarez",
        "--narrative",
        "Case 26-004512, plate from a witness",
    )
    entry_id = int(out.split()[2])
    today = hotlist.local_today(make_settings(tmp_path / "data"))  # in post.timezone
    assert out.strip().endswith(f"review by {today + dt.timedelta(days=30):%Y-%m-%d}")
    assert listing(run)["custom"].endswith("custom: not refreshed from a source")

    with dbmod.connection():
        HotlistEntry.update(review_on=None, created_at=utcnow() - dt.timedelta(days=45)).execute()
    line = listing(run)["custom"]
    assert f"PAST REVIEW, no alerts: 1 entry ({entry_id}): renew" in line

    out = run("hotlist", "renew", str(entry_id), "--reason", "witness re-interviewed, suspect at large")
    assert re.fullmatch(rf"entry {entry_id} renewed: it raises alerts until the end of \d{{4}}-\d\d-\d\d\n", out)
    assert "PAST REVIEW" not in listing(run)["custom"]
    [rec] = records("hotlist.entry_renew")
    assert (
        rec.username == "op.admin" and json.loads(rec.details)["reason"] == "witness re-interviewed, suspect at large"
    )
    assert "no such active entry" in run("hotlist", "renew", "999", "--reason", "x", code=1)
