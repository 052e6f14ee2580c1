"""Whether the post's clock was synchronised when a read was stamped (issue 19): true, false, or
NULL when neither chrony nor timedatectl could tell (and for reads stored before this version).
A read stamped by an unsynchronised clock may carry a wrong time; the read page says so."""

STATEMENTS = [
    "ALTER TABLE read ADD COLUMN clock_synced BOOLEAN",
]
