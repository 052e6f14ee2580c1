"""Headquarters: every post's reads, images and access-log copies in one database (SQLite or
PostgreSQL), filled by the batches the posts push and headquarters pulls.

    models     the database: tables, schema versions, the write transaction
    ingest     one batch, stored whole or refused with the problem named; who sends a push, checked
               before its body is read; the batch log's refusals, bounded
    posts      enrolment, each post's position and status, signed GETs, hotlists for the posts
    pull       headquarters asks a post for its next batch
    holds      legal holds (placed here, or at a post and sent with its batches)
    retention  the daily purge, which holds keep reads out of
    search     the officers' search across every post

This package's names below are what the web layer, the CLI and the tests use; the modules use
each other directly.
"""

from __future__ import annotations

from sync.hq.ingest import (
    DEFAULT_MAX_BATCH_BYTES,
    Outcome,
    RefusalLog,
    Refused,
    Spooled,
    SpoolError,
    authenticate,
    ingest,
    refuse_push,
    spool,
)
from sync.hq.models import (
    GENESIS,
    MODELS,
    HQAccessRecord,
    HQAlert,
    HQBatch,
    HQError,
    HQHotlist,
    HQImage,
    HQModel,
    HQPost,
    HQRead,
    hq_database,
    open_hq,
    write,
)
from sync.hq.posts import (
    check_post_request,
    enroll,
    log_refused_request,
    note_contact,
    position,
    publish_hotlist,
    status,
    verify_chain,
)
from sync.hq.pull import Pulled, hq_key, pull, pull_trust

__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "GENESIS",
    "MODELS",
    "HQAccessRecord",
    "HQAlert",
    "HQBatch",
    "HQError",
    "HQHotlist",
    "HQImage",
    "HQModel",
    "HQPost",
    "HQRead",
    "Outcome",
    "Pulled",
    "RefusalLog",
    "Refused",
    "SpoolError",
    "Spooled",
    "authenticate",
    "check_post_request",
    "log_refused_request",
    "note_contact",
    "enroll",
    "hq_database",
    "hq_key",
    "ingest",
    "open_hq",
    "position",
    "publish_hotlist",
    "pull",
    "pull_trust",
    "refuse_push",
    "spool",
    "status",
    "verify_chain",
    "write",
]
