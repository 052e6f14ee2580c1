"""Plate text normalisation and the plate-format priors the OCR uses to rank alternatives."""
from __future__ import annotations

import re

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NOT_PLATE = re.compile(r"[^A-Z0-9]")

# Characters the OCR (and people) confuse on US plate faces, each way round.
CONFUSABLE = {
    "0": "OQD", "O": "0QD", "Q": "O0", "D": "0O", "1": "IL7T", "I": "1LT", "L": "1I",
    "2": "Z", "Z": "2", "5": "S", "S": "5", "8": "B", "B": "8", "6": "G", "G": "6",
    "7": "T1", "T": "71", "4": "A", "A": "4", "U": "V", "V": "UY", "M": "N", "N": "M",
}


def normalise(text: str | None) -> str:
    """Uppercase A-Z and 0-9 only: the form plates are stored, compared and searched in."""
    if not text:
        return ""
    return _NOT_PLATE.sub("", str(text).upper())


# Current US formats as L (letter) / 9 (digit) patterns, per state, for ranking reads; a read that
# fits no pattern is still returned (vanity plates fit none).
STATE_PATTERNS = {
    "ca": ["9LLL999", "9L99999", "999L999"],
    "ny": ["LLL9999", "L999999L", "99999LL"], "tx": ["LLL9999", "LL9L999"], "fl": ["LLLL99", "999LLL"],
    "nj": ["L99LLL"], "pa": ["LLL9999"], "il": ["LL99999"],
}


def pattern(text: str) -> str:
    return "".join("9" if c.isdigit() else "L" for c in normalise(text))


def fits_state(text: str, state: str | None) -> bool:
    return bool(state) and pattern(text) in STATE_PATTERNS.get(state, ())
