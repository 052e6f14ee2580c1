"""The post's data is readable by its own account only (issue 17, finding 8): `waypost init` left the
data directory 0755 and the database, its WAL and evidence ZIPs 0644, so any local user could read
every plate. The real program in a child process (its own umask, as `make run` starts it), real
files; `waypost db check` names a file others may read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from appliance import holds
from appliance.audit import system_actor
from appliance.cli import main
from appliance.models import utcnow
from appliance.store import EvidenceStore, NewRead, save_read
from tests.conftest import operator_env

ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _waypost(data: Path, *args: str, umask: int = 0o022, extra: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m appliance ARGS` as a shell with the usual umask (022) starts it."""
    env = {
        **os.environ,
        "WAYPOST_STORAGE__DATA_DIR": str(data),
        "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CONFIG": "",
        **(extra or {}),
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            f"import os; os.umask({umask}); import runpy; runpy.run_module('appliance', run_name='__main__')",
            *args,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_init_makes_the_data_directory_and_database_private(tmp_path):
    data = tmp_path / "data"
    done = _waypost(data, "init")
    assert done.returncode == 0, done.stderr
    assert _mode(data) == 0o700
    for path in data.iterdir():
        if path.is_file():
            assert _mode(path) & 0o077 == 0, f"{path.name} is {oct(_mode(path))}"
    assert _mode(data / "waypost.db") == 0o600
    checked = _waypost(data, "db", "check")
    assert checked.returncode == 0 and "consistent" in checked.stdout, checked.stdout + checked.stderr


def test_an_evidence_zip_and_the_write_ahead_log_are_private(tmp_path, settings, db):
    """An export written by the command (here a hold's) is the plates of a case: 0600, as the
    database's write-ahead log and shared-memory files the command's writes leave."""
    new = NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.9, captured_at=utcnow())
    read = save_read(settings, EvidenceStore(settings), new, np.zeros((40, 120, 3), np.uint8), None)
    hold = holds.place_on_read(settings, system_actor(settings), read.id, "CRIME-INV", "26-004512", "Robbery vehicle")
    out = tmp_path / "hold.zip"
    env = operator_env(settings, "sgt.lee", "officer")
    done = _waypost(settings.data_dir, "evidence", "export", "--hold", str(hold.id), "--out", str(out), extra=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _mode(out) == 0o600
    for name in ("waypost.db-wal", "waypost.db-shm"):
        if (settings.data_dir / name).exists():
            assert _mode(settings.data_dir / name) & 0o077 == 0, name


def test_db_check_names_a_database_others_may_read(tmp_path):
    data = tmp_path / "data"
    assert _waypost(data, "init").returncode == 0
    os.chmod(data / "waypost.db", 0o644)
    os.chmod(data, 0o755)
    result = CliRunner().invoke(
        main,
        ["db", "check"],
        env={"WAYPOST_STORAGE__DATA_DIR": str(data), "WAYPOST_STORAGE__MIN_FREE_MB": "0", "WAYPOST_CONFIG": ""},
    )
    assert result.exit_code == 1, result.output
    assert f"{data} may be read by other users (mode 0755): chmod 700 {data}" in result.output
    assert f"{data / 'waypost.db'} may be read by other users (mode 0644): chmod 600" in result.output
