"""A post that does nothing but store reads, to be killed by test_crash.py.

Run as `python -m tests.appliance.crash_writer DATA_DIR SEED`. It starts as `waypost run` does
(migrate, recover), then stores reads forever, printing each read's uuid only after save_read()
returned, and appending a few access records of its own between reads.
"""

import sys

import numpy as np

from appliance import audit, db
from appliance.bootstrap import bootstrap
from appliance.models import utcnow
from appliance.store import EvidenceStore, NewRead, save_read
from tests.conftest import make_settings


def main(data_dir: str, seed: int) -> None:
    settings = make_settings(data_dir)
    bootstrap(settings, create_admin=False)
    store = EvidenceStore(settings)
    rng = np.random.default_rng(seed)
    actor = audit.Actor("officer.crash", "Test PD", "127.0.0.1")
    with db.connection():
        i = 0
        while True:
            crop = rng.integers(0, 256, (24, 80, 3), dtype=np.uint8)
            frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
            new = NewRead(
                plate_raw="7ABC123",
                plate="7ABC123",
                confidence=0.9,
                captured_at=utcnow(),
                char_confidences=[0.9] * 7,
                box=(1, 2, 80, 24),
            )
            read = save_read(settings, store, new, crop, frame, actor=actor if i % 2 else None)
            print(read.uuid, flush=True)
            if i % 3 == 0:
                with db.write():
                    audit.record(
                        "read.view",
                        actor,
                        purpose=audit.Purpose("AUDIT", "24-000777"),
                        objects=[f"read:{read.uuid}"],
                        result_count=1,
                    )
            i += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
