"""Indexes on the two foreign key columns that had none (tests/appliance/test_db.py checks every
one has). Deleting a hotlist entry sets its alerts' entry_id to NULL (ON DELETE SET NULL); without
an index on alert.entry_id every deleted entry scanned the whole alert table: replacing a
50,000-entry list at a post with 20,000 alerts took 63 s, 4 s with the index. camera.post_id is a
table of a few rows, indexed for the rule's sake."""

STATEMENTS = [
    "CREATE INDEX alert_entry_id ON alert (entry_id)",
    "CREATE INDEX camera_post_id ON camera (post_id)",
]
