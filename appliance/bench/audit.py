"""`waypost bench audit` and `waypost bench report`: the access log's appends, verification and
the quarterly audit over a large log."""

from __future__ import annotations

import os
import time
from pathlib import Path

from appliance import audit, db, reports
from appliance.bench.data import fill_access_log, scratch_settings
from appliance.bootstrap import bootstrap


def audit_chain(count: int, where: Path | None = None, single: int = 5000) -> dict:
    """Appends `single` records one transaction each (as the product does), the rest in large
    transactions to reach `count`, then times a full verify."""

    settings = scratch_settings(where)
    bootstrap(settings, create_admin=False)
    actor = audit.Actor("officer.bench", "Bench PD", "127.0.0.1")
    purpose = audit.Purpose("STOLEN-VEH", "24-000123")
    single = min(single, count)
    with db.connection():
        base = audit.head()[0]
        start = time.perf_counter()
        for i in range(single):
            with db.write():
                audit.record(
                    "read.search", actor, query={"plate": f"7ABC{i % 1000:03d}"}, purpose=purpose, result_count=i % 7
                )
        per_txn = single / (time.perf_counter() - start)
        start = time.perf_counter()
        remaining = count - single
        while remaining > 0:
            n = min(remaining, 50_000)
            with db.write():
                for i in range(n):
                    audit.record(
                        "read.search",
                        actor,
                        query={"plate": f"8XYZ{i % 1000:03d}"},
                        purpose=purpose,
                        result_count=i % 7,
                    )
            remaining -= n
        bulk = (count - single) / (time.perf_counter() - start) if count > single else None
        start = time.perf_counter()
        result = audit.verify()
        verify_s = time.perf_counter() - start
    assert result.ok, result.summary()
    return {
        "benchmark": "audit",
        "records": result.checked,
        "appends_per_s_one_txn_each": round(per_txn, 1),
        "appends_per_s_batched": round(bulk, 1) if bulk else None,
        "verify_seconds": round(verify_s, 3),
        "verify_records_per_s": round(result.checked / verify_s, 1),
        "db_bytes": os.path.getsize(settings.db_path),
        "base": base,
    }


def report(count: int = 1_000_000, where: Path | None = None) -> dict:
    """Time reports.quarterly() (chain verification included) over `count` access records in one
    quarter, on a scratch database filled by fill_access_log()."""

    settings = scratch_settings(where)
    bootstrap(settings, create_admin=False)
    label = reports.previous_quarter(settings.post.timezone)
    period = reports.quarter(label, settings.post.timezone)
    with db.connection():
        have = db.database.execute_sql("SELECT count(*) FROM access_record").fetchone()[0]
    start = time.perf_counter()
    if have < count:
        fill_access_log(settings, count - have, period.start_utc, period.end_utc)
    fill_s = time.perf_counter() - start

    def cpu():  # this process and its finished children (verify's workers): a figure load does not inflate
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    with db.connection():
        start, cpu0 = time.perf_counter(), cpu()
        result = reports.quarterly(settings, label, verify_chain=False)
        queries_s, queries_cpu = time.perf_counter() - start, cpu() - cpu0
        start, cpu0 = time.perf_counter(), cpu()
        result = reports.quarterly(settings, label)
        total_s, total_cpu = time.perf_counter() - start, cpu() - cpu0
    assert result.chain.ok, result.chain.summary()
    return {
        "benchmark": "report",
        "quarter": label,
        "records_in_quarter": result.records,
        "records_in_log": result.chain.checked,
        "fill_seconds": round(fill_s, 1),
        "quarterly_seconds_without_verify": round(queries_s, 3),
        "quarterly_seconds": round(total_s, 3),
        "cpu_seconds_without_verify": round(queries_cpu, 3),
        "cpu_seconds": round(total_cpu, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "users": len(result.users),
        "searches": result.searches,
        "searches_without_hit": result.searches_without_hit,
        "db_bytes": os.path.getsize(settings.db_path),
        "data_dir": str(settings.data_dir),
    }
