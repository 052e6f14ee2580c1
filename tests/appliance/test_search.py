"""Plate search on a real SQLite file: reads stored through save_read, found through the index."""

import datetime as dt
import json
import sqlite3

import pytest

from appliance import db as dbmod
from appliance import search
from appliance.bench import data as bench_data
from appliance.models import Read
from appliance.search import Query, SearchError
from appliance.store import EvidenceStore, NewRead, save_read

T0 = dt.datetime(2026, 11, 1, 8, 0, 0)


def store(settings, plate, minutes=0, alts=(), confidence=0.9, camera=None):
    new = NewRead(
        plate_raw=plate,
        plate=plate,
        confidence=confidence,
        captured_at=T0 + dt.timedelta(minutes=minutes),
        alternatives=[{"text": a, "score": 0.1} for a in alts],
        camera_id=camera,
    )
    return save_read(settings, EvidenceStore(settings), new, None, None)


@pytest.fixture
def reads(settings, db):
    made = {}
    for i, (plate, alts) in enumerate(
        [
            ("7ABC123", ["7A8C123"]),
            ("7ABC128", []),
            ("5LMN432", ["5LMN482", "SLMN432"]),
            ("8XYZ999", []),
            ("7ABD123", []),
            ("ABC12", []),
            ("4TRK001", ["4TRK00I"]),
        ]
    ):
        made[plate] = store(settings, plate, minutes=i, alts=alts)
    return made


def plates(page):
    return [h.read.plate for h in page.hits]


def test_exact_finds_the_plate_and_alternatives_newest_first(reads):
    assert plates(search.search(Query("7ABC123"))) == ["7ABC123"]
    alt = search.search(Query("7A8C123"))
    assert plates(alt) == ["7ABC123"] and alt.hits[0].on_alternative and alt.hits[0].matched == "7A8C123"
    assert plates(search.search(Query("7abc-123"))) == ["7ABC123"]  # typed with case and a dash
    assert plates(search.search(Query("7ABC12"))) == []  # exact is exact


def test_exact_is_not_fooled_by_the_folded_index(reads):
    # 7ABD123 folds to the same skeleton as 7AB0123; only the real text matches
    assert plates(search.search(Query("7AB0123"))) == []
    assert plates(search.search(Query("7ABD123"))) == ["7ABD123"]


def test_wildcard_and_partial(reads):
    assert plates(search.search(Query("7AB*", "wildcard"))) == ["7ABD123", "7ABC128", "7ABC123"]
    assert plates(search.search(Query("7ABC12?", "wildcard"))) == ["7ABC128", "7ABC123"]
    assert plates(search.search(Query("*LMN4*", "wildcard"))) == ["5LMN432"]
    assert plates(search.search(Query("TRK00I", "partial"))) == ["4TRK001"]  # found on its alternative
    assert plates(search.search(Query("BC12", "partial"))) == ["ABC12", "7ABC128", "7ABC123"]


def test_pattern_without_three_known_characters_needs_a_time_range(reads):
    with pytest.raises(SearchError, match="time range"):
        search.search(Query("7?B*", "wildcard"))
    page = search.search(Query("7?B*", "wildcard", since=T0, until=T0 + dt.timedelta(hours=1)))
    assert plates(page) == ["7ABD123", "7ABC128", "7ABC123"]


def test_similar_ranks_same_then_confusable_then_one_edit(settings, reads):
    store(settings, "7ABC1Z3", minutes=30)  # Z for 2: confusable only
    page = search.search(Query("7A8C123", "similar"))
    kinds = [(h.read.plate, h.kind) for h in page.hits]
    # the read whose alternative is 7A8C123 ranks first as "same" (on an alternative)
    assert kinds[0] == ("7ABC123", "same")
    assert kinds[1] == ("7ABC1Z3", "confusable")
    assert set(kinds[2:]) == {("7ABC128", "one edit"), ("7ABD123", "one edit")}
    assert "8XYZ999" not in [p for p, _ in kinds] and "ABC12" not in [p for p, _ in kinds]
    short = search.search(Query("ABC1", "similar"))
    assert plates(short) == ["ABC12"]  # one insertion away, found without a full trigram


def test_filters(settings, reads):
    store(settings, "7ABC123", minutes=60 * 24, camera="cam-b", confidence=0.4)
    everything = search.search(Query("7ABC123"))
    assert len(everything.hits) == 2
    assert plates(search.search(Query("7ABC123", camera_id="cam-b"))) == ["7ABC123"]
    assert len(search.search(Query("7ABC123", min_confidence=0.5)).hits) == 1
    assert len(search.search(Query("7ABC123", until=T0 + dt.timedelta(hours=1))).hits) == 1
    assert search.search(Query("7ABC123", alerts_only=True)).hits == []


