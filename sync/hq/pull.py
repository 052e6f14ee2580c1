"""Headquarters pulls: it asks a post for its next batch with a request signed by its own key
(`waypost hq pull`, the nightly pull), spools the answer to a temporary file and ingests it."""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import http.client
import json
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from appliance import bundle
from sync import protocol, tls
from sync.hq.ingest import DEFAULT_MAX_BATCH_BYTES, Refused, ingest, refuse_oversized
from sync.hq.models import HQError, HQPost, SqliteDatabase, hq_database
from sync.hq.posts import log_refused_request, note_contact, position, pull_url_problem


def hq_key(target: str | Path, key_dir: Path | None = None):
    """Headquarters' own signing key (for pull requests), made on first use: <dir>/hq_key and
    hq_key.pub, in key_dir, else beside a SQLite database (a database URL needs key_dir)."""
    text = str(target)
    if key_dir is None and "://" in text:
        raise HQError("with a database URL, say where headquarters' key lives (key_dir)")
    where = Path(key_dir) if key_dir is not None else Path(text).expanduser().resolve().parent
    return bundle.post_key(SimpleNamespace(data_dir=where, sync=SimpleNamespace(key_file="hq_key")))


def pull_trust(sync_settings) -> tls.Trust:
    """How headquarters checks posts' certificates: sync.pull_ca_file and sync.pull_pin_sha256 of its
    configuration."""
    return tls.Trust(
        sync_settings.pull_ca_file, tuple(sync_settings.pull_pin_sha256), "sync.pull_ca_file", "sync.pull_pin_sha256"
    )


@dataclass
class Pulled:
    post_id: str
    batches: int = 0
    duplicates: int = 0
    reads: int = 0
    records: int = 0
    holds: int = 0
    problem: str = ""

    def line(self) -> str:
        text = (
            f"{self.post_id}: pulled {self.batches} batch(es), {self.reads} read(s), {self.records} access "
            f"record(s); {self.duplicates} already held"
        )
        if self.holds:
            text += f"; {self.holds} legal hold event(s) from the post"
        return text + (f"; stopped: {self.problem}" if self.problem else "")


def pull(
    post_id: str,
    key,
    max_batches: int | None = None,
    timeout_s: float = 120,
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    trust: tls.Trust | None = None,
) -> Pulled:
    """Fetch batches from one post until it has nothing more. Each batch is received into a
    temporary file and ingested from there: ingest holds the database's write lock (SQLite) or the
    post's row (PostgreSQL) from its first byte, which must not last as long as a slow link takes.
    `trust`: how a post's HTTPS certificate is checked (pull_trust(settings)); default: the system's CAs."""
    result = Pulled(post_id)
    trust = trust or tls.Trust(ca_setting="sync.pull_ca_file", pin_setting="sync.pull_pin_sha256")
    while max_batches is None or result.batches + result.duplicates < max_batches:
        with hq_database.connection_context():
            post = HQPost.get_or_none(HQPost.id == post_id)
            held = position(post) if post is not None else {}
        if post is None:
            result.problem = f"post {post_id!r} is not enrolled"
            return result
        if not post.pull_url:
            result.problem = "no pull URL enrolled for this post (waypost hq enroll --pull-url)"
            return result
        bad_url = pull_url_problem(post.pull_url)
        if bad_url:  # enrolled before the URL was checked: enrol it again with a good one
            result.problem = f"{bad_url}; enrol the post again with --pull-url"
            return result
        url = urllib.parse.urlsplit(post.pull_url)
        path = (
            url.path.rstrip("/")
            + "/sync/batch?"
            + urllib.parse.urlencode({k: v for k, v in held.items() if k != "post"})
        )
        assert url.hostname  # pull_url_problem() refused a URL without one
        try:
            conn = trust.connection_for(url.scheme, post.pull_url)(url.hostname, url.port, timeout=timeout_s)
        except tls.TrustError as exc:
            result.problem = str(exc)
            return result
        try:
            headers = _signed(conn, url.path.rstrip("/"), post_id, path, key)
            if isinstance(headers, str):
                result.problem = headers
                return result
            sent = time.time()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            with hq_database.connection_context():
                note_contact(post_id, _post_clock(response.getheader("Date"), sent, time.time()))
            if response.status == 204:
                return result
            if response.status != 200:
                answer = response.read(500).decode(errors="replace")
                result.problem = f"the post answered {response.status}: {answer}"
                with hq_database.connection_context():
                    log_refused_request(post_id, "pull", _problem_of(answer), answer, post.pull_url)
                return result
            content_length = response.getheader("Content-Length")
            length = int(content_length) if content_length else None
            # unlinked at once (and closed on every way out): nothing is left behind, even by a crash
            with _spool_file() as body:
                received = 0 if length is not None and length > max_bytes else _receive(response, body, max_bytes)
                body.seek(0)
                with hq_database.connection_context():
                    try:
                        if received > max_bytes:  # refused and recorded as ingest refuses (raises Refused)
                            refuse_oversized(received, max_bytes, post.pull_url)
                        outcome = ingest(body, length, max_bytes, remote_addr=post.pull_url)
                    except Refused as refused:
                        result.problem = f"{refused.problem}: {refused.message}"
                        return result
        except (_SpoolError, tls.TrustError) as exc:
            result.problem = str(exc)
            return result
        except (OSError, http.client.HTTPException) as exc:
            result.problem = f"the post at {post.pull_url} did not answer: {type(exc).__name__}: {exc}"
            return result
        finally:
            conn.close()
        if outcome.status == "duplicate":
            result.duplicates += 1  # the post pushed the same range meanwhile: its next batch comes next time
            return result
        else:
            result.batches += 1
            result.reads += outcome.reads
            result.records += outcome.records
            result.holds += outcome.holds
    return result


