"""Parameter types the `waypost` commands share."""

from __future__ import annotations

import click

# A database row id: SQLite and PostgreSQL keep ids in a signed 64-bit integer, so a larger
# number is refused as a usage error instead of failing as an OverflowError in the driver.
MAX_ROW_ID = 2**63 - 1
ROW_ID = click.IntRange(1, MAX_ROW_ID)
# How many rows one transaction handles: at least one.
BATCH = click.IntRange(min=1)
