"""The `waypost` command as an operator uses it, against a real database file."""

import getpass
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import main
from tests.conftest import make_settings, operator_env

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path):
    """`waypost ARGS` against tmp_path/data; with as_=ROLE it runs as a named account of that role
    (made on first use, trained: tests.conftest.operator_env)."""
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
        "WAYPOST_ADMIN_PASSWORD": "",
    }

    def invoke(*args, input=None, code=0, extra_env=None, as_=None):
        named = operator_env(make_settings(tmp_path / "data"), f"op.{as_}", as_) if as_ else {}
        result = CliRunner().invoke(main, list(args), env={**env, **named, **(extra_env or {})}, input=input)
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def test_commands_refuse_to_run_before_init(run):
    out = run("user", "list", code=1)
    assert "run `waypost init` first" in out


def test_init_creates_the_first_admin_once(run):
    out = run("init")
    assert "applied migration 0001_initial" in out
    password = next(line.split(": ", 1)[1] for line in out.splitlines() if line.strip().startswith("password:"))
    assert len(password) >= 16
    again = run("init")
    assert "password" not in again and "applied migration" not in again
    listing = run("user", "list", as_="admin")
    assert "admin" in listing and "NOT CURRENT" in listing


def test_init_names_a_data_directory_it_cannot_use(run, tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    where = tmp_path / "a-file" / "data"
    for command in ("init", "run"):
        out = run(command, code=1, extra_env={"WAYPOST_STORAGE__DATA_DIR": str(where)})
        assert f"cannot use {where}: Not a directory" in out and "storage.data_dir" in out
        assert "Traceback" not in out


def test_ids_and_batch_sizes_out_of_range_are_usage_errors(run):
    run("init")
    huge = str(2**63)
    for args in (
        ("hold", "release", huge, "--reason", "x"),
        ("hotlist", "remove", huge),
        ("sharing", "show", huge),
        ("retention", "run", "--batch", "0"),
    ):
        out = run(*args, code=2)
        assert "Invalid value" in out and "Traceback" not in out, args
    out = run(
        "hold",
        "place",
        "--read",
        "9" * 25,
        "--purpose",
        "CRIME-INV",
        "--case",
        "26-1",
        "--reason",
        "x",
        code=1,
        as_="admin",
    )
    assert f"no read '{'9' * 25}'" in out


def test_admin_password_from_the_environment(run, tmp_path):

    out = run("init", extra_env={"WAYPOST_ADMIN_PASSWORD": "a passphrase for the chief"})
    assert "password:" not in out
    con = sqlite3.connect(next((tmp_path / "data").glob("*.db")))
    # known to whoever provisioned the host (the vault): changed at the first sign-in
    assert con.execute("SELECT must_change_password FROM user WHERE username = 'admin'").fetchone() == (1,)
    con.close()


def test_user_lifecycle_is_recorded(run, tmp_path):
    run("init")
    out = run("user", "add", "jlee", "--role", "officer", "--name", "Jamie Lee", "--job-title", "Sergeant", as_="admin")
    assert "temporary password (shown once)" in out
    run("user", "add", "jlee", "--role", "officer", code=1, as_="admin")  # duplicate
    assert "Invalid value for '--role'" in run("user", "add", "kim", "--role", "sheriff", code=2, as_="admin")
    bad = run("user", "add", "pat", "--role", "officer", "--password-stdin", input="short\n", code=1, as_="admin")
    assert "at least 12 characters" in bad
    run("user", "set-training", "jlee", "--completed", "2026-11-01", "--course", "ALPR policy 464", as_="admin")
    assert "current (to 2027-11-01)" in run("user", "list", as_="admin")
    bad_date = run("user", "set-training", "jlee", "--completed", "11/01/2026", "--course", "x", code=2, as_="admin")
    assert "YYYY-MM-DD" in bad_date
    run("user", "disable", "jlee", as_="admin")
    assert " no " in [line for line in run("user", "list", as_="admin").splitlines() if line.startswith("jlee")][0]
    run("user", "enable", "jlee", as_="admin")
    assert "temporary password for jlee" in run("user", "reset-password", "jlee", as_="admin")
    run("user", "disable", "nobody", code=1, as_="admin")
    export = tmp_path / "log.jsonl"
    run(
        "audit",
        "export",
        "--format",
        "jsonl",
        "--out",
        str(export),
        "--purpose",
        "AUDIT",
        "--case",
        "AUD-2026-4",
        as_="admin",
    )
    records = [json.loads(line) for line in export.read_text().splitlines()]
    by_operator = [r for r in records if r["username"] == "op.admin"]
    actions = [r["action"] for r in by_operator]
    for action in ("user.add", "user.training", "user.disable", "user.enable", "user.password_reset"):
        assert action in actions
    # the record names the account, and the operating-system user apart from it
    assert {r["client_addr"] for r in by_operator} == {f"cli:{getpass.getuser()}"}
    assert all(r["username"] in ("op.admin", "system") for r in records), {r["username"] for r in records}
    assert "verified" in run("audit", "verify")


def test_configuration_changes_are_recorded(run, tmp_path):
    run("init")
    run("init", extra_env={"WAYPOST_RETENTION__READ_DAYS": "90"})
    run("init", extra_env={"WAYPOST_RETENTION__READ_DAYS": "90"})  # unchanged: no new record
    export = tmp_path / "log.jsonl"
    run(
        "audit",
        "export",
        "--format",
        "jsonl",
        "--out",
        str(export),
        "--purpose",
        "AUDIT",
        "--case",
        "AUD-1",
        as_="admin",
    )
    changes = [json.loads(line) for line in export.read_text().splitlines() if '"config.change"' in line]
    assert len(changes) == 2
    assert json.loads(changes[1]["details"])["changed"] == ["retention.read_days"]


def test_db_check_and_migrate(run):
    run("init")
    assert "up to date" in run("db", "migrate")
    assert "consistent" in run("db", "check")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_waypost_run_serves_and_stops_cleanly(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "WAYPOST_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "WAYPOST_WEB__PORT": str(port),
        "WAYPOST_CONFIG": "",
        "WAYPOST_ADMIN_PASSWORD": "",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    health = json.loads(resp.read())
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "waypost run did not start serving"
                time.sleep(0.3)
        assert health["post"] == "post-1" and set(health) >= {"camera", "recognizer", "disk", "hotlists"}
        assert (health["status"] == "ok") == (health["problems"] == [])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
            assert "Sign in" in resp.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "password:" in out and "Created the first administrator" in out
    # a clean stop is in the access log as well as the start, with how long the post ran
    stops = [json.loads(details) for action, details in access_records(tmp_path) if action == "system.stop"]
    actions = [a for a, _ in access_records(tmp_path)]
    assert actions[-1] == "system.stop" and "system.start" in actions
    assert len(stops) == 1 and stops[0]["uptime_s"] >= 0 and stops[0]["started_at"].endswith("Z")


def access_records(tmp_path) -> list[tuple[str, str]]:

    con = sqlite3.connect(tmp_path / "data" / "waypost.db")
    try:
        return con.execute("SELECT action, details FROM access_record ORDER BY seq").fetchall()
    finally:
        con.close()


def test_waypost_run_on_a_port_in_use_says_so_and_records_nothing(run, tmp_path):
    run("init")
    before = access_records(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "WAYPOST_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "WAYPOST_WEB__PORT": str(port),
            "WAYPOST_CONFIG": "",
            "WAYPOST_ADMIN_PASSWORD": "",
            "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "appliance", "run"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (
        f"Error: cannot listen on 127.0.0.1:{port}: address already in use; "
        "set web.port (WAYPOST_WEB__PORT) to a free port"
    )
    assert "Traceback" not in proc.stderr and "Waypost post" not in proc.stdout
    # the changed port would have been a config.change record, the demo capture a hotlist.import
    assert access_records(tmp_path) == before


def test_hotlist_commands(run, tmp_path):
    run("init")
    good = tmp_path / "svs.csv"
    good.write_text("plate,state,reason,entry_date,source_ref\n7ABC123,ca,STOLEN,2026-11-20,S1\n")
    assert "SVS: 1 entry imported" in run("hotlist", "import", str(good), "--list", "SVS", as_="admin")
    bad = tmp_path / "bad.csv"
    bad.write_text("plate,state,reason,entry_date,source_ref\n7ABC123,ca,STOLEN,yesterday,S1\n")
    out = run("hotlist", "import", str(bad), "--list", "SVS", code=1, as_="admin")
    assert "nothing imported" in out and "bad.csv: line 2: field entry_date" in out
    out = run(
        "hotlist",
        "add",
        "6TR*9",
        "--reason",
        "ROBBERY",
        "--approved-by",
        "Capt. Alvarez",
        "--narrative",
        "Case 26-004512, partial plate from a witness",
        as_="admin",
    )
    entry_id = out.split()[2]
    listing = {line.split()[0]: line for line in run("hotlist", "list", as_="admin").splitlines()}
    assert " 1 entry " in listing["SVS"] and listing["SVS"].endswith("fresh")
    assert re.search(r" refreshed \d{4}-\d\d-\d\d \d\d:\d\d P[SD]T ", listing["SVS"])  # post.timezone
    # custom entries are added by hand: there is no source to be fresh or stale against
    assert " 1 entry " in listing["custom"] and listing["custom"].endswith("custom: not refreshed from a source")
    assert not re.search(r"\bfresh\b|STALE|None", listing["custom"])
    run("hotlist", "remove", entry_id, "--reason", "suspect arrested", as_="admin")
    run("hotlist", "remove", entry_id, "--reason", "again", code=1, as_="admin")


def test_sync_status_says_first_when_sync_is_off(run):
    run("init")
    lines = run("sync", "status").splitlines()
    assert lines[0].startswith("sync is off on this post") and "reads waiting are kept" in lines[0]
    assert lines[1].startswith("reads waiting: 0")
    lines = run(
        "sync", "status", "--offline", extra_env={"WAYPOST_SYNC__HQ_URL": "https://hq.example.org"}
    ).splitlines()
    assert lines[0].startswith("reads waiting: 0") and not any("sync is off" in line for line in lines)


def test_user_list_shows_the_last_sign_in_in_the_post_time_zone(run, tmp_path):
    run("init")
    run("user", "add", "jlee", "--role", "officer", as_="admin")
    con = sqlite3.connect(tmp_path / "data" / "waypost.db")
    with con:
        con.execute("UPDATE user SET last_login_at = '2026-11-29 16:53:00' WHERE username = 'admin'")
        con.execute("UPDATE user SET last_login_at = '2026-07-01 16:53:00' WHERE username = 'jlee'")
    con.close()
    rows = {line.split()[0]: line for line in run("user", "list", as_="admin").splitlines()}
    assert rows["admin"].endswith("2026-11-29 08:53 PST")  # America/Los_Angeles, the default
    assert rows["jlee"].endswith("2026-07-01 09:53 PDT")
    rows = {
        line.split()[0]: line
        for line in run("user", "list", extra_env={"WAYPOST_POST__TIMEZONE": "UTC"}, as_="admin").splitlines()
    }
    assert rows["admin"].endswith("2026-11-29 16:53 UTC")
