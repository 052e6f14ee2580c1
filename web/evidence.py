"""Serving a read's image: looked up by the read's id and the kind, never by a name or path from
the request, checked against its sha256, and recorded as an access (in the transaction that looks
it up) before the bytes leave. Every image, at the post and at headquarters, is answered as a JPEG
(jpeg_response), whatever type was declared when it was stored."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from flask import Response, abort, current_app, g, send_file

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
    return jpeg_response(data, f"read-{read.id}-{kind}.jpg")


def jpeg_response(data: bytes, filename: str) -> Response:
    """An image answered as image/jpeg, never a type stored with it: bytes from a post served from
    this origin must not become a page or a script here. base_app's nosniff on every answer keeps a
    browser from guessing otherwise; the disposition names a .jpg for anyone who saves it."""
    resp = Response(data, mimetype="image/jpeg")
    resp.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


def zip_download(name: str, make: Callable[[Path], Path]) -> Response:
    """An evidence ZIP as a download: `make(path)` writes it (and its access record) and returns
    the file written. The open file outlives its name: nothing of the export stays on the post's
    disk, whether `make` succeeds or raises (its exception is the caller's to answer)."""
    exports = g.settings.data_dir / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="export-", dir=exports))
    try:
        handle = open(make(folder / name), "rb")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    resp = send_file(
        handle,
        mimetype="application/zip",
        as_attachment=True,
        download_name=name,
        max_age=0,
        etag=False,
        conditional=False,
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp
