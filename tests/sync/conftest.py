"""A post (real SQLite file, real evidence files) and a headquarters served by waitress on
127.0.0.1 over its own SQLite file."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import http.client
import io
import itertools
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import psycopg2
import pytest

from appliance import audit, bundle, store
from appliance import db as dbmod
from appliance.bootstrap import bootstrap
from appliance.db import write
from appliance.models import Alert, Read, utcnow
from sync import hq, protocol
from tests.conftest import make_settings
from web.hq import create_hq_app
from web.server import WebServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HQServer:
    """Headquarters in a thread, on a fixed port so that it can be stopped and started again."""

    def __init__(self, path, port, max_batch_bytes=hq.DEFAULT_MAX_BATCH_BYTES):
        self.path, self.port, self.max_batch_bytes = path, port, max_batch_bytes
        self.server = None
        self.post_settings = None  # the post enrolled here (hq_server): tests sign pushes with its key

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HQServer:
        self.server = WebServer(create_hq_app(str(self.path), self.max_batch_bytes), "127.0.0.1", self.port).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


PGBIN = Path("/usr/lib/postgresql/15/bin")
_db_numbers = itertools.count(1)


def _as_postgres(args, **kw):
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + [str(a) for a in args], check=True, capture_output=True, text=True, **kw)


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL 15 instance on 127.0.0.1 for this test run (skipped where there is none)."""
    if not (PGBIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries are not installed (apt install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="waypost-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    os.chmod(data, 0o700)
    port = free_port()
    _as_postgres([PGBIN / "initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8"])
    _as_postgres(
        [
            PGBIN / "pg_ctl",
            "-D",
            data,
            "-o",
            f"-p {port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
            "-l",
            data / "server.log",
            "-w",
            "start",
        ]
    )
    yield port
    _as_postgres([PGBIN / "pg_ctl", "-D", data, "-m", "immediate", "stop"])
    shutil.rmtree(root, ignore_errors=True)


def pg_sql(port, sql, database="postgres"):
    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname=database)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def hq_target(request, tmp_path):
    """Headquarters' database: a SQLite file, or a fresh database on the private PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "hq" / "hq.sqlite")
    port = request.getfixturevalue("pg_server")
    name = f"hq_{os.getpid()}_{next(_db_numbers)}"
    pg_sql(port, f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"


def snapshot(target: str) -> str:
    """A copy of headquarters' database as it is now (its server stopped), for restore()."""
    if "://" not in target:
        copy = target + ".backup"
        src = sqlite3.connect(target)
        with sqlite3.connect(copy) as dst:
            src.backup(dst)
        src.close()
        return copy
    base, name = target.rsplit("/", 1)
    hq.hq_database.close()
    pg_sql(int(base.rsplit(":", 1)[1]), f"CREATE DATABASE {name}_backup TEMPLATE {name}")
    return f"{name}_backup"


def restore(target: str, copy: str) -> None:
    if "://" not in target:
        for suffix in ("", "-wal", "-shm"):
            Path(target + suffix).unlink(missing_ok=True)
        shutil.copy(copy, target)
        return
    base, name = target.rsplit("/", 1)
    hq.hq_database.close()
    port = int(base.rsplit(":", 1)[1])
    pg_sql(port, f"DROP DATABASE {name} WITH (FORCE)")
    pg_sql(port, f"CREATE DATABASE {name} TEMPLATE {copy}")


@pytest.fixture
def hq_port():
    return free_port()


@pytest.fixture
def hq_path(tmp_path):
    return tmp_path / "hq" / "hq.sqlite"


@pytest.fixture
def settings(tmp_path, hq_port):
    return make_settings(tmp_path / "data", sync__hq_url=f"http://127.0.0.1:{hq_port}", sync__batch_max_reads=2)


@pytest.fixture
def db(settings):
    bootstrap(settings, create_admin=False)
    with dbmod.connection() as database:
        yield database


@pytest.fixture
def hq_server(settings, db, hq_target, hq_port):
    """Headquarters with this post enrolled; its database stays bound for the test's assertions."""
    server = HQServer(hq_target, hq_port).start()
    server.post_settings = settings
    with hq.hq_database.connection_context():
        hq.enroll(settings.post.id, "Test post", _public(settings))
    yield server
    server.stop()


def _public(settings) -> bytes:
    bundle.post_key(settings)
    return bundle.public_key_file(settings).read_bytes()


def add_reads(settings, n, seed=0, actor=True):
    """n reads with a crop and a frame, each stored with an access record (as a person storing it)."""
    evidence = store.EvidenceStore(settings)
    who = audit.Actor("cli:tester", settings.post.agency, "local") if actor else None
    rng = np.random.default_rng(seed)
    reads = []
    for i in range(n):
        crop = rng.integers(0, 256, (30, 80, 3), dtype=np.uint8)
        frame = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
        new = store.NewRead(
            plate_raw=f"7ABC{seed:02d}{i}",
            plate=f"7ABC{seed:02d}{i}",
            confidence=0.9,
            captured_at=utcnow(),
            alternatives=[{"text": "7A8C123", "score": 0.05}],
        )
        reads.append(store.save_read(settings, evidence, new, crop, frame, actor=who))
    return reads


def post_reads() -> dict[str, str]:
    """uuid -> content hash of every read on the post, computed as headquarters computes it."""

    return {r.uuid: r.plate for r in Read.select()}


def hq_reads(post_id) -> dict[str, str]:
    with hq.hq_database.connection_context():
        return {r.uuid: r.plate for r in hq.HQRead.select().where(hq.HQRead.post_id == post_id)}


def push_headers(settings, body: bytes, key=None, date: dt.datetime | None = None, **claim) -> dict[str, str]:
    """The headers a post sends with a batch body (sync/post.py signs its own batches so): the
    X-Waypost-Push claim, whose batch and range come from the body's header line where it has usable
    ones (`claim` overrides any field), signed with the post's key or `key`, at this clock or `date`."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(body)) as gz:
            first = json.loads(gz.readline(1 << 16))
    except (OSError, EOFError, ValueError):
        first = {}
    first = first if isinstance(first, dict) else {}
    batch = first.get("batch")
    fields = {
        "post": settings.post.id,
        "batch": batch if isinstance(batch, str) and batch.isprintable() and 0 < len(batch) <= 100 else "batch",
        "first_seq": first["first_seq"] if protocol.is_whole(first.get("first_seq")) else 1,
        "last_seq": first["last_seq"] if protocol.is_whole(first.get("last_seq")) else 0,
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
        "date": (date or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    fields.update(claim)
    return protocol.push_headers(protocol.Push(**fields), key or bundle.post_key(settings))


def send_push(port: int, body: bytes, headers: dict[str, str] | None = None, timeout_s: float = 60):
    """POST `body` to headquarters' /hq/v1/batches with `headers` (none: as a post older than the
    signed push header sends it). Returns (status, the JSON answer); the answer must be JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(
            "POST",
            "/hq/v1/batches",
            body=body,
            headers={"Content-Type": protocol.CONTENT_TYPE, "Content-Length": str(len(body)), **(headers or {})},
        )
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
    finally:
        conn.close()
    assert kind.startswith("application/json"), (response.status, raw[:300])
    return response.status, json.loads(raw)


def alert_on(read) -> Alert:
    """An unconfirmed SVS alert on `read`, as the pipeline stores one (its own transaction)."""
    with write():
        return Alert.create(
            read=read,
            hotlist_name="SVS",
            entry_plate=read.plate,
            entry_state="CA",
            entry_reason="stolen",
            entry_source_ref="",
            matched_text=read.plate,
            match_kind="exact",
            score=1.0,
            created_at=utcnow(),
        )
