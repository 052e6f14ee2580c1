"""The post tells its operator how sync is doing (issue 18, findings 3 and 4): a `sync` section of
/health, a degraded status naming sync when reads wait too long or pushes keep failing, the push
backoff capped near a minute, and `waypost sync status` saying the same."""

from __future__ import annotations

import json
import threading
import urllib.request

from click.testing import CliRunner

from appliance.cli import main
from appliance.models import database
from sync import post
from tests.sync.conftest import add_reads
from web import create_app
from web.server import WebServer


def _enabled(settings, **sync):
    return settings.model_copy(
        update={"sync": settings.sync.model_copy(update={"enabled": True, **sync})},
    )


def _health(settings) -> dict:
    server = WebServer(create_app(settings), "127.0.0.1", 0).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health") as resp:
            return json.loads(resp.read())
    finally:
        server.stop()


def _run_pusher(settings, attempts: int) -> list[float]:
    """The real pusher for `attempts` attempts; the waits it chose between them."""
    stop = threading.Event()
    pusher = post.Pusher(settings, stop)
    waits: list[float] = []

    def wait(seconds: float | None = None) -> bool:  # the stop event's wait, without the waiting
        waits.append(seconds or 0.0)
        if len(waits) >= attempts:
            stop.set()
        return stop.is_set()

    stop.wait = wait  # type: ignore[assignment]
    pusher.run()
    return waits


def test_health_is_degraded_naming_sync_when_headquarters_is_unreachable_with_reads_waiting(settings, db):
    on = _enabled(settings)  # sync.hq_url: a port nobody listens on
    add_reads(settings, 3)
    db.close()
    _run_pusher(on, 3)
    db.connect()
    health = _health(on)
    assert health["status"] == "degraded", health
    assert any(p.startswith("sync:") and "3 push attempts in a row failed" in p for p in health["problems"]), health
    section = health["sync"]
    assert section["backlog"]["reads"] == 3 and section["last_success_at"] is None
    assert section["failures"] == 3 and "did not answer" in section["last_error"] and section["last_error_at"]
    assert section["oldest_unsent_read_at"] is not None


def test_health_is_degraded_when_the_oldest_unsent_read_is_older_than_the_configured_age(settings, db):
    on = _enabled(settings, stale_after_minutes=60)
    add_reads(settings, 2)
    database.execute_sql("UPDATE outbox SET created_at = datetime('now', '-125 minutes')")
    health = _health(on)
    assert health["status"] == "degraded", health
    assert any("oldest read not yet at headquarters is 125 minutes old" in p for p in health["problems"]), health
    # the same reads, younger than the configured age: nothing to say yet
    assert _health(_enabled(settings, stale_after_minutes=180))["status"] == "ok"


def test_health_shows_the_last_success_once_headquarters_has_everything(settings, db, hq_server):
    on = _enabled(settings)
    add_reads(settings, 3)
    post.push(on)
    health = _health(on)
    assert health["status"] == "ok" and health["problems"] == [], health
    section = health["sync"]
    assert section["backlog"] == {"reads": 0, "records": 0} and section["last_success_at"]
    assert section["failures"] == 0 and section["last_error"] is None
    assert abs(section["clock_offset_s"]) <= 2


def test_sync_off_is_no_problem(settings, db):
    add_reads(settings, 1)
    database.execute_sql("UPDATE outbox SET created_at = datetime('now', '-3 days')")
    off = settings.model_copy(update={"sync": settings.sync.model_copy(update={"hq_url": ""})})
    health = _health(off)
    assert health["status"] == "ok" and health["sync"]["enabled"] is False, health


def test_the_backoff_is_capped_near_a_minute():
    assert max(post.backoff_s(n, rng=lambda: 1.0) for n in range(1, 40)) == 60
    assert post.backoff_s(30, cap_s=120, rng=lambda: 1.0) == 120


def test_after_a_long_outage_the_next_attempt_comes_within_a_minute(settings, db):
    """An hour of failed attempts (push_interval_s at its default, 60): the pusher still tries
    again within sync.max_backoff_s, so headquarters coming back is noticed within a minute."""
    db.close()
    waits = _run_pusher(_enabled(settings), 12)
    assert max(waits) <= 60 and waits[-1] >= 30, waits


def test_sync_status_says_what_failed_and_when(settings, db):
    on = _enabled(settings)
    add_reads(settings, 1)
    db.close()
    _run_pusher(on, 1)
    env = {
        "WAYPOST_STORAGE__DATA_DIR": str(settings.data_dir),
        "WAYPOST_CONFIG": "",
        "WAYPOST_SYNC__HQ_URL": settings.sync.hq_url,
    }
    out = CliRunner().invoke(main, ["sync", "status", "--offline"], env=env)
    assert out.exit_code == 0, out.output
    assert "last success: never" in out.output
    assert "last error at" in out.output and "did not answer" in out.output
