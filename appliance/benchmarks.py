"""Throughput figures for `waypost bench`. Each works in a scratch directory of its own."""
from __future__ import annotations

import io
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from appliance import audit, config, db
from appliance.models import utcnow


def _scratch_settings(where: Path | None) -> config.Settings:
    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    return config.load(None, environ={"WAYPOST_STORAGE__DATA_DIR": str(root), "WAYPOST_STORAGE__MIN_FREE_MB": "0"})


def _jpeg_of_size(target: int, rng) -> bytes:
    """A noise JPEG close to `target` bytes (noise compresses poorly, so size tracks pixel count)."""
    side = 16
    while True:
        img = rng.integers(0, 256, (side, side * 2, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=85)
        if buf.tell() >= target:
            return buf.getvalue()
        side = int(side * 1.15) + 1


def _unique(jpeg: bytes, n: int) -> bytes:
    """The same picture with a COM segment that makes the bytes (and so the sha256) unique."""
    payload = f"waypost-bench {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def store(count: int, where: Path | None = None) -> dict:
    from appliance.service import bootstrap
    from appliance.store import EvidenceStore, NewRead, save_read

    settings = _scratch_settings(where)
    bootstrap(settings, create_admin=False)
    rng = np.random.default_rng(0)
    crop, frame = _jpeg_of_size(5_000, rng), _jpeg_of_size(60_000, rng)
    evidence = EvidenceStore(settings)
    with db.connection():
        start = time.perf_counter()
        for i in range(count):
            new = NewRead(plate_raw="7ABC123", plate="7ABC123", confidence=0.93, captured_at=utcnow(),
                          char_confidences=[0.9] * 7, alternatives=[{"text": "7A8C123", "score": 0.04}],
                          box=(100, 200, 120, 60))
            save_read(settings, evidence, new, _unique(crop, i), _unique(frame, i))
        elapsed = time.perf_counter() - start
    return {"benchmark": "store", "reads": count, "seconds": round(elapsed, 3),
            "reads_per_s": round(count / elapsed, 1), "crop_bytes": len(crop), "frame_bytes": len(frame),
            "synchronous": settings.storage.synchronous, "data_dir": str(settings.data_dir)}


def audit_chain(count: int, where: Path | None = None, single: int = 5000) -> dict:
    """Appends `single` records one transaction each (as the product does), the rest in large
    transactions to reach `count`, then times a full verify."""
    from appliance.service import bootstrap

    settings = _scratch_settings(where)
    bootstrap(settings, create_admin=False)
    actor = audit.Actor("officer.bench", "Bench PD", "127.0.0.1")
    purpose = audit.Purpose("STOLEN-VEH", "24-000123")
    single = min(single, count)
    with db.connection():
        base = audit.head()[0]
        start = time.perf_counter()
        for i in range(single):
            with db.write():
                audit.record("read.search", actor, query={"plate": f"7ABC{i % 1000:03d}"}, purpose=purpose,
                             result_count=i % 7)
        per_txn = single / (time.perf_counter() - start)
        start = time.perf_counter()
        remaining = count - single
        while remaining > 0:
            n = min(remaining, 50_000)
            with db.write():
                for i in range(n):
                    audit.record("read.search", actor, query={"plate": f"8XYZ{i % 1000:03d}"}, purpose=purpose,
                                 result_count=i % 7)
            remaining -= n
        bulk = (count - single) / (time.perf_counter() - start) if count > single else None
        start = time.perf_counter()
        result = audit.verify()
        verify_s = time.perf_counter() - start
    assert result.ok, result.summary()
    return {"benchmark": "audit", "records": result.checked, "appends_per_s_one_txn_each": round(per_txn, 1),
            "appends_per_s_batched": round(bulk, 1) if bulk else None, "verify_seconds": round(verify_s, 3),
            "verify_records_per_s": round(result.checked / verify_s, 1), "db_bytes": os.path.getsize(settings.db_path),
            "base": base}


def pipeline(seconds: float = 60, width: int = 1920, height: int = 1080, fps: float = 10.0,
             vehicles_per_min: float = 20.0, where: Path | None = None, empty: bool = False) -> dict:
    """Frames per second through the whole pipeline (video decode, motion gate, detect, read,
    track, store, match) on a synthetic demo clip, with 1 inference thread; and, against the
    clip's truth, reads per vehicle pass and alerts for hotlisted vehicles only."""
    import dataclasses
    import datetime as dt

    from appliance import hotlist
    from appliance.capture import create_source
    from appliance.capture.demo import demo_hotlist_csv, write_clip
    from appliance.models import Alert, Read
    from appliance.pipeline import Pipeline
    from appliance.service import bootstrap, system_actor
    from appliance.store import EvidenceStore
    from recognizer import Recognizer

    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    clip = root / ("empty.avi" if empty else "street.avi")
    truth = write_clip(clip, seconds, fps, width, height, seed=1, vehicles_per_min=vehicles_per_min, empty=empty)
    settings = config.load(None, environ={
        "WAYPOST_STORAGE__DATA_DIR": str(root / "data"), "WAYPOST_STORAGE__MIN_FREE_MB": "0",
        "WAYPOST_CAPTURE__TYPE": "video", "WAYPOST_CAPTURE__SOURCE": str(clip), "WAYPOST_CAPTURE__LOOP": "false",
        "WAYPOST_CAPTURE__FPS": str(fps), "WAYPOST_RECOGNIZER__THREADS": "1"})
    bootstrap(settings, create_admin=False)
    with db.connection():
        demo_hotlist_csv(root / "demo.csv")
        hotlist.import_csv(settings, root / "demo.csv", "DEMO", system_actor(settings))
        pipe = Pipeline(settings, Recognizer(threads=1), EvidenceStore(settings))
        source = create_source(settings.capture)
        source.open()
        t0 = utcnow()
        frames = 0
        start = time.perf_counter()
        while (frame := source.read()) is not None:
            # clip time, not wall time, decides when a pass has ended
            pipe.process(dataclasses.replace(frame, captured_at=t0 + dt.timedelta(seconds=frame.index / fps)))
            frames += 1
        pipe.flush()
        elapsed = time.perf_counter() - start
        source.close()
        reads = list(Read.select())
        alerted = {a.read.plate for a in Alert.select().join(Read)}
    passes = truth["passes"]
    by_plate: dict[str, int] = {}
    for r in reads:
        by_plate[r.plate] = by_plate.get(r.plate, 0) + 1
    truth_plates = {p["plate"] for p in passes}
    hot = {p["plate"] for p in passes if p["hotlisted"]}
    return {
        "benchmark": "pipeline", "clip": f"{width}x{height} {seconds:g}s @ {fps:g} fps" + (" empty" if empty else ""),
        "frames": frames, "seconds": round(elapsed, 2), "fps": round(frames / elapsed, 1),
        "frames_read": pipe.stats.frames_read, "passes": len(passes), "reads": len(reads),
        "reads_per_pass": round(len(reads) / len(passes), 3) if passes else None,
        "passes_read_exactly": sum(1 for p in truth_plates if p in by_plate),
        "passes_read_more_than_once": sum(1 for p in truth_plates if by_plate.get(p, 0) > 1),
        "reads_not_matching_any_pass": sum(n for p, n in by_plate.items() if p not in truth_plates),
        "hotlisted_passes": len(hot), "hotlisted_alerted": len(hot & alerted),
        "alerts_for_other_vehicles": len(alerted - hot),
    }
