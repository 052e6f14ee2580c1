"""`waypost bench search-lock`: how long the pipeline's writes wait while officers run the
heaviest searches the post allows (issue 17, finding 4: a wildcard such as 1?1?1?1 over a long
time range scanned up to search.MAX_SCAN reads inside the write transaction that recorded it).

One process, as the running post is one: the web UI served by waitress, a pipeline thread storing
a read with its 5 KB crop and 60 KB frame every `pace_s` through store.save_read, and a probe
thread taking and releasing the write lock every PROBE_S (the wait itself, without the fsyncs of a
store). Officers' loops search over HTTP (sign-in, CSRF, purpose, the search page) from another
process, with the pattern 1?1?1?1, which has no three known characters in a row and so scans its
time range:

- baseline: the pipeline and the probe alone;
- worst:    one loop per account over the window holding just under MAX_SCAN reads (the heaviest
            search allowed: it scans the whole window and is answered);
- year:     the same over the last year (the attacker's: it scans MAX_SCAN reads and is refused);
- same-account: every loop under one account (a second tab, a script).

Prints each phase's write latencies (milliseconds: p50, p95, p99, max), the stores that failed,
the searches' answers and the refusals recorded by reason. The goal: no write waits more than
250 ms (`goal_ms`) in any phase, at 10,000,000 reads.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
from peewee import OperationalError

from appliance import db, search, users
from appliance.audit import system_actor
from appliance.bench.data import fill, jpeg_of_size, random_plate, scratch_settings, unique
from appliance.bootstrap import bootstrap
from appliance.clock import zone_of
from appliance.config import Settings
from appliance.models import User, utcnow
from appliance.store import EvidenceStore, NewRead, save_read
from web import create_app
from web.server import WebServer

PHASES = ("worst", "year", "same-account")
PATTERN = "1?1?1?1"
PASSWORD = "bench officer passphrase 17"
PURPOSE = {"purpose": "CRIME-INV", "case_number": "BENCH-2026-17"}
PROBE_S = 0.05
GOAL_MS = 250.0
MARGIN = 2000  # reads left out of the worst window: the pipeline adds a few while it runs


def run(
    count: int = 10_000_000,
    where: Path | None = None,
    seconds: float = 30.0,
    searchers: int = 2,
    pace_s: float = 0.2,
    phases: tuple[str, ...] = PHASES,
    progress=None,
) -> dict:
    """Fill (or reuse) a scratch database of `count` reads, then run the baseline and each phase
    for `seconds`; returns the figures (see the module docstring)."""
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        raise ValueError(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    settings = scratch_settings(where)
    bootstrap(settings, create_admin=False)
    with db.connection():
        filled = fill(settings, count, progress=progress)
        db.database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        n_reads = db.database.execute_sql("SELECT count(*) FROM read").fetchone()[0]
        windows = _windows(settings)
        names = [f"bench.officer{i:02d}" for i in range(max(searchers, 1))]
        _accounts(settings, names)
    out: dict = {
        "benchmark": "search-lock",
        "reads": n_reads,
        "filled": filled,
        "searchers": searchers,
        "pattern": PATTERN,
        "search": settings.search.model_dump(),
        "busy_timeout_ms": settings.storage.busy_timeout_ms,
        "synchronous": settings.storage.synchronous,
        "cpus": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "goal_ms": GOAL_MS,
    }
    server = WebServer(create_app(settings), "127.0.0.1", 0, threads=settings.web.threads).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        out["baseline"] = _phase(settings, base, seconds, pace_s, loops=[])
        for name in phases:
            window = windows["year" if name == "year" else "worst"]
            who = names[:1] * searchers if name == "same-account" else names[:searchers]
            out[name] = {"window": window, **_phase(settings, base, seconds, pace_s, loops=who, window=window)}
    finally:
        server.stop()
    out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    worst = max(out[p]["store_ms"]["max"] for p in phases) if phases else None
    worst_wait = max(out[p]["lock_wait_ms"]["max"] for p in phases) if phases else None
    out["max_store_ms"], out["max_lock_wait_ms"] = worst, worst_wait
    out["goal_met"] = worst is not None and worst <= GOAL_MS and all(out[p]["store_failed"] == 0 for p in phases)
    out["data_dir"] = str(settings.data_dir)
    return out


def _windows(settings: Settings) -> dict[str, dict]:
    """The searches' time ranges as the form takes them (minutes in the post's zone): `worst`
    holds just under MAX_SCAN reads, ending at the newest filled read; `year` the year before it."""
    execute = db.database.execute_sql
    newest_id = execute("SELECT max(id) FROM read").fetchone()[0]
    first_id = max(1, newest_id - search.MAX_SCAN + MARGIN)
    first_at = _utc(execute("SELECT captured_at FROM read WHERE id = ?", [first_id]).fetchone()[0])
    newest_at = _utc(execute("SELECT captured_at FROM read WHERE id = ?", [newest_id]).fetchone()[0])
    zone = zone_of(settings)

    def local(moment: dt.datetime, up: bool = False) -> str:
        at = moment.replace(tzinfo=dt.UTC).astimezone(zone)
        if up and (at.second or at.microsecond):  # the window starts after first_at: fewer reads
            at += dt.timedelta(minutes=1)
        return at.strftime("%Y-%m-%dT%H:%M")

    def holding(since: dt.datetime) -> int:
        return execute(
            "SELECT count(*) FROM read WHERE captured_at >= ? AND captured_at <= ?", [since, newest_at]
        ).fetchone()[0]

    year_from = newest_at - dt.timedelta(days=365)
    return {
        "worst": {"since": local(first_at, up=True), "until": local(newest_at), "reads": holding(first_at)},
        "year": {"since": local(year_from), "until": local(newest_at), "reads": holding(year_from)},
    }


def _utc(value) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))


def _accounts(settings: Settings, names: list[str]) -> None:
    actor = system_actor(settings)
    today = utcnow().date()
    for name in names:
        if User.get_or_none(User.username == name) is None:
            users.add(
                actor,
                username=name,
                display_name=name,
                organization=settings.post.agency,
                role="officer",
                password=PASSWORD,
                must_change_password=False,
            )
            users.set_training(actor, name, today - dt.timedelta(days=1), "bench", today + dt.timedelta(days=300))


def _phase(settings: Settings, base: str, seconds: float, pace_s: float, loops: list[str], window=None) -> dict:
    stop = threading.Event()
    stores: list[float] = []
    failed: list[str] = []
    waits: list[float] = []
    answers: list[tuple[int, float]] = []
    with db.connection():
        first_seq = db.database.execute_sql("SELECT coalesce(max(seq), 0) FROM access_record").fetchone()[0]
    threads = [
        threading.Thread(target=_pipeline, args=(settings, stop, pace_s, stores, failed), name="bench-pipeline"),
        threading.Thread(target=_probe, args=(stop, waits), name="bench-probe"),
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    if loops:
        # The officers' browsers are elsewhere: in a process of their own, so that their HTTP and
        # HTML do not take the post's GIL from its pipeline thread.
        spawn = multiprocessing.get_context("spawn")
        results = spawn.SimpleQueue()
        officers = spawn.Process(target=_officers, args=(base, loops, window, seconds, results), name="bench-officers")
        officers.start()
        answers = results.get()
        officers.join()
    else:
        stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started  # the searches still running when the time was up finished
    with db.connection():
        rows = db.database.execute_sql(
            "SELECT action, details FROM access_record WHERE seq > ? AND action LIKE 'read.search%'", [first_seq]
        ).fetchall()
    refused = Counter(json.loads(d or "{}").get("reason", "?") for a, d in rows if a == "read.search_refused")
    return {
        "seconds": round(elapsed, 1),
        "store_ms": _figures(stores),
        "store_failed": len(failed),
        "store_failures": sorted(set(failed))[:3],
        "lock_wait_ms": _figures(waits),
        "searches": {
            "answers": dict(sorted(Counter(str(s) for s, _ in answers).items())),
            "seconds": _figures([t for _, t in answers], digits=2),
            "recorded": dict(sorted(Counter(a for a, _ in rows).items())),
            "refused": dict(sorted(refused.items())),
        },
    }


def _figures(values: list[float], digits: int = 1) -> dict:
    if not values:
        return {"count": 0}
    figures: dict = {"count": len(values)}
    for name, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        figures[name] = round(float(np.percentile(values, q)), digits)
    figures["max"] = round(max(values), digits)
    return figures


def _pipeline(settings: Settings, stop: threading.Event, pace_s: float, stores: list, failed: list) -> None:
    """Store a read every pace_s as the pipeline does (save_read: images fsynced, one transaction)."""
    rng = np.random.default_rng(int(time.time()))
    crop, frame = jpeg_of_size(5_000, rng), jpeg_of_size(60_000, rng)
    evidence = EvidenceStore(settings)
    with db.connection():
        while not stop.is_set():
            plate = random_plate(rng)
            new = NewRead(plate_raw=plate, plate=plate, confidence=0.9, captured_at=utcnow(), box=(100, 200, 120, 60))
            n = int(rng.integers(0, 2**62))
            started = time.perf_counter()
            try:
                save_read(settings, evidence, new, unique(crop, n), unique(frame, n + 1))
                stores.append((time.perf_counter() - started) * 1000)
            except OperationalError as exc:  # what the pipeline logs as "could not store the read"
                failed.append(str(exc))
            stop.wait(pace_s)


def _probe(stop: threading.Event, waits: list) -> None:
    """How long a writer waits for the lock: BEGIN IMMEDIATE, timed, then released at once."""
    with db.connection():
        while not stop.is_set():
            started = time.perf_counter()
            try:
                with db.write():
                    waits.append((time.perf_counter() - started) * 1000)
            except OperationalError:
                waits.append((time.perf_counter() - started) * 1000)
            stop.wait(PROBE_S)


def _officers(base: str, usernames: list[str], window: dict, seconds: float, results) -> None:
    """In the officers' process: one search loop per username (the same name twice: two tabs of
    one account), each signed in first, for `seconds`; puts [(status, seconds)] on `results`."""
    browsers = []
    for username in usernames:
        browser = _Browser(base)
        browser.sign_in(username)
        browsers.append(browser)
    answers: list[tuple[int, float]] = []
    until = time.monotonic() + seconds
    loops = [threading.Thread(target=_searching, args=(b, window, until, answers)) for b in browsers]
    for loop in loops:
        loop.start()
    for loop in loops:
        loop.join()
    results.put(answers)


def _searching(browser: _Browser, window: dict, until: float, answers: list) -> None:
    while time.monotonic() < until:
        token = browser.token("/reads/search")
        started = time.perf_counter()
        status = browser.post(
            "/reads/search",
            {"plate": PATTERN, "mode": "wildcard", "since": window["since"], "until": window["until"], **PURPOSE}
            | {"csrf_token": token},
        )
        answers.append((status, time.perf_counter() - started))


class _Browser:
    """An officer's session over HTTP: a cookie jar, the CSRF token of each form."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def _open(self, path: str, data: dict | None = None) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.base + path, data=body, timeout=120) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def token(self, path: str) -> str:
        status, page = self._open(path)
        match = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page)
        if status != 200 or not match:
            raise RuntimeError(f"GET {path} answered {status} without a form: the bench officer cannot search")
        return match.group(1)

    def post(self, path: str, data: dict) -> int:
        return self._open(path, data)[0]

    def sign_in(self, username: str) -> None:
        status, _ = self._open(
            "/auth/login", {"username": username, "password": PASSWORD} | {"csrf_token": self.token("/auth/login")}
        )
        if status != 200:
            raise RuntimeError(f"signing in as {username} answered {status}")
