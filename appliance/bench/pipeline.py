"""`waypost bench pipeline`: frames per second through the whole pipeline on a rendered demo clip,
reads per vehicle pass and alert correctness."""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
from pathlib import Path

from appliance import config, db, hotlist
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from appliance.capture import create_source
from appliance.capture.demo import demo_hotlist_csv, write_clip
from appliance.models import Alert, Read, utcnow
from appliance.pipeline import Pipeline
from appliance.store import EvidenceStore
from recognizer import Recognizer


def pipeline(
    seconds: float = 60,
    width: int = 1920,
    height: int = 1080,
    fps: float = 10.0,
    vehicles_per_min: float = 20.0,
    where: Path | None = None,
    empty: bool = False,
) -> dict:
    """Frames per second through the whole pipeline (video decode, motion gate, detect, read,
    track, store, match) on a synthetic demo clip, with 1 inference thread; and, against the
    clip's truth, reads per vehicle pass and alerts for hotlisted vehicles only."""

    root = Path(where) if where else Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    clip = root / ("empty.avi" if empty else "street.avi")
    truth = write_clip(clip, seconds, fps, width, height, seed=1, vehicles_per_min=vehicles_per_min, empty=empty)
    settings = config.load(
        None,
        environ={
            "WAYPOST_STORAGE__DATA_DIR": str(root / "data"),
            "WAYPOST_STORAGE__MIN_FREE_MB": "0",
            "WAYPOST_CAPTURE__TYPE": "video",
            "WAYPOST_CAPTURE__SOURCE": str(clip),
            "WAYPOST_CAPTURE__LOOP": "false",
            "WAYPOST_CAPTURE__FPS": str(fps),
            "WAYPOST_RECOGNIZER__THREADS": "1",
        },
    )
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
        "benchmark": "pipeline",
        "clip": f"{width}x{height} {seconds:g}s @ {fps:g} fps" + (" empty" if empty else ""),
        "frames": frames,
        "seconds": round(elapsed, 2),
        "fps": round(frames / elapsed, 1),
        "frames_read": pipe.stats.frames_read,
        "passes": len(passes),
        "reads": len(reads),
        "reads_per_pass": round(len(reads) / len(passes), 3) if passes else None,
        "passes_read_exactly": sum(1 for p in truth_plates if p in by_plate),
        "passes_read_more_than_once": sum(1 for p in truth_plates if by_plate.get(p, 0) > 1),
        "reads_not_matching_any_pass": sum(n for p, n in by_plate.items() if p not in truth_plates),
        "hotlisted_passes": len(hot),
        "hotlisted_alerted": len(hot & alerted),
        "alerts_for_other_vehicles": len(alerted - hot),
    }
