"""How long the disk lasts at the current rate (issue 19): a real store of reads with their image
files in a temporary data directory, stored over the past days."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np

from appliance import store
from appliance.bench.store import jpeg, street_frame
from appliance.models import Evidence, Read, database, utcnow
from tests.conftest import make_settings


def stored_over_days(settings, per_day: dict[int, int]) -> int:
    """Reads with a noisy 720p frame and a crop, `per_day[d]` of them created d days ago; their bytes."""
    rng = np.random.default_rng(0)
    evidence = store.EvidenceStore(settings)
    n = 0
    for days_ago, count in per_day.items():
        for _ in range(count):
            scene = street_frame(rng)
            new = store.NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.9, captured_at=utcnow())
            read = store.save_read(settings, evidence, new, jpeg(scene[400:480, 500:740], 90), jpeg(scene, 90))
            when = utcnow() - dt.timedelta(days=days_ago, hours=1)
            Read.update(created_at=when, captured_at=when).where(Read.id == read.id).execute()
            n += 1
    on_disk = sum(p.stat().st_size for p in evidence.iter_files())
    assert Evidence.select().count() == 2 * n
    return on_disk


def test_rate_is_the_last_week_and_full_in_days_the_free_space_over_it(settings, db):
    # 3 reads a day for the past 7 days, and 20 a day before that (outside the window)
    on_disk = stored_over_days(settings, {**{d: 3 for d in range(7)}, 9: 20})
    recent = sum(
        e.bytes for e in Evidence.select().join(Read).where(Read.created_at >= utcnow() - dt.timedelta(days=7))
    )
    got = store.capacity(settings)
    assert on_disk / (7 * 3 + 20) > 150_000  # frames of a realistic size were stored
    assert got["bytes_per_day"] == round(recent / 7)
    assert got["stored_mb"] == round(on_disk / 2**20, 1)
    free = shutil.disk_usage(settings.data_dir).free
    assert abs(got["full_in_days"] - free / (recent / 7)) / got["full_in_days"] < 0.01
    assert got["fills_before_retention"] is False and got["retention_days"] == settings.retention.read_days


def test_a_new_post_counts_at_least_one_day_and_an_empty_one_has_no_rate(settings, db):
    assert store.capacity(settings)["full_in_days"] is None
    stored_over_days(settings, {0: 4})
    got = store.capacity(settings)
    total = database.execute_sql("SELECT sum(bytes) FROM evidence").fetchone()[0]
    assert got["bytes_per_day"] == total  # four reads in the last hour are a day's worth, not 24


def test_the_disk_fills_before_retention_frees_space(settings, db):
    stored_over_days(settings, {d: 2 for d in range(3)})
    free_mb = shutil.disk_usage(settings.data_dir).free // 2**20
    tight = make_settings(settings.data_dir, storage__min_free_mb=free_mb - 2, retention__read_days=3650)
    got = store.capacity(tight)
    assert got["full_in_days"] < 10 and got["fills_before_retention"] is True
