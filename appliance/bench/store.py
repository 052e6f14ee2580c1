"""`waypost bench store`: reads stored per second, each in its own fsynced transaction."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from appliance import db
from appliance.bench.data import jpeg_of_size, scratch_settings, unique
from appliance.bootstrap import bootstrap
from appliance.models import utcnow
from appliance.store import EvidenceStore, NewRead, save_read


def store(count: int, where: Path | None = None) -> dict:
    settings = scratch_settings(where)
    bootstrap(settings, create_admin=False)
    rng = np.random.default_rng(0)
    crop, frame = jpeg_of_size(5_000, rng), jpeg_of_size(60_000, rng)
    evidence = EvidenceStore(settings)
    with db.connection():
        start = time.perf_counter()
        for i in range(count):
            new = NewRead(
                plate_raw="7ABC123",
                plate="7ABC123",
                confidence=0.93,
                captured_at=utcnow(),
                char_confidences=[0.9] * 7,
                alternatives=[{"text": "7A8C123", "score": 0.04}],
                box=(100, 200, 120, 60),
            )
            save_read(settings, evidence, new, unique(crop, i), unique(frame, i))
        elapsed = time.perf_counter() - start
    return {
        "benchmark": "store",
        "reads": count,
        "seconds": round(elapsed, 3),
        "reads_per_s": round(count / elapsed, 1),
        "crop_bytes": len(crop),
        "frame_bytes": len(frame),
        "synchronous": settings.storage.synchronous,
        "data_dir": str(settings.data_dir),
    }
