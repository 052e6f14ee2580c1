import sqlite3
import threading
import types

import pytest
from peewee import IntegrityError

from appliance import db as dbmod
from appliance import migrations
from appliance.models import ALL, Evidence


def test_pragmas_on_a_real_file(db, settings):
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == settings.storage.busy_timeout_ms
    assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert settings.db_path.exists()


def test_models_match_the_migrated_schema(db):
    for model in ALL:
        table = model._meta.table_name
        columns = {row[1] for row in db.execute_sql(f'PRAGMA table_info("{table}")')}
        assert columns, f"migrations create no table {table}"
        fields = {f.column_name for f in model._meta.sorted_fields}
        assert fields == columns, f"{table}: model {sorted(fields ^ columns)} differ from schema"


def test_every_foreign_key_column_leads_an_index(db):
    """A parent row's delete (ON DELETE SET NULL / CASCADE, or the check that nothing refers to it)
    looks the child rows up by the foreign key column: without an index it scans the child table
    once per deleted row (a hotlist import replacing 50,000 entries scanned the alerts 50,000 times)."""
    tables = [
        r[0] for r in db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    missing = []
    for table in tables:
        leading = set()
        for index in db.execute_sql(f'PRAGMA index_list("{table}")').fetchall():
            cols = db.execute_sql(f'PRAGMA index_info("{index[1]}")').fetchall()
            if cols:
                leading.add(cols[0][2])
        for fk in db.execute_sql(f'PRAGMA foreign_key_list("{table}")').fetchall():
            if fk[3] not in leading:
                missing.append(f"{table}.{fk[3]} -> {fk[2]}")
    assert not missing, f"foreign keys without an index: {missing}"


def test_migrate_is_idempotent(db, settings):
    assert dbmod.migrate(settings) == []
    assert dbmod.applied_versions(db) == [m.version for m in migrations.discover()]


def _extra(version, statements):
    module = types.SimpleNamespace(STATEMENTS=statements)
    return migrations.Migration(version, "test_extra", module)


def test_database_is_backed_up_before_a_migration(db, settings, monkeypatch):
    real = migrations.discover()
    extra = _extra(len(real) + 1, ["CREATE TABLE test_extra (id INTEGER PRIMARY KEY)"])
    monkeypatch.setattr(migrations, "discover", lambda: real + [extra])
    done = dbmod.migrate(settings)
    assert done[0].startswith("backed up the database to")
    backups = list(settings.data_dir.glob("waypost.db.pre-*.bak"))
    assert len(backups) == 1
    old = sqlite3.connect(backups[0])
    tables = {r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "read" in tables and "test_extra" not in tables
    assert db.execute_sql("SELECT count(*) FROM test_extra").fetchone()[0] == 0


def test_a_failing_migration_is_rolled_back_and_named(db, settings, monkeypatch):
    real = migrations.discover()
    broken = _extra(len(real) + 1, ["CREATE TABLE half_done (id INTEGER)", "THIS IS NOT SQL"])
    monkeypatch.setattr(migrations, "discover", lambda: real + [broken])
    with pytest.raises(dbmod.MigrationError, match=r"\d{4}_test_extra failed"):
        dbmod.migrate(settings)
    tables = {r[0] for r in db.execute_sql("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables
    assert broken.version not in dbmod.applied_versions(db)


def test_foreign_keys_are_enforced(db):
    with pytest.raises(IntegrityError):
        Evidence.create(read=999, kind="crop", sha256="0" * 64, bytes=1, width=1, height=1)


def test_opening_the_same_database_again_leaves_open_transactions_alone(db, settings):
    """The service's threads start before the web app binds the database: binding it again must
    not swap the database object under a thread that is inside a write transaction."""

    db.execute_sql("CREATE TABLE probe (x INTEGER)")
    inside, rebound = threading.Event(), threading.Event()
    errors = []

    def writer():
        try:
            with dbmod.connection(), dbmod.write():
                db.execute_sql("INSERT INTO probe VALUES (1)")
                inside.set()
                rebound.wait(5)
                db.execute_sql("INSERT INTO probe VALUES (2)")
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(5)
    assert dbmod.open_database(settings) is db.obj
    rebound.set()
    thread.join(10)
    assert errors == []
    with dbmod.write():  # the writer's lock is gone: its transaction was committed
        db.execute_sql("INSERT INTO probe VALUES (3)")
    plain = sqlite3.connect(settings.db_path)
    assert [r[0] for r in plain.execute("SELECT x FROM probe ORDER BY x")] == [1, 2, 3]
    plain.close()
