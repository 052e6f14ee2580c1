"""Data-sharing requests and the evidence exports made for them (appliance/sharing.py).

These tables are the file of every disclosure (policies: "the approved request is retained on
file"): retention never purges them, and a request with exports cannot be deleted (RESTRICT)."""

STATEMENTS = [
    """CREATE TABLE sharing_request (
        id {serial},
        agency_name TEXT NOT NULL,
        agency_type TEXT NOT NULL,
        agency_state TEXT NOT NULL,
        requester_name TEXT NOT NULL,
        requester_title TEXT NOT NULL,
        requester_contact TEXT NOT NULL,
        intended_purpose TEXT NOT NULL,
        legal_authority TEXT NOT NULL,
        purpose_code TEXT NOT NULL,
        case_number TEXT NOT NULL,
        plate TEXT NOT NULL,
        match_mode TEXT NOT NULL,
        period_start_at TIMESTAMP NOT NULL,
        period_end_at TIMESTAMP NOT NULL,
        status TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_organization TEXT NOT NULL,
        created_at TIMESTAMP NOT NULL,
        decided_by TEXT,
        decided_at TIMESTAMP,
        decision_note TEXT)""",
    "CREATE INDEX sharing_request_status ON sharing_request (status, id)",
    """CREATE TABLE sharing_export (
        id {serial},
        request_id INTEGER NOT NULL REFERENCES sharing_request (id) ON DELETE RESTRICT,
        exported_by TEXT NOT NULL,
        exported_at TIMESTAMP NOT NULL,
        read_count INTEGER NOT NULL,
        image_count INTEGER NOT NULL,
        data_sha256 TEXT NOT NULL,
        record_seq INTEGER NOT NULL)""",
    "CREATE INDEX sharing_export_request_id ON sharing_export (request_id)",
]
