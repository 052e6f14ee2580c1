"""Say why a read has fewer images than usual (low disk space), so nobody mistakes it for loss."""

STATEMENTS = [
    "ALTER TABLE read ADD COLUMN evidence_note TEXT",
]
