"""Accountability (issue 16): what an auditor found missing.

- Hotlists from a state or DOJ extract keep the plate type (LIT), plate year (LIY), vehicle make
  (MKE) and the entering agency's ORI; a list can be retired (kept, with who, when and why); a
  custom entry carries a review date and its last renewal.
- An alert copies the entry's ORI (with its NIC, already in entry_source_ref) so dispatch can run it.
- A changed outcome of an alert says why (alert_confirmation.change_reason); every outcome stays
  on file, in order.
- A sharing request names the recipient's ORI and keeps its written assurance (no onward sharing
  outside California public agencies, bulletin 2023-DLE-06).
"""

STATEMENTS = [
    "ALTER TABLE hotlist ADD COLUMN retired_at TIMESTAMP",
    "ALTER TABLE hotlist ADD COLUMN retired_by TEXT",
    "ALTER TABLE hotlist ADD COLUMN retired_reason TEXT",
    "ALTER TABLE hotlist_entry ADD COLUMN plate_type TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE hotlist_entry ADD COLUMN plate_year TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE hotlist_entry ADD COLUMN vehicle_make TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE hotlist_entry ADD COLUMN ori TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE hotlist_entry ADD COLUMN review_on DATE",
    "ALTER TABLE hotlist_entry ADD COLUMN renewed_at TIMESTAMP",
    "ALTER TABLE hotlist_entry ADD COLUMN renewed_by TEXT",
    "ALTER TABLE hotlist_entry ADD COLUMN renew_reason TEXT",
    "ALTER TABLE alert ADD COLUMN entry_ori TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE alert_confirmation ADD COLUMN change_reason TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE sharing_request ADD COLUMN agency_ori TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE sharing_request ADD COLUMN assurance TEXT NOT NULL DEFAULT ''",
]
