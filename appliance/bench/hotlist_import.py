"""`waypost bench hotlist-import`: seconds and peak resident memory of a state list import.

A state extract of `count` lines is generated (NCIC-like fields under the default column names:
unique plates and NICs, three categories, one ORI), then imported twice into a scratch post: a
first import, and one that replaces that list (the old entries are deleted after the swap). Each
import runs in a child process of its own, as `waypost hotlist import` runs, so its peak resident
memory (os.wait4) is the import's and not this process's. The child calls hotlist.import_csv
itself rather than the command, so it needs no operator account in the scratch database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from appliance import config, db, hotlist
from appliance.audit import system_actor
from appliance.bench.data import LETTERS, scratch_settings
from appliance.bootstrap import bootstrap

HEADER = "plate,state,reason,entry_date,source_ref,plate_type,plate_year,vehicle_make,ori\n"
REASONS = ("STOLEN VEHICLE", "STOLEN PLATE", "FELONY VEHICLE")
MAKES = ("TOYT", "HOND", "FORD", "CHEV", "NISS", "DODG")


def plate_of(i: int) -> str:
    """A distinct California-style plate for each i below 9 * 1000 * 23**3 (about 109 million)."""
    digit, rest = i % 9 + 1, i // 9
    serial, rest = rest % 1000, rest // 1000
    letters = ""
    for _ in range(3):
        letters, rest = LETTERS[rest % len(LETTERS)] + letters, rest // len(LETTERS)
    return f"{digit}{letters}{serial:03d}"


def extract(path: Path, count: int) -> int:
    """Write a `count`-line extract to `path`; returns its size in bytes."""
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for i in range(count):
            out.write(
                f"{plate_of(i)},ca,{REASONS[i % 3]},2026-11-{1 + i % 28:02d},V{i:09d},PC,{2020 + i % 7},"
                f"{MAKES[i % 6]},CA0360100\n"
            )
    return path.stat().st_size


def child(path: str, name: str) -> None:
    """The import itself, in the child process (see the module docstring)."""
    settings = config.load(None)
    db.open_database(settings)
    with db.connection():
        result = hotlist.import_csv(settings, path, name, system_actor(settings))
    print(f"{result.hotlist}: {result.entries} imported, {result.replaced} replaced")


def _timed_import(path: Path, name: str, env: dict) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from appliance.bench.hotlist_import import child; child({str(path)!r}, {name!r})"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None  # stdout=PIPE
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"the import failed ({proc.returncode}): {output[-3000:]}")
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "output": output.strip().splitlines()[-1:],
    }


def run(count: int = 1_000_000, where: Path | None = None) -> dict:
    settings = scratch_settings(where)
    bootstrap(settings, create_admin=False)
    path = settings.data_dir / f"extract-{count}.csv"
    if not path.exists() or path.stat().st_size == 0:
        extract(path, count)
    env = dict(
        os.environ,
        WAYPOST_STORAGE__DATA_DIR=str(settings.data_dir),
        WAYPOST_STORAGE__MIN_FREE_MB="0",
        WAYPOST_CONFIG="",
    )
    first = _timed_import(path, "BENCH", env)
    replacing = _timed_import(path, "BENCH", env)
    return {
        "benchmark": "hotlist-import",
        "lines": count,
        "file_mib": round(path.stat().st_size / 2**20, 1),
        "first": first,
        "replacing": replacing,
        "data_dir": str(settings.data_dir),
    }
