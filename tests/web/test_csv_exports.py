"""A formula typed where a name goes must reach the access-log CSV as text (OWASP, CSV injection): a
real failed sign-in whose username is =HYPERLINK(...), then the real export from the web page and
from `waypost audit export`. The machine formats (JSON lines, the signed bundle) keep it exactly."""

import csv
import datetime as dt
import io
import json

from click.testing import CliRunner

from appliance.cli import main
from appliance.models import AccessRecord
from tests.conftest import operator_env
from tests.web.conftest import csrf, sign_in, state_purpose

HOSTILE = '=HYPERLINK("http://x","y")'
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]


def test_a_formula_typed_as_a_username_is_text_in_every_access_log_csv(app, settings, trained, tmp_path):
    client = app.test_client()
    assert sign_in(client, HOSTILE, password="whatever they typed").status_code == 401
    [failed] = AccessRecord.select().where(AccessRecord.action == "auth.login_failed")
    stored = failed.username
    assert stored.lower() == HOSTILE.lower()  # the record keeps what was typed: the chain covers it

    trained("auditor.kim", "auditor")
    sign_in(client, "auditor.kim")
    state_purpose(client, "AUDIT", "AUD-2026-Q4")
    today = dt.datetime.now(dt.UTC).date().isoformat()
    token = csrf(client.get("/audit/export").get_data(as_text=True))
    resp = client.post("/audit/export", data={"csrf_token": token, "start": today, "end": today, "fmt": "csv"})
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    web_csv = resp.get_data(as_text=True)
    [row] = [r for r in csv.DictReader(io.StringIO(web_csv, newline="")) if r["action"] == "auth.login_failed"]
    assert row["username"] == "'" + stored
    assert not [c for c in _cells(web_csv) if c.startswith(FORMULA_START)]

    env = {"WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir), "WAYPOST_STORAGE__MIN_FREE_MB": "0"}
    env |= operator_env(settings, "op.auditor", "auditor")
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"log.{fmt}"
        made = CliRunner().invoke(
            main,
            ["audit", "export", "--format", fmt, "--out", str(out), "--purpose", "AUDIT", "--case", "AUD-2026-Q4"],
            env=env,
        )
        assert made.exit_code == 0, made.output
        text = out.read_text(encoding="utf-8")
        if fmt == "csv":
            [row] = [r for r in csv.DictReader(io.StringIO(text, newline="")) if r["action"] == "auth.login_failed"]
            assert row["username"] == "'" + stored
            assert not [c for c in _cells(text) if c.startswith(FORMULA_START)]
        else:  # for machines: exactly as recorded
            [rec] = [json.loads(line) for line in text.splitlines() if '"auth.login_failed"' in line]
            assert rec["username"] == stored
