"""Kill a storing process with SIGKILL at random points, many times, and check after each restart
that nothing is lost, half-written or orphaned."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from appliance import audit, db, store
from appliance.bootstrap import bootstrap
from appliance.models import Evidence, Read
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("WAYPOST_CRASH_KILLS", "50"))


def start_writer(data_dir: Path, seed: int, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.appliance.crash_writer", str(data_dir), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def run_and_kill(data_dir: Path, seed: int, delay_s: float) -> list[str]:
    """Start the writer, SIGKILL it after delay_s, return the uuids it reported as saved."""
    proc = start_writer(data_dir, seed)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None  # both piped: stdout=PIPE, stderr=PIPE by default
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.strip() for line in stdout), daemon=True)
    reader.start()
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join(timeout=10)
    err = stderr.read()
    assert "Traceback" not in err, err
    return [line for line in lines if line]


def first_write_s(data_dir: Path) -> float:
    """How long the writer takes, on this machine now, from its start to its first saved read."""
    proc = start_writer(data_dir, 0, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None  # piped: stdout=PIPE
    t0 = time.monotonic()
    try:
        proc.stdout.readline()
        return time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigkill_at_random_points_loses_and_leaves_nothing(tmp_path) -> None:
    data_dir = tmp_path / "post"
    settings = make_settings(data_dir)
    rng = random.Random(20261122)
    # On a loaded machine start-up alone can outlast the longest delay: every other kill waits
    # for the writer's measured start-up first, so that half of them land mid-write.
    startup = first_write_s(tmp_path / "calibration")
    saved: set[str] = set()
    reads_seen = 0
    for kill in range(KILLS):
        # Short delays land in start-up (migration, recovery), longer ones mid-write.
        saved.update(run_and_kill(data_dir, kill, rng.uniform(0.2, 1.5) + (startup if kill % 2 else 0.0)))

        # Restart as the service does, then check everything.
        bootstrap(settings, create_admin=False)
        with db.connection() as database:
            assert database.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok", f"kill {kill}"
            verified = audit.verify()
            assert verified.ok, f"kill {kill}: {verified.summary()}"
            present = {r.uuid for r in Read.select(Read.uuid)}
            missing = saved - present
            assert not missing, f"kill {kill}: reads reported saved are gone: {sorted(missing)[:3]}"
            evidence = store.EvidenceStore(settings)
            for ev in Evidence.select().join(Read).where(Read.uuid.in_(list(saved))):
                evidence.read_bytes(ev.sha256)  # exists and matches its hash
            problems = store.check(settings, evidence)
            assert not problems, f"kill {kill}: {problems[:5]}"
            reads_seen = len(present)
    assert len(saved) > KILLS, "the writer hardly got to store anything: the test proved little"
    assert reads_seen >= len(saved)
