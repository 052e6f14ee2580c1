"""A post whose evidence disk is full, run by test_pipeline_faults.py inside its own mount
namespace with a tiny tmpfs mounted on the evidence directory.

Run as `python -m tests.appliance.full_disk_post DATA_DIR HOW`, HOW being `bytes` (the tmpfs has
no byte left: the store's own room check refuses the images) or `inodes` (bytes to spare but no
file can be created: writing the image fails with ENOSPC). It fills the evidence file system,
drives the pipeline over the demo street with the shipped recognizer, hotlists the plate of the
first pass it sees before that pass is stored, and prints the run's figures as JSON; its log goes
to stderr. The test reads the database file afterwards.
"""

import csv
import datetime as dt
import errno
import json
import logging
import sys
from pathlib import Path

from appliance import db, hotlist
from appliance.audit import system_actor
from appliance.capture import Frame
from appliance.capture.demo import DemoStreet
from appliance.pipeline import Pipeline, vote
from appliance.store import EvidenceStore
from recognizer import Recognizer
from tests.conftest import make_settings

FPS = 10.0
SECONDS = 40


def fill(root: Path, how: str) -> None:
    """Use up the file system under root: all its bytes, or all its inodes."""
    (root / "tmp").mkdir(exist_ok=True)
    try:
        if how == "bytes":
            with open(root / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        else:
            for i in range(1_000_000):
                (root / "tmp" / f"filler-{i}").touch()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    else:
        raise SystemExit(f"{root} did not fill up")


def main(data_dir: str, how: str) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    settings = make_settings(data_dir)
    db.open_database(settings)
    fill(settings.evidence_path, how)
    street = DemoStreet(1280, 720, FPS, 20.0, 3)
    t0 = dt.datetime(2026, 11, 22, 8, 0, 0)
    hot = None
    with db.connection():
        pipe = Pipeline(settings, Recognizer(threads=1), EvidenceStore(settings))
        for index in range(int(SECONDS * FPS)):
            image, _ = street.render(index)
            pipe.process(
                Frame(image=image, captured_at=t0 + dt.timedelta(seconds=index / FPS), index=index, source="test")
            )
            if hot is None and pipe.tracks and len(pipe.tracks[0].sightings) >= 3:
                hot = vote(pipe.tracks[0].sightings)[0]
                with open(Path(data_dir) / "hot.csv", "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=["plate", "state", "reason", "entry_date", "source_ref"])
                    writer.writeheader()
                    writer.writerow(
                        {
                            "plate": hot,
                            "state": "CA",
                            "reason": "STOLEN VEHICLE",
                            "entry_date": "2026-11-01",
                            "source_ref": "TEST-1",
                        }
                    )
                hotlist.import_csv(settings, Path(data_dir) / "hot.csv", "TEST", system_actor(settings))
        pipe.flush()
    print(json.dumps({"hot": hot, "status": pipe.status(), "t0": t0.isoformat()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
