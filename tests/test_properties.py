"""Property-based tests (Hypothesis) of the parsers that take input from outside (issue 17,
finding 10): a batch from a post, a hotlist file, a search pattern, a signed access-log bundle and
an evidence ZIP. Whatever the input, each answers with its own refusal (ProtocolError,
HotlistError, SearchError, a failed check naming the problem) or a result: never another
exception, never a crash. Bounded: the examples are derandomised and few enough that the module
adds well under two minutes to `make test`; a failure prints the smallest input that fails.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import audit, bundle, export, hotlist, search
from appliance import db as dbmod
from appliance.audit import system_actor
from appliance.bootstrap import bootstrap
from sync import protocol
from tests.conftest import make_settings

# Derandomised: the same examples on every run and every machine (CI never flakes on a new one).
BOUNDED = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
line_kinds = st.sampled_from(["header", "read", "hold", "confirmation", "access", "end", "other"])


@st.composite
def batch_lines(draw) -> dict:
    """An object shaped like a batch line: the right "t" and fields of any kind and value."""
    obj = draw(
        st.dictionaries(
            st.sampled_from(
                [
                    "seq",
                    "read",
                    "images",
                    "alerts",
                    "alert",
                    "record",
                    "event",
                    "hold",
                    "format",
                    "post",
                    "batch",
                    "first_seq",
                    "last_seq",
                    "chain",
                    "confirmations",
                    "backlog",
                ]
            ),
            json_values,
            max_size=6,
        )
    )
    obj["t"] = draw(line_kinds)
    return obj


def _gzip(lines: list[bytes]) -> bytes:
    return gzip.compress(b"".join(lines))


@BOUNDED
@given(st.lists(batch_lines(), min_size=1, max_size=5), st.binary(max_size=40))
def test_a_batch_body_is_read_or_refused_as_malformed(lines, tail):
    body = _gzip([protocol.canonical_line(line) for line in lines]) + tail
    reader = protocol.Reader(io.BytesIO(body), 1 << 20)
    try:
        for item in reader:
            if item["t"] == "header":
                protocol.header_fields(item)
    except protocol.ProtocolError as exc:
        assert exc.problem in protocol.PROBLEMS and exc.message


@BOUNDED
@given(st.binary(max_size=300))
def test_any_bytes_as_a_batch_are_refused_cleanly(body):
    try:
        for _ in protocol.Reader(io.BytesIO(body), 1 << 20):
            pass
    except protocol.ProtocolError as exc:
        assert exc.problem in protocol.PROBLEMS


@BOUNDED
@given(batch_lines(), st.integers(min_value=0, max_value=10), st.integers(min_value=0, max_value=10))
def test_each_line_check_returns_or_refuses(item, next_seq, last):
    chain = {"first_seq": 1, "last_seq": 5, "prev_hash": "0" * 64}
    for check in (
        lambda: protocol.read_line(item, "line 2 (read)", next_seq, last),
        lambda: protocol.read_alerts(item, "line 2 (read)"),
        lambda: protocol.confirmation_line(item, 2),
        lambda: protocol.access_line(item, "line 2 (access record)", next_seq, chain),
        lambda: protocol.hold_line(item, "line 2 (hold)", next_seq, last),
    ):
        try:
            check()
        except protocol.ProtocolError as exc:
            assert exc.problem == "malformed" and "line 2" in exc.message


# --- hotlist files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def post(tmp_path_factory):
    """A real post database for the examples that need one (made once: an example is a second)."""
    settings = make_settings(tmp_path_factory.mktemp("props") / "data")
    bootstrap(settings, create_admin=False)
    with dbmod.connection():
        yield settings


cells = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@BOUNDED
@given(
    st.lists(st.lists(cells, min_size=0, max_size=7), min_size=0, max_size=6),
    st.binary(max_size=20),
    st.booleans(),
)
def test_a_hotlist_file_imports_whole_or_is_refused_naming_lines(post, tmp_path_factory, rows, junk, with_junk):
    header = "plate,state,reason,entry_date,source_ref"
    text = "\n".join([header] + [",".join(row) for row in rows]) + "\n"
    data = text.encode("utf-8") + (junk if with_junk else b"")
    path = tmp_path_factory.mktemp("lists") / "list.csv"
    path.write_bytes(data)
    before = hotlist.status(post)
    try:
        result = hotlist.import_csv(post, path, "PROP", system_actor(post))
    except hotlist.HotlistError as exc:
        assert exc.problems and all(str(path) in p or "list" in p for p in exc.problems), exc.problems
        assert hotlist.status(post) == before  # all or nothing: the old list stays
        return
    assert result.entries >= 1 and result.hotlist == "PROP"


# --- search patterns -------------------------------------------------------------------------------


@BOUNDED
@given(st.text(max_size=16), st.sampled_from(search.MODES + ("nonsense",)))
def test_a_search_pattern_is_read_or_refused(post, text, mode):
    try:
        normalised = search.normalise(text, mode)
    except search.SearchError as exc:
        assert str(exc)
        return
    q = search.Query(normalised, mode, since=dt.datetime(2026, 1, 1), until=dt.datetime(2026, 12, 31))
    try:
        page = search.search(q, limit=5)
    except search.SearchError as exc:
        assert str(exc)
        return
    assert len(page.hits) <= 5


# --- signed bundles and evidence ZIPs -------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(post, tmp_path_factory):
    """A genuine bundle of the post's access log, and the key it is signed with."""
    with dbmod.write():
        for i in range(5):
            audit.record("auth.logout", audit.Actor(f"user{i}", "Demo Police Department"))
    where = tmp_path_factory.mktemp("signed")
    bundle.write_bundle(post, where / "log.json", system_actor(post), purpose=audit.Purpose("AUDIT", "AUD-1"))
    return (where / "log.json").read_bytes(), bundle.post_key(post).public_key()


@BOUNDED
@given(st.binary(max_size=400))
def test_any_bytes_as_a_bundle_fail_its_check_cleanly(signed, data):
    result = bundle.verify(data, signed[1])
    assert not result.ok and result.summary()


@BOUNDED
@given(st.data())
def test_a_changed_byte_of_a_genuine_bundle_is_caught(signed, data):
    genuine, key = signed
    assert bundle.verify(genuine, key).ok
    at = data.draw(st.integers(min_value=0, max_value=len(genuine) - 1))
    value = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != genuine[at]))
    changed = genuine[:at] + bytes([value]) + genuine[at + 1 :]
    result = bundle.verify(changed, key)
    if result.ok:  # only a change JSON does not see (white space between tokens) leaves it intact
        assert json.loads(changed) == json.loads(genuine)


@BOUNDED
@given(st.binary(max_size=600), st.booleans())
def test_any_zip_as_evidence_fails_its_check_cleanly(tmp_path_factory, data, as_zip):
    path = tmp_path_factory.mktemp("ev") / "evidence.zip"
    if as_zip:  # a real ZIP of arbitrary members, so the check gets past the archive itself
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("manifest.json", data)
            zf.writestr("reads.csv", data[::-1])
        data = buf.getvalue()
    path.write_bytes(data)
    report = export.verify(path)
    assert not report.ok and report.problem
