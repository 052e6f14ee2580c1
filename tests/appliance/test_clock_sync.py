"""Whether the post's clock is synchronised (issue 19): the real check against replays of
`chronyc tracking` and `timedatectl` written onto PATH by the test, the flag each stored read
keeps (/health, the live strip and the read page: tests/web/test_clock_status.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from appliance import clock, store
from appliance.models import Read, utcnow

CHRONY_SYNCED = """Reference ID    : C0A80001 (ntp.agency.local)
Stratum         : 3
Ref time (UTC)  : Sun Dec 06 08:20:11 2026
System time     : 0.000012345 seconds fast of NTP time
Last offset     : -0.000004 seconds
Leap status     : Normal
"""
CHRONY_UNSYNCED = """Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds fast of NTP time
Leap status     : Not synchronised
"""
CHRONY_FAR = CHRONY_SYNCED.replace("0.000012345 seconds fast", "42.500000000 seconds slow")


@pytest.fixture
def tools(tmp_path, monkeypatch):
    yield from replay_tools(tmp_path, monkeypatch)


def replay_tools(tmp_path, monkeypatch):
    """A PATH of only the replays the test writes: `tools(chronyc=text, timedatectl=text)`;
    a tool given None is absent. Each call of a tool is counted in calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PATH", str(bin_dir))
    clock.sync_watch.forget()

    def write(chronyc: str | None = None, timedatectl: str | None = None, chronyc_rc: int = 0) -> Path:
        for name, text, rc in (("chronyc", chronyc, chronyc_rc), ("timedatectl", timedatectl, 0)):
            path = bin_dir / name
            path.unlink(missing_ok=True)
            if text is None:
                continue
            (tmp_path / f"{name}.out").write_text(text)
            path.write_text(f'#!/bin/sh\necho {name} >> "{log}"\n/bin/cat "{tmp_path / (name + ".out")}"\nexit {rc}\n')
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        clock.sync_watch.forget()
        return log

    yield write
    clock.sync_watch.forget()


def test_chrony_synchronised(tools):
    tools(chronyc=CHRONY_SYNCED)
    got = clock.check_sync()
    assert (got.synchronised, got.source) == (True, "chrony") and "0.000012" in got.detail


def test_chrony_not_synchronised_or_far_off(tools):
    tools(chronyc=CHRONY_UNSYNCED)
    got = clock.check_sync()
    assert (got.synchronised, got.source, got.detail) == (False, "chrony", "leap status Not synchronised")
    tools(chronyc=CHRONY_FAR)
    got = clock.check_sync()
    assert got.synchronised is False and "42.500 s" in got.detail


def test_timedatectl_when_chronyd_does_not_answer(tools):
    tools(chronyc="506 Cannot talk to daemon\n", chronyc_rc=1, timedatectl="yes\n")
    assert (clock.check_sync().synchronised, clock.check_sync().source) == (True, "timedatectl")
    tools(timedatectl="no\n")
    assert (clock.check_sync().synchronised, clock.check_sync().source) == (False, "timedatectl")


def test_neither_tool_is_unknown(tools):
    tools()
    got = clock.check_sync()
    assert (got.synchronised, got.source) == (None, "none")
    assert got.as_dict()["checked_at"].endswith("Z")


def test_the_answer_is_kept_for_a_minute(tools):
    log = tools(chronyc=CHRONY_SYNCED)
    watch = clock.SyncWatch()
    assert watch.get().synchronised is True
    (Path(log).parent / "chronyc.out").write_text(CHRONY_UNSYNCED)
    assert watch.get().synchronised is True  # asked again only after SYNC_CHECK_EVERY_S
    assert Path(log).read_text().count("chronyc") == 1
    watch.forget()
    assert watch.get().synchronised is False


def save(settings) -> Read:
    rng = np.random.default_rng(0)
    new = store.NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.9, captured_at=utcnow())
    crop = rng.integers(0, 256, (30, 80, 3), dtype=np.uint8)
    return store.save_read(settings, store.EvidenceStore(settings), new, crop, None)


@pytest.mark.parametrize(
    ("replay", "flag"), [({"chronyc": CHRONY_SYNCED}, True), ({"chronyc": CHRONY_UNSYNCED}, False), ({}, None)]
)
def test_each_read_keeps_whether_the_clock_was_synchronised(settings, db, tools, replay, flag):
    tools(**replay)
    read = save(settings)
    assert Read.get_by_id(read.id).clock_synced is flag
    column = db.execute_sql("SELECT clock_synced FROM read WHERE id = ?", (read.id,)).fetchone()[0]
    assert column == (None if flag is None else int(flag))


def test_the_replays_are_what_the_check_ran(tools):
    """The PATH the check sees holds the replays only (no host chronyc or timedatectl answers)."""
    log = tools(chronyc=CHRONY_SYNCED)
    clock.check_sync()
    assert Path(log).read_text().split() == ["chronyc"]
    assert os.environ["PATH"].endswith("bin")
