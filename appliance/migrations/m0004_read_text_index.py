"""The plate search index (appliance/search.py): every read's plate and best alternatives, folded
to their OCR skeletons, in an FTS5 trigram table. Existing reads are indexed here."""

import json

from peewee import SqliteDatabase

from appliance import search

STATEMENTS: list[str] = []


def apply(db) -> None:
    if not isinstance(db, SqliteDatabase):
        raise NotImplementedError(
            "the plate search index is built for SQLite; headquarters on PostgreSQL "
            "indexes reads with its own migration"
        )
    cols = ", ".join(["plate"] + [f"alt{i}" for i in range(1, search.ALT_COLUMNS + 1)])
    db.execute_sql(f"CREATE VIRTUAL TABLE read_text USING fts5({cols}, tokenize='trigram', detail='none', content='')")
    for read_id, plate, alternatives in db.execute_sql("SELECT id, plate, alternatives FROM read").fetchall():
        search.index_read(read_id, plate, json.loads(alternatives or "[]"))
