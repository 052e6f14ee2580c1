"""The plate-format prior: derived from the synthetic generator's formats, shipped as a table."""

from __future__ import annotations

import json

import pytest

from recognizer import plates
from recognizer.formats import FORMATS_FILE, FormatPrior, format_prior, pattern
from recognizer.training import format_table


def test_shipped_table_is_what_the_generator_gives_now():
    """plates.py changed? Rebuild with `python -m recognizer.training.format_table`."""
    shipped = json.loads(FORMATS_FILE.read_text())
    assert shipped == json.loads(json.dumps(format_table.build()))


def test_every_rendered_state_format_is_a_layout_of_its_state():
    table = format_table.build()
    for state, fmts in plates.STATE_FORMATS.items():
        for fmt in fmts:
            for pat in format_table.class_patterns(fmt):
                assert table["states"][state][str(len(pat))]["layouts"][pat] > 0, (state, fmt)


def test_class_patterns_drop_separators_and_keep_literal_letters():
    assert format_table.class_patterns("LLL-9999") == {"LLL9999": 1.0}
    assert format_table.class_patterns("1LLL999") == {"9LLL999": 1.0}
    assert format_table.class_patterns("T999999C") == {"L999999L": 1.0}
    assert format_table.class_patterns("LLL*9999") == {"LLL9999": 1.0}


def test_each_length_is_a_distribution():
    for by_length in [format_table.build()["pooled"], *format_table.build()["states"].values()]:
        for n, entry in by_length.items():
            assert 0.0 <= entry["vanity"] <= 1.0
            if entry["layouts"]:
                assert sum(entry["layouts"].values()) == pytest.approx(1.0, abs=1e-4)
                assert all(len(p) == int(n) for p in entry["layouts"])


@pytest.mark.parametrize(
    "likely, unlikely",
    [
        ("1ABC234", "IABC234"),  # California: a digit, three letters, three digits
        ("824BOJ", "824B0J"),  # 999LLL is many states' serial; 999L9L is nobody's
        ("OIT643", "0IT643"),
        ("471NZO", "471NZ0"),
    ],
)
def test_pooled_prior_prefers_serial_formats(likely, unlikely):
    p = format_prior()
    assert p.probability(likely) > 3 * p.probability(unlikely)


def test_prior_is_soft_and_says_nothing_where_it_knows_nothing():
    p = format_prior()
    assert p.probability("IABC234") > 0  # vanity plates exist
    assert p.probability("C0NNMAN") == p.probability("CONNMAN")  # no layout either way: neutral
    assert p.probability("AB") is not None and p.log_weights(["AB", "A8"]) == [0.0, 0.0]
    assert p.log_weights(["ABCDEFGHIJ"]) == [0.0]  # no plate of that length rendered
    assert p.probability("") is None


def test_a_state_table_reweighs_the_layouts():
    p = format_prior()
    # pooled, California's 9LLL999 outweighs New York's LLL9999; New York's own table says otherwise
    assert p.probability("7ABC123") > p.probability("ABC1234")
    assert p.probability("ABC1234", "ny", 1.0) > 10 * p.probability("7ABC123", "ny", 1.0)
    assert p.probability("ABC1234", "zz", 1.0) == p.probability("ABC1234")  # unknown state: pooled


def test_a_missing_table_gives_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="format_table"):
        FormatPrior.load(tmp_path / "nope.json")


def test_pattern():
    assert pattern("7abc-123") == "9LLL999"
