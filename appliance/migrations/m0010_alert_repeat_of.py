"""Repeat alerts. One car seen twice within minutes (a pass split by a short dropout, a car circling
the block) raised and sent an alert each time. An alert for the same hotlist entry within
alerts.repeat_window_s of the last one sent is still stored (the read and the match are evidence)
but points at that alert and is not sent again."""

STATEMENTS = [
    "ALTER TABLE alert ADD COLUMN repeat_of_id INTEGER REFERENCES alert (id) ON DELETE SET NULL",
    "CREATE INDEX alert_repeat_of_id ON alert (repeat_of_id)",
]
