"""Signed GETs and pull requests are good once (issue 17 finding 9, issue 18 finding 3): a request
captured on the wire and sent again is refused, and logged at headquarters, while a post whose
clock is far off still pushes, fetches and is pulled from."""

from __future__ import annotations

import datetime as dt
import importlib
import socket
import threading
import time
import types

import pytest

from appliance.models import Outbox
from sync import hq, post
from tests.sync.conftest import _public, add_reads, free_port, hq_reads, post_reads
from tests.sync.hq.test_pull import serving_post


class Recorder:
    """A TCP relay on 127.0.0.1 that forwards to `port` and keeps every byte each client sent."""

    def __init__(self, port: int):
        self.target, self.port = port, free_port()
        self.sent: list[bytearray] = []
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            record = bytearray()
            self.sent.append(record)
            threading.Thread(target=self._pipe, args=(client, upstream, record), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(src, dst, record) -> None:
        try:
            while data := src.recv(65536):
                if record is not None:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def request(raw: bytes, start: bytes) -> bytes:
    """The one GET request (no body) in a connection's captured bytes that begins with `start`."""
    at = raw.index(start)
    return raw[at : raw.index(b"\r\n\r\n", at) + 4]


def replay(port: int, raw: bytes) -> bytes:
    """Send captured request bytes again, as they were, and return everything answered."""
    out = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(raw)
        try:  # the server keeps the connection open: read what it answers within the timeout
            while data := s.recv(65536):
                out.extend(data)
        except TimeoutError:
            pass
    return bytes(out)


def test_a_captured_pull_request_sent_again_is_refused_and_logged(settings, db, hq_path):
    add_reads(settings, 1)
    with serving_post(settings, hq_path) as (on, port, key):
        relay = Recorder(port)
        try:
            with hq.hq_database.connection_context():
                hq.enroll(settings.post.id, "Test post", _public(settings), pull_url=relay.url)
            assert hq.pull(settings.post.id, key, max_batches=1).batches == 1
            captured = [request(r, b"GET /sync/batch?") for r in relay.sent if b"GET /sync/batch?" in r]
            assert captured
            # the post stores more meanwhile: a replay would carry them off (and mark nothing there)
            add_reads(settings, 2, seed=1)
            answer = replay(port, captured[0])
        finally:
            relay.close()
        assert b"\x1f\x8b" not in answer, answer[:300]  # no batch
        assert b" 401 " in answer and b"replay" in answer, answer[:600]
        # nothing marked by it (the first read is marked by headquarters' next genuine request)
        assert Outbox.select().where(Outbox.sent_at.is_null()).count() == 3
        # the genuine pull goes on
        assert hq.pull(settings.post.id, key).reads == 2
    assert hq_reads(settings.post.id) == post_reads()


def test_a_captured_signed_get_sent_again_is_refused_and_logged(settings, db, hq_server):
    relay = Recorder(hq_server.port)
    try:
        via = settings.model_copy(update={"sync": settings.sync.model_copy(update={"hq_url": relay.url})})
        post.fetch_position(via)
        captured = [request(r, b"GET /hq/v1/posts/") for r in relay.sent if b"/position" in r]
        assert captured
        answer = replay(hq_server.port, captured[0])
    finally:
        relay.close()
    assert b" 401 " in answer and b"replay" in answer, answer[:600]
    time.sleep(0.2)
    with hq.hq_database.connection_context():
        (row,) = hq.status()
        assert row["last_refusal"]["problem"] == "replay", row


def shifted(skew_s: int):
    """A datetime module whose now() is `skew_s` seconds off: one side's clock, patched into that
    side's module only (the post and headquarters share this test's process)."""
    real = dt.datetime

    class Shifted(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + dt.timedelta(seconds=skew_s)

    return types.SimpleNamespace(**{**vars(dt), "datetime": Shifted})


@pytest.mark.parametrize("skew_s", [400, -400, 3600])
def test_a_post_whose_clock_is_off_pushes_and_fetches_and_headquarters_says_so(
    settings, db, hq_server, skew_s, monkeypatch
):
    """The post's time is carried, never checked: with the clock it signs with `skew_s` off, it
    asks for its position and hotlists and pushes, and headquarters records how far off it is."""
    add_reads(settings, 3)
    monkeypatch.setattr(post, "dt", shifted(skew_s))
    result = post.push(settings)
    assert result.reads == 3 and hq_reads(settings.post.id) == post_reads()
    with hq.hq_database.connection_context():
        (row,) = hq.status()
    assert abs(row["clock_offset_s"] - skew_s) <= 5, row


@pytest.mark.parametrize("skew_s", [400, -400, 3600])
def test_a_post_whose_clock_is_off_is_pulled_from_and_knows_it(settings, db, hq_path, skew_s, monkeypatch):
    """Headquarters' signed time `skew_s` behind the post's clock (the post's clock ahead): the post
    serves the pull, and records its clock's offset from headquarters'."""
    add_reads(settings, 2)
    with serving_post(settings, hq_path) as (on, port, key):
        with hq.hq_database.connection_context():
            hq.enroll(settings.post.id, "Test post", _public(settings), pull_url=f"http://127.0.0.1:{port}")
        monkeypatch.setattr(importlib.import_module("sync.hq.pull"), "dt", shifted(-skew_s))
        result = hq.pull(settings.post.id, key)
        assert (result.reads, result.problem) == (2, ""), result
    assert hq_reads(settings.post.id) == post_reads()
    state = post.read_state(settings)
    assert abs(state["clock_offset_s"] - skew_s) <= 5 and state["last_pulled_at"], state
