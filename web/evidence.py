"""Serving a read's image: looked up by the read's id and the kind, never by a name or path from
the request, checked against its sha256, and recorded as an access (in the transaction that looks
it up) before the bytes leave."""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, abort, current_app, g

from appliance import audit
from appliance.db import write
from appliance.models import Evidence, Read
from appliance.store import EvidenceStore, StoreError
from web.access import actor

KINDS = ("crop", "frame")


def image_response(find: Callable[[], tuple[Read, dict]], kind: str, purpose: audit.Purpose) -> Response:
    """`find()` -> (the read, the query to record); it runs, with the image's lookup and its
    bytes, inside the transaction that records the view, so what is sent is what was recorded."""
    if kind not in KINDS:
        abort(404)
    with write():
        read, query = find()
        ev = Evidence.get_or_none((Evidence.read == read) & (Evidence.kind == kind)) or abort(404)
        try:
            data = EvidenceStore(g.settings).read_bytes(ev.sha256)
        except StoreError as exc:
            current_app.logger.error("read %s %s: %s", read.id, kind, exc)
            abort(404)
        audit.record(
            "evidence.view",
            actor(),
            query=query,
            purpose=purpose,
            objects=[f"read:{read.uuid}", f"evidence:{ev.sha256}"],
            result_count=1,
            details={"kind": kind},
        )
    resp = Response(data, mimetype="image/jpeg")
    resp.headers["Cache-Control"] = "no-store"
    return resp
