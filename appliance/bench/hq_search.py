"""`waypost bench hq-search`: search latency at headquarters over synthetic reads."""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time
from typing import Any

from sync.hq.models import HQError, HQRead, hq_database, open_hq
from sync.hq.models import write as hq_write
from sync.hq.search import Query, catch_up, search


def run(target: str, count: int, repeat: int = 5, seed: int = 7) -> dict:
    """Fill an empty headquarters database with `count` synthetic reads over 30 days and 4 posts
    (California-style plates, one or two alternatives each), index them, and time each kind of
    search. Returns the figures (milliseconds are medians of `repeat` runs)."""
    rng = random.Random(seed)
    open_hq(target)
    db = hq_database
    letters, digits = "ABCDEFGHJKLMNPRSTUVWXYZ", "0123456789"
    confuse = {"8": "B", "B": "8", "0": "D", "D": "0", "1": "I", "5": "S", "S": "5", "2": "Z", "Z": "2"}
    start = dt.datetime(2026, 10, 1)
    with db.connection_context():
        if HQRead.select().limit(1).count():
            raise HQError("the benchmark needs an empty headquarters database (it adds synthetic reads)")
        t0 = time.perf_counter()
        plates = []
        for first in range(0, count, 1000):
            rows = []
            for i in range(first, min(count, first + 1000)):
                plate = rng.choice(digits[1:]) + "".join(rng.choices(letters, k=3)) + "".join(rng.choices(digits, k=3))
                alts = []
                for _ in range(rng.choice((1, 2))):
                    j = rng.randrange(len(plate))
                    alts.append(
                        {"text": plate[:j] + confuse.get(plate[j], rng.choice(letters)) + plate[j + 1 :], "score": 0.05}
                    )
                at = start + dt.timedelta(seconds=30 * 86400 * i / count)
                post_id = f"post-{i % 4 + 1}"
                plates.append(plate)
                rows.append(
                    {
                        "post_id": post_id,
                        "uuid": f"bench-{i}",
                        "seq": i // 4 + 1,
                        "captured_at": at.isoformat(timespec="microseconds"),
                        "plate": plate,
                        "content_hash": "0" * 64,
                        "data": {
                            "camera_id": "cam-1",
                            "plate": plate,
                            "confidence": 0.9,
                            "alternatives": alts,
                            "images": [{"kind": "crop", "sha256": "0" * 64}],
                        },
                    }
                )
            with hq_write():
                HQRead.insert_many(rows).execute()
        filled_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        indexed = catch_up()
        index_s = time.perf_counter() - t0
        known = plates[count // 2]
        day = start + dt.timedelta(days=15)
        queries = {
            "exact": Query(known),
            "exact_alternative_or_none": Query("9ZZZ999"),
            "wildcard_prefix": Query(known[:3] + "*", "wildcard"),
            "wildcard_suffix": Query("*" + known[-3:], "wildcard"),
            "wildcard_inner": Query(known[:2] + "?" + known[3:6] + "?", "wildcard"),
            "contains_one_day": Query(known[2:5], "partial", since=day, until=day + dt.timedelta(days=1)),
            "similar": Query(known, "similar"),
        }
        figures: dict[str, Any] = {
            "database": "postgresql" if "://" in target else "sqlite",
            "reads": count,
            "fill_s": round(filled_s, 1),
            "index_s": round(index_s, 1),
            "index_reads_per_s": round(indexed / index_s) if index_s else None,
            "search_ms": {},
            "hits": {},
        }
        for name, q in queries.items():
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                page = search(q, limit=25)
                times.append((time.perf_counter() - t0) * 1000)
            figures["search_ms"][name] = round(statistics.median(times), 1)
            figures["hits"][name] = len(page.hits)
    return figures
