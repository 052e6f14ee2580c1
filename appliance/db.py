"""The one place that knows where the database lives, its pragmas and how its schema is made.

SQLite in WAL mode with foreign keys and a busy timeout, tuned for an SD card. Writers take the
lock up front (`write()`, BEGIN IMMEDIATE) so two writers never deadlock on an upgrade.

A view that records what it shows reads in the transaction that records it, so it takes the
write lock too; a job that writes for long (a retention purge, a hotlist import) writes in chunks
(`Paced`) that hold the lock about CHUNK_S each, well inside the busy timeout such a view waits.
A plate search may read for seconds: it reads in a `read()` transaction instead (a snapshot; in
WAL mode the pipeline goes on writing meanwhile), between two short writes of its access records.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from peewee import SqliteDatabase

from appliance import migrations
from appliance.config import Settings
from appliance.models import database, utcnow

DIALECT = {"sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT"}, "postgres": {"serial": "BIGSERIAL PRIMARY KEY"}}


class MigrationError(RuntimeError):
    pass


def pragmas(settings: Settings) -> dict:
    return {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "synchronous": settings.storage.synchronous,
        "busy_timeout": settings.storage.busy_timeout_ms,
        "cache_size": -settings.storage.cache_kib,
        "temp_store": "memory",
    }


def open_database(settings: Settings) -> SqliteDatabase:
    """Bind the models to the configured database file (creating the data directory).

    Binding the same file with the same pragmas again keeps the database object already bound:
    threads of the running post (upkeep, sync, pipeline) may be inside a transaction on it, and
    swapping it under them would leave their transaction open on a connection nobody commits."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not settings.db_path.exists():
        # SQLite gives its -wal and -shm files the database file's mode: made 0600, all three are
        os.close(os.open(settings.db_path, os.O_WRONLY | os.O_CREAT, 0o600))
    current = database.obj
    if (
        isinstance(current, SqliteDatabase)
        and current.database == str(settings.db_path)
        and dict(current._pragmas) == pragmas(settings)  # type: ignore[attr-defined]  # peewee keeps the pragmas in _pragmas
    ):
        return current
    db = SqliteDatabase(str(settings.db_path), pragmas=pragmas(settings))
    database.initialize(db)
    return db


def exposed(settings: Settings) -> list[str]:
    """The post's data that other local users may read or enter (the data directory, the database
    and its journal files, the evidence): each as a sentence saying how to close it. The program
    makes them for its own account alone (appliance/cli entry, open_database); a copy made by hand,
    or a directory made before this check existed, may not be."""
    found = []
    paths = [settings.data_dir, settings.db_path, *(Path(f"{settings.db_path}{end}") for end in ("-wal", "-shm"))]
    paths.append(settings.evidence_path)
    for path in paths:
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            continue
        if mode & 0o007:
            fix = "700" if path.is_dir() else "600"
            found.append(f"{path} may be read by other users (mode {mode:04o}): chmod {fix} {path}")
    return found


def write():
    """A write transaction that takes the database lock at once (BEGIN IMMEDIATE)."""
    return database.atomic(lock_type="IMMEDIATE")


@contextmanager
def read():
    """A read transaction: one snapshot for everything read in it, and never the write lock (the
    connection is query_only meanwhile, so a write in it fails at once instead of taking the lock).
    Refused inside another transaction: there it would be a savepoint of that transaction, holding
    whatever lock it holds."""
    if database.in_transaction():
        raise RuntimeError(
            "db.read() was opened inside another transaction, whose write lock it would keep: "
            "open it on its own, after that transaction commits"
        )
    database.execute_sql("PRAGMA query_only = 1")
    try:
        with database.atomic():
            yield database
    finally:
        database.execute_sql("PRAGMA query_only = 0")


# How long one chunk of a long write holds the lock, and how long at most the job leaves it free
# after each. A job that takes the lock back at once can starve a waiting search for many chunks in
# a row: SQLite's busy handler sleeps between its tries, up to 100 ms, and (once it has waited
# 50 ms) no more than about half of what it has waited so far; so a pause of half the chunk (at
# most YIELD_S) lets in whoever started waiting during it.
CHUNK_S = 0.5
YIELD_S = 0.1


class Paced:
    """The write transactions of a long job, each sized to hold the lock about CHUNK_S on this
    machine (a Pi's SD card is several times slower than a server): after each chunk the next
    size is scaled by how long this one took, within [least, most] and at most doubling.

        pace = Paced(2000, least=100)
        while more:
            with pace.write() as n:
                ... write up to n rows ...
    """

    def __init__(self, size: int, most: int | None = None, least: int = 1):
        if size < 1 or least < 1:
            raise ValueError(f"chunk sizes must be at least 1, got size={size} least={least}")
        self.size, self.most, self.least = size, max(most or size, size), min(least, size)
        self.chunks, self.longest_s = 0, 0.0

    @contextmanager
    def write(self):
        started = time.perf_counter()
        with write():
            yield self.size
        took = time.perf_counter() - started
        self.chunks += 1
        self.longest_s = max(self.longest_s, took)
        scaled = int(self.size * CHUNK_S / max(took, 1e-3))
        self.size = max(self.least, min(self.most, 2 * self.size, scaled))
        time.sleep(min(YIELD_S, took / 2))


@contextmanager
def connection():
    """A connection for a thread or a CLI command; closed at the end unless one was already open."""
    opened = database.connect(reuse_if_open=True)
    try:
        yield database
    finally:
        if opened:
            database.close()


def _ensure_table(db) -> None:
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS schema_migration ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )


def applied_versions(db) -> list[int]:
    _ensure_table(db)
    return [row[0] for row in db.execute_sql("SELECT version FROM schema_migration ORDER BY version")]


def pending(db) -> list[migrations.Migration]:
    done = set(applied_versions(db))
    return [m for m in migrations.discover() if m.version not in done]


def backup(db_path: Path, label: str) -> Path:
    """Copy the database with SQLite's online backup (consistent even in WAL mode)."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    target = db_path.with_name(f"{db_path.name}.{label}-{stamp}.bak")
    src = sqlite3.connect(str(db_path))
    try:
        dst = sqlite3.connect(str(target))
        with dst:
            src.backup(dst)
        dst.close()
    finally:
        src.close()
    return target


def migrate(settings: Settings, dialect: str = "sqlite") -> list[str]:
    """Apply pending migrations, each in its own transaction, after backing up a non-empty DB.
    Returns what was done, one line per step."""
    db = database.obj or open_database(settings)
    done: list[str] = []
    with connection():
        todo = pending(db)
        if not todo:
            return done
        if applied_versions(db) and settings.db_path.exists():
            copy = backup(settings.db_path, f"pre-{todo[0].version:04d}")
            done.append(f"backed up the database to {copy}")
        for m in todo:
            try:
                with db.atomic("IMMEDIATE"):
                    for sql in m.module.STATEMENTS:
                        db.execute_sql(sql.format(**DIALECT[dialect]))
                    if hasattr(m.module, "apply"):
                        m.module.apply(db)
                    db.execute_sql(
                        "INSERT INTO schema_migration (version, name, applied_at) VALUES (?, ?, ?)",
                        (m.version, m.name, utcnow()),
                    )
            except Exception as exc:
                raise MigrationError(f"migration {m.version:04d}_{m.name} failed and was rolled back: {exc}") from exc
            done.append(f"applied migration {m.version:04d}_{m.name}")
    return done


def integrity_check(db=None) -> str:
    db = db or database
    return db.execute_sql("PRAGMA integrity_check").fetchone()[0]
