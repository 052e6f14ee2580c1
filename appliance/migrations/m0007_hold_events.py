"""Legal holds travel to headquarters as outbox events (appliance/holds.py, sync/post.py). Holds
placed before this version have no event yet: each is queued here, placing first, then the
release of those already released, so headquarters learns every hold this post has on file."""

from appliance.models import utcnow

STATEMENTS: list[str] = []


def apply(db) -> None:
    now = utcnow()
    holds = db.execute_sql("SELECT id, released_at FROM legal_hold ORDER BY id").fetchall()
    for hold_id, _released in holds:
        db.execute_sql(
            "INSERT INTO outbox (kind, object_id, created_at) VALUES ('hold.place', ?, ?)", (str(hold_id), now)
        )
    for hold_id, released in holds:
        if released is not None:
            db.execute_sql(
                "INSERT INTO outbox (kind, object_id, created_at) VALUES ('hold.release', ?, ?)", (str(hold_id), now)
            )