def _signed(conn, base: str, post_id: str, path: str, key) -> dict[str, str] | str:
    """The headers of a pull request: a nonce asked of the post on the same connection
    (sync/protocol.py, 'signed GETs'), headquarters' time, and its signature over both with the
    path; or, when the post gives no nonce, why not."""
    conn.request("GET", base + "/sync/challenge", headers={"Accept": "application/json"})
    response = conn.getresponse()
    data = response.read(4096)
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    nonce = answer.get("nonce") if isinstance(answer, dict) and response.status == 200 else None
    if not isinstance(nonce, str):
        if isinstance(answer, dict) and answer.get("problem") == "pull_disabled":
            return f"the post answered {response.status}: {answer.get('message')}"
        return (
            f"the post gave no challenge ({response.status}): it runs an older Waypost than headquarters; "
            "update it (deploy/ansible/README.md, 'Updating the software')"
        )
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = base64.b64encode(key.sign(protocol.pull_message(post_id, path, nonce, date))).decode()
    return {protocol.NONCE_HEADER: nonce, protocol.DATE_HEADER: date, protocol.SIGNATURE_HEADER: signature}


def _post_clock(date_header: str | None, sent: float, received: float) -> int | None:
    """The post's clock minus headquarters', from the HTTP Date of its answer (whole seconds,
    truncated: half a second added) against the middle of the exchange."""
    try:
        theirs = email.utils.parsedate_to_datetime(date_header or "").timestamp() + 0.5
    except (TypeError, ValueError):
        return None
    return round(theirs - (sent + received) / 2)


def _problem_of(answer: str) -> str:
    try:
        problem = json.loads(answer).get("problem")
    except (ValueError, AttributeError):
        problem = None
    return problem if isinstance(problem, str) and problem else "refused"


class _SpoolError(Exception):
    """Headquarters could not hold a pulled batch on its own disk (not the post's fault)."""


def _spool_file():
    """An anonymous temporary file for one pulled batch: beside a SQLite database, else in the
    system's temp dir."""
    db = hq_database.obj
    where = str(Path(db.database).parent) if isinstance(db, SqliteDatabase) else tempfile.gettempdir()
    try:
        return tempfile.TemporaryFile(dir=where, prefix="pull-")
    except OSError as exc:
        raise _SpoolError(f"could not make a temporary file for the batch in {where}: {exc}") from None


def _receive(response, body, max_bytes: int, chunk: int = 64 * 1024) -> int:
    """Copy the response into `body`, stopping one byte past max_bytes. Returns the bytes copied."""
    received = 0
    while received <= max_bytes:
        data = response.read(min(chunk, max_bytes + 1 - received))
        if not data:
            break
        try:
            body.write(data)
        except OSError as exc:
            raise _SpoolError(f"could not hold the batch in a temporary file ({received} bytes in): {exc}") from None
        received += len(data)
    return received
