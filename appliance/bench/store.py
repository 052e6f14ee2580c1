"""`waypost bench store`: reads stored per second, each in its own fsynced transaction, with
evidence of the size a post really stores: a 1280x720 context frame with sensor noise and a plate
crop cut from it, both encoded at storage.jpeg_quality (about 200 KB and 10 KB at quality 90; the
earlier 60 KB frame understated the disk a post needs about threefold, issue 19)."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from appliance import db
from appliance.bench.data import scratch_settings, unique
from appliance.bootstrap import bootstrap
from appliance.models import utcnow
from appliance.store import EvidenceStore, NewRead, save_read

FRAME_SIZE = (1280, 720)  # capture.width x height: the evidence stream's default
NOISE_SIGMA = 5.0  # grey levels of sensor noise; a Pi camera in daylight shows about 3-6
READS_PER_DAY = (1_000, 5_000, 20_000)
RETENTION_DAYS = (60, 365)


def street_frame(rng, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """A smooth scene (coarse blocks of colour, interpolated) plus Gaussian sensor noise: noise is
    what makes a real frame's JPEG large; a flat or synthetic image compresses far too well."""
    width, height = size
    coarse = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    scene = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), np.float32)
    return np.clip(scene + rng.normal(0, NOISE_SIGMA, scene.shape), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def store(count: int, where: Path | None = None) -> dict:
    settings = scratch_settings(where)
    bootstrap(settings, create_admin=False)
    rng = np.random.default_rng(0)
    quality = settings.storage.jpeg_quality
    scene = street_frame(rng)
    frame = jpeg(scene, quality)
    crop = jpeg(scene[400:480, 500:740], quality)  # a 240x80 plate crop, as the pipeline cuts it
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
    db_bytes = settings.db_path.stat().st_size
    per_read = len(crop) + len(frame) + db_bytes / max(count, 1)
    return {
        "benchmark": "store",
        "reads": count,
        "seconds": round(elapsed, 3),
        "reads_per_s": round(count / elapsed, 1),
        "crop_bytes": len(crop),
        "frame_bytes": len(frame),
        "jpeg_quality": quality,
        "db_bytes_per_read": round(db_bytes / max(count, 1)),
        # disk for reads/day x retention days, evidence and database (GB = 10^9 bytes)
        "disk_gb": {
            f"{n}/day x {d} d": round(per_read * n * d / 1e9, 1) for n in READS_PER_DAY for d in RETENTION_DAYS
        },
        "synchronous": settings.storage.synchronous,
        "data_dir": str(settings.data_dir),
    }