def test_pages_continue_where_the_last_ended(settings, db):
    for i in range(7):
        store(settings, f"6PAG{i:03d}", minutes=i)
    first = search.search(Query("6PAG*", "wildcard"), limit=3)
    assert plates(first) == ["6PAG006", "6PAG005", "6PAG004"] and first.next_before
    second = search.search(Query("6PAG*", "wildcard"), limit=3, before=first.next_before)
    assert plates(second) == ["6PAG003", "6PAG002", "6PAG001"]
    last = search.search(Query("6PAG*", "wildcard"), limit=3, before=second.next_before)
    assert plates(last) == ["6PAG000"] and last.next_before is None


@pytest.mark.parametrize(
    "text, mode, message",
    [
        ("", "exact", "1 to 10"),
        ("7ABC123!", "exact", "1 to 10"),
        ("***", "wildcard", "known character"),
        ("ABC", "similar", "at least 4"),
        ("7ABC", "fuzzy", "unknown search mode"),
    ],
)
def test_bad_queries_say_what_is_wrong(db, text, mode, message):
    with pytest.raises(SearchError, match=message):
        search.search(Query(text, mode))


def test_migration_indexes_reads_stored_before_it(settings, db):
    """Reads that existed before the index (0004) are found after it is built."""
    store(settings, "3OLD456", alts=["3OLD458"])
    with dbmod.write():
        dbmod.database.execute_sql("DROP TABLE read_text")
        dbmod.database.execute_sql("DELETE FROM schema_migration WHERE version = 4")
    assert [m.version for m in dbmod.pending(dbmod.database)] == [4]
    dbmod.database.close()
    dbmod.migrate(settings)
    dbmod.database.connect(reuse_if_open=True)
    assert plates(search.search(Query("3OLD458"))) == ["3OLD456"]


def test_unindex_removes_a_read_from_the_index(settings, reads):
    read = reads["8XYZ999"]
    with dbmod.write():
        search.unindex_read(read.id, read.plate, read.alternatives)
        Read.delete().where(Read.id == read.id).execute()
    assert search.search(Query("8XYZ999")).hits == []
    count = dbmod.database.execute_sql("SELECT count(*) FROM read_text WHERE read_text MATCH '\"XYZ\"'").fetchone()[0]
    assert count == 0
    assert json.loads(json.dumps(search.search(Query("5LMN432")).hits[0].read.alternatives))[0]["text"] == "5LMN482"


def test_benchmark_fill_indexes_like_save_read(settings, db):
    """The search benchmark's synthetic reads are found by their plates and alternatives, so its
    figures measure the same index the post uses."""

    bench_data.fill(settings, 3000, batch=1000)
    assert Read.select().count() == 3000
    for read in Read.select().where(Read.id % 97 == 0):
        found = search.search(Query(read.plate), limit=100)
        assert read.id in [h.read.id for h in found.hits]
        for alt in read.alternatives:
            assert read.id in [h.read.id for h in search.search(Query(alt["text"]), limit=100).hits]


def test_similar_finds_a_change_where_only_one_trigram_stays_intact(settings, db):
    """106BYB read as 106XYB: around the changed fourth character only "106" stays whole, so the
    search spells out the one-edit variants there; it must still find the read, and not 106BYY9."""
    store(settings, "106BYB")
    store(settings, "106BYY9", minutes=1)
    assert plates(search.search(Query("106XYB", "similar"))) == ["106BYB"]
    assert plates(search.search(Query("16BYB", "similar"))) == ["106BYB"]  # a dropped character


@pytest.mark.parametrize("mode,text", [("exact", "7ABC123"), ("similar", "7ABC123")])
def test_a_read_purged_between_choosing_and_reading_the_page_is_not_a_crash(settings, reads, mode, text):
    """A page is chosen on (id, plate, alternatives), then its whole rows are read. Outside a write
    transaction (a sharing export pages through search.search in autocommit) another process may
    delete a chosen read between the two statements (a paced retention batch commits every half
    second): the two must read one snapshot. Here a real second connection deletes the read the
    moment the page's rows are asked for (sqlite3's statement trace on the search's connection)."""

    target = reads["7ABC123"].id
    other = sqlite3.connect(settings.db_path, isolation_level=None, timeout=10)
    other.execute("PRAGMA foreign_keys = ON")
    conn = dbmod.database.connection()

    def on_statement(sql):
        if sql.startswith(f"SELECT {search._READ_COLUMNS} FROM read r WHERE r.id IN"):
            other.execute("DELETE FROM read WHERE id = ?", (target,))
            conn.set_trace_callback(None)

    conn.set_trace_callback(on_statement)
    try:
        page = search.search(Query(text, mode))
    finally:
        conn.set_trace_callback(None)
        other.close()
    assert target in {h.read.id for h in page.hits}  # the snapshot it was chosen in
    assert all(h.read.uuid for h in page.hits)  # whole rows
    assert Read.get_or_none(Read.id == target) is None  # and the delete did commit
