"""Serving a read's image: looked up by the read's id and the kind, never by a name or path from
the request, checked against its sha256, and recorded as an access before the bytes leave."""
from __future__ import annotations

from flask import Response, abort, current_app, g

from appliance import audit
from appliance.db import write
from appliance.models import Evidence, Read
from appliance.store import EvidenceStore, StoreError
from web.access import actor

KINDS = ("crop", "frame")


def image_response(read: Read, kind: str, query: dict, purpose: audit.Purpose) -> Response:
    if kind not in KINDS:
        abort(404)
    ev = Evidence.get_or_none((Evidence.read == read) & (Evidence.kind == kind)) or abort(404)
    try:
        data = EvidenceStore(g.settings).read_bytes(ev.sha256)
    except StoreError as exc:
        current_app.logger.error("read %s %s: %s", read.id, kind, exc)
        abort(404)
    with write():
        audit.record("evidence.view", actor(), query=query, purpose=purpose,
                     objects=[f"read:{read.uuid}", f"evidence:{ev.sha256}"], result_count=1, details={"kind": kind})
    resp = Response(data, mimetype="image/jpeg")
    resp.headers["Cache-Control"] = "no-store"
    return resp
