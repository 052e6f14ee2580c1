"""Legal holds and retention: holds with the set of reads each one froze, the purge runs (so an
interrupted run is still recorded), the image files a purge has yet to unlink, and an index that
lets a purge find a read's outbox row without scanning the outbox."""

STATEMENTS = [
    """CREATE TABLE legal_hold (
        id {serial},
        kind TEXT NOT NULL,
        case_number TEXT NOT NULL,
        purpose_code TEXT NOT NULL,
        reason TEXT NOT NULL,
        query TEXT NOT NULL,
        read_count INTEGER NOT NULL,
        placed_by TEXT NOT NULL,
        placed_org TEXT NOT NULL,
        placed_at TIMESTAMP NOT NULL,
        released_at TIMESTAMP,
        released_by TEXT,
        release_reason TEXT)""",
    "CREATE INDEX legal_hold_released_at ON legal_hold (released_at)",
    """CREATE TABLE hold_read (
        hold_id INTEGER NOT NULL REFERENCES legal_hold (id) ON DELETE CASCADE,
        read_id INTEGER NOT NULL REFERENCES read (id) ON DELETE CASCADE,
        PRIMARY KEY (hold_id, read_id))""",
    "CREATE INDEX hold_read_read_id ON hold_read (read_id)",
    """CREATE TABLE retention_run (
        id {serial},
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        read_cutoff TIMESTAMP NOT NULL,
        hit_cutoff TIMESTAMP NOT NULL,
        reads INTEGER NOT NULL DEFAULT 0,
        hit_reads INTEGER NOT NULL DEFAULT 0,
        evidence_rows INTEGER NOT NULL DEFAULT 0,
        alerts INTEGER NOT NULL DEFAULT 0,
        outbox_rows INTEGER NOT NULL DEFAULT 0,
        files INTEGER NOT NULL DEFAULT 0,
        oldest_at TIMESTAMP,
        newest_at TIMESTAMP)""",
    """CREATE TABLE retention_file (
        sha256 TEXT PRIMARY KEY,
        run_id INTEGER NOT NULL)""",
    "CREATE INDEX outbox_object_id ON outbox (object_id)",
]
